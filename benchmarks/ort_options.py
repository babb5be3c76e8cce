"""What onnxruntime offers for the demo model on this CPU (issue 18), measured in one run.

    .venv/bin/python benchmarks/ort_options.py [--model rdf.yaml] [--rounds 3] [--isa avx2 --out ...]

On a 2048^2 binary 2-channel input (the whole image in one pass, as the runner runs it), every
variant once per round in a rotated order, medians reported with the ratio to the runner's
settings (``rosette_bmz.runner.backends.OnnxBackend``: all graph optimisations, sequential
execution, intra-op threads = cores, no memory pattern, arena on):

* graph optimisation ``EXTENDED`` instead of ``ALL`` (``ALL`` adds the NCHWc layout transform
  that feeds MLAS's blocked convolution kernels);
* intra-op thread spinning off (``session.intra_op.allow_spinning = 0``);
* the memory pattern on;
* denormals flushed to zero (``session.set_denormal_as_zero = 1``: x86 cores slow down on
  subnormal floats, which sigmoid attention gates and small activations can produce);
* two single-threaded sessions on the two halves of the image at once (inter-op parallelism
  instead of intra-op; each half carries the 112 px halo, so 1.11x the pixels);
* tile shapes: one 2048^2 pass against 4 tiles of 1024^2 in one batch and 16 of 512^2
  (the per-pixel cost of the kernels at each size, halos left out).

Outputs of every variant are compared with the runner's (max abs diff). The machine record
(CPU, flags, FMA peak from flags x measured clock) is ``_machine.fma_peak``. Writes
``benchmarks/results/ort_options.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import fma_peak, run_as_avx2  # noqa: E402

from rosette_bmz.files import atomic_path  # noqa: E402

SIZE = 2048
HALO = 112


def session(path: str, threads: int, **kw):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = kw.pop("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    o.enable_mem_pattern = kw.pop("mem_pattern", False)
    for k, v in kw.items():
        o.add_session_config_entry(k, v)
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "rdf.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: hide AVX-512 from this run (benchmarks/avx2_only.c), so MLAS takes its AVX2 kernels")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ort_options.json"))
    args = ap.parse_args(argv)
    if args.isa == "avx2":
        run_as_avx2([str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)],
                    tempfile.mkdtemp(prefix="ort-avx2-"))
    import onnxruntime as ort

    from rosette_bmz.runner import default_threads, resolve_model
    from rosette_bmz.synth import generate
    from rosette_bmz.inputs import from_outlines

    threads = default_threads()
    onnx_path = str(resolve_model(args.model).weight_path("onnx"))
    x = from_outlines(generate(SIZE, seed=7).outlines)[None]
    base = session(onnx_path, threads)
    name = base.get_inputs()[0].name
    halves = [np.ascontiguousarray(x[..., :SIZE // 2 + HALO]), np.ascontiguousarray(x[..., SIZE // 2 - HALO:])]
    singles = [session(onnx_path, 1), session(onnx_path, 1)]
    pool = ThreadPoolExecutor(2)

    def two_sessions():
        fa = pool.submit(singles[0].run, None, {name: halves[0]})
        fb = pool.submit(singles[1].run, None, {name: halves[1]})
        a, b = fa.result()[0], fb.result()[0]
        return np.concatenate([a[..., :SIZE // 2], b[..., HALO:]], axis=-1)

    def tiles(side: int):
        n = SIZE // side
        batch = x[0].reshape(2, n, side, n, side).transpose(1, 3, 0, 2, 4).reshape(n * n, 2, side, side)
        batch = np.ascontiguousarray(batch)
        return lambda: base.run(None, {name: batch})[0]

    sess = {"runner settings": base,
            "graph optimisation EXTENDED (no NCHWc)": session(onnx_path, threads,
                                                                level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
            "thread spinning off": session(onnx_path, threads, **{"session.intra_op.allow_spinning": "0"}),
            "memory pattern on": session(onnx_path, threads, mem_pattern=True),
            "denormals as zero": session(onnx_path, threads, **{"session.set_denormal_as_zero": "1"})}
    variants = {k: (lambda s=s: s.run(None, {name: x})[0]) for k, s in sess.items()}
    variants["2 single-thread sessions on halves"] = two_sessions
    variants["4 tiles of 1024^2 in one batch (no halo)"] = tiles(1024)
    variants["16 tiles of 512^2 in one batch (no halo)"] = tiles(512)
    comparable = {k for k in variants if "tiles" not in k}
    ref = variants["runner settings"]()
    diffs = {}
    for k, f in variants.items():        # warm-up + agreement
        y = f()
        if k in comparable:
            diffs[k] = float(np.abs(y.reshape(ref.shape) - ref).max())
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            variants[k]()
            times[k].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    with tempfile.TemporaryDirectory() as td:
        peak = fma_peak(threads, td)
    res = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "size": SIZE, "threads": threads,
           "onnxruntime": ort.__version__, "machine": peak, "rounds": args.rounds, "seconds": times,
           "median": med, "ratio_to_runner": {k: v / med["runner settings"] for k, v in med.items()},
           "max_abs_diff_to_runner": diffs}
    lines = [f"# onnxruntime options for the demo model ({res['date_utc']} UTC)", "",
             f"{peak['cpu']['model']} ({peak['cpu']['vendor']} family {peak['cpu']['family']} model "
             f"{peak['cpu']['model_number']}; {' '.join(peak['cpu']['simd'])}), {threads} threads, onnxruntime "
             f"{ort.__version__}; FMA peak {peak.get('computed_peak_gflops', float('nan')):.0f} GFLOP/s "
             f"({peak['flop_per_cycle_per_core']} FLOP/cycle x {peak.get('ghz', float('nan')):.2f} GHz x {threads}). "
             f"{SIZE}^2 input, medians of {args.rounds} interleaved rounds."
             + (f" **AVX-512 hidden** by `benchmarks/avx2_only.c` ({' '.join(peak['cpu']['hidden_by_avx2_only'])}): "
                "MLAS ran its AVX2 kernels." if peak["cpu"].get("hidden_by_avx2_only") else ""), "",
             "| variant | median s | ratio to the runner's settings | max abs diff to the runner |", "|---|---:|---:|---:|"]
    for k in names:
        d = diffs.get(k)
        lines.append(f"| {k} | {med[k]:.2f} | {res['ratio_to_runner'][k]:.2f} | "
                     f"{'–' if d is None else f'{d:.1e}'} |")
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(res, indent=1))
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

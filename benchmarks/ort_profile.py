"""Where onnxruntime spends its time: a per-operator and per-convolution profile (issue 18).

    .venv/bin/python benchmarks/ort_profile.py [--size 1024] [--model rdf.yaml] [--isa avx2]

The runner's own onnxruntime session (`OnnxBackend`: ORT_ENABLE_ALL, so MLAS's NCHWc
convolutions; intra-op threads = cores; no memory pattern) runs one 2-channel image of
``--size``² three times (one warm-up, two timed), then three more times under onnxruntime's
profiler. Reported from the last profiled run: time per operator type, and for every convolution and transposed
convolution its FLOPs (2 x multiply-adds, from the shapes the profiler records), its GFLOP/s
and its share of the machine's fp32 FMA peak (`_machine.fma_peak`: flags x clock under load).
Default model: the published full-width layout (base 64) with recipe weights, exported once
into a temporary folder. ``--isa avx2`` hides AVX-512 (`avx2_only.c`) so the AVX2 kernels run.
Writes ``benchmarks/results/ort_profile[_avx2].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model, cpuinfo, fma_peak, run_as_avx2  # noqa: E402

from rosette_bmz.files import atomic_path  # noqa: E402


def conv_flops(op: str, inputs: list, outputs: list) -> int | None:
    """FLOPs of one profiled Conv / ConvTranspose node from its recorded shapes, else None.

    NCHWc convolutions record ``[N, C, H, W]`` activations (channel blocks folded back in) and the
    weight ``[Cout, Cin/groups, kh, kw]``; the transposed convolutions (2x2, stride 2) record
    only the activations, so their FLOPs are ``2 x Hin x Win x Cin x Cout x 4``.
    """
    shapes = [next(iter(d.values())) for d in inputs]
    out = next(iter(outputs[0].values())) if outputs else None
    if out is None or len(out) != 4:
        return None
    if op == "Conv" and len(shapes) >= 2 and len(shapes[1]) == 4:
        w = shapes[1]
        return 2 * out[0] * out[2] * out[3] * w[0] * w[1] * w[2] * w[3]
    if op == "ConvTranspose" and shapes and len(shapes[0]) == 4:
        i = shapes[0]
        return 2 * i[0] * i[2] * i[3] * i[1] * out[1] * 4
    return None


def profile(rdf, size: int, threads: int, workdir: Path) -> dict:
    from rosette_bmz.runner.backends import OnnxBackend
    from rosette_bmz.runner.models import resolve_model

    def session(profiling: bool):
        extra = {"enable_profiling": True, "profile_file_prefix": str(workdir / "ort_profile")} if profiling else {}
        return OnnxBackend(resolve_model(rdf), threads=threads, session_options=extra).session

    x = (np.random.default_rng(0).random((1, 2, size, size)) > 0.9).astype(np.float32)
    sess = session(False)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    wall = []
    for _ in range(2):
        t = time.perf_counter()
        sess.run(None, {name: x})
        wall.append(time.perf_counter() - t)
    del sess
    sess = session(True)
    for _ in range(3):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_run = len(nodes) // 3
    last = nodes[-per_run:]
    by_op: dict[str, list] = {}
    convs = []
    for e in last:
        op = e["args"].get("op_name", "?")
        by_op.setdefault(op, [0.0, 0])
        by_op[op][0] += e["dur"] / 1e6
        by_op[op][1] += 1
        if op in ("Conv", "ConvTranspose"):
            fl = conv_flops(op, e["args"].get("input_type_shape", []), e["args"].get("output_type_shape", []))
            if fl:
                convs.append({"node": e["name"].removesuffix("_kernel_time"), "op": op, "seconds": e["dur"] / 1e6,
                              "gflop": fl / 1e9,
                              "output": next(iter(e["args"]["output_type_shape"][0].values()))})
    return {"wall_seconds": wall, "by_op": by_op, "convs": convs}


def markdown(res: dict) -> str:
    peak = res["peak_gflops"]
    tot = sum(v[0] for v in res["by_op"].values())
    lines = [f"# onnxruntime profile ({res['date_utc']})", "",
             f"{res['cpu']} ({res['isa']} kernels{', AVX-512 hidden by avx2_only.c' if res['isa'] == 'avx2' else ''}), "
             f"{res['threads']} threads; onnxruntime {res['onnxruntime']}; model: {res['model']}; one {res['size']}² "
             f"image. FMA peak **{peak:.0f} GFLOP/s** ({res['peak_rule']}). Unprofiled runs: "
             + ", ".join(f"{w:.2f} s" for w in res["wall_seconds"])
             + f"; profiled kernels: {tot:.2f} s (the profiler adds its own overhead).", "",
             "| operator | seconds | share | nodes |", "|---|---:|---:|---:|"]
    for op, (sec, n) in sorted(res["by_op"].items(), key=lambda kv: -kv[1][0]):
        if sec >= 0.0005:
            lines.append(f"| {op} | {sec:.3f} | {100 * sec / tot:.1f} % | {n} |")
    cs = res["convs"]
    ct, cf = sum(c["seconds"] for c in cs), sum(c["gflop"] for c in cs)
    lines += ["", f"Convolutions together: {cf:.0f} GFLOP in {ct:.2f} s = {cf / ct:.0f} GFLOP/s, "
              f"**{100 * cf / ct / peak:.0f} %** of the FMA peak (profiled run).", "",
              "| node | op | output | GFLOP | seconds | GFLOP/s | % of FMA peak |", "|---|---|---|---:|---:|---:|---:|"]
    for c in sorted(cs, key=lambda c: -c["seconds"]):
        if c["gflop"] >= 1:
            r = c["gflop"] / c["seconds"]
            lines.append(f"| {c['node'][:48]} | {c['op']} | {c['output']} | {c['gflop']:.1f} | {c['seconds']:.3f} | "
                         f"{r:.0f} | {100 * r / peak:.0f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", default=None, help="rdf.yaml or checkpoint (default: the full-width recipe layout)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/ort_profile[_avx2].json)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.isa == "avx2":
            run_as_avx2([str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)], tmp)
        import onnxruntime as ort

        if args.model is None:
            from bench_inference import full_width_package

            rdf, label = full_width_package(tmp), "full width (base 64), recipe weights"
        else:
            rdf = label = args.model
            if not str(rdf).endswith((".yaml", ".yml")):
                from rosette_bmz.export import export_package

                rdf = export_package(Path(args.model), tmp / "pkg", run_test=False)
        fma = fma_peak(args.threads, tmp)
        peak = fma.get("computed_peak_gflops")
        if not peak:
            raise SystemExit(f"FMA peak not measured: {fma.get('error')}")
        res = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
               "cpuinfo": cpuinfo(), "isa": args.isa, "threads": args.threads, "onnxruntime": ort.__version__,
               "model": label, "size": args.size, "peak_gflops": peak,
               "peak_rule": f"{args.threads} threads x {fma['flop_per_cycle_per_core']} FLOP/cycle x "
                            f"{fma['ghz']:.2f} GHz under load", "fma": fma}
        res.update(profile(rdf, args.size, args.threads, tmp))
    out = Path(args.out or ROOT / "benchmarks/results" / f"ort_profile{'_avx2' if args.isa == 'avx2' else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out, json.dumps(res, indent=1) + "\n"), (out.with_suffix(".md"), markdown(res))):
        with atomic_path(path) as tmp_path:
            tmp_path.write_text(text)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

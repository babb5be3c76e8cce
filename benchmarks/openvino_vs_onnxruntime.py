"""The runner's ``openvino`` backend against its ``onnx`` backend on the same ONNX weights (issue 18).

    .venv/bin/python benchmarks/openvino_vs_onnxruntime.py [--rounds 3] [--skip-full] [--out ...]

Both backends through ``rosette_bmz.runner.predict`` with the runner's defaults (the same tiles,
the same halo), predictors loaded once, interleaved rounds in a rotated order, medians: the
demo package (root ``rdf.yaml``) on a 2048^2 synthetic outline image, and the published width
(base 64, the recipe weights of ``tests/reference.py`` exported into a temporary package) on
1024^2 and 2048^2. GFLOP/s = pixels through the network (tiles with their halos) x FLOPs per
pixel (``bench_inference.conv_flops``) / median seconds, against this CPU's fp32 FMA peak
(``_machine.fma_peak``: threads x FLOP/cycle from the flags x clock measured under load).
Outputs are compared (max abs diff). Writes ``benchmarks/results/openvino.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import fma_peak  # noqa: E402
from bench_inference import conv_flops, full_width_package  # noqa: E402

from rosette_bmz.files import atomic_path  # noqa: E402

VARIANTS = ("onnx", "openvino")


def count_pixels(pred) -> dict:
    """Wrap ``pred``'s backend so that every batch it runs adds its pixels (tiles with halos) to the count."""
    counter = {"pixels": 0}
    run = pred.backend.run

    def counted(batch):
        counter["pixels"] += int(batch.shape[0] * batch.shape[2] * batch.shape[3])
        return run(batch)

    pred.backend.run = counted
    return counter


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-full", action="store_true", help="only the demo model")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "openvino.json"))
    args = ap.parse_args(argv)
    import onnxruntime
    import openvino

    from rosette_bmz.checkpoint import build_model
    from rosette_bmz.inputs import from_outlines
    from rosette_bmz.runner import default_threads, load_predictor, predict
    from rosette_bmz.synth import generate

    threads = default_threads()
    tmp = Path(tempfile.mkdtemp(prefix="ov-bench-"))
    cases = [("demo (base 16)", ROOT / "rdf.yaml", 2048)]
    flops = {"demo (base 16)": None}
    if not args.skip_full:
        from reference import recipe_state_dict

        full = full_width_package(tmp)
        cases += [("published width (base 64)", full, 1024), ("published width (base 64)", full, 2048)]
        flops["published width (base 64)"] = conv_flops(build_model(recipe_state_dict())) / 512 ** 2
    from rosette_bmz.checkpoint import load_checkpoint   # demo FLOPs from the shipped checkpoint

    flops["demo (base 16)"] = conv_flops(load_checkpoint(ROOT / "rosette_bmz" / "data" / "rosette_demo.pt").model) / 512 ** 2
    outlines = generate(2048, seed=7).outlines
    rows = []
    for name, model, size in cases:
        x = from_outlines(np.ascontiguousarray(outlines[:size, :size]))
        preds = {b: load_predictor(model, b, threads) for b in VARIANTS}
        try:
            counters = {b: count_pixels(p) for b, p in preds.items()}
            outs = {b: predict(x, p) for b, p in preds.items()}             # warm-up (and compile)
            px = counters["onnx"]["pixels"]
            assert counters["openvino"]["pixels"] == px                    # the same tiles
            times: dict[str, list[float]] = {b: [] for b in VARIANTS}
            for r in range(args.rounds):
                for b in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                    t0 = time.perf_counter()
                    predict(x, preds[b])
                    times[b].append(time.perf_counter() - t0)
                print(f"{name} {size}^2 round {r + 1}: " + ", ".join(f"{b} {v[-1]:.2f} s" for b, v in times.items()),
                      flush=True)
        finally:
            for p in preds.values():
                p.close()
        med = {b: statistics.median(v) for b, v in times.items()}
        rows.append({"model": name, "size": size, "seconds": times, "median": med,
                     "ratio_openvino_to_onnx": med["openvino"] / med["onnx"],
                     "pixels_through_net": px, "gflops": {b: px * flops[name] / med[b] / 1e9 for b in VARIANTS},
                     "max_abs_diff": float(np.abs(outs["openvino"] - outs["onnx"]).max())})
    peak = fma_peak(threads, tmp)
    res = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "threads": threads,
           "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__, "machine": peak,
           "rounds": args.rounds, "rows": rows}
    top = peak.get("computed_peak_gflops")
    cpu = peak["cpu"]
    lines = [f"# OpenVINO against onnxruntime, the runner's two ONNX backends ({res['date_utc']} UTC)", "",
             f"{cpu['model']} ({cpu['vendor']} family {cpu['family']} model {cpu['model_number']}; "
             f"{' '.join(cpu['simd'])}), {threads} threads; onnxruntime {onnxruntime.__version__}, OpenVINO "
             f"{openvino.__version__}; FMA peak {top or float('nan'):.0f} GFLOP/s ({peak['flop_per_cycle_per_core']} "
             f"FLOP/cycle x {peak.get('ghz', float('nan')):.2f} GHz x {threads}; an FMA loop reached "
             f"{peak.get('measured_fma_gflops', float('nan')):.0f}). `rosette_bmz.runner.predict` with its "
             f"defaults, medians of {args.rounds} interleaved rounds.", "",
             "| model | image | onnx (s) | openvino (s) | openvino / onnx | GFLOP/s onnx (% of FMA peak) | "
             "GFLOP/s openvino (% of FMA peak) | max abs diff |", "|---|---|---:|---:|---:|---|---|---:|"]
    for r in rows:
        g = r["gflops"]
        pct = {b: (f" ({100 * g[b] / top:.0f} %)" if top else "") for b in VARIANTS}
        lines.append(f"| {r['model']} | {r['size']}^2 | {r['median']['onnx']:.2f} | {r['median']['openvino']:.2f} | "
                     f"**{r['ratio_openvino_to_onnx']:.2f}** | {g['onnx']:.0f}{pct['onnx']} | "
                     f"{g['openvino']:.0f}{pct['openvino']} | {r['max_abs_diff']:.1e} |")
    out = Path(args.out)
    with atomic_path(out) as t:
        Path(t).write_text(json.dumps(res, indent=1) + "\n")
    with atomic_path(out.with_suffix(".md")) as t:
        Path(t).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The vertex check's two settings (``rosette-bmz predict --check``), measured on every test set.

:func:`rosette_bmz.quantities.check_proposals` keeps a proposal without a junction of >= 5 cells
only when its peak probability is above ``sure`` (``CHECK_SURE``), and adds a junction of >= 5
cells (the baseline's graph) no kept proposal touches when the network's peak on its mask is
above ``support`` (``CHECK_SUPPORT``). This script predicts the images of the generalisation sets
once (same worlds, seeds and size as ``benchmarks/generalisation.py``; the package's onnx backend,
published tiling)
and scores the check at a grid of both settings with the evaluation's metrics (event recall:
rosettes with a pixel of a kept rosette; event precision: kept rosettes on a rosette), next to the
network alone and the classical baseline. The defaults were set before this grid (stop 30, from
a few rules compared in ``benchmarks/false_proposals.py`` on all sets); the grid shows how much
the choice matters, on the training world's sets (``default``, ``heldout``) and elsewhere.

    .venv/bin/python benchmarks/check_settings.py [--n 8] [--size 1024] [--model rdf.yaml]
    -> benchmarks/results/check_settings.{json,md}
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402
from _sets import add_set_arguments, write_results  # noqa: E402

from rosette_bmz import metrics as M  # noqa: E402
from rosette_bmz.baseline import baseline_probability  # noqa: E402
from rosette_bmz.constants import CHECK_SUPPORT, CHECK_SURE  # noqa: E402
from rosette_bmz.inputs import from_outlines  # noqa: E402
from rosette_bmz.proposals import find_proposals  # noqa: E402
from rosette_bmz.quantities import cells_for, check_proposals, describe_proposals  # noqa: E402
from rosette_bmz.runner import load_predictor, predict  # noqa: E402
from rosette_bmz.synth import generate_world  # noqa: E402
from rosette_bmz.worlds import OTHER_WORLDS  # noqa: E402

SETS = ["default", "heldout", *OTHER_WORLDS]
SURE = (0.8, 0.9, 0.95, 1.0)
SUPPORT = (0.1, 0.2, 0.3, 1.0)


def _f1(s: dict) -> float:
    r, p = s["event_recall"] or 0.0, s["event_precision"] or 0.0
    return 0.0 if r + p == 0 else 2 * r * p / (r + p)


def _cell(s: dict) -> str:
    return f"{100 * s['event_recall']:.1f} / {100 * s['event_precision']:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_set_arguments(ap, SETS, ROOT / "benchmarks" / "results" / "check_settings")
    args = ap.parse_args(argv)

    grid = {f"sure {a} / support {b}": (a, b) for a in SURE for b in SUPPORT}
    default = f"sure {CHECK_SURE} / support {CHECK_SUPPORT}"
    results: dict[str, dict] = {}
    predictor = load_predictor(args.model, args.backend)
    try:
        for name in args.sets:
            accs = {key: M.MetricsAccumulator() for key in ["model", "baseline", *grid]}
            for i in range(args.n):
                g = generate_world(args.size, i, name)
                truth, decoys = g.rosettes, g.meta.get("decoys", [])
                radius = M.decoy_radius(g.meta)
                prob = predict(from_outlines(g.outlines, f"{name} image {i}"), predictor, mode="published")
                labels, rows = find_proposals(prob)
                cells = cells_for(g.outlines, "outlines")
                rows = describe_proposals(labels, rows, cells)
                accs["model"].add(prob, truth, decoys, radius=radius)
                accs["baseline"].add(baseline_probability(g.outlines), truth, decoys, radius=radius)
                for key, (sure, support) in grid.items():
                    kept, _ = check_proposals(labels, rows, cells, prob, sure=sure, support=support)
                    accs[key].add((kept > 0).astype(np.float32), truth, decoys, radius=radius)
            results[name] = {k: a.summary() for k, a in accs.items()}
            d = results[name][default]
            print(f"{name:12s} model {_cell(results[name]['model'])}  checked {_cell(d)}  "
                  f"baseline {_cell(results[name]['baseline'])}", flush=True)
    finally:
        predictor.close()

    train_sets = [s for s in ("default", "heldout") if s in results]
    rows = []
    for key in ["model", *grid, "baseline"]:
        f1 = [_f1(results[s][key]) for s in results]
        f1_train = [_f1(results[s][key]) for s in train_sets]
        met = sum(results[s][key]["event_recall"] >= 0.9 and results[s][key]["event_precision"] >= 0.85
                  for s in results)
        rows.append((key, 100 * np.mean(f1_train) if f1_train else float("nan"), 100 * np.mean(f1), met))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    label = {"model": "network alone", "baseline": "classical baseline"}
    lines = ["# The vertex check's settings on every test set\n",
             f"`benchmarks/check_settings.py` ({stamp}): per set {args.n} images of {args.size}² (the generalisation "
             f"sets), model `{Path(args.model).name}` ({args.backend}, published tiling). Each row: the network's "
             "proposals checked against the vertex graph with `sure` (a proposal without a junction of >= 5 cells "
             "is kept above this peak probability; 1.0 = never) and `support` (a junction of >= 5 cells no "
             "kept proposal touches is added above this peak probability on its mask; 1.0 = never). Mean event F1 on "
             "the training world's sets (" + ", ".join(f"`{s}`" for s in train_sets) + ") and on all sets; "
             "sets with recall >= 90 % and precision >= 85 % (issue 13's targets). **Bold**: the defaults "
             f"(`CHECK_SURE` {CHECK_SURE}, `CHECK_SUPPORT` {CHECK_SUPPORT}).\n",
             "| detector | mean F1, training world | mean F1, all sets | sets meeting 90 / 85 |",
             "|---|---:|---:|---:|"]
    for key, f_train, f_all, met in rows:
        name = label.get(key, f"checked, {key}")
        if key == default:
            name = f"**{name}**"
        lines.append(f"| {name} | {f_train:.1f} | {f_all:.1f} | {met} / {len(results)} |")
    lines += ["", "Per set, event recall / precision % (network alone, the defaults, baseline):", "",
              "| set | network | checked (defaults) | baseline |", "|---|---:|---:|---:|"]
    for s, r in results.items():
        lines.append(f"| `{s}` | {_cell(r['model'])} | {_cell(r[default])} | "
                     f"{_cell(r['baseline'])} |")
    md = "\n".join(lines) + "\n"
    report = {"generated": stamp, "script": "benchmarks/check_settings.py", "model": Path(args.model).name,
              "backend": args.backend, "n_images": args.n, "size": args.size, "machine": {"cpu": cpu_model()},
              "defaults": {"sure": CHECK_SURE, "support": CHECK_SUPPORT}, "grid": list(grid.values()), "sets": results,
              "table_markdown": md}
    write_results(args.out, report, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

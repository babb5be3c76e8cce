"""Generalisation measured, not assumed (issue 13, item 3): the model and the baseline on other worlds.

    .venv/bin/python benchmarks/generalisation.py [--n 6] [--size 1024] [--model rdf.yaml]
        [--out benchmarks/results/generalisation] [--keep DIR] [--check]

For ``default`` (``generate()``'s defaults: the setting the current demo weights were trained on),
the in-distribution held-out world (``heldout``: the training distribution, other seeds) and
every "other world" of :mod:`rosette_bmz.worlds` (one setting outside the training ranges:
12 px or 45 px cells, 4-5 px lines, noise 1, a Poisson-disc or jittered-hexagon tiling), ``--n``
images of ``--size`` px are written with ``rosette-bmz synth --world NAME --seed 0`` (generator
seeds ``world.seed_offset + i``) and scored with :func:`rosette_bmz.evaluate.evaluate_dataset`:
the model (``--model``, default the committed demo package, onnx backend, published tiling)
against the classical baseline (vertex multiplicity on the outlines), both against the ground
truth of the one rosette definition (planted and chance rosettes alike; 4-cell junctions are the
decoys). Besides the model-card rows, the recall is split into planted rosettes and rosettes
that arose by chance in the tiling (``meta["rosettes"][i]["planted"]``). ``--check``: the table
shows the model's proposals checked against the vertex graph (``rosette-bmz predict --check``)
instead of the network's own; the JSON has both (``model``, ``checked``).

Writes ``<out>.json`` (every number, the world settings, the machine) and ``<out>.md`` (the
table); ``--copy-to`` (default ``training/demo``) gets both files too. These are the numbers new
weights have to beat.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402
from _sets import write_results  # noqa: E402

from rosette_bmz.baseline import detect_rosettes  # noqa: E402
from rosette_bmz.evaluate import checked_probability, evaluate_dataset, load_eval_dataset  # noqa: E402
from rosette_bmz.runner import load_predictor, predict  # noqa: E402
from rosette_bmz.synth import write_dataset  # noqa: E402
from rosette_bmz.worlds import OTHER_WORLDS, get_world  # noqa: E402

SETS = ("default", "heldout") + OTHER_WORLDS
KEYS = ("event_recall", "event_precision", "pixel_dice", "decoy_hit_rate", "false_proposals_per_image",
        "pixel_f1", "n_detected", "n_rosettes", "n_proposals", "n_proposals_matched", "n_decoys", "n_decoys_hit")


def split_recall(items, probs: dict[str, np.ndarray]) -> dict[str, int]:
    """Detected planted / chance rosettes (>= 1 pixel at p >= 0.5) of every image, and among the
    chance ones the extrusion kind (a small cell closed by >= 5 cells, mostly from splits and
    fragments of the segmentation)."""
    out = {"planted": 0, "planted_detected": 0, "chance": 0, "chance_detected": 0,
           "chance_extrusion": 0, "chance_extrusion_detected": 0}
    for it in items:
        p = probs[it.name] >= 0.5
        for r in it.meta["rosettes"]:
            keys = ["planted"] if r["planted"] else ["chance"] + (["chance_extrusion"] if r["kind"] == "extrusion"
                                                                  else [])
            hit = bool(p[it.rosettes == r["id"]].any())
            for key in keys:
                out[key] += 1
                out[key + "_detected"] += hit
    return out


def run_set(name: str, data: Path, n: int, size: int, predictor, mode: str, tta: bool = False,
            check: bool = False) -> dict:
    t0 = time.perf_counter()
    write_dataset(data, n=n, size=size, seed=0, world=name, progress=False)
    t_gen = time.perf_counter() - t0
    items = load_eval_dataset(data)
    probs: dict[str, np.ndarray] = {}
    base: dict[str, np.ndarray] = {}
    lookup = {it.outlines.tobytes(): it.name for it in items}

    def name_of(x: np.ndarray) -> str:
        """The image whose model input ``x`` is (its outline channel)."""
        return lookup[(x[1] > 0).astype(items[0].outlines.dtype).tobytes()]

    def predict_fn(x: np.ndarray) -> np.ndarray:
        prob = predict(x, predictor, mode=mode, tta=tta)
        probs[name_of(x)] = prob
        return prob

    rep = evaluate_dataset(None, items, predict_fn=predict_fn, baseline=True)
    for it in items:
        base[it.name] = (detect_rosettes(it.outlines, "outlines").rosettes > 0).astype(np.float32)
    checked: dict[str, np.ndarray] = {}
    if check:   # each image checked once: the maps are scored as a detector and split below
        t0 = time.perf_counter()
        checked = {it.name: checked_probability(it.outlines, probs[it.name]) for it in items}
        t_check = time.perf_counter() - t0
        scored = evaluate_dataset(None, items, baseline=False, predict_fn=lambda x: checked[name_of(x)])
        rep["metrics"]["checked"] = scored["metrics"]["model"]
        rep["seconds"]["checked"] = round(t_check, 3)
    metas = [it.meta for it in items]
    settings = [{k: m["params"][k] for k in ("cell_diameter", "gradient", "elongation", "noise", "outline_style",
                                             "line_width", "tiling", "lloyd_iterations", "rosette_density",
                                             "wedge_fraction", "tissue_free", "tissue_free_shape")} for m in metas]
    return {
        "world": get_world(name).describe(),
        "images": [{"seed": m["seed"], "n_cells": m["n_cells"], "n_rosettes": m["n_rosettes"],
                    "n_planted": m["n_planted"], "n_chance": m["n_chance_rosettes"], "n_decoys": m["n_decoys"],
                    "settings": s} for m, s in zip(metas, settings)],
        "model": {**{k: rep["metrics"]["model"][k] for k in KEYS}, **split_recall(items, probs)},
        "baseline": {**{k: rep["metrics"]["baseline"][k] for k in KEYS}, **split_recall(items, base)},
        **({"checked": {**{k: rep["metrics"]["checked"][k] for k in KEYS}, **split_recall(items, checked)}}
           if check else {}),
        "seconds": {"generate": round(t_gen, 1), **rep["seconds"]},
    }


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _ratio(a: int, b: int) -> str:
    return "n/a" if not b else f"{100 * a / b:.1f}"


def table(results: dict[str, dict], detector: str = "model") -> str:
    lines = ["| set | differs from training | images | rosettes (chance) | 4-cell decoys | event recall % | "
             "recall, chance rosettes % | recall, chance extrusions % | recall, planted % | event precision % | "
             "pixel Dice | decoys hit % | false proposals / image |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        m, b = r[detector], r["baseline"]
        n_ch = sum(i["n_chance"] for i in r["images"])
        lines.append(
            f"| `{name}` | {r['world']['description']} | {len(r['images'])} | {m['n_rosettes']} ({n_ch}) | "
            f"{m['n_decoys']} | {_pct(m['event_recall'])} / {_pct(b['event_recall'])} | "
            f"{_ratio(m['chance_detected'], m['chance'])} / {_ratio(b['chance_detected'], b['chance'])} | "
            f"{_ratio(m.get('chance_extrusion_detected', 0), m.get('chance_extrusion', 0))} / "
            f"{_ratio(b.get('chance_extrusion_detected', 0), b.get('chance_extrusion', 0))} | "
            f"{_ratio(m['planted_detected'], m['planted'])} / {_ratio(b['planted_detected'], b['planted'])} | "
            f"{_pct(m['event_precision'])} / {_pct(b['event_precision'])} | "
            f"{m['pixel_dice']:.2f} / {b['pixel_dice']:.2f} | {_pct(m['decoy_hit_rate'])} / "
            f"{_pct(b['decoy_hit_rate'])} | {m['false_proposals_per_image']:.1f} / "
            f"{b['false_proposals_per_image']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6, help="images per set (default 6)")
    ap.add_argument("--size", type=int, default=1024, help="image side in px (default 1024)")
    ap.add_argument("--model", default=str(ROOT / "rdf.yaml"), help="rdf.yaml or checkpoint (default: the demo package)")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--mode", default="published", choices=("published", "halo"))
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated world names")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generalisation"),
                    help="output stem: writes <out>.json and <out>.md")
    ap.add_argument("--copy-to", default=str(ROOT / "training" / "demo"), help="also copy both files here ('' = no)")
    ap.add_argument("--keep", default=None, help="keep the generated datasets in this folder")
    ap.add_argument("--tta", action="store_true", help="model with test-time augmentation (8 rotations / flips)")
    ap.add_argument("--check", action="store_true",
                    help="tabulate the proposals checked against the vertex graph (predict --check)")
    ap.add_argument("--note", default="", help="a sentence about the model, appended to the table's description")
    args = ap.parse_args(argv)

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        get_world(s)
    predictor = load_predictor(args.model, args.backend)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="generalisation_"))
    results = {}
    try:
        for name in sets:
            t0 = time.perf_counter()
            results[name] = run_set(name, work / name, args.n, args.size, predictor, args.mode, args.tta,
                                    args.check)
            m, b = results[name]["checked" if args.check else "model"], results[name]["baseline"]
            print(f"{name:12s} rosettes {m['n_rosettes']:5d}  recall model {_pct(m['event_recall'])} / baseline "
                  f"{_pct(b['event_recall'])}  precision {_pct(m['event_precision'])} / {_pct(b['event_precision'])}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        predictor.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    model_name = Path(args.model).name
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = (f"# Generalisation: model vs classical baseline on other worlds\n\n"
          f"`benchmarks/generalisation.py` ({stamp}): per set {args.n} synthetic images of {args.size}² "
          f"(`rosette-bmz synth --world NAME --seed 0`), model `{model_name}` ({args.backend} backend, "
          f"{args.mode} tiling" + (", test-time augmentation: mean of the 8 rotations / flips" if args.tta else "")
          + ")" + (", its proposals checked against the vertex graph (`rosette-bmz predict --check`: kept with "
                   "a junction of >= 5 cells or p > 0.9, plus the junctions of >= 5 cells of the baseline's graph "
                   "no kept proposal touches where p > 0.2)" if args.check else "")
          + " / baseline (vertex multiplicity on the outlines). Ground truth: the one "
          "rosette definition on each image's label image (docs/metrics.md, \"What a rosette is\"): planted and "
          "chance rosettes alike; decoys are the 4-cell junctions away from rosettes. Each cell reads "
          "**model / baseline**; event recall = rosettes with >= 1 px at p >= 0.5; event precision = "
          "proposals (p > 0.5, >= 10 px) on a rosette; pixel Dice soft, mean per image; decoys hit = 4-cell "
          "junctions with a proposal within a quarter cell diameter. \"Differs from training\" refers to the "
          "training world of `rosette_bmz/worlds.py`." + (f" {args.note}" if args.note else "") + "\n\n"
          + table(results, "checked" if args.check else "model") + "\n")
    report = {"generated": stamp, "script": "benchmarks/generalisation.py", "model": model_name,
              "backend": args.backend, "mode": args.mode, "tta": args.tta, "check": args.check, "n_images": args.n,
              "size": args.size,
              "machine": {"cpu": cpu_model(), "python": platform.python_version()},
              "sets": results, "table_markdown": md}
    write_results(args.out, report, md, args.copy_to)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

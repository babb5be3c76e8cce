"""The review loop's worth (Cellpose 2.0 fig. 4 style), played by a perfect reviewer.

    nice -n 10 .venv/bin/python benchmarks/review_loop.py [--rounds 2,24,1,4,8] [--quick] [--world NAME]

A tissue world the shipped demo weights were not trained on: ``generate(512, seed,
cell_diameter=16, noise=1.0)`` (the pre-issue-13 demo weights saw 24 px cells at noise 0.5; the
issue-13 weights saw 12-48 px cells at noise 0-0.8, so for them it is the noise). The perfect reviewer's corrections are the true masks. For each
number of corrected images n, one review round (``review.yaml``: the napari widget's
"Fine-tune") starts from the shipped weights on images 7100..7100+n-1 of that world, and the
result is scored on 6 held-out images of the world (seeds 7000-7005) and on 12 images of the
world the starting weights came from (read off their sidecar: ``train_wide`` for the shipped
weights, the default generator for the pre-issue-13 ones; seeds 9100-9111: forgetting; the
round replays other images of that world, ``review.yaml`` ``data.replay``). The
"full dataset" line is the same round, the same number of steps (so the same time), on 24
images. Writes ``benchmarks/results/review_loop.json`` after every round and draws
``docs/review_loop.png`` (numpy + Pillow).

``--world NAME`` plays the same loop on a named "other world" of :mod:`rosette_bmz.worlds`
instead (e.g. ``poisson``: a Poisson-disc tiling, which no shipped weights were trained on;
``generate_world(512, seed, NAME)``, the same seeds shifted by the world's seed offset, and 18
held-out images, seeds 7000-7017, as its rosettes are sparser than at 16 px cells).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rosette_bmz.evaluate import checked_probability  # noqa: E402
from rosette_bmz.metrics import MetricsAccumulator  # noqa: E402
from rosette_bmz.synth import generate, generate_world  # noqa: E402

DEMO = ROOT / "rosette_bmz" / "data" / "rosette_demo.pt"
NEW_WORLD = dict(cell_diameter=16, noise=1.0)
OLD_WORLD = dict(noise=0.5)
SIZE = 512
TEST_SEEDS = range(7000, 7006)
#: Held-out images of a named world (``--world``): its rosettes are sparser than at 16 px cells.
WORLD_TEST_SEEDS = range(7000, 7018)
OLD_SEEDS = range(9100, 9112)
POOL_SEED = 7100
RESULTS = ROOT / "benchmarks" / "results" / "review_loop.json"
#: The review round's forgetting guards and arithmetic, as the runs used them (filled by one_round).
ROUND_CONFIG: dict = {}
FIGURE = ROOT / "docs" / "review_loop.png"


def world_image(seed: int, world: dict | str):
    """One 512² image of ``world``: ``generate()`` arguments, or the name of a world."""
    return generate_world(SIZE, seed, world) if isinstance(world, str) else generate(SIZE, seed=seed, **world)


def score(model: Path, seeds, world: dict | str, tta: bool = False) -> dict:
    """Event recall / precision of ``model`` on images of ``world`` (generate() arguments, or a world name);
    ``checked``: the same for its proposals checked against the vertex graph (``predict --check``);
    ``tta``: the probability is the mean over the 8 rotations / flips."""
    from rosette_bmz.inputs import from_outlines
    from rosette_bmz.runner import load_predictor, predict

    acc = MetricsAccumulator(threshold=0.5, min_size=10)
    checked = MetricsAccumulator(threshold=0.5, min_size=10)
    with load_predictor(model, "torch", threads=2) as pred:
        for s in seeds:
            g = world_image(s, world)
            prob = predict(from_outlines(g.outlines), pred, tta=tta)
            acc.add(prob, g.rosettes, g.meta.get("decoys", []), name=str(s))
            checked.add(checked_probability(g.outlines, prob), g.rosettes, g.meta.get("decoys", []), name=str(s))
    m, c = acc.summary(), checked.summary()
    return {"recall": round(float(m["event_recall"]), 4), "precision": round(float(m["event_precision"]), 4),
            "rosettes": int(m["n_rosettes"]), "proposals": int(m["n_proposals"]),
            "checked": {"recall": round(float(c["event_recall"]), 4),
                        "precision": round(float(c["event_precision"]), 4), "proposals": int(c["n_proposals"])}}


def corrections(folder: Path, n: int, world: dict | str) -> Path:
    """What the widget saves after a perfect review of n images: <name>_outlines.tif + _rosettes.tif."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        g = world_image(POOL_SEED + i, world)
        tifffile.imwrite(folder / f"w{i:02d}_outlines.tif", g.outlines.astype(np.uint8))
        tifffile.imwrite(folder / f"w{i:02d}_rosettes.tif", g.rosettes.astype(np.uint32))
    return folder


def one_round(n: int, work: Path, quick: bool, init: Path, old_world: dict | str, changes: dict | None = None,
              tta: bool = False, new_world: dict | str = NEW_WORLD, test_seeds=TEST_SEEDS) -> dict:
    from rosette_bmz.training.config import TrainConfig
    from rosette_bmz.training.train import resolve_config, train

    corr = corrections(work / f"corr{n}", n, new_world)
    cfg, _ = resolve_config("review", init=str(init), images=str(corr), masks=str(corr), out=str(work / f"run{n}"))
    if changes:   # --set: review.yaml variants, validated like a config file
        raw = cfg.model_dump()
        for key, value in changes.items():
            *parents, leaf = key.split(".")
            node = raw
            for part in parents:
                node = node[part]
            node[leaf] = value
        cfg = TrainConfig.model_validate(raw)
        ROUND_CONFIG["changes"] = changes
    cfg.threads = 2
    if quick:
        cfg.optim.epochs = 1
    t0 = time.monotonic()
    res = train(cfg, progress=False)
    seconds = time.monotonic() - t0
    ROUND_CONFIG.update(replay=cfg.data.replay.model_dump(), precision=cfg.optim.precision, l2sp=cfg.optim.l2sp)
    steps = cfg.optim.epochs * -(-cfg.data.samples_per_epoch // cfg.optim.batch_size)
    return {"n_images": n, "seconds": round(seconds, 1), "steps": steps, "epochs": res.epochs_run,
            "new_world": score(res.best, test_seeds, new_world, tta),
            "old_world": score(res.best, OLD_SEEDS, old_world, tta)}


def draw(results: dict, path: Path, ylim: tuple[float, float] = (0.0, 1.0)) -> None:
    """Recall and precision on the new world against the number of corrected images (y axis: ``ylim``)."""
    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 760, 420, 70, 200, 30, 60
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    rounds = sorted((r for r in results["rounds"] if r["n_images"] <= 8), key=lambda r: r["n_images"])
    full = next((r for r in results["rounds"] if r["n_images"] > 8), None)
    xs = [1, 2, 4, 8]
    px = lambda n: L + (np.log2(n) / 3) * (W - L - R)                       # noqa: E731
    lo, hi = ylim
    py = lambda v: T + (hi - min(max(v, lo), hi)) / (hi - lo) * (H - T - B)   # noqa: E731
    step = 0.2 if hi - lo > 0.5 else 0.1
    for v in np.arange(lo, hi + step / 2, step):
        d.line([(L, py(v)), (W - R, py(v))], fill=(225, 225, 225))
        d.text((L - 35, py(v) - 6), f"{v:.1f}", fill="black")
    for n in xs:
        d.text((px(n) - 3, H - B + 8), str(n), fill="black")
    d.text((L + 80, H - B + 28), "corrected images (perfect reviewer)", fill="black")
    d.line([(L, T), (L, H - B), (W - R, H - B)], fill="black")
    colors = {"recall": (31, 119, 180), "precision": (214, 39, 40)}
    base = results["shipped"]["new_world"]
    for k, c in colors.items():
        d.line([(L, py(base[k])), (W - R, py(base[k]))], fill=c, width=1)      # shipped weights: thin
        if full:
            y = py(full["new_world"][k])
            for x0 in range(L, W - R, 12):                                       # full dataset: dashed
                d.line([(x0, y), (min(x0 + 6, W - R), y)], fill=c, width=2)
        pts = [(px(r["n_images"]), py(r["new_world"][k])) for r in rounds]
        if len(pts) > 1:
            d.line(pts, fill=c, width=3)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)
    ly = T + 10
    for k, c in colors.items():
        d.line([(W - R + 15, ly + 6), (W - R + 45, ly + 6)], fill=c, width=3)
        d.text((W - R + 50, ly), f"{k}, review round", fill="black")
        d.line([(W - R + 15, ly + 26), (W - R + 45, ly + 26)], fill=c, width=1)
        d.text((W - R + 50, ly + 20), f"{k}, shipped", fill="black")
        if full:
            d.line([(W - R + 15, ly + 46), (W - R + 22, ly + 46)], fill=c, width=2)
            d.line([(W - R + 30, ly + 46), (W - R + 37, ly + 46)], fill=c, width=2)
            d.text((W - R + 50, ly + 40), f"{k}, {full['n_images']} images", fill="black")
        ly += 70
    world = results["world"]
    what = (f"the {world!r} world" if isinstance(world, str) else
            f"new tissue world ({world['cell_diameter']} px cells, noise {world['noise']})")
    first, last = results.get("test_seeds", (TEST_SEEDS.start, TEST_SEEDS.stop - 1))   # older files: the 6
    n_test = last - first + 1
    d.text((L, 8), f"{what}: event recall / precision on {n_test} held-out images", fill="black")
    im.save(path, optimize=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", default="2,24,1,4,8", help="numbers of corrected images, in run order")
    ap.add_argument("--quick", action="store_true", help="one epoch per round (smoke run)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--figure", type=Path, default=FIGURE)
    ap.add_argument("--init", type=Path, default=DEMO,
                    help="weights the rounds start from (default the shipped demo weights); the old world is "
                         "the one they were trained on, read off their sidecar")
    ap.add_argument("--tta", action="store_true",
                    help="score with test-time augmentation (the mean of the 8 rotations / flips)")
    ap.add_argument("--world", default=None,
                    help="a named world of rosette_bmz.worlds to review instead of 16 px cells at noise 1 (e.g. poisson)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a review.yaml setting for these rounds, e.g. --set data.near_miss_fraction=0.2 "
                         "(value read as YAML; repeatable)")
    args = ap.parse_args(argv)
    import yaml

    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: need KEY=VALUE")
        changes[key.strip()] = yaml.safe_load(value)
    new_world, test_seeds = NEW_WORLD, TEST_SEEDS
    if args.world:
        from rosette_bmz.worlds import get_world

        get_world(args.world)       # an unknown name fails here, before any training
        new_world, test_seeds = args.world, WORLD_TEST_SEEDS
    from rosette_bmz.training.config import ReplayConfig
    from rosette_bmz.training.data import replay_world

    learned = replay_world(ReplayConfig(), args.init)
    old_world = OLD_WORLD if learned == "default" else learned
    import torch

    torch.set_num_threads(2)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared",
               "world": new_world, "old_world": old_world, "tta": args.tta, "size": SIZE, "config": "review.yaml",
               "init": str(args.init.relative_to(ROOT) if args.init.is_relative_to(ROOT) else args.init),
               "test_seeds": [test_seeds.start, test_seeds.stop - 1],
               "shipped": {"new_world": score(args.init, test_seeds, new_world, args.tta),
                           "old_world": score(args.init, OLD_SEEDS, old_world, args.tta)},
               "rounds": []}
    print("shipped", results["shipped"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(v) for v in args.rounds.split(",")]:
            r = one_round(n, Path(tmp), args.quick, args.init, old_world, changes, args.tta, new_world, test_seeds)
            r["forgetting"] = {k: round(results["shipped"]["old_world"][k] - r["old_world"][k], 4)
                               for k in ("recall", "precision")}
            results["rounds"].append(r)
            results["round_config"] = ROUND_CONFIG
            print(json.dumps(r), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            draw(results, args.figure)


if __name__ == "__main__":
    main()

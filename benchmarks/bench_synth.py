"""Speed and realism of the synthetic epithelium generator (issue 3).

    .venv/bin/python benchmarks/bench_synth.py [--rounds 7] [--size 1024] [--out benchmarks/results/synth.json]

Speed: ``generate(size)`` at noise 0, 0.5 and 1.0, and ``generate_world(size, seed, world)`` for
the training world and the slowest other world (``small_cells``: 12 px cells), measured in
interleaved rounds (one call of each setting per round, so a slow period of the machine hits all
settings alike) after one warm-up call each; the median is the reported time. Target: a
1024 x 1024 image in <= 2 s (<= 3 s for 12 px cells).

Realism: over a few default images, the distribution of neighbour numbers (polygon classes)
of interior cells of the clean tiling (epithelia: mostly hexagons, ~25 % pentagons, ~20 %
heptagons), the outline pixel fraction, cells / rosettes / decoys per image, the rosette k and
kind histogram, how many rosettes the definition labels besides the planted ones, and at noise
0, 0.5 and 1 how many planted rosettes and decoys show exactly k cells at their centre in the
(noisy) label image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

from rosette_bmz.files import atomic_path  # noqa: E402
from rosette_bmz.synth import generate, generate_world  # noqa: E402

TARGET_S = 2.0


def machine() -> dict:
    cpu = cpu_model()
    import scipy

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": affinity, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "note": "machine shared with other jobs; medians of interleaved rounds"}


def neighbour_counts(labels: np.ndarray) -> np.ndarray:
    """Neighbour number of every interior cell (8-connected contacts, image-border cells excluded)."""
    lab = labels
    pairs = []
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :]), (lab[:-1, :-1], lab[1:, 1:]),
                 (lab[:-1, 1:], lab[1:, :-1])):
        sel = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])], 1))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    deg = np.bincount(pairs.ravel(), minlength=int(lab.max()) + 1)
    exclude = np.zeros(deg.size, bool)
    exclude[np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))] = True
    # cells touching tissue-free pixels are tissue-edge cells
    bg = lab == 0
    near_bg = np.zeros_like(bg)
    near_bg[:-1] |= bg[1:]
    near_bg[1:] |= bg[:-1]
    near_bg[:, :-1] |= bg[:, 1:]
    near_bg[:, 1:] |= bg[:, :-1]
    exclude[np.unique(lab[near_bg])] = True
    exclude[0] = True
    return deg[~exclude & (deg > 0)]


def multiplicity_ok(img) -> tuple[int, int]:
    """How many planted rosettes and decoys show exactly k cells at their centre in ``labels``.

    Vertex kind / 4-cell junction: distinct labels in a disc of 0.3 local cell diameters;
    extrusion kind / small cell: distinct labels within 6 px of the central cell.
    """
    from scipy import ndimage

    ok = 0
    items = [r for r in img.meta["rosettes"] + img.meta["decoys"] if r["planted"]]
    lab = img.labels
    d = img.meta["cell_diameter"]
    for r in items:
        if r["central"]:
            m = np.isin(lab, r["central"])
            ring = ndimage.binary_dilation(m, iterations=6) & ~m
            cells = set(np.unique(lab[ring]).tolist()) - {0, *r["central"]}
        else:
            rad = max(4, round(0.3 * r.get("mask_radius", d)))
            y, x = int(round(r["y"])), int(round(r["x"]))
            yy, xx = np.mgrid[-rad:rad + 1, -rad:rad + 1]
            sub = lab[y - rad:y + rad + 1, x - rad:x + rad + 1]
            cells = set(np.unique(sub[yy ** 2 + xx ** 2 <= rad * rad]).tolist()) - {0}
        ok += len(cells) == r["k"]
    return ok, len(items)


def realism(n_images: int, size: int) -> dict:
    degs, frac, n_cells, n_ros, n_dec, ks, kinds, n_chance, n_planted, n_found = ([] for _ in range(10))
    mult = {}
    for noise in (0.0, 1.0):
        a = b = 0
        for i in range(n_images):
            x, y = multiplicity_ok(generate(size, seed=1000 + i, noise=noise))
            a, b = a + x, b + y
        mult[f"noise_{noise:g}"] = f"{a}/{b}"
    mult_ok = mult_n = 0
    for i in range(n_images):
        img = generate(size, seed=1000 + i)
        degs.append(neighbour_counts(img.clean_labels))
        frac.append(float(img.outlines.mean()))
        n_cells.append(img.meta["n_cells"])
        n_ros.append(len(img.meta["rosettes"]))
        n_dec.append(len(img.meta["decoys"]))
        n_chance.append(img.meta["n_chance_rosettes"])
        n_planted.append(img.meta["n_planted"])
        n_found.append(img.meta["n_planted_found"])
        ks += [r["k"] for r in img.meta["rosettes"]]
        kinds += [r["kind"] for r in img.meta["rosettes"]]
        a, b = multiplicity_ok(img)
        mult_ok += a
        mult_n += b
    deg = np.concatenate(degs)
    hist = np.bincount(deg, minlength=10)
    return {
        "images": n_images, "size": size, "settings": "generate(size, seed=1000+i), all other arguments default",
        "interior_cells": int(deg.size),
        "polygon_fractions": {str(n): round(float(hist[n] / deg.size), 4) for n in range(3, 10) if hist[n]},
        "outline_pixel_fraction_mean": round(float(np.mean(frac)), 4),
        "cells_per_image_mean": round(float(np.mean(n_cells)), 1),
        "rosettes_per_image_mean": round(float(np.mean(n_ros)), 2),
        "decoys_per_image_mean": round(float(np.mean(n_dec)), 2),
        "chance_rosettes_per_image_mean": round(float(np.mean(n_chance)), 2),
        "planted_rosettes_found_by_the_definition": f"{sum(n_found)}/{sum(n_planted)}",
        "rosette_k_histogram": {str(k): int(v) for k, v in zip(*np.unique(ks, return_counts=True))},
        "rosette_kinds": {str(k): int(v) for k, v in zip(*np.unique(kinds, return_counts=True))},
        "structures_with_exactly_k_cells_at_centre_in_labels": {"noise_0.5": f"{mult_ok}/{mult_n}", **mult},
    }


def speed(size: int, rounds: int) -> dict:
    calls = {f"noise_{nz:g}": (lambda s, nz=nz: generate(size, seed=s, noise=nz)) for nz in (0.0, 0.5, 1.0)}
    for world in ("train", "small_cells"):
        calls[f"world_{world}"] = lambda s, world=world: generate_world(size, s, world)
    for fn in calls.values():  # warm-up (imports, caches)
        fn(0)
    times = {k: [] for k in calls}
    for r in range(rounds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn(r + 1)
            times[k].append(time.perf_counter() - t0)
    return {k: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4), "max_s": round(max(t), 4)}
            for k, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--realism-images", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "synth.json"))
    args = ap.parse_args()

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    sp = speed(args.size, args.rounds)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    worst = max(v["median_s"] for k, v in sp.items() if k != "world_small_cells")
    result = {
        "benchmark": "synth.generate", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "load_average_1min_before_after": [
            None if load_before is None else round(load_before[0], 2),
            None if load_after is None else round(load_after[0], 2)],
        "size": [args.size, args.size], "rounds": args.rounds,
        "target_s": TARGET_S, "speed": sp, "worst_median_s": worst,
        "meets_target": worst <= TARGET_S and sp["world_small_cells"]["median_s"] <= 1.5 * TARGET_S,
        "realism": realism(args.realism_images, args.size),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Measure how the runner's tilings differ from one whole-image pass (numbers for docs/tiling.md).

    .venv/bin/python benchmarks/tiling_agreement.py --checkpoint rosette_bmz/data/rosette_demo.pt \
        --size 1024 --out benchmarks/results/tiling_demo.json

On one synthetic outline image (rosette_bmz.synth, fixed seed) with the onnx backend:

1. halo mode vs one whole-image pass over the same padded image (the runner's default
   padding; benchmarks/results/tiling_demo.json was recorded with the former default of a
   64 px zero border, today's default adds none): at tile 768 for several tile contexts, then at the default context for several
   maximum tile sizes (and bioimageio.core's own blocking if ``--package`` is given): max
   |diff| over the image and > 64 px from its edge;
2. published mode (512 window, 128 overlap, averaging) vs the whole-image pass: max / mean
   |diff|, and how many proposals (threshold 0.5, >= 10 px) the two share;
3. border padding: a 512 crop from the middle of the image predicted with zero, symmetric
   and reflect padding, and with none (the network's own zero padding at the crop edge),
   each compared with the prediction of the full image on those pixels (the truth, with
   real context), in bands by distance from the crop edge; and the number of proposals
   within 32 px of the border for each pad mode;
4. shift: the same pixels predicted in windows moved by 4, 8, 12, 16 px (> 128 px from the
   window edges);
5. onnx seconds per image for halo-mode tile sizes (in-process, session reused, median of
   ``--repeats``; the machine is shared, so compare within one run only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosette_bmz.files import atomic_path  # noqa: E402
from rosette_bmz.inputs import from_outlines  # noqa: E402
from rosette_bmz.runner import load_predictor, predict  # noqa: E402
from rosette_bmz.proposals import find_proposals  # noqa: E402


def _diff(a: np.ndarray, b: np.ndarray, border: int = 64) -> dict:
    d = np.abs(a.astype(np.float64) - b)
    inner = d[border:-border, border:-border]
    return {"max": float(d.max()), "mean": float(d.mean()), "max_beyond_64px": float(inner.max())}


def _shared_proposals(a: np.ndarray, b: np.ndarray) -> dict:
    la, ra = find_proposals(a)
    lb, rb = find_proposals(b)
    shared = sum(1 for r in ra if lb[int(round(r["centroid_y"])), int(round(r["centroid_x"]))] > 0)
    return {"n_a": len(ra), "n_b": len(rb), "a_centroid_inside_b": shared,
            "pixel_disagreement": int(((la > 0) != (lb > 0)).sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tiles", default="256,384,512,768,1152")
    ap.add_argument("--contexts", default="64,80,96,112")
    ap.add_argument("--package", default=None, help="rdf.yaml of the same weights: also measure bioimageio.core")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from rosette_bmz.synth import generate

    s = generate(args.size, seed=args.seed)
    x = from_outlines(s.outlines)
    pred = load_predictor(args.checkpoint, "onnx", threads=args.threads)
    big = args.size + 2 * pred.halo + 16
    whole = predict(x, pred, tile=big)   # one tile = one whole-image pass over the padded image
    res: dict = {"checkpoint": str(args.checkpoint), "base_channels": pred.base_channels, "size": args.size,
                 "seed": args.seed, "halo": pred.halo, "machine": {"platform": platform.platform(),
                 "cpus": os.cpu_count(), "threads": pred.backend.threads}}

    import dataclasses

    res["context_vs_whole_tile768"] = {}
    for c in [int(v) for v in args.contexts.split(",")]:
        d = _diff(predict(x, dataclasses.replace(pred, context=c), tile=768), whole)
        res["context_vs_whole_tile768"][c] = d
        print("context", c, d, flush=True)
    # the network is not shift-invariant: a window moved by k px (k not a multiple of 16)
    # predicts the same pixels differently (the runner keeps every tile on the 16 px grid)
    res["grid_shift"] = {}
    n = min(args.size, 800)
    ref = predict(x[:, :n, :n], pred, tile=big)
    for k in (4, 8, 12, 16):
        o = predict(np.ascontiguousarray(x[:, k:k + n - 32, k:k + n - 32]), pred, tile=big)
        d = np.abs(o[128:-128, 128:-128] - ref[k + 128:k + n - 32 - 128, k + 128:k + n - 32 - 128])
        res["grid_shift"][k] = {"max": float(d.max()), "mean": float(d.mean())}
    print("grid shift", res["grid_shift"], flush=True)

    res["halo_vs_whole"] = {}
    for t in [int(v) for v in args.tiles.split(",")]:
        res["halo_vs_whole"][t] = _diff(predict(x, pred, tile=t), whole)
        print("halo tile", t, res["halo_vs_whole"][t], flush=True)
    if args.package:
        with load_predictor(args.package, "bioimageio") as bio:
            t0 = time.perf_counter()
            b = predict(x, bio)
            res["bioimageio_blocked_vs_whole"] = {**_diff(b, whole), "block": bio.backend._block_size(),
                                                  "seconds": time.perf_counter() - t0}
        print("bioimageio", res["bioimageio_blocked_vs_whole"], flush=True)

    pub = predict(x, pred, mode="published")
    res["published_vs_whole"] = {**_diff(pub, whole), "proposals": _shared_proposals(pub, whole)}
    print("published", res["published_vs_whole"], flush=True)

    # border padding: a crop predicted on its own vs the same pixels predicted with real context
    c0, c = args.size // 4, args.size // 2
    crop = x[:, c0:c0 + c, c0:c0 + c]
    truth = whole[c0:c0 + c, c0:c0 + c]
    bands = [(0, 8), (8, 16), (16, 32), (32, 64), (64, 128), (128, c // 2)]

    def banded(p: np.ndarray) -> dict:
        d = np.abs(p.astype(np.float64) - truth)
        yy, xx = np.mgrid[:c, :c]
        dist = np.minimum(np.minimum(yy, c - 1 - yy), np.minimum(xx, c - 1 - xx))
        return {f"{a}-{b}px": {"max": float(d[(dist >= a) & (dist < b)].max()),
                               "mean": float(d[(dist >= a) & (dist < b)].mean())} for a, b in bands}

    def near_border(rows: list, h: int, w: int, d: int = 32) -> int:
        return sum(1 for r in rows if min(r["centroid_y"], r["centroid_x"], h - 1 - r["centroid_y"],
                                          w - 1 - r["centroid_x"]) < d)

    res["proposals_by_pad_mode"] = {"ground_truth_rosettes": len(s.meta["rosettes"])}
    for mode in ("constant", "symmetric", "reflect"):
        _, rows = find_proposals(predict(x, pred, pad=mode))
        res["proposals_by_pad_mode"][mode] = {"n": len(rows), "within_32px_of_border": near_border(
            rows, args.size, args.size)}
    _, rows = find_proposals(truth)
    res["proposals_by_pad_mode"]["crop_with_context"] = {"n": len(rows), "within_32px_of_border": near_border(
        rows, c, c)}
    for mode in ("constant", "symmetric", "reflect"):
        _, rows = find_proposals(predict(crop, pred, pad=mode))
        res["proposals_by_pad_mode"][f"crop_{mode}"] = {"n": len(rows), "within_32px_of_border": near_border(
            rows, c, c)}
    print("proposals", res["proposals_by_pad_mode"], flush=True)

    res["border_padding_vs_context"] = {}
    for mode in ("constant", "symmetric", "reflect"):
        res["border_padding_vs_context"][mode] = banded(predict(crop, pred, tile=big, pad=mode))
    import torch  # only for the "no padding" variant: the network's own zero padding at the edge

    from rosette_bmz.checkpoint import load_checkpoint

    model = load_checkpoint(args.checkpoint).model
    with torch.no_grad():
        none = model(torch.from_numpy(np.ascontiguousarray(crop[None])))[0, 0].numpy()
    res["border_padding_vs_context"]["none"] = banded(none)
    for k, v in res["border_padding_vs_context"].items():
        print("pad", k, {b: round(m["mean"], 5) for b, m in v.items()}, flush=True)

    res["seconds_per_image"] = {}
    for t in [int(v) for v in args.tiles.split(",")]:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predict(x, pred, tile=t)
            times.append(time.perf_counter() - t0)
        res["seconds_per_image"][t] = float(np.median(times))
        print("seconds tile", t, res["seconds_per_image"][t], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

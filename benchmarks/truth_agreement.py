"""How far the clean tiling's rosettes are from the ones the segmentation shows (issue 13, stop 25).

Until stop 25 the generator read its ground truth off the clean tiling, before segmentation noise;
the network reads outlines of the noisy segmentation. This script applies the one rosette rule
(``rosette_bmz.definition.find_rosettes``) to both label images of the same generated images and
scores the segmentation's rosettes against the clean tiling's, with the evaluation's own event
rule (a rosette is found when a mask of the other side overlaps it): what a perfect reader of the
outlines would score against the old truth. It needs no network, so it runs in a minute.

    .venv/bin/python benchmarks/truth_agreement.py --n 4 --size 768
    -> benchmarks/results/truth_agreement.{json,md}
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rosette_bmz.synth import generate_world
from rosette_bmz.worlds import OTHER_WORLDS

RESULTS = Path(__file__).resolve().parent / "results"


def _overlapping(a: np.ndarray, b: np.ndarray) -> int:
    """Instances of ``a`` (uint labels, 0 = none) that share a pixel with any instance of ``b``."""
    return int(np.unique(a[(a > 0) & (b > 0)]).size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4, help="images per world")
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--worlds", nargs="+", default=["train_wide", "heldout", *OTHER_WORLDS])
    ap.add_argument("--out", default=str(RESULTS / "truth_agreement"))
    args = ap.parse_args(argv)

    rows = []
    for world in args.worlds:
        n_seg = n_clean = seg_on_clean = clean_on_seg = 0
        planted = planted_seg = 0
        for i in range(args.n):
            seg = generate_world(args.size, i, world)
            clean = generate_world(args.size, i, world, truth="clean")
            assert np.array_equal(seg.outlines, clean.outlines)
            n_seg += int(seg.rosettes.max())
            n_clean += int(clean.rosettes.max())
            clean_on_seg += _overlapping(clean.rosettes, seg.rosettes)
            seg_on_clean += _overlapping(seg.rosettes, clean.rosettes)
            planted += seg.meta["n_planted"]
            planted_seg += seg.meta["n_planted_found"]
        rows.append({"world": world, "images": args.n, "clean_rosettes": n_clean, "segmentation_rosettes": n_seg,
                     "recall": clean_on_seg / max(n_clean, 1), "precision": seg_on_clean / max(n_seg, 1),
                     "planted": planted, "planted_in_segmentation": planted_seg})
        r = rows[-1]
        print(f"{world:12s} clean {n_clean:4d}  segmentation {n_seg:4d}  recall {r['recall']:.3f}  "
              f"precision {r['precision']:.3f}  planted {planted_seg}/{planted}", flush=True)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = ["# The segmentation's rosettes against the clean tiling's\n",
          f"`benchmarks/truth_agreement.py` ({stamp}): per world {args.n} images of {args.size}² (seeds 0-{args.n - 1}). "
          "The rule applied to the final label image (gaps closed; the ground truth since stop 25) scored against "
          "the rule applied to the clean tiling before segmentation noise (the ground truth until then), as a "
          "detector: recall = clean-tiling rosettes overlapped by a segmentation rosette, precision = segmentation "
          "rosettes overlapping a clean-tiling rosette. This is the best a perfect reader of the outlines could "
          "score against the old truth.\n",
          "| world | clean-tiling rosettes | segmentation rosettes | recall | precision | planted found in the segmentation |",
          "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['world']} | {r['clean_rosettes']} | {r['segmentation_rosettes']} | {100 * r['recall']:.1f} % "
                  f"| {100 * r['precision']:.1f} % | {r['planted_in_segmentation']}/{r['planted']} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"date": stamp, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Draw docs/truth_segmentation_vs_clean.png: where the two ground truths of one image differ.

    .venv/bin/python docs/truth_figure.py [--out docs/truth_segmentation_vs_clean.png]

numpy + Pillow only. Two 1:1 crops of one generated image (noise 0.8), shown as the model reads
them (outlines, dark on white). Filled: the rosettes of the rule applied to the final label image
(the ground truth since stop 25), orange where the clean tiling has a rosette there too, green
where only the segmentation has one (a merge or jitter made it); red rings: rosettes of the clean
tiling (the truth before) that the segmentation no longer shows, so that no reader of the
outlines could find them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosette_bmz.synth import generate  # noqa: E402

BOTH = np.array([255, 150, 40])
SEG_ONLY = np.array([40, 170, 60])
CLEAN_ONLY = (220, 30, 30)
CROP = 384
KW = dict(seed=31, noise=0.8, cell_diameter=18, tissue_free=0.0)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _panels(seg, clean, n: int = 2) -> list[tuple[int, int]]:
    """Top-left corners of the ``n`` crops (disjoint rows) holding the most disagreements."""
    lost = [(r["y"], r["x"]) for r in clean.meta["rosettes"] if not seg.rosettes[int(r["y"]), int(r["x"])]]
    new = [(r["y"], r["x"]) for r in seg.meta["rosettes"] if not clean.rosettes[int(r["y"]), int(r["x"])]]
    pts = np.array(lost + new, float).reshape(-1, 2)
    h, w = seg.labels.shape
    corners = []
    for _ in range(n):
        best, best_n = (0, 0), -1
        for y0 in range(0, h - CROP + 1, 32):
            for x0 in range(0, w - CROP + 1, 32):
                if any(abs(y0 - cy) < CROP and abs(x0 - cx) < CROP for cy, cx in corners):
                    continue
                k = int(((pts[:, 0] >= y0 + 12) & (pts[:, 0] < y0 + CROP - 12) &
                         (pts[:, 1] >= x0 + 12) & (pts[:, 1] < x0 + CROP - 12)).sum())
                if k > best_n:
                    best, best_n = (y0, x0), k
        corners.append(best)
    return corners


def draw(out: Path) -> None:
    seg, clean = generate(1024, **KW), generate(1024, truth="clean", **KW)
    assert np.array_equal(seg.outlines, clean.outlines)
    tiles = []
    for y0, x0 in _panels(seg, clean):
        sl = np.s_[y0:y0 + CROP, x0:x0 + CROP]
        rgb = np.full((CROP, CROP, 3), 255, np.float32)
        s, c = seg.rosettes[sl] > 0, clean.rosettes[sl] > 0
        for mask, colour in ((s & c, BOTH), (s & ~c, SEG_ONLY)):
            rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
        rgb[seg.outlines[sl] > 0] = (60, 60, 60)
        im = Image.fromarray(rgb.astype(np.uint8))
        d = ImageDraw.Draw(im)
        for r in clean.meta["rosettes"]:
            y, x = r["y"] - y0, r["x"] - x0
            if 0 <= y < CROP and 0 <= x < CROP and not seg.rosettes[int(r["y"]), int(r["x"])]:
                d.ellipse([x - 9, y - 9, x + 9, y + 9], outline=CLEAN_ONLY, width=3)
        tiles.append(im)
    gap, top = 12, 64
    fig = Image.new("RGB", (len(tiles) * CROP + (len(tiles) + 1) * gap, CROP + top + gap), "white")
    for i, t in enumerate(tiles):
        fig.paste(t, (gap + i * (CROP + gap), top))
    d = ImageDraw.Draw(fig)
    f = _font(14)
    d.text((gap, 6), "One image (18 px cells, noise 0.8), as the model reads it. Filled: ground truth = the rule on "
                     "the final label image", fill="black", font=f)
    d.text((gap, 24), "orange: the clean tiling has that rosette too; green: only the segmentation has it",
           fill=tuple(int(v) for v in SEG_ONLY * 0.8), font=f)
    d.text((gap, 42), "red rings: rosettes of the clean tiling (the old truth) the segmentation no longer shows",
           fill=CLEAN_ONLY, font=f)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("truth_segmentation_vs_clean.png"))
    draw(ap.parse_args().out)

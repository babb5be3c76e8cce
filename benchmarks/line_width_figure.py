"""Picture for issue 13, stop 28: two demo weights on outlines wider than they were trained on.

One 1024² image each of the ``wide_lines`` (4-5 px) and ``wider_lines`` (6 px) worlds
(``rosette-bmz synth --world NAME --seed 0``, image 0), a 384² window around its densest rosettes:
the outlines (grey) with the true rosettes (green rim), then the proposals (p >= 0.5) of the
world_err weights (trained on 1-3 px lines) and of the world_lines weights (lines widened by
1-2 px in training), red. Writes ``docs/line_width.png``.

    .venv/bin/python benchmarks/line_width_figure.py [--out docs/line_width.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
MODELS = (("world_err (1-3 px lines)", ROOT / "training/world_err/last.pt"),
          ("world_lines (widened, shipped)", ROOT / "training/world_lines/last.pt"))
WORLDS = ("wide_lines", "wider_lines")
SIDE = 384


def window(mask: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the SIDE² window holding the most rosette pixels."""
    counts = ndi.uniform_filter(mask.astype(np.float32), SIDE, mode="constant")
    h = SIDE // 2
    inner = counts[h:mask.shape[0] - h, h:mask.shape[1] - h]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(y), int(x)


def panel(outlines: np.ndarray, truth: np.ndarray, prop: np.ndarray | None) -> Image.Image:
    rgb = np.full(outlines.shape + (3,), 255, np.uint8)
    rgb[outlines > 0] = (150, 150, 150)
    if prop is not None:
        rgb[prop] = (0.45 * rgb[prop] + 0.55 * np.array([220, 30, 30])).astype(np.uint8)
    rim = truth & ~ndi.binary_erosion(truth, iterations=2)
    rgb[rim] = (20, 160, 40)
    return Image.fromarray(rgb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "line_width.png")
    args = ap.parse_args()
    from rosette_bmz.constants import THRESHOLD
    from rosette_bmz.inputs import from_outlines
    from rosette_bmz.runner.engine import predict
    from rosette_bmz.synth import generate_world

    rows = []
    for world in WORLDS:
        g = generate_world(1024, 0, world)
        truth = np.asarray(g.rosettes) > 0
        y, x = window(truth)
        sl = (slice(y, y + SIDE), slice(x, x + SIDE))
        x_in = from_outlines(g.outlines)
        row = [panel(g.outlines[sl], truth[sl], None)]
        for _, path in MODELS:
            prob = predict(x_in, str(path), mode="published")
            row.append(panel(g.outlines[sl], truth[sl], prob[sl] >= THRESHOLD))
        rows.append((world, row))
    pad, top = 8, 26
    W = 3 * SIDE + 4 * pad
    H = len(rows) * (SIDE + top) + pad
    fig = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(fig)
    titles = ["outlines, true rosettes (green)"] + [f"{name}: proposals (red)" for name, _ in MODELS]
    for r, (world, row) in enumerate(rows):
        y0 = r * (SIDE + top) + top
        for c, im in enumerate(row):
            x0 = pad + c * (SIDE + pad)
            d.text((x0, y0 - 16), f"{world}: {titles[c]}", fill="black")
            fig.paste(im, (x0, y0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.save(tmp)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

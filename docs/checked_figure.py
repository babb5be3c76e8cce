"""Draw docs/checked_proposals.png: what ``rosette-bmz predict --check`` keeps, drops and adds.

    .venv/bin/python docs/checked_figure.py [--out docs/checked_proposals.png] [--world default] [--seed 1]

numpy + scipy + Pillow only. One synthetic image of a generalisation set (``generate_world``,
1024², the same images as ``benchmarks/generalisation.py``), the shipped package (onnx backend,
published tiling), its proposals described and checked exactly as ``predict --check`` does. The
crop of ``--crop`` px with the most changes is drawn twice as large: cell outlines in grey, the
true rosettes' borders in black, proposals the check keeps in green, the ones it drops in red,
the junctions it adds in blue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rosette_bmz.inputs import from_outlines  # noqa: E402
from rosette_bmz.proposals import find_proposals  # noqa: E402
from rosette_bmz.quantities import check_image_proposals  # noqa: E402
from rosette_bmz.runner import load_predictor, predict  # noqa: E402
from rosette_bmz.synth import generate_world  # noqa: E402

COLOURS = {"kept": (0, 158, 115), "dropped": (213, 94, 0), "added": (0, 114, 178)}


def busiest_window(points: np.ndarray, shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window (on a size/8 grid) holding the most ``points`` (y, x)."""
    H, W = shape
    step = max(size // 8, 1)
    best, corner = -1, (0, 0)
    for y in range(0, max(H - size, 0) + 1, step):
        for x in range(0, max(W - size, 0) + 1, step):
            inside = ((points[:, 0] >= y) & (points[:, 0] < y + size) & (points[:, 1] >= x)
                      & (points[:, 1] < x + size)) if len(points) else np.zeros(0, bool)
            if int(inside.sum()) > best:
                best, corner = int(inside.sum()), (y, x)
    return corner


def main(argv: list[str] | None = None) -> int:
    from PIL import Image, ImageDraw

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "checked_proposals.png"))
    ap.add_argument("--model", default=str(ROOT / "rdf.yaml"))
    ap.add_argument("--world", default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crop", type=int, default=384)
    args = ap.parse_args(argv)

    g = generate_world(1024, args.seed, args.world)
    with load_predictor(args.model, "onnx") as pred:
        prob = predict(from_outlines(g.outlines), pred, mode="published")
    labels, rows = find_proposals(prob)
    checked, checked_rows = check_image_proposals(labels, rows, prob, g.outlines)
    ids = np.arange(1, len(rows) + 1)
    kept_ids = np.zeros(len(rows) + 1, bool)
    kept_ids[1:] = ndi.maximum(checked > 0, labels, ids) if len(rows) else []
    on_rosette = np.zeros(len(rows) + 1, bool)
    on_rosette[1:] = ndi.maximum(g.rosettes > 0, labels, ids) if len(rows) else []
    kept = kept_ids[labels]
    dropped = (labels > 0) & ~kept
    added_ids = [r["id"] for r in checked_rows if r["source"] == "vertex"]
    added = np.isin(checked, added_ids)
    changed = [(r["centroid_y"], r["centroid_x"]) for r in rows if not kept_ids[r["id"]]]
    changed += [(r["centroid_y"], r["centroid_x"]) for r in checked_rows if r["source"] == "vertex"]
    y0, x0 = busiest_window(np.array(changed, float).reshape(-1, 2), labels.shape, args.crop)
    sl = np.s_[y0:y0 + args.crop, x0:x0 + args.crop]

    rgb = np.full((args.crop, args.crop, 3), 255, np.uint8)
    rgb[g.outlines[sl] > 0] = (170, 170, 170)
    for mask, name in ((kept, "kept"), (dropped, "dropped"), (added, "added")):
        m = mask[sl]
        rgb[m] = (0.45 * rgb[m] + 0.55 * np.array(COLOURS[name])).astype(np.uint8)
    truth = g.rosettes[sl] > 0
    rgb[truth & ~ndi.binary_erosion(truth, iterations=2)] = (0, 0, 0)
    scale = 2
    im = Image.fromarray(rgb).resize((args.crop * scale, args.crop * scale), Image.NEAREST)
    legend_h = 76
    canvas = Image.new("RGB", (im.width, im.height + legend_h), "white")
    canvas.paste(im, (0, 0))
    d = ImageDraw.Draw(canvas)
    n_kept = int(kept_ids[1:].sum())
    counts = {"kept": n_kept, "dropped": len(rows) - n_kept, "added": len(added_ids)}
    on_truth = {"kept": int((on_rosette & kept_ids)[1:].sum()), "dropped": int((on_rosette & ~kept_ids)[1:].sum()),
                "added": int(np.sum(ndi.maximum(g.rosettes > 0, checked, added_ids))) if added_ids else 0}
    x = 8
    for name, text in (("kept", "kept"), ("dropped", "dropped"), ("added", "added")):
        d.rectangle([x, im.height + 10, x + 14, im.height + 24], fill=COLOURS[name])
        label = f"{text}: {counts[name]} ({on_truth[name]} on a rosette)"
        d.text((x + 20, im.height + 10), label, fill="black")
        x += 26 + int(d.textlength(label))
    notes = ("Black rims: true rosettes. Dropped: no junction of >= 5 cells near it and p <= 0.9;",
             "added: a junction of >= 5 cells (baseline graph) no kept proposal touches, p > 0.2 on it.",
             f"Counts for the whole image ({args.world} image {args.seed}, 1024 px); crop at y {y0}, x {x0}.")
    for i, note in enumerate(notes):
        d.text((8, im.height + 30 + 14 * i), note, fill="black")
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

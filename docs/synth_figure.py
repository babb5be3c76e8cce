"""Draw docs/synth_examples.png: generated images with rosettes and decoys overlaid.

    .venv/bin/python docs/synth_figure.py [--out docs/synth_examples.png]

numpy + Pillow only (no matplotlib). Each panel is a 1:1 pixel crop of a generated 1024 x 1024
image, shown as the model reads it (the outline image, dark lines on white; the outline style
differs per panel), with the ground-truth rosette masks filled (orange: planted, vertex kind;
magenta: planted, extrusion kind; green: arisen by chance, labelled by the same rule), the
rosette centres (dots, labelled with k) and the 4-cell junctions that are decoys (cyan rings
of the decoy radius), which are *not* rosettes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosette_bmz.synth import generate  # noqa: E402

VERTEX = np.array([255, 150, 40])
EXTRUSION = np.array([225, 60, 200])
CHANCE = np.array([40, 170, 60])
DECOY = (0, 170, 220)
CROP = 448

PANELS = [
    ("noise 0, Cellpose inner outlines", dict(seed=21, noise=0.0, tissue_free=0.0, elongation=1.1)),
    ("noise 0.5, 1 px watershed lines", dict(seed=22, noise=0.5, tissue_free=0.0, outline_style="watershed")),
    ("16 px cells, 3 px lines, noise 0.5", dict(seed=23, noise=0.5, tissue_free=0.0, cell_diameter=16,
                                                outline_style="thick", line_width=3)),
    ("elongated, size gradient, tissue-free disc, noise 1", dict(seed=24, noise=1.0, elongation=1.5, gradient=1.8,
                                                                 tissue_free=0.12, tissue_free_shape="disc")),
]


def _colour(r) -> np.ndarray:
    if not r.get("planted", True):
        return CHANCE
    return VERTEX if r["kind"] == "vertex" else EXTRUSION


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _best_crop(img, size: int) -> tuple[int, int]:
    """Top-left corner of the crop with the most rosettes and decoys fully inside."""
    h, w = img.labels.shape
    pts = [(r["y"], r["x"], 1.0) for r in img.meta["rosettes"]]
    kinds = {(r["y"], r["x"]): (r["kind"], r["planted"]) for r in img.meta["rosettes"]}
    best, best_score = (0, 0), -1.0
    for y0 in range(0, h - size + 1, 32):
        for x0 in range(0, w - size + 1, 32):
            inside = [(y, x, s) for y, x, s in pts if y0 + 30 <= y < y0 + size - 30 and x0 + 30 <= x < x0 + size - 30]
            score = sum(s for _, _, s in inside) + 1.5 * len({kinds.get((y, x)) for y, x, _ in inside} - {None})
            if img.meta["tissue_free"] > 0:
                score += 3 * float((img.labels[y0:y0 + size, x0:x0 + size] == 0).mean() > 0.08)
            if score > best_score:
                best, best_score = (y0, x0), score
    return best


def render_panel(img, title: str, size: int = CROP) -> Image.Image:
    y0, x0 = _best_crop(img, size)
    sl = (slice(y0, y0 + size), slice(x0, x0 + size))
    out = img.outlines[sl] > 0
    ros = img.rosettes[sl]
    rgb = np.full(out.shape + (3,), 255, np.float32)
    for r in img.meta["rosettes"]:
        m = ros == r["id"]
        if m.any():
            rgb[m] = 0.55 * rgb[m] + 0.45 * _colour(r)
    rgb[out] = (25, 25, 25)
    panel = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(panel)
    font = _font(13)
    for r in img.meta["rosettes"]:
        y, x = r["y"] - y0, r["x"] - x0
        if 0 <= y < size and 0 <= x < size:
            c = tuple(int(v) for v in _colour(r) * 0.7)
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=c, outline=(255, 255, 255))
            rr = r["mask_radius"]
            draw.text((x + rr * 0.75, y - rr * 0.95), f"k={r['k']}", fill=c, font=font,
                      stroke_width=2, stroke_fill=(255, 255, 255))
    for dcy in img.meta["decoys"]:
        y, x = dcy["y"] - y0, dcy["x"] - x0
        if 0 <= y < size and 0 <= x < size:
            rr = 0.25 * img.meta["cell_diameter"]
            draw.ellipse((x - rr, y - rr, x + rr, y + rr), outline=DECOY, width=2)
    full = Image.new("RGB", (size, size + 26), (255, 255, 255))
    full.paste(panel, (0, 26))
    ImageDraw.Draw(full).text((4, 5), title, fill=(0, 0, 0), font=_font(15))
    return full


def render_zoom(img, item, title: str, half: int = 50, zoom: int = 3) -> Image.Image:
    """``zoom`` x enlarged window around one rosette or decoy: outlines, GT mask border, centre."""
    h, w = img.labels.shape
    y0 = int(np.clip(item["y"] - half, 0, h - 2 * half))
    x0 = int(np.clip(item["x"] - half, 0, w - 2 * half))
    sl = (slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
    out = img.outlines[sl] > 0
    rgb = np.full(out.shape + (3,), 255, np.uint8)
    if "id" in item:
        m = img.rosettes[sl] == item["id"]
        rgb[m] = (0.6 * 255 + 0.4 * _colour(item)).astype(np.uint8)
    rgb[out] = (25, 25, 25)
    big = Image.fromarray(rgb).resize((2 * half * zoom,) * 2, Image.NEAREST)
    d = ImageDraw.Draw(big)
    cy, cx = (item["y"] - y0 + 0.5) * zoom, (item["x"] - x0 + 0.5) * zoom
    if "id" in item:
        c = tuple(int(v) for v in _colour(item) * 0.7)
        d.ellipse((cx - 5, cy - 5, cx + 5, cy + 5), outline=c, width=3)
    else:
        rr = 0.25 * img.meta["cell_diameter"] * zoom
        d.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), outline=DECOY, width=3)
    full = Image.new("RGB", (big.size[0], big.size[1] + 24), (255, 255, 255))
    full.paste(big, (0, 24))
    ImageDraw.Draw(full).text((4, 4), title, fill=(0, 0, 0), font=_font(14))
    return full


def _pick(items, kind, k_min=0, planted=True):
    cands = [r for r in items if r["kind"] == kind and r["k"] >= k_min and r["planted"] == planted]
    return max(cands, key=lambda r: (r["k"], r.get("style") == "wedge")) if cands else None


def legend(width: int) -> Image.Image:
    im = Image.new("RGB", (width, 86), (255, 255, 255))
    d = ImageDraw.Draw(im)
    f = _font(14)
    x = 10
    items = [("planted rosette, vertex kind (k cells meet at one point)", tuple(int(v) for v in VERTEX)),
             ("planted rosette, extrusion kind (k cells around a small cell)", tuple(int(v) for v in EXTRUSION)),
             ("rosette arisen by chance (same rule, same label)", tuple(int(v) for v in CHANCE))]
    for i, (text, c) in enumerate(items):
        y = 8 + 22 * i
        d.rectangle((x, y, x + 26, y + 14), fill=c)
        d.text((x + 34, y - 1), text, fill=(0, 0, 0), font=f)
    xr = width // 2 + 80
    d.ellipse((xr, 8, xr + 16, 24), outline=DECOY, width=3)
    d.text((xr + 26, 7), "decoy: 4-cell junction or small cell with 4", fill=(0, 0, 0), font=f)
    d.text((xr + 26, 29), "neighbours (hard negative, not labelled)", fill=(0, 0, 0), font=f)
    d.text((10, 70), "masks: the one rosette definition on the label image (every >= 5-cell junction); "
                     "outlines as the model reads them; 1:1 pixels, 24 px cells unless stated",
           fill=(90, 90, 90), font=_font(12))
    return im


def make_figure(out: Path) -> Path:
    panels, images = [], []
    for title, kw in PANELS:
        img = generate(1024, **kw)
        images.append(img)
        panels.append(render_panel(img, title))
    pw, ph = panels[0].size
    gap = 12
    width = 2 * pw + 3 * gap
    # zoomed row (3x) from the noise-free image: a planted rosette, one arisen by chance, an extrusion
    zimg = images[0]
    zooms = []
    v = _pick(zimg.meta["rosettes"], "vertex", 7) or _pick(zimg.meta["rosettes"], "vertex")
    c = _pick(zimg.meta["rosettes"], "vertex", planted=False)
    e = _pick(zimg.meta["rosettes"], "extrusion")
    for item, label in ((v, "planted rosette"), (c, "arisen by chance"), (e, "extrusion rosette")):
        if item is not None:
            zooms.append(render_zoom(zimg, item, f"3x: {label}, k={item['k']} (noise 0)"))
    zh = zooms[0].size[1] if zooms else 0
    leg = legend(width)
    fig = Image.new("RGB", (width, 2 * ph + zh + 4 * gap + leg.size[1]), (255, 255, 255))
    for i, p in enumerate(panels):
        fig.paste(p, (gap + (i % 2) * (pw + gap), gap + (i // 2) * (ph + gap)))
    zw = zooms[0].size[0] if zooms else 0
    zgap = (width - len(zooms) * zw) // (len(zooms) + 1) if zooms else 0
    for i, z in enumerate(zooms):
        fig.paste(z, (zgap + i * (zw + zgap), 2 * ph + 3 * gap))
    fig.paste(leg, (0, 2 * ph + zh + 4 * gap))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
    tmp.replace(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "synth_examples.png"))
    out = make_figure(Path(ap.parse_args().out))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

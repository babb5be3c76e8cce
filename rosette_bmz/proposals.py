"""Rosette proposals from a probability map, and the files napari opens.

``find_proposals``: pixels with ``prob > threshold`` (default 0.5, the published value)
are grouped into 8-connected objects; objects with fewer than ``min_size`` pixels
(default 10, the published value) are dropped; the rest are numbered 1..n in raster
order (top to bottom, left to right, by their first pixel). Per proposal: centroid
(row ``centroid_y``, column ``centroid_x``, in pixels), area (pixels), max and mean
probability.

Files:

* ``write_tiff``: the labels image as uint32 TIFF (napari opens 32-bit integer images as
  a *labels* layer) or the probability map as float32 TIFF;
* ``write_csv``: one row per proposal with columns ``id, centroid_y, centroid_x, area,
  max_prob, mean_prob, axis-0, axis-1``; ``axis-0``/``axis-1`` repeat the centroid
  because napari's built-in CSV reader opens a table with those columns as a *points*
  layer (the other columns become point properties);
* ``write_overlay``: an RGB PNG (outline image in grey, proposals in red) for a quick look.

Large images: ``find_proposals`` works on memory-mapped arrays; thresholding, the
statistics and the renumbering go strip by strip, only the boolean mask (1 byte per
pixel) and the connected-component pass over it are whole-image.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .constants import MIN_PROPOSAL_SIZE, THRESHOLD

__all__ = ["CSV_COLUMNS", "find_proposals", "label_components", "component_sums", "release", "write_tiff",
           "write_csv", "read_csv", "write_overlay"]

CSV_COLUMNS = ("id", "centroid_y", "centroid_x", "area", "max_prob", "mean_prob", "axis-0", "axis-1")

_STRIP = 1024


def release(arr: Any) -> None:
    """Write back and unmap the resident pages of a memory map (keeps peak RSS near O(strip)).

    Pages of a shared file mapping count towards the process's resident memory once
    touched; ``MADV_DONTNEED`` drops them from this process (the data stays in the file and
    the page cache). No-op for ordinary arrays.
    """
    import mmap

    base = arr
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    mm = getattr(base, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    base.flush()
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - platform without madvise
        pass


def label_components(mask: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: (uint32 labels 1..n, n); written into ``out`` if given."""
    from scipy import ndimage

    if out is None:
        out = np.zeros(mask.shape, dtype=np.uint32)
    n = int(ndimage.label(mask, structure=np.ones((3, 3), dtype=bool), output=out))
    return out, n


def component_sums(labels: np.ndarray, prob: np.ndarray, n: int, y0: int = 0, x0: int = 0,
                   first_width: int | None = None) -> dict[str, np.ndarray]:
    """Per-component sums over a labelled block whose top-left pixel is ``(y0, x0)`` of the image.

    Arrays of ``n + 1`` (index 0 = background): ``area``, ``sum_y``, ``sum_x`` (image
    coordinates), ``sum_p``, ``max_p`` (float64 probability). With ``first_width`` (the image
    width), ``first`` = the flat image index of each component's first pixel in raster order
    (components 1..n present in the block). Sums of blocks add up to the whole image's.
    """
    yy, xx = np.nonzero(labels)                  # raster order
    ids = labels[yy, xx].astype(np.int64)
    p = np.asarray(prob)[yy, xx].astype(np.float64)
    max_p = np.zeros(n + 1)
    np.maximum.at(max_p, ids, p)
    out = {"area": np.bincount(ids, minlength=n + 1), "sum_y": np.bincount(ids, weights=yy + y0, minlength=n + 1),
           "sum_x": np.bincount(ids, weights=xx + x0, minlength=n + 1),
           "sum_p": np.bincount(ids, weights=p, minlength=n + 1), "max_p": max_p}
    if first_width is not None:
        _, at = np.unique(ids, return_index=True)
        out["first"] = (yy[at] + y0).astype(np.int64) * first_width + xx[at] + x0
    return out


def find_proposals(prob: Any, threshold: float = THRESHOLD, min_size: int = MIN_PROPOSAL_SIZE, *,
                   out: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[dict]]:
    """Threshold, 8-connected components, drop objects < ``min_size`` px.

    Returns ``(labels, rows)``: uint32 labels (H, W) (written into ``out`` if given, e.g. a
    memory map) and one dict per proposal with the keys of :data:`CSV_COLUMNS` minus the
    napari axis columns.
    """
    if getattr(prob, "ndim", None) != 2:
        raise ValueError(f"find_proposals: prob must be a 2D array, got shape {getattr(prob, 'shape', None)}")
    H, W = prob.shape
    mask = np.empty((H, W), dtype=bool)
    for r0 in range(0, H, _STRIP):
        np.greater(prob[r0:r0 + _STRIP], threshold, out=mask[r0:r0 + _STRIP])
        release(prob)
    if out is None:
        out = np.zeros((H, W), dtype=np.uint32)
    elif out.shape != (H, W) or out.dtype != np.uint32:
        raise ValueError(f"find_proposals: out must be uint32 {(H, W)}, got {out.dtype} {out.shape}")
    _, n = label_components(mask, out)
    del mask
    release(out)
    area = np.zeros(n + 1, dtype=np.int64)
    sum_y = np.zeros(n + 1)
    sum_x = np.zeros(n + 1)
    sum_p = np.zeros(n + 1)
    max_p = np.zeros(n + 1)
    if n:
        for r0 in range(0, H, _STRIP):
            s = component_sums(np.asarray(out[r0:r0 + _STRIP]), prob[r0:r0 + _STRIP], n, y0=r0)
            area += s["area"]
            sum_y += s["sum_y"]
            sum_x += s["sum_x"]
            sum_p += s["sum_p"]
            np.maximum(max_p, s["max_p"], out=max_p)
            release(prob)
            release(out)
    keep = np.flatnonzero(area >= max(1, min_size))
    keep = keep[keep > 0]
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.uint32)
    if keep.size < n:
        for r0 in range(0, H, _STRIP):
            out[r0:r0 + _STRIP] = lut[out[r0:r0 + _STRIP]]
            release(out)
    rows = [{"id": int(new), "centroid_y": float(sum_y[old] / area[old]), "centroid_x": float(sum_x[old] / area[old]),
             "area": int(area[old]), "max_prob": float(max_p[old]), "mean_prob": float(sum_p[old] / area[old])}
            for new, old in enumerate(keep.tolist(), start=1)]
    return out, rows


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Plain (uncompressed) single-page TIFF; uint32 labels open in napari as a labels layer."""
    import tifffile

    path = Path(path)
    tifffile.imwrite(path, np.asarray(array), photometric="minisblack")
    return path


def write_csv(path: str | os.PathLike, rows: list[dict], extra_columns: Sequence[str] = (),
              extra_values: Callable[[dict], list[str]] | None = None) -> Path:
    """Proposal table (see module doc); napari opens it as a points layer.

    ``extra_columns`` are appended after :data:`CSV_COLUMNS`, their cells given per row by
    ``extra_values(row)`` (e.g. the rosette topology of :mod:`rosette_bmz.quantities`).
    """
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(CSV_COLUMNS) + list(extra_columns))
        for r in rows:
            w.writerow([r["id"], f"{r['centroid_y']:.2f}", f"{r['centroid_x']:.2f}", r["area"],
                        f"{r['max_prob']:.4f}", f"{r['mean_prob']:.4f}",
                        f"{r['centroid_y']:.2f}", f"{r['centroid_x']:.2f}"]
                       + (extra_values(r) if extra_columns and extra_values else []))
    return path


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Read a proposal table written by :func:`write_csv` back into dicts."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kinds = {"id": int, "area": int}
    return [{k: kinds.get(k, float)(r[k]) for k in CSV_COLUMNS[:6]} for r in rows]


def write_overlay(path: str | os.PathLike, labels: np.ndarray, prob: np.ndarray | None = None,
                  background: np.ndarray | None = None) -> Path:
    """RGB PNG: outlines (or the probability) in grey on white, proposals filled red with a dark-red rim."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    if background is not None:
        base = 255 - 150 * (np.asarray(background) > 0).astype(np.uint8)
    elif prob is not None:
        base = (255 - 200 * np.clip(np.asarray(prob), 0, 1)).astype(np.uint8)
    else:
        base = np.full(labels.shape, 255, dtype=np.uint8)
    rgb = np.repeat(base[..., None], 3, axis=2).astype(np.uint8)
    fg = labels > 0
    rgb[fg] = (0.5 * rgb[fg] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    rgb[find_boundaries(labels, mode="inner")] = (160, 0, 0)
    path = Path(path)
    Image.fromarray(rgb, mode="RGB").save(path, format="PNG")
    return path

"""Reader for this project's outputs: napari layer-data tuples, no napari import.

``<name>_prob.tif`` opens as an image (probability, magma, 0-1), ``<name>_rosettes.tif`` as
labels, ``<name>_rosettes.csv`` (``rosette-bmz predict``) and ``<name>_review.csv`` (a saved
review) as points with every column as a point property. The manifest's filename patterns
are these four suffixes only, so napari does not offer this reader for other TIFF or CSV files.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["get_reader", "read_outputs", "SUFFIXES"]

SUFFIXES = ("_prob.tif", "_rosettes.tif", "_rosettes.csv", "_review.csv")


def _kind(path: str | os.PathLike) -> str | None:
    name = Path(path).name
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """npe2 reader hook: a reader when every path is one of :data:`SUFFIXES`, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_kind(p) and Path(p).is_file() for p in paths):
        return None
    return read_outputs


def _number(values: list[str]) -> np.ndarray | list[str]:
    try:
        return np.asarray([float(v) if v != "" else np.nan for v in values], dtype=float)
    except ValueError:
        return values


def _points(path: Path, review: bool) -> tuple:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    stem = path.name[: -len("_review.csv" if review else "_rosettes.csv")]
    cols = [c for c in (rows[0].keys() if rows else []) if c not in ("axis-0", "axis-1")]
    coords = np.asarray([[float(r["centroid_y"]), float(r["centroid_x"])] for r in rows], dtype=float).reshape(-1, 2)
    features = {c: _number([r[c] for r in rows]) for c in cols}
    meta: dict[str, Any] = {"name": f"{stem} {'review' if review else 'proposals'}", "features": features,
                            "size": 12, "symbol": "ring", "border_width": 0.15}
    if review and rows:
        from .review import STATUS_COLORS

        meta["face_color"] = np.asarray([STATUS_COLORS.get(r["status"], (1, 1, 1, 1)) for r in rows])
    else:
        meta["face_color"] = "yellow"
    return coords, meta, "points"


def read_outputs(path: str | list[str]) -> list[tuple]:
    """Layer-data tuples for each path (see module doc)."""
    import tifffile

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in map(Path, paths):
        kind = _kind(p)
        stem = p.name[: -len(kind)]
        if kind == "_prob.tif":
            layers.append((tifffile.imread(p).astype(np.float32, copy=False),
                           {"name": f"{stem} probability", "colormap": "magma", "contrast_limits": (0.0, 1.0),
                            "blending": "additive", "opacity": 0.7}, "image"))
        elif kind == "_rosettes.tif":
            layers.append((np.asarray(tifffile.imread(p)).astype(np.uint32, copy=False),
                           {"name": f"{stem} rosettes", "opacity": 0.5}, "labels"))
        else:
            layers.append(_points(p, review=kind == "_review.csv"))
    return layers

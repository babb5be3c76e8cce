"""The published 2-channel input representation, built from outlines or labels.

The published training code feeds the network two binary channels made from a
Cellpose-style cell-outline image ``outlines`` (thin, 1 px lines inside each cell's
border):

* channel 0 = ``skimage.segmentation.find_boundaries(outlines > 0, mode="thick")``:
  a band about 2-3 px wide along both sides of every line;
* channel 1 = ``outlines > 0``: the thin lines themselves.

(The model card lists them the other way round; the code is what the weights were
trained on.) Both channels are float32 0/1.

``from_labels`` first draws the outlines from a label image (e.g. a Cellpose
segmentation) exactly like this: a pixel of cell ``i > 0`` is an outline pixel if any of
its four direct neighbours is not ``i`` (another cell, background, or outside the
image). These are the pixels that Cellpose's ``masks_to_outlines`` traces (the inner
border of each cell, so two touching cells give a 2 px line); unlike Cellpose, holes
inside a cell get an outline too.

Everything here is numpy + scikit-image; torch is never imported. Bad input raises
:class:`InputError` with a message that names the input and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["InputError", "InputKind", "INPUT_KINDS", "MAX_OUTLINE_FRACTION", "from_outlines", "from_labels",
           "from_channels", "build_input", "inner_outlines", "read_image", "load_input"]

InputKind = Literal["channels", "outlines", "labels"]
INPUT_KINDS: tuple[str, ...] = ("channels", "outlines", "labels")

#: Outline images cover about 5-25 % of the pixels (cells 10-60 px across); a binary
#: image with more foreground than this is a filled mask or inverted outlines.
MAX_OUTLINE_FRACTION = 0.45


class InputError(ValueError):
    """An input image that cannot be turned into the model's 2-channel input."""


def _name(name: str | None) -> str:
    return name or "input"


def _as_2d(arr: np.ndarray, name: str, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.size == 0:
        raise InputError(f"{name}: empty {what} (shape {arr.shape})")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: {what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        hint = ""
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            hint = " (looks like an RGB/RGBA picture; give the binary outline or label image itself)"
        elif arr.ndim == 3:
            hint = " (looks like a 3D stack or multi-channel image; give one 2D plane)"
        raise InputError(f"{name}: {what} must be a 2D (y, x) image, got shape {arr.shape}{hint}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name}: {what} contains NaN or infinite values")
    return arr


def _binary_foreground(arr: np.ndarray, name: str) -> np.ndarray:
    values = np.unique(arr)
    if values.size > 2:
        raise InputError(
            f"{name}: outlines must be binary (two values, e.g. 0/1, 0/255 or bool), but the image has "
            f"{values.size} distinct values ({_preview(values)}); this looks like a label image: use "
            "from_labels / --input-kind labels")
    if values.size == 2 and values[0] != 0:
        raise InputError(f"{name}: binary outlines need 0 as background, got values {_preview(values)}")
    fg = arr > 0
    frac = float(fg.mean())
    if frac > MAX_OUTLINE_FRACTION:
        raise InputError(
            f"{name}: {frac:.0%} of the pixels are foreground, far too many for cell outlines (typically "
            f"5-25 %, at most {MAX_OUTLINE_FRACTION:.0%}); this looks like a filled mask or inverted "
            "outlines: give thin outlines (lines = 1, background = 0) or the label image")
    return fg


def _preview(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:5].tolist())
    return shown + (", ..." if values.size > 5 else "")


def from_outlines(outlines: np.ndarray, name: str | None = None) -> np.ndarray:
    """Binary outline image (H, W) -> float32 (2, H, W) [thick band, thin lines]."""
    from skimage.segmentation import find_boundaries

    name = _name(name)
    fg = _binary_foreground(_as_2d(outlines, name, "outlines"), name)
    out = np.empty((2,) + fg.shape, dtype=np.float32)
    out[0] = find_boundaries(fg, mode="thick")
    out[1] = fg
    return out


def inner_outlines(labels: np.ndarray) -> np.ndarray:
    """Cellpose-style inner outlines (bool) of a label image, as described in the module doc."""
    lab = np.asarray(labels)
    pad = np.pad(lab, 1, mode="constant", constant_values=0)
    centre = pad[1:-1, 1:-1]
    differs = ((pad[:-2, 1:-1] != centre) | (pad[2:, 1:-1] != centre)
               | (pad[1:-1, :-2] != centre) | (pad[1:-1, 2:] != centre))
    return differs & (centre > 0)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    lab = _as_2d(labels, name, "label image")
    if lab.dtype.kind == "b":
        raise InputError(f"{name}: a boolean image is not a label image; use from_outlines / --input-kind outlines")
    if lab.dtype.kind == "f":
        if not np.array_equal(lab, np.round(lab)):
            raise InputError(f"{name}: label image has non-integer values (dtype {lab.dtype}); "
                             "labels must be whole numbers, one per cell")
    if lab.min() < 0:
        raise InputError(f"{name}: label image has negative values (min {lab.min():g})")
    n_labels = np.unique(lab).size - (1 if lab.min() == 0 else 0)
    if n_labels <= 1 and (lab > 0).mean() < MAX_OUTLINE_FRACTION:
        raise InputError(f"{name}: label image holds a single label covering {(lab > 0).mean():.0%} "
                         "of the image; this looks like a binary outline image: use from_outlines / "
                         "--input-kind outlines")
    return lab.astype(np.int64, copy=False)


def from_labels(labels: np.ndarray, name: str | None = None) -> np.ndarray:
    """Label image (H, W), one integer per cell, 0 = background -> float32 (2, H, W)."""
    name = _name(name)
    return from_outlines(inner_outlines(_check_labels(labels, name)).astype(np.uint8), name)


def from_channels(channels: np.ndarray, name: str | None = None) -> np.ndarray:
    """Validate an already-built (2, H, W) input and return it as float32."""
    name = _name(name)
    arr = np.asarray(channels)
    if arr.size == 0:
        raise InputError(f"{name}: empty array (shape {arr.shape})")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 2 and arr.shape[0] != 2:
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise InputError(f"{name}: a 2-channel input must have shape (2, H, W), got {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: input must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name}: input contains NaN or infinite values")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise InputError(f"{name}: the 2-channel input must be binary 0/1, found values such as "
                         f"{_preview(np.unique(arr[bad]))}")
    return arr.astype(np.float32, copy=False)


def build_input(array: np.ndarray, kind: str = "outlines", name: str | None = None) -> np.ndarray:
    """Dispatch on ``kind`` (channels, outlines or labels) to the builders above."""
    builders = {"channels": from_channels, "outlines": from_outlines, "labels": from_labels}
    if kind not in builders:
        raise InputError(f"unknown input kind {kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    return builders[kind](array, name)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF, NPY or PNG file into a numpy array (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im)
    except Exception as exc:
        raise InputError(f"{path}: cannot read as {suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use .tif/.tiff, .npy or .png")


def load_input(path: str | os.PathLike, kind: str = "outlines") -> np.ndarray:
    """Read ``path`` and build the float32 (2, H, W) model input from it."""
    return build_input(read_image(path), kind, name=str(path))

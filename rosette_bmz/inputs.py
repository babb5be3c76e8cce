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
from typing import Any, Literal

import numpy as np

from .constants import IMAGE_SUFFIXES, INPUT_KINDS, MIN_IMAGE_SIZE, ZARR_SUFFIX
from .errors import InputError

__all__ = ["InputError", "InputKind", "INPUT_KINDS", "MAX_OUTLINE_FRACTION", "from_outlines", "from_labels",
           "from_channels", "build_input", "inner_outlines", "read_image", "load_input", "squeeze", "check_values",
           "validated", "channels_from_foreground", "check_model_input", "check_size", "is_zarr", "open_zarr"]

InputKind = Literal["channels", "outlines", "labels"]

#: Outline images cover about 5-25 % of the pixels (cells 10-60 px across); a binary
#: image with more foreground than this is a filled mask or inverted outlines.
MAX_OUTLINE_FRACTION = 0.45


def _name(name: str | None) -> str:
    return name or "input"


_WHAT = {"outlines": "outlines", "labels": "label image", "channels": "input"}


def _preview(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:5].tolist())
    return shown + (", ..." if values.size > 5 else "")


def squeeze(arr: Any, kind: str, name: str | None = None) -> Any:
    """Bring ``arr`` to (H, W) (outlines, labels) or (2, H, W) (channels) by its shape alone.

    Singleton axes are dropped and a channels-last (H, W, 2) input is moved to the front;
    nothing is read, so ``arr`` may be a memory map of an image larger than memory.
    """
    name = _name(name)
    if kind not in _WHAT:
        raise InputError(f"unknown input kind {kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    arr = arr if hasattr(arr, "shape") and hasattr(arr, "dtype") else np.asarray(arr)
    shape = tuple(arr.shape)
    if 0 in shape or not shape:
        raise InputError(f"{name}: empty {_WHAT[kind]} (shape {shape})")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: {_WHAT[kind]} must be numeric, got dtype {arr.dtype}")
    if kind == "channels":
        if len(shape) == 4 and shape[0] == 1:
            arr, shape = arr[0], shape[1:]
        if len(shape) == 3 and shape[-1] == 2 and shape[0] != 2:
            arr = np.moveaxis(arr, -1, 0)
        elif len(shape) != 3 or shape[0] != 2:
            raise InputError(f"{name}: a 2-channel input must have shape (2, H, W), got {shape}")
        return arr
    if len(shape) == 3 and 1 in (shape[0], shape[-1]):
        arr = arr[0] if shape[0] == 1 else arr[..., 0]
    if arr.ndim != 2:
        hint = ""
        if len(shape) == 3 and shape[-1] in (3, 4):
            hint = " (looks like an RGB/RGBA picture; give the binary outline or label image itself)"
        elif len(shape) == 3:
            hint = " (looks like a 3D stack or multi-channel image; give one 2D plane)"
        raise InputError(f"{name}: {_WHAT[kind]} must be a 2D (y, x) image, got shape {shape}{hint}")
    return arr


def check_values(arr: Any, kind: str, name: str | None = None, rows: int = 1024) -> None:
    """The value checks of an input of ``kind`` (after :func:`squeeze`), ``rows`` rows at a time.

    One validator for images in memory and images streamed from disk (memory O(strip)):
    finite numbers; binary 0/1 channels; binary outlines with background 0 and at most
    :data:`MAX_OUTLINE_FRACTION` foreground (else a filled mask or a label image); whole,
    non-negative labels, more than one of them (else a binary outline image).
    """
    name = _name(name)
    what = _WHAT[kind]
    if kind == "labels" and arr.dtype.kind == "b":
        raise InputError(f"{name}: a boolean image is not a label image; use from_outlines / --input-kind outlines")
    values = np.zeros(0, dtype=arr.dtype)
    fg = 0
    H = arr.shape[-2]
    for r0 in range(0, H, rows):
        s = np.asarray(arr[..., r0:r0 + rows, :])
        if s.dtype.kind == "f" and not np.isfinite(s).all():
            raise InputError(f"{name}: {what} contains NaN or infinite values")
        if kind == "channels":
            bad = ~np.isin(s, (0, 1))
            if bad.any():
                raise InputError(f"{name}: the 2-channel input must be binary 0/1, found values such as "
                                 f"{_preview(np.unique(s[bad]))}")
            continue
        if kind == "labels":
            if s.dtype.kind == "f" and not np.array_equal(s, np.round(s)):
                raise InputError(f"{name}: label image has non-integer values (dtype {s.dtype}); labels must "
                                 "be whole numbers, one per cell")
            if s.min() < 0:
                raise InputError(f"{name}: label image has negative values (min {s.min():g})")
        values = np.union1d(values, np.unique(s))
        fg += int(np.count_nonzero(s))
        if kind == "outlines" and values.size > 2:
            raise InputError(
                f"{name}: outlines must be binary (two values, e.g. 0/1, 0/255 or bool), but the image has "
                f"more than 2 distinct values ({_preview(values)}); this looks like a label image: use "
                "from_labels / --input-kind labels")
    if kind == "channels":
        return
    frac = fg / (arr.shape[-2] * arr.shape[-1])
    if kind == "outlines":
        if values.size == 2 and values[0] != 0:
            raise InputError(f"{name}: binary outlines need 0 as background, got values {_preview(values)}")
        if frac > MAX_OUTLINE_FRACTION:
            raise InputError(
                f"{name}: {frac:.0%} of the pixels are foreground, far too many for cell outlines (typically "
                f"5-25 %, at most {MAX_OUTLINE_FRACTION:.0%}); this looks like a filled mask or inverted "
                "outlines: give thin outlines (lines = 1, background = 0) or the label image")
    elif np.count_nonzero(values) <= 1 and frac < MAX_OUTLINE_FRACTION:
        raise InputError(f"{name}: label image holds a single label covering {frac:.0%} of the image; this "
                         "looks like a binary outline image: use from_outlines / --input-kind outlines")


def validated(arr: Any, kind: str, name: str | None = None) -> Any:
    """:func:`squeeze` + :func:`check_values`: the one guard every input goes through."""
    arr = squeeze(arr, kind, name)
    check_values(arr, kind, name)
    return arr


def channels_from_foreground(fg: np.ndarray) -> np.ndarray:
    """Boolean outline pixels (H, W) -> float32 (2, H, W) [thick band, thin lines]."""
    from skimage.segmentation import find_boundaries

    out = np.empty((2,) + fg.shape, dtype=np.float32)
    out[0] = find_boundaries(fg, mode="thick")
    out[1] = fg
    return out


def from_outlines(outlines: np.ndarray, name: str | None = None) -> np.ndarray:
    """Binary outline image (H, W) -> float32 (2, H, W) [thick band, thin lines]."""
    return channels_from_foreground(np.asarray(validated(outlines, "outlines", name)) > 0)


def inner_outlines(labels: np.ndarray) -> np.ndarray:
    """Cellpose-style inner outlines (bool) of a label image, as described in the module doc."""
    lab = np.asarray(labels)
    pad = np.pad(lab, 1, mode="constant", constant_values=0)
    centre = pad[1:-1, 1:-1]
    differs = ((pad[:-2, 1:-1] != centre) | (pad[2:, 1:-1] != centre)
               | (pad[1:-1, :-2] != centre) | (pad[1:-1, 2:] != centre))
    return differs & (centre > 0)


def from_labels(labels: np.ndarray, name: str | None = None) -> np.ndarray:
    """Label image (H, W), one integer per cell, 0 = background -> float32 (2, H, W)."""
    lab = np.asarray(validated(labels, "labels", name)).astype(np.int64, copy=False)
    return channels_from_foreground(inner_outlines(lab))


def from_channels(channels: np.ndarray, name: str | None = None) -> np.ndarray:
    """Validate an already-built (2, H, W) input and return it as float32."""
    return np.asarray(validated(channels, "channels", name)).astype(np.float32, copy=False)


def build_input(array: np.ndarray, kind: str = "outlines", name: str | None = None) -> np.ndarray:
    """Dispatch on ``kind`` (channels, outlines or labels) to the builders above."""
    builders = {"channels": from_channels, "outlines": from_outlines, "labels": from_labels}
    if kind not in builders:
        raise InputError(f"unknown input kind {kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    return builders[kind](array, name)


def check_size(shape: tuple[int, ...], name: str | None = None) -> None:
    """Refuse images with a side under :data:`~rosette_bmz.constants.MIN_IMAGE_SIZE` px: too small
    to hold a rosette, where the network answers with confident false proposals."""
    h, w = int(shape[-2]), int(shape[-1])
    if min(h, w) < MIN_IMAGE_SIZE:
        raise InputError(f"{_name(name)}: image of {h} x {w} px is too small; the detector needs at least "
                         f"{MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE} px (a rosette spans about two cell diameters)")


def check_model_input(x: Any, channels: int, name: str = "input") -> np.ndarray:
    """A (channels, H, W) array the network can run on: numeric and finite (values are not checked)."""
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim != 3 or x.shape[0] != channels:
        raise InputError(f"{name}: expected a ({channels}, H, W) array, got shape {x.shape}")
    if x.size == 0:
        raise InputError(f"{name}: empty array (shape {x.shape})")
    if x.dtype.kind not in "biuf":
        raise InputError(f"{name}: must be numeric, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    check_size(x.shape, name)
    return x


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr / OME-Zarr store read as one image (a folder named ``*.zarr``)."""
    path = Path(path)
    return path.name.lower().endswith(ZARR_SUFFIX) and path.is_dir()


class _Leading:
    """A lazy view of ``arr`` without its leading singleton axes (OME-Zarr's t, c, z of size 1).

    Slicing reads only the slice (a zarr array reads the chunks it touches), so an image
    larger than memory stays on disk; ``np.asarray`` reads it whole.
    """

    def __init__(self, arr: Any, drop: int):
        self.arr, self.lead = arr, (0,) * drop
        self.shape, self.dtype = tuple(arr.shape[drop:]), arr.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.arr[self.lead + (idx if isinstance(idx, tuple) else (idx,))])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[...]
        return a if dtype is None else a.astype(dtype)


def open_zarr(path: str | os.PathLike) -> Any:
    """The image in a zarr array or OME-Zarr store, opened lazily (slices read only their chunks).

    An OME-Zarr group gives its full-resolution level (the first ``multiscales`` dataset,
    NGFF 0.4 or 0.5 metadata); a plain group must hold exactly one array. Leading axes of
    size 1 (OME-Zarr's t, c, z) are dropped without reading.
    """
    path = Path(path)
    try:
        import zarr
    except ImportError:
        raise InputError(f"{path}: reading zarr needs the zarr package: pip install 'rosette-bmz[dask]'") from None
    try:
        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            attrs = dict(node.attrs)
            ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
            if ms:
                node = node[ms[0]["datasets"][0]["path"]]
            else:
                arrays = list(node.array_keys())
                if len(arrays) != 1:
                    raise InputError(f"{path}: a zarr group without OME-Zarr (multiscales) metadata must hold "
                                     f"exactly one array, found {len(arrays)}")
                node = node[arrays[0]]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read as zarr ({type(exc).__name__}: {exc})") from None
    drop = 0
    while node.ndim - drop > 2 and node.shape[drop] == 1:
        drop += 1
    return _Leading(node, drop) if drop else node


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF, NPY or PNG file, or a zarr / OME-Zarr store, into a numpy array (errors name the file)."""
    path = Path(path)
    if is_zarr(path):
        return np.asarray(open_zarr(path)[...])
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
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use {', '.join(IMAGE_SUFFIXES)}")


def load_input(path: str | os.PathLike, kind: str = "outlines") -> np.ndarray:
    """Read ``path`` and build the float32 (2, H, W) model input from it."""
    return build_input(read_image(path), kind, name=str(path))

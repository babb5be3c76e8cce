"""Where tiles are cut from: an input in memory, or an outline / label image read lazily.

A source has a ``shape`` (H, W), ``channels`` and ``read(y0, y1, x0, x1)`` of the real
image; ``fill`` copies a window given in *padded* coordinates into a tile buffer, padding
outside the image with zeros or a mirror (:func:`~rosette_bmz.runner.tiling.mirror_index`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..inputs import channels_from_foreground, inner_outlines
from .tiling import mirror_index

__all__ = ["Source", "ArraySource", "RawSource"]


class Source:
    """Something tiles can be cut from: ``shape`` (H, W) and ``read(y0, y1, x0, x1)``.

    ``fill`` copies a window given in *padded* coordinates (the real image starts at
    ``(offset, offset)``) into ``dst``, padding outside the image with ``mode``.
    """

    channels = 2
    shape: tuple[int, int]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:  # pragma: no cover - abstract
        """float32-compatible (C, y1 - y0, x1 - x0) block of the real image."""
        raise NotImplementedError

    def fill(self, dst: np.ndarray, y0: int, x0: int, offset: int = 0, mode: str = "constant") -> None:
        H, W = self.shape
        th, tw = dst.shape[-2:]
        ry0, rx0 = y0 - offset, x0 - offset
        if mode == "constant":
            a, b = max(0, ry0), min(H, ry0 + th)
            c, d = max(0, rx0), min(W, rx0 + tw)
            if a - ry0 > 0 or c - rx0 > 0 or b - ry0 < th or d - rx0 < tw:
                dst[...] = 0
            if b > a and d > c:
                dst[:, a - ry0:b - ry0, c - rx0:d - rx0] = self.read(a, b, c, d)
            return
        iy = mirror_index(np.arange(ry0, ry0 + th), H, mode)
        ix = mirror_index(np.arange(rx0, rx0 + tw), W, mode)
        a, b, c, d = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
        block = self.read(a, b, c, d)
        dst[...] = block[:, iy - a][:, :, ix - c]


class ArraySource(Source):
    """An already-built (C, H, W) input (in memory or memory-mapped)."""

    def __init__(self, x: Any):
        self.x = x
        self.channels = int(x.shape[0])
        self.shape = (int(x.shape[-2]), int(x.shape[-1]))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.x[:, y0:y1, x0:x1]


class RawSource(Source):
    """A 2D outline or label image read lazily; the 2 channels are built per tile.

    ``find_boundaries(mode="thick")`` looks 1 px around each pixel and the inner outlines of
    a label image need 1 px more, so each read takes a 1 (outlines) or 2 (labels) px margin
    and crops it after building; at the true image edge no margin exists, exactly as for
    the whole image, so the result equals ``build_input`` on the whole image.
    """

    def __init__(self, raw: Any, kind: str):
        self.raw = raw
        self.kind = kind
        self.margin = 2 if kind == "labels" else 1
        self.shape = (int(raw.shape[0]), int(raw.shape[1]))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        m = self.margin
        ya, xa = max(0, y0 - m), max(0, x0 - m)
        yb, xb = min(self.shape[0], y1 + m), min(self.shape[1], x1 + m)
        block = np.asarray(self.raw[ya:yb, xa:xb])
        fg = inner_outlines(block) if self.kind == "labels" else block > 0
        return channels_from_foreground(fg)[:, y0 - ya:y1 - ya, x0 - xa:x1 - xa]

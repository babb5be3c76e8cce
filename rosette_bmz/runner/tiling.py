"""Block geometry of the runner: where tiles go, how big they are, how the border is mirrored.

Nothing here touches a model or an image: a plan is a list of window starts per axis and,
in halo mode, the *core* of each window that is written to the output.

``halo`` plans: the fewest equal windows (a multiple of 16, at most ``tile``) that cover the
axis padded to a multiple of 16, each keeping ``halo`` px of context on every inner side;
windows start on the 16 px grid and the last one is shifted inwards (never beyond the padded
axis), so pooling windows line up with those of one whole-image pass.

``published`` plans: 512 px windows at 0, 384, 768, ... plus one flush with the far edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..constants import DEFAULT_HALO, DIVISOR, PAD_MODES, PUBLISHED_OVERLAP, PUBLISHED_WINDOW

__all__ = ["AxisPlan", "halo_plan", "published_plan", "coverage", "mirror_index", "default_tile", "in_memory_budget",
           "default_batch", "pad_like_runner", "DEFAULT_TILE", "ACTIVATION_BUDGET", "MAX_IN_MEMORY_BUDGET"]

#: Largest tile side in halo mode for the published width (base 64); narrower models get
#: larger tiles from the same activation-memory budget (:func:`default_tile`).
DEFAULT_TILE = 720
#: onnxruntime's peak activation memory for one forward pass is about this many bytes per
#: pixel per unit of model width (measured: base 16, 1024^2 tile -> +530 MB).
_BYTES_PER_PX_PER_WIDTH = 32
#: Activation memory one forward pass may use when an image is streamed from disk (tile side
#: and batch follow from it); with it an 8192^2 image streams through the demo model in < 2 GB
#: peak RSS.
ACTIVATION_BUDGET = 2**30   # 1 GiB
#: Upper bound of the budget for an image held in memory (:func:`in_memory_budget`): fewer,
#: larger tiles re-run fewer context pixels (a 2048^2 demo image is one forward pass, a 2048^2
#: image at base 64 is 2 x 2 tiles of 1136 px instead of 3 x 3 of 832 px with 2 GiB).
MAX_IN_MEMORY_BUDGET = 4 * 2**30


def _ceil_to(n: int, k: int) -> int:
    return -(-n // k) * k


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis: ``starts`` of windows of ``size``, the ``cores`` each one writes."""

    length: int             # real image length
    padded: int             # padded length the windows live in
    size: int               # window length (same for all windows)
    starts: tuple[int, ...]
    cores: tuple[tuple[int, int], ...] = ()


def halo_plan(length: int, tile: int = DEFAULT_TILE, halo: int = DEFAULT_HALO, divisor: int = DIVISOR) -> AxisPlan:
    """Fewest equal tiles (<= ``tile``) covering ``length`` with >= ``halo`` context inside the image."""
    if tile % divisor or halo % divisor:
        raise ValueError(f"tile ({tile}) and halo ({halo}) must be multiples of {divisor}")
    if tile <= 2 * halo:
        raise ValueError(f"tile ({tile}) must be larger than twice the halo ({halo})")
    padded = _ceil_to(length, divisor)
    if padded <= tile:
        return AxisPlan(length, padded, padded, (0,), ((0, padded),))
    # first and last tile keep tile - halo, interior ones tile - 2 * halo
    n = 2 + max(0, math.ceil((padded - 2 * (tile - halo)) / (tile - 2 * halo)))
    size = min(tile, _ceil_to(math.ceil((padded + 2 * halo * (n - 1)) / n), divisor))
    bounds = [0, size - halo]
    for _ in range(n - 2):
        bounds.append(bounds[-1] + size - 2 * halo)
    bounds.append(padded)
    starts = tuple(min(max(b - halo, 0), padded - size) for b in bounds[:-1])
    cores = tuple((bounds[i], bounds[i + 1]) for i in range(n))
    for s, (c0, c1) in zip(starts, cores):
        assert s <= c0 < c1 <= s + size, (length, tile, starts, cores)
        assert s % divisor == 0
    return AxisPlan(length, padded, size, starts, cores)


def published_plan(length: int, window: int = PUBLISHED_WINDOW, overlap: int = PUBLISHED_OVERLAP) -> AxisPlan:
    """Windows at 0, stride, 2*stride, ... plus one flush with the far edge (see module doc)."""
    stride = window - overlap
    if length <= window:
        return AxisPlan(length, window, window, (0,))
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return AxisPlan(length, length, window, tuple(starts))


def coverage(plan: AxisPlan) -> np.ndarray:
    """How many windows cover each pixel of the real axis (published averaging)."""
    count = np.zeros(plan.padded + plan.size, dtype=np.float32)
    for s in plan.starts:
        count[s:s + plan.size] += 1
    return count[:plan.length]


def mirror_index(idx: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Indices into [0, length) that ``np.pad(mode=...)`` would read for positions ``idx``."""
    if mode == "symmetric":
        k = np.mod(idx, 2 * length)
        return np.where(k < length, k, 2 * length - 1 - k)
    if mode == "reflect":
        if length == 1:
            return np.zeros_like(idx)
        k = np.mod(idx, 2 * length - 2)
        return np.where(k < length, k, 2 * length - 2 - k)
    raise ValueError(f"unknown pad mode {mode!r}; choose one of {', '.join(PAD_MODES)}")


def pad_like_runner(x: np.ndarray, mode: str, border: int, min_shape: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``x`` (C, H, W) padded as halo mode pads it: ``border`` px of ``mode`` on every side, then
    at the bottom/right up to a multiple of 16 (and to at least ``min_shape``).

    Every padded pixel follows one rule about the real image edge (``np.pad``'s, which
    :func:`mirror_index` reproduces), so the fill up to the grid continues the mirror instead
    of being mirrored again; the real image starts at ``(border, border)``.
    """
    _, H, W = x.shape
    ty = max(min_shape[0], -(-(H + 2 * border) // DIVISOR) * DIVISOR)
    tx = max(min_shape[1], -(-(W + 2 * border) // DIVISOR) * DIVISOR)
    if (ty, tx) == (H, W):
        return x
    return np.pad(x, ((0, 0), (border, ty - H - border), (border, tx - W - border)), mode=mode)


def default_tile(base_channels: int, budget: int = ACTIVATION_BUDGET) -> int:
    """Largest tile side (multiple of 16, 512..4096) whose forward pass fits ``budget`` bytes."""
    side = math.sqrt(budget / (_BYTES_PER_PX_PER_WIDTH * max(1, base_channels)))
    return int(min(4096, max(512, int(side) // DIVISOR * DIVISOR)))


def in_memory_budget() -> int:
    """Activation budget for an image held in memory: a quarter of the memory available now
    (``MemAvailable``), at least :data:`ACTIVATION_BUDGET`, at most :data:`MAX_IN_MEMORY_BUDGET`."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    return int(min(MAX_IN_MEMORY_BUDGET, max(ACTIVATION_BUDGET, avail // 4)))
    except (OSError, ValueError, IndexError):
        pass
    return ACTIVATION_BUDGET


def default_batch(tile_pixels: int, base_channels: int, n_tiles: int, budget: int = ACTIVATION_BUDGET) -> int:
    """Tiles per forward pass: as many as fit ``budget`` (at least 1)."""
    per_tile = _BYTES_PER_PX_PER_WIDTH * max(1, base_channels) * tile_pixels
    return int(max(1, min(n_tiles, budget // per_tile)))

"""Tiled prediction: any image size, four backends, memory O(tile) for images on disk.

Two stitching modes (see docs/tiling.md for the measured differences):

``halo`` (default)
    The image is padded at the bottom/right to a multiple of 16 with zeros (default; the
    network then sees its own zero padding at the image edge, as at the edge of every
    training crop), or, with ``border`` > 0 (automatic for mirror padding: the package's
    112 px halo, which is how bioimageio.core pads), first by ``border`` px of ``pad`` on
    every side. The padded image is cut into as few tiles as fit the maximum tile side
    (``tile``; from the model width and an activation-memory budget: for images in memory
    a quarter of the available memory, 1-4 GiB, i.e. up to 1440 px at base 64 and 2896 px
    at base 16; 1 GiB for images streamed from disk, 720 / 1440 px), all of one size (a
    multiple of 16) so they can be batched. Each
    tile keeps only its *core*: ``context`` pixels (112) are cropped away on every side
    that is not the padded image's edge. Tiles start on the 16-pixel grid and are shifted
    inwards at the far edge (never beyond the padded image), so the pooling windows line
    up with those of one whole-image pass and a tile at the edge sees what the whole-image
    pass sees there. 112 px is more than the network's receptive field reaches (about
    100 px), so the result equals one forward pass over the whole padded image (measured:
    max |diff| 0 to 1e-7), cropped back exactly to ``H x W``. With only 64 px the
    difference is up to 3e-3 (docs/tiling.md).

``published``
    The published inference: 512 x 512 windows with 128 px overlap (stride 384), overlaps
    averaged with uniform weights. Per axis the windows start at 0, 384, 768, ... while
    they fit; if the last one does not reach the end, one more window is placed flush with
    the far edge (start ``L - 512``). An axis shorter than 512 is zero-padded at the
    bottom/right to 512 (one window) and cropped back.

Border padding (``pad``): ``constant`` (default: zeros, "no cells there"), ``symmetric``
(bioimageio.core's default when an rdf declares none) or ``reflect``. Mirroring makes
junctions at the border look like many-cell vertices: on a synthetic 1024^2 image it gave
26 false proposals within 32 px of the border, zeros gave 2 (docs/tiling.md). A package
that declares ``inputs[0].pad`` in its rdf gets that mode by default; the bioimageio
backend is told the runner's mode, so all four backends agree.

Images read from disk by :func:`predict_files` are streamed when larger than
``stream_pixels`` (default 4096^2): the file is memory-mapped (NPY, uncompressed TIFF),
the 2-channel input is built per tile from the tile's region plus a 1-2 px margin, and
the probability TIFF is written into a memory-mapped output file, so only the tiles of
one batch are in memory. Compressed TIFFs and PNGs are read whole.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .backends import (BACKENDS, DEFAULT_HALO, DIVISOR, BioimageioBackend, ModelError, OnnxBackend,
                       TileBackend, TorchBackend, TorchScriptBackend, resolve_model)
from .inputs import INPUT_KINDS, InputError

log = logging.getLogger(__name__)

__all__ = ["MODES", "PAD_MODES", "DEFAULT_TILE", "DEFAULT_CONTEXT", "DEFAULT_PAD", "ACTIVATION_BUDGET",
           "PUBLISHED_WINDOW", "PUBLISHED_OVERLAP", "STREAM_PIXELS", "Predictor", "FileResult", "ModelError",
           "MAX_IN_MEMORY_BUDGET", "default_tile", "in_memory_budget", "load_predictor", "predict", "predict_file", "predict_files", "predict_cli",
           "halo_plan", "published_plan", "collect_inputs", "mirror_index"]

MODES: tuple[str, ...] = ("halo", "published")
#: How halo mode pads the image border (numpy ``np.pad`` modes).
PAD_MODES: tuple[str, ...] = ("constant", "symmetric", "reflect")
#: Pad mode at the image border: zeros = "no cells there". Mirroring (bioimageio.core's
#: default, symmetric) turns junctions at the border into many-cell vertices and so into
#: false rosette proposals (docs/tiling.md: 26 of 57 proposals within 32 px of the border).
DEFAULT_PAD = "constant"

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
#: Context cropped from every tile side in halo mode: tiles agree with a whole-image pass
#: within 1e-3 only with >= 96 px; 112 px (= the package's halo) gives 0 (docs/tiling.md).
DEFAULT_CONTEXT = DEFAULT_HALO
#: The published window and overlap.
PUBLISHED_WINDOW = 512
PUBLISHED_OVERLAP = 128
#: Images with more pixels than this are streamed from disk (memory O(tile)).
STREAM_PIXELS = 4096 * 4096

IMAGE_SUFFIXES = (".tif", ".tiff", ".npy", ".png")
OUTPUT_SUFFIXES = ("_prob.tif", "_rosettes.tif", "_rosettes.csv", "_overlay.png")


# ----------------------------------------------------------------------------- predictor
@dataclass
class Predictor:
    """A loaded model ready for tiled prediction: one backend session reused for every tile."""

    backend: TileBackend
    halo: int = DEFAULT_HALO
    base_channels: int = 64
    name: str = ""
    #: how halo mode pads the image border (``constant`` = zeros, ``symmetric``, ``reflect``)
    pad_mode: str = DEFAULT_PAD
    #: largest tile side in halo mode; None = from the model width and the activation budget
    tile: int | None = None
    #: activation memory (bytes) per forward pass; None = :func:`in_memory_budget` for images in
    #: memory, :data:`ACTIVATION_BUDGET` for images streamed from disk
    budget: int | None = None
    #: context cropped from each tile side in halo mode (>= halo; see docs/tiling.md)
    context: int = DEFAULT_CONTEXT
    #: pixels of ``pad_mode`` padding added at the image border in halo mode; None = automatic:
    #: 0 for zero padding (the network's own zero padding at the image edge, as at every
    #: training crop's edge), the halo for mirroring (see :meth:`border_for`)
    border: int | None = None

    def tile_for(self, budget: int) -> int:
        """Largest tile side in halo mode under ``budget`` bytes of activations (unless set)."""
        return self.tile or default_tile(self.base_channels, budget)

    def border_for(self, pad: str) -> int:
        """Border padding (px) halo mode adds on every side for pad mode ``pad``."""
        if self.border is not None:
            return self.border
        return 0 if pad == "constant" else self.halo

    @property
    def kind(self) -> str:
        return self.backend.name

    @property
    def in_channels(self) -> int:
        return self.backend.in_channels

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _base_channels(src) -> int:
    """Model width (base_channels) if known, else 64 (the published width: the safe assumption)."""
    if src.width:
        return int(src.width)
    if src.kind == "module" and hasattr(src.module, "base_channels"):
        return int(src.module.base_channels)
    return 64


def load_predictor(model: Any, backend: str = "onnx", threads: int | None = None, *,
                   pad: str | None = None, tile: int | None = None, context: int | None = None,
                   session_options: dict | None = None, weight_format: str | None = None,
                   blocksize_parameter: int | None = None, border: int | None = None) -> Predictor:
    """Load ``model`` (rdf.yaml / package folder / checkpoint / nn.Module) for ``backend``.

    ``threads``: intra-op threads (default: all cores this process may use).
    ``pad``: border padding of halo mode; default: what the rdf declares for its input
    (``inputs[0].pad``), else :data:`DEFAULT_PAD` (zeros); the bioimageio backend is run
    with the same mode, so every backend agrees.
    ``tile``: largest tile side in halo mode (default from the model width and the
    activation budget: with 1 GiB (:data:`ACTIVATION_BUDGET`, streamed images) 720 px at
    base 64, 1440 at base 16; with up to 4 GiB (in memory, :func:`in_memory_budget`) 1440 / 2896).
    ``context``: pixels cropped from each inner tile side (default :data:`DEFAULT_CONTEXT`).
    ``border``: pixels of padding added at the image border in halo mode (default: 0 for
    zero padding, the package's halo for mirror padding; ``border=halo`` with zero padding
    reproduces bioimageio.core's padding, see docs/tiling.md).
    ``session_options``: extra onnxruntime ``SessionOptions`` attributes or config entries.
    ``weight_format`` / ``blocksize_parameter``: for the ``bioimageio`` backend only.
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if pad is not None and pad not in PAD_MODES:
        raise ModelError(f"unknown pad mode {pad!r}; choose one of {', '.join(PAD_MODES)}")
    ctx = context or DEFAULT_CONTEXT
    if tile is not None and (tile % DIVISOR or tile <= 2 * ctx):
        raise ModelError(f"tile {tile}: must be a multiple of {DIVISOR} and larger than twice the tile "
                         f"context ({2 * ctx})")
    if threads is not None and threads < 1:
        raise ModelError(f"threads must be at least 1, got {threads}")
    if border is not None and border < 0:
        raise ModelError(f"border must be >= 0, got {border}")
    src = resolve_model(model)
    if src.in_channels != 2:
        raise ModelError(f"{src.name}: the package reads {src.in_channels} input channel(s); the runner "
                         "feeds the 2-channel input: export the package with --input-kind channels")
    if backend == "torch":
        be: TileBackend = TorchBackend(src, threads)
    elif backend == "torchscript":
        be = TorchScriptBackend(src, threads)
    elif backend == "onnx":
        be = OnnxBackend(src, threads, session_options)
    else:
        be = BioimageioBackend(src, threads, weight_format=weight_format, blocksize_parameter=blocksize_parameter)
    pad = pad or be.source.pad_mode or DEFAULT_PAD
    if pad not in PAD_MODES:
        be.close()
        raise ModelError(f"{src.name}: the rdf declares pad mode {pad!r}; the runner supports "
                         f"{', '.join(PAD_MODES)} (choose one with --pad)")
    width = _base_channels(be.source)
    pred = Predictor(backend=be, halo=be.source.halo, base_channels=width, name=src.name, pad_mode=pad,
                     tile=tile, context=max(ctx, be.source.halo), border=border)
    log.info("predictor: %s backend on %s (halo %d, width %d, %d threads)", be.name, src.name, pred.halo,
             pred.base_channels, be.threads)
    return pred


# ----------------------------------------------------------------------------- tile plans
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


def _coverage(plan: AxisPlan) -> np.ndarray:
    """How many windows cover each pixel of the real axis (published averaging)."""
    count = np.zeros(plan.padded + plan.size, dtype=np.float32)
    for s in plan.starts:
        count[s:s + plan.size] += 1
    return count[:plan.length]


# ----------------------------------------------------------------------------- sources
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


class _Source:
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


class _ArraySource(_Source):
    """An already-built (C, H, W) input (in memory or memory-mapped)."""

    def __init__(self, x: Any):
        self.x = x
        self.channels = int(x.shape[0])
        self.shape = (int(x.shape[-2]), int(x.shape[-1]))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.x[:, y0:y1, x0:x1]


class _RawSource(_Source):
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
        from skimage.segmentation import find_boundaries

        from .inputs import inner_outlines

        m = self.margin
        ya, xa = max(0, y0 - m), max(0, x0 - m)
        yb, xb = min(self.shape[0], y1 + m), min(self.shape[1], x1 + m)
        block = np.asarray(self.raw[ya:yb, xa:xb])
        fg = inner_outlines(block) if self.kind == "labels" else block > 0
        thick = find_boundaries(fg, mode="thick")
        sl = (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa))
        return np.stack([thick[sl], fg[sl]]).astype(np.float32)


# ----------------------------------------------------------------------------- engine
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


def _default_batch(tile_pixels: int, base_channels: int, n_tiles: int, budget: int = ACTIVATION_BUDGET) -> int:
    """Tiles per forward pass: as many as fit ``budget`` (at least 1)."""
    per_tile = _BYTES_PER_PX_PER_WIDTH * max(1, base_channels) * tile_pixels
    return int(max(1, min(n_tiles, budget // per_tile)))


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _bar(progress: bool | Any, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tile", leave=False, dynamic_ncols=True, file=sys.stderr)


def _run_tiles(source: _Source, predictor: Predictor, py: AxisPlan, px: AxisPlan, batch: int | None,
               consume: Callable[[int, int, np.ndarray], None], progress: bool | Any, desc: str,
               offset: int, pad: str, out: Any = None, budget: int = ACTIVATION_BUDGET) -> None:
    from .proposals import release

    tiles = [(y, x) for y in py.starts for x in px.starts]
    n = (min(batch, len(tiles)) if batch
         else _default_batch(py.size * px.size, predictor.base_channels, len(tiles), budget))
    buf = np.zeros((n, source.channels, py.size, px.size), dtype=np.float32)
    bar = _bar(progress, len(tiles), desc)
    try:
        for group in _batches(tiles, n):
            view = buf[:len(group)]
            for k, (y0, x0) in enumerate(group):
                source.fill(view[k], y0, x0, offset, pad)
            pred = predictor.backend.run(view)
            for k, (y0, x0) in enumerate(group):
                consume(y0, x0, pred[k])
            release(out)                                     # memory maps: drop the pages just
            release(getattr(source, "x", getattr(source, "raw", None)))   # written / read
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()


def _predict_source(source: _Source, predictor: Predictor, mode: str, tile: int | None, batch: int | None,
                    progress: bool | Any, out: np.ndarray | None, desc: str = "tiles",
                    pad: str | None = None, budget: int | None = None) -> np.ndarray:
    H, W = source.shape
    budget = budget or predictor.budget or in_memory_budget()
    pad = pad or predictor.pad_mode
    if pad not in PAD_MODES:
        raise ValueError(f"unknown pad mode {pad!r}; choose one of {', '.join(PAD_MODES)}")
    if out is None:
        out = np.zeros((H, W), dtype=np.float32)
    elif tuple(out.shape) != (H, W):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(H, W)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if predictor.backend.whole_image:
        return _predict_whole_bioimageio(source, predictor, out, mode, pad)
    if mode == "halo":
        P = predictor.border_for(pad)
        t = tile or predictor.tile_for(budget)
        py = halo_plan(H + 2 * P, t, predictor.context)
        px = halo_plan(W + 2 * P, t, predictor.context)
        core_of_y = dict(zip(py.starts, py.cores))
        core_of_x = dict(zip(px.starts, px.cores))

        def consume(y0: int, x0: int, p: np.ndarray) -> None:
            (cy0, cy1), (cx0, cx1) = core_of_y[y0], core_of_x[x0]
            cy0, cy1 = max(cy0, P), min(cy1, P + H)   # keep the real image only
            cx0, cx1 = max(cx0, P), min(cx1, P + W)
            if cy1 > cy0 and cx1 > cx0:
                out[cy0 - P:cy1 - P, cx0 - P:cx1 - P] = p[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]

        _run_tiles(source, predictor, py, px, batch, consume, progress, desc, P, pad, out, budget)
        return out
    if tile not in (None, PUBLISHED_WINDOW):
        raise ValueError(f"published mode uses the published {PUBLISHED_WINDOW} px window; got tile={tile}")
    py, px = published_plan(H), published_plan(W)
    out[...] = 0

    def consume(y0: int, x0: int, p: np.ndarray) -> None:
        h, w = min(py.size, H - y0), min(px.size, W - x0)
        out[y0:y0 + h, x0:x0 + w] += p[:h, :w]

    _run_tiles(source, predictor, py, px, batch, consume, progress, desc, 0, "constant", out, budget)
    cy, cx = _coverage(py), _coverage(px)
    for r0 in range(0, H, 1024):  # strip-wise, so a memory-mapped output stays O(strip)
        out[r0:r0 + 1024] /= cy[r0:r0 + 1024, None] * cx[None, :]
    return out


def _predict_whole_bioimageio(source: _Source, predictor: Predictor, out: np.ndarray, mode: str,
                              pad: str) -> np.ndarray:
    """bioimageio.core pads (the rdf's pad mode, halo wide) and blocks the whole image itself."""
    if mode != "halo":
        log.info("bioimageio backend: mode %r ignored, bioimageio.core blocks the image itself", mode)
    H, W = source.shape
    x = np.asarray(source.read(0, H, 0, W), dtype=np.float32)
    out[...] = predictor.backend.predict_image(x, pad)
    return out


def _check_array(x: Any, channels: int) -> np.ndarray:
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim != 3 or x.shape[0] != channels:
        raise InputError(f"input: expected a ({channels}, H, W) array, got shape {x.shape}")
    if x.size == 0:
        raise InputError(f"input: empty array (shape {x.shape})")
    if x.dtype.kind not in "biuf":
        raise InputError(f"input: must be numeric, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError("input: contains NaN or infinite values")
    return x


def predict(x: np.ndarray, predictor: Predictor | Any, mode: str = "halo", tile: int | None = None,
            batch: int | None = None, progress: bool = False, out: np.ndarray | None = None,
            pad: str | None = None) -> np.ndarray:
    """Rosette probability (H, W) float32 for a (2, H, W) input of any size.

    ``predictor``: from :func:`load_predictor` (or anything it accepts: rdf.yaml,
    checkpoint, module; then the onnx backend is used for paths, torch for modules).
    ``mode``: ``halo`` (default, fast, equals a whole-image pass within 1e-3) or
    ``published`` (512 window, 128 overlap, uniform averaging). ``tile``: maximum tile
    side for halo mode (multiple of 16). ``batch``: tiles per forward pass (default from
    tile size and model width). ``out``: optional (H, W) float32 array (e.g. a memory map)
    to write into. ``pad``: how halo mode pads the image border (``constant`` = zeros,
    ``symmetric``, ``reflect``; default the predictor's, see :func:`load_predictor`).
    """
    owned = not isinstance(predictor, Predictor)
    if owned:
        predictor = load_predictor(predictor, "onnx" if isinstance(predictor, (str, os.PathLike)) else "torch")
    try:
        x = _check_array(x, predictor.in_channels)
        return _predict_source(_ArraySource(x), predictor, mode, tile, batch, progress, out, pad=pad)
    finally:
        if owned:
            predictor.close()


# ----------------------------------------------------------------------------- files
@dataclass
class FileResult:
    """What happened to one input file."""

    path: Path
    ok: bool
    outputs: dict[str, Path] = field(default_factory=dict)
    n_proposals: int = 0
    shape: tuple[int, ...] = ()
    streamed: bool = False
    seconds: float = 0.0
    error: str = ""


def collect_inputs(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike | None = None
                   ) -> tuple[list[Path], list[FileResult]]:
    """Expand files and folders (sorted, matching suffixes); missing inputs become failures."""
    files: list[Path] = []
    failed: list[FileResult] = []
    out_dir = Path(out_dir).resolve() if out_dir is not None else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.suffix.lower() in IMAGE_SUFFIXES
                           and not (out_dir is not None and p.resolve() == out_dir
                                    and f.name.endswith(OUTPUT_SUFFIXES)))
            if not found:
                failed.append(FileResult(p, False, error=f"{p}: folder holds no {'/'.join(IMAGE_SUFFIXES)} files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            failed.append(FileResult(p, False, error=f"{p}: no such file or folder"))
    seen: dict[str, Path] = {}
    unique: list[Path] = []
    for f in files:
        if f.stem in seen:
            failed.append(FileResult(f, False, error=f"{f}: same name stem as {seen[f.stem]}; its outputs "
                                                       "would overwrite each other (rename one)"))
            continue
        seen[f.stem] = f
        unique.append(f)
    return unique, failed


def _open_lazy(path: Path, stream_pixels: int, scratch: Path) -> Any:
    """A memory-mapped view of an NPY or TIFF, or None (then the file is read whole).

    Uncompressed TIFFs are mapped directly. A compressed single-image TIFF larger than
    ``stream_pixels`` is decoded strip by strip (or tile by tile) into the uncompressed
    ``scratch`` file, which is then mapped: memory O(strip), disk O(image).
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            try:
                return tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or not contiguous
                pass
            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                if len(tf.pages) != 1 or len(page.shape) != 2 or page.shape[0] * page.shape[1] <= stream_pixels:
                    return None
                H, W = page.shape
                out = np.lib.format.open_memmap(scratch, mode="w+", dtype=page.dtype, shape=(H, W))
                for seg, idx, shape in page.segments():
                    if seg is None:
                        continue
                    y, x = idx[-3], idx[-2]
                    h, w = min(shape[-3], H - y), min(shape[-2], W - x)
                    out[y:y + h, x:x + w] = np.asarray(seg).reshape(shape[-3], shape[-2])[:h, :w]
                out.flush()
                log.info("%s: compressed TIFF decoded into %s for streaming", path, scratch)
                return out
    except Exception as exc:  # odd NPY / TIFF: read it whole instead (errors are reported there)
        log.info("%s: cannot memory-map (%s); reading it whole", path, exc)
    return None


def _squeeze2d(arr: Any, kind: str, name: str) -> Any:
    """Drop singleton axes like inputs._as_2d does, without reading the data."""
    shape = tuple(arr.shape)
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
        raise InputError(f"{name}: {kind} must be a 2D (y, x) image, got shape {shape}")
    return arr


def _validate_streamed(arr: Any, kind: str, name: str, rows: int = 1024) -> None:
    """The checks of rosette_bmz.inputs, one strip of rows at a time (O(strip) memory)."""
    what = {"outlines": "outlines", "labels": "label image", "channels": "input"}[kind]
    if arr.size == 0:
        raise InputError(f"{name}: empty {what} (shape {arr.shape})")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: {what} must be numeric, got dtype {arr.dtype}")
    if kind == "labels" and arr.dtype.kind == "b":
        raise InputError(f"{name}: a boolean image is not a label image; use --input-kind outlines")
    values: set = set()
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
                                 f"{np.unique(s[bad])[:5].tolist()}")
            continue
        if kind == "labels":
            if s.dtype.kind == "f" and not np.array_equal(s, np.round(s)):
                raise InputError(f"{name}: label image has non-integer values (dtype {s.dtype}); labels must "
                                 "be whole numbers, one per cell")
            if s.min() < 0:
                raise InputError(f"{name}: label image has negative values (min {s.min():g})")
        values.update(np.unique(s).tolist())
        fg += int(np.count_nonzero(s))
        if kind == "outlines" and len(values) > 2:
            raise InputError(f"{name}: outlines must be binary (two values, e.g. 0/1, 0/255 or bool), but the "
                             f"image has more than 2 distinct values; this looks like a label image: use "
                             "--input-kind labels")
    if kind == "channels":
        return
    from .inputs import MAX_OUTLINE_FRACTION

    frac = fg / (arr.shape[0] * arr.shape[1])
    if kind == "outlines":
        vals = sorted(values)
        if len(vals) == 2 and vals[0] != 0:
            raise InputError(f"{name}: binary outlines need 0 as background, got values {vals}")
        if frac > MAX_OUTLINE_FRACTION:
            raise InputError(f"{name}: {frac:.0%} of the pixels are foreground, far too many for cell outlines "
                             f"(at most {MAX_OUTLINE_FRACTION:.0%}); this looks like a filled mask or inverted "
                             "outlines")
    else:
        n_labels = len(values - {0})
        if n_labels <= 1 and frac < MAX_OUTLINE_FRACTION:
            raise InputError(f"{name}: label image holds a single label covering {frac:.0%} of the image; this "
                             "looks like a binary outline image: use --input-kind outlines")


def _tmp_path(final: Path) -> Path:
    import secrets

    return final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")


def predict_file(path: str | os.PathLike, predictor: Predictor, input_kind: str, out_dir: str | os.PathLike, *,
                 mode: str = "halo", tile: int | None = None, batch: int | None = None, threshold: float = 0.5,
                 min_size: int = 10, overlay: bool = False, progress: bool | Any = False,
                 stream_pixels: int = STREAM_PIXELS) -> FileResult:
    """Predict one file and write ``<stem>_prob.tif``, ``_rosettes.tif``, ``_rosettes.csv`` (+ overlay).

    All outputs are written under temporary names and renamed only when every one of
    them is complete, so a failure leaves nothing half-written.
    """
    import tifffile

    from . import proposals as props
    from .inputs import build_input, read_image

    if input_kind not in INPUT_KINDS:
        raise InputError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    t0 = time.perf_counter()
    path = Path(path)
    name = str(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    finals = {"prob": out_dir / f"{path.stem}_prob.tif", "labels": out_dir / f"{path.stem}_rosettes.tif",
              "csv": out_dir / f"{path.stem}_rosettes.csv"}
    if overlay:
        finals["overlay"] = out_dir / f"{path.stem}_overlay.png"
    tmps = {k: _tmp_path(v) for k, v in finals.items()}
    scratch = _tmp_path(out_dir / f"{path.stem}_decoded.npy")
    streamed = False
    try:
        lazy = (None if predictor.backend.whole_image or not path.is_file()
                else _open_lazy(path, stream_pixels, scratch))
        x = None
        if lazy is not None:
            arr = _squeeze2d(lazy, input_kind, name)
            H, W = arr.shape[-2], arr.shape[-1]
            streamed = H * W > stream_pixels
        if streamed:
            _validate_streamed(arr, input_kind, name)
            source: _Source = _ArraySource(arr) if input_kind == "channels" else _RawSource(arr, input_kind)
            prob = tifffile.memmap(tmps["prob"], shape=(H, W), dtype=np.float32, photometric="minisblack")
            _predict_source(source, predictor, mode, tile, batch, progress, prob, desc=path.name,
                            budget=predictor.budget or ACTIVATION_BUDGET)
            props.release(prob)
            labels_out = tifffile.memmap(tmps["labels"], shape=(H, W), dtype=np.uint32,
                                         photometric="minisblack")
            labels, rows = props.find_proposals(prob, threshold, min_size, out=labels_out)
            labels.flush()
        else:
            x = build_input(read_image(path), input_kind, name=name)
            prob = _predict_source(_ArraySource(x), predictor, mode, tile, batch, progress, None, desc=path.name)
            labels, rows = props.find_proposals(prob, threshold, min_size)
            props.write_tiff(tmps["prob"], prob)
            props.write_tiff(tmps["labels"], labels)
        props.write_csv(tmps["csv"], rows)
        if overlay:
            props.write_overlay(tmps["overlay"], labels, prob, background=None if x is None else x[1])
        del prob, labels
        for k in finals:
            os.replace(tmps[k], finals[k])
        return FileResult(path, True, outputs=dict(finals), n_proposals=len(rows), shape=(H, W) if streamed
                          else tuple(x.shape[-2:]), streamed=streamed, seconds=time.perf_counter() - t0)
    finally:
        lazy = arr = source = None
        for tmp in [*tmps.values(), scratch]:
            tmp.unlink(missing_ok=True)


def predict_files(inputs: Iterable[str | os.PathLike] | str | os.PathLike, model: Any, backend: str = "onnx",
                  input_kind: str = "outlines", out_dir: str | os.PathLike = "predictions", *, mode: str = "halo",
                  tile: int | None = None, batch: int | None = None, threads: int | None = None,
                  threshold: float = 0.5, min_size: int = 10, overlay: bool = False, progress: bool = False,
                  stream_pixels: int = STREAM_PIXELS,
                  on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Predict every image in ``inputs`` (files and/or folders) into ``out_dir``.

    ``model``: an rdf.yaml / checkpoint / module, or a :class:`Predictor` (reused). A bad
    file is recorded as a failed :class:`FileResult` (its error names the file) and the
    other files still run. Returns one result per input file, in order.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, failed = collect_inputs(inputs, out_dir)
    results: list[FileResult] = []
    for r in failed:
        log.error("%s", r.error)
        results.append(r)
        if on_result:
            on_result(r)
    owned = not isinstance(model, Predictor)
    predictor = load_predictor(model, backend, threads) if owned else model
    bar = None
    if progress and len(files) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="images", unit="image", dynamic_ncols=True, file=sys.stderr)
    try:
        for f in files:
            try:
                r = predict_file(f, predictor, input_kind, out_dir, mode=mode, tile=tile, batch=batch,
                                 threshold=threshold, min_size=min_size, overlay=overlay, progress=progress,
                                 stream_pixels=stream_pixels)
                log.info("%s: %d proposal(s) in %.2f s", f, r.n_proposals, r.seconds)
            except Exception as exc:  # one bad file must not stop a folder run
                msg = str(exc) if isinstance(exc, InputError) else f"{f}: {type(exc).__name__}: {exc}"
                if isinstance(exc, (InputError,)) and str(f) not in msg:
                    msg = f"{f}: {msg}"
                log.debug("failed on %s", f, exc_info=True)
                log.error("%s", msg)
                r = FileResult(f, False, error=msg)
            results.append(r)
            if on_result:
                on_result(r)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if owned:
            predictor.close()
    return results


def predict_cli(args: Any) -> int:
    """``rosette-bmz predict``: prints one line per failed file and a summary."""
    from tqdm.auto import tqdm

    predictor = load_predictor(args.model, args.backend, args.threads, pad=getattr(args, "pad", None),
                               tile=args.tile, border=getattr(args, "border", None))

    def report(r: FileResult) -> None:
        if not r.ok:
            tqdm.write(f"error: {r.error}", file=sys.stderr)

    try:
        results = predict_files(args.inputs, predictor, args.backend, args.input_kind, args.out, mode=args.mode,
                                tile=args.tile, batch=args.batch, threshold=args.threshold,
                                min_size=args.min_size, overlay=args.overlay, progress=True, on_result=report)
    finally:
        predictor.close()
    ok = [r for r in results if r.ok]
    n_props = sum(r.n_proposals for r in ok)
    line = (f"predicted {len(ok)}/{len(results)} image(s) with the {args.backend} backend into {args.out}: "
            f"{n_props} rosette proposal(s)")
    if len(ok) < len(results):
        line += f"; {len(results) - len(ok)} failed"
    print(line)
    return 0 if ok and len(ok) == len(results) else 1

"""The runner's engine: a loaded model (:class:`Predictor`) and tiled prediction of any image.

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
    multiple of 16) so they can be batched. Each tile keeps only its *core*: ``context``
    pixels (112) are cropped away on every side that is not the padded image's edge
    (:func:`~rosette_bmz.runner.tiling.halo_plan`). 112 px is more than the network's
    receptive field reaches (about 100 px), so the result equals one forward pass over the
    whole padded image (measured: max |diff| 0 to 1e-7), cropped back exactly to ``H x W``.

``published``
    The published inference: 512 x 512 windows with 128 px overlap (stride 384), overlaps
    averaged with uniform weights; an axis shorter than 512 is zero-padded to 512.

Border padding (``pad``): ``constant`` (default: zeros, "no cells there"), ``symmetric``
(bioimageio.core's default when an rdf declares none) or ``reflect``. Mirroring makes
junctions at the border look like many-cell vertices: on a synthetic 1024^2 image it gave
26 false proposals within 32 px of the border, zeros gave 2 (docs/tiling.md). A package
that declares ``inputs[0].pad`` in its rdf gets that mode by default; the bioimageio
backend is told the runner's mode, so all four backends agree.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..constants import BACKENDS, DEFAULT_HALO, DIVISOR, PAD_MODES, PUBLISHED_WINDOW
from ..errors import ModelError
from ..inputs import check_model_input
from ..proposals import release
from .backends import TileBackend, make_backend
from .models import resolve_model
from .sources import ArraySource, Source
from .tiling import (ACTIVATION_BUDGET, AxisPlan, coverage, default_batch, default_tile, halo_plan,
                     in_memory_budget, published_plan)

log = logging.getLogger(__name__)

__all__ = ["MODES", "DEFAULT_PAD", "DEFAULT_CONTEXT", "Predictor", "load_predictor", "predict", "predict_source"]

MODES: tuple[str, ...] = ("halo", "published")
#: Pad mode at the image border: zeros = "no cells there". Mirroring (bioimageio.core's
#: default, symmetric) turns junctions at the border into many-cell vertices and so into
#: false rosette proposals (docs/tiling.md: 26 of 57 proposals within 32 px of the border).
DEFAULT_PAD = "constant"
#: Context cropped from every tile side in halo mode: tiles agree with a whole-image pass
#: within 1e-3 only with >= 96 px; 112 px (= the package's halo) gives 0 (docs/tiling.md).
DEFAULT_CONTEXT = DEFAULT_HALO


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
    be = make_backend(src, backend, threads, session_options=session_options, weight_format=weight_format,
                      blocksize_parameter=blocksize_parameter)
    if be.source.in_channels != 2:  # a checkpoint's channels are known once it is loaded
        be.close()
        raise ModelError(f"{src.name}: the weights read {be.source.in_channels} input channel(s); the runner "
                         "feeds the published 2-channel input (thick boundaries, outlines)")
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


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _bar(progress: bool | Any, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tile", leave=False, dynamic_ncols=True, file=sys.stderr)


def _run_tiles(source: Source, predictor: Predictor, py: AxisPlan, px: AxisPlan, batch: int | None,
               consume: Callable[[int, int, np.ndarray], None], progress: bool | Any, desc: str,
               offset: int, pad: str, out: Any = None, budget: int = ACTIVATION_BUDGET) -> None:
    tiles = [(y, x) for y in py.starts for x in px.starts]
    n = (min(batch, len(tiles)) if batch
         else default_batch(py.size * px.size, predictor.base_channels, len(tiles), budget))
    buf = np.zeros((n, source.channels, py.size, px.size), dtype=np.float32)
    bar = _bar(progress, len(tiles), desc)
    try:
        for group in _batches(tiles, n):
            view = buf[:len(group)]
            for k, (y0, x0) in enumerate(group):
                source.fill(view[k], y0, x0, offset, pad)
            pred = predictor.backend.run(view)
            if not np.isfinite(pred).all():
                raise ModelError(f"{predictor.name}: the network returned NaN or infinite probabilities; "
                                 "its weights are broken (re-export or retrain them)")
            for k, (y0, x0) in enumerate(group):
                consume(y0, x0, pred[k])
            release(out)                                     # memory maps: drop the pages just
            release(getattr(source, "x", getattr(source, "raw", None)))   # written / read
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()


def predict_source(source: Source, predictor: Predictor, mode: str, tile: int | None, batch: int | None,
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
    cy, cx = coverage(py), coverage(px)
    for r0 in range(0, H, 1024):  # strip-wise, so a memory-mapped output stays O(strip)
        out[r0:r0 + 1024] /= cy[r0:r0 + 1024, None] * cx[None, :]
    return out


def _predict_whole_bioimageio(source: Source, predictor: Predictor, out: np.ndarray, mode: str,
                              pad: str) -> np.ndarray:
    """bioimageio.core blocks the whole image itself; the image is first padded as halo mode
    pads it (``pad``, ``predictor.border_for(pad)`` px), so the backends agree at the border."""
    if mode != "halo":
        log.info("bioimageio backend: mode %r ignored, bioimageio.core blocks the image itself", mode)
    H, W = source.shape
    x = np.asarray(source.read(0, H, 0, W), dtype=np.float32)
    out[...] = predictor.backend.predict_image(x, pad, predictor.border_for(pad))
    return out


#: The 8 symmetries of the square (rotation by r x 90 degrees, then a left-right flip if f).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((r, f) for f in (False, True) for r in range(4))


def predict_tta(x: np.ndarray, predictor: Predictor, mode: str = "halo", tile: int | None = None,
                batch: int | None = None, progress: bool | Any = False, out: np.ndarray | None = None,
                pad: str | None = None, desc: str = "tiles") -> np.ndarray:
    """Test-time augmentation: the mean probability over the 8 rotations / flips of a (2, H, W) input.

    The network is not exactly equivariant to them; averaging its 8 answers removes much of
    the jitter on ambiguous junctions (measured on the synthetic heldout world with the
    issue-13 weights: event precision 0.81 -> 0.87 at the same recall). Costs 8 passes.
    """
    H, W = x.shape[-2:]
    acc = np.zeros((H, W), dtype=np.float64)
    for i, (r, flip) in enumerate(DIHEDRAL):
        y = np.rot90(x, r, axes=(-2, -1))
        if flip:
            y = y[..., ::-1]
        p = predict_source(ArraySource(np.ascontiguousarray(y)), predictor, mode, tile, batch, progress, None,
                           desc=f"{desc} (view {i + 1}/8)", pad=pad)
        if flip:
            p = p[..., ::-1]
        acc += np.rot90(p, -r)
    if out is None:
        out = np.empty((H, W), dtype=np.float32)
    out[...] = acc / len(DIHEDRAL)
    return out


def predict_array(x: np.ndarray, predictor: Predictor, mode: str = "halo", tile: int | None = None,
                  batch: int | None = None, progress: bool | Any = False, out: np.ndarray | None = None,
                  pad: str | None = None, desc: str = "tiles", tta: bool = False) -> np.ndarray:
    """The probability of a validated (2, H, W) array held in memory: one pass, or the mean of the
    8 views with ``tta`` (:func:`predict_tta`)."""
    if tta:
        return predict_tta(x, predictor, mode, tile, batch, progress, out, pad=pad, desc=desc)
    return predict_source(ArraySource(x), predictor, mode, tile, batch, progress, out, desc=desc, pad=pad)


def predict(x: np.ndarray, predictor: Predictor | Any, mode: str = "halo", tile: int | None = None,
            batch: int | None = None, progress: bool = False, out: np.ndarray | None = None,
            pad: str | None = None, tta: bool = False) -> np.ndarray:
    """Rosette probability (H, W) float32 for a (2, H, W) input of any size.

    ``predictor``: from :func:`load_predictor` (or anything it accepts: rdf.yaml,
    checkpoint, module; then the onnx backend is used for paths, torch for modules).
    ``mode``: ``halo`` (default, fast, equals a whole-image pass within 1e-3) or
    ``published`` (512 window, 128 overlap, uniform averaging). ``tile``: maximum tile
    side for halo mode (multiple of 16). ``batch``: tiles per forward pass (default from
    tile size and model width). ``out``: optional (H, W) float32 array (e.g. a memory map)
    to write into. ``pad``: how halo mode pads the image border (``constant`` = zeros,
    ``symmetric``, ``reflect``; default the predictor's, see :func:`load_predictor`).
    ``tta``: average over the 8 rotations / flips (:func:`predict_tta`; 8x the time).
    """
    owned = not isinstance(predictor, Predictor)
    if owned:
        predictor = load_predictor(predictor, "onnx" if isinstance(predictor, (str, os.PathLike)) else "torch")
    try:
        x = check_model_input(x, predictor.in_channels)
        return predict_array(x, predictor, mode, tile, batch, progress, out, pad=pad, tta=tta)
    finally:
        if owned:
            predictor.close()

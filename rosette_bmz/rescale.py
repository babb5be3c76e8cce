"""Cell size: measure it on an outline image, and bring an input to the size the network knows.

The demo weights were trained on cells of 14-40 px (``rosette_bmz.worlds``, the ``train``
world); on cells far outside that range they miss most rosettes (12 px cells) or propose
false ones (45 px cells; ``training/demo/generalisation.md``). As Cellpose does with its
``diameter``, the runner can therefore resample an input so that its cells measure
:data:`~rosette_bmz.constants.MODEL_CELL_DIAMETER` px, predict there, and resample the
probability back to the image's own grid (``predict(..., cell_diameter=...)``,
``rosette-bmz predict --cell-diameter auto``).

* :func:`cell_diameter` measures the cells of an outline image: the cells are those of the
  classical baseline (:func:`~rosette_bmz.baseline.cells_from_outlines`: 4-connected regions
  between the lines, breaks bridged, slivers and tissue-free space left out); the diameter is
  the centre spacing of hexagonal cells of their median area, ``sqrt(area / (sqrt(3) / 2))``,
  which is what the synthetic generator's ``cell_diameter`` means.
* :func:`resample_outlines` redraws the outlines at another scale: the cell label image is
  resampled (nearest neighbour) and its Cellpose-style inner outlines drawn again, so lines stay
  1 px per cell at every scale (resampling the binary lines themselves would thicken or break
  them). The redrawn outlines are the baseline's cells: stray fragments that close no cell are
  dropped, short breaks are closed.
* :func:`resample_probability` brings a probability map back to a given shape (bilinear).

numpy / scipy only; torch is never imported.
"""

from __future__ import annotations

import math

import numpy as np

from .baseline import cells_from_outlines
from .constants import MODEL_CELL_DIAMETER, RESCALE_TOLERANCE
from .errors import InputError
from .inputs import inner_outlines

__all__ = ["cell_diameter", "scale_factor", "resample_outlines", "resample_probability", "resolve_cell_diameter"]

#: Fewer measurable cells than this and the diameter is not estimated.
MIN_CELLS = 10


def cell_diameter(outlines: np.ndarray, name: str | None = None) -> float:
    """Typical cell diameter (px) of a binary outline image: the hexagonal centre spacing of the
    median cell area, cells touching the image edge left out.

    Raises :class:`InputError` when fewer than :data:`MIN_CELLS` whole cells are found.
    """
    cells = cells_from_outlines(np.asarray(outlines) > 0)
    n = int(cells.max(initial=0))
    edge = np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))
    area = np.bincount(cells.reshape(-1), minlength=n + 1).astype(np.float64)
    keep = area > 0
    keep[0] = False
    keep[edge] = False
    if int(keep.sum()) < MIN_CELLS:
        raise InputError(f"{name or 'input'}: cannot measure the cell diameter: only {int(keep.sum())} whole "
                         f"cells found (need {MIN_CELLS}); give --cell-diameter in pixels instead")
    return math.sqrt(float(np.median(area[keep])) / (math.sqrt(3) / 2))


def scale_factor(diameter: float, target: float = MODEL_CELL_DIAMETER, tolerance: float = RESCALE_TOLERANCE) -> float:
    """Zoom that brings cells of ``diameter`` px to ``target`` px; 1.0 when the two differ by less
    than the factor ``tolerance`` (the network handles those as they are)."""
    if not (diameter > 0 and math.isfinite(diameter)):
        raise InputError(f"cell diameter must be a positive number of pixels, got {diameter!r}")
    f = target / float(diameter)
    return 1.0 if max(f, 1 / f) < tolerance else f


def resolve_cell_diameter(value: float | str | None, outlines: np.ndarray, name: str | None = None) -> float | None:
    """``None`` (no resampling), ``"auto"`` (measured by :func:`cell_diameter`) or a number of pixels."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return cell_diameter(outlines, name)
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"cell diameter must be 'auto' or a number of pixels, got {value!r}") from None
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"cell diameter must be 'auto' or a positive number of pixels, got {value!r}")
    return value


def _zoom_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return tuple(max(1, int(round(s * factor))) for s in shape)  # type: ignore[return-value]


def resample_outlines(outlines: np.ndarray, factor: float) -> np.ndarray:
    """Bool outlines of the same tissue with every length multiplied by ``factor`` (module doc)."""
    cells = cells_from_outlines(np.asarray(outlines) > 0)
    H, W = cells.shape
    h, w = _zoom_shape((H, W), factor)
    iy = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    ix = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return inner_outlines(cells[iy[:, None], ix[None, :]])


def resample_probability(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a (h, w) map onto ``shape`` (pixel centres aligned), float32."""
    from scipy import ndimage

    prob = np.asarray(prob, dtype=np.float32)
    h, w = prob.shape
    H, W = shape
    yy = (np.arange(H, dtype=np.float32) + 0.5) * h / H - 0.5
    xx = (np.arange(W, dtype=np.float32) + 0.5) * w / W - 0.5
    out = np.empty((H, W), dtype=np.float32)
    # one row of coordinates at a time keeps memory at a few rows of the output
    rows = max(1, (1 << 22) // max(W, 1))
    for y0 in range(0, H, rows):
        yc = yy[y0:y0 + rows]
        grid = np.stack(np.broadcast_arrays(yc[:, None], xx[None, :]))
        out[y0:y0 + rows] = ndimage.map_coordinates(prob, grid, order=1, mode="nearest")
    return out

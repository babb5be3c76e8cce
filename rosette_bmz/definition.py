"""What a rosette is: one rule, read off a cell label image.

The generator labels its images with it (:func:`rosette_bmz.synth.generate` calls
:func:`find_rosettes` on its final, noisy label image with gaps closed), ``rosette-bmz evaluate
--truth labels`` builds ground truth the same way from a user's label images, and ``docs/metrics.md`` ("What a
rosette is") states it. Planted or arisen by chance makes no difference.

The rule, on a cell label image (0 = no tissue)
-----------------------------------------------
1. *Vertices*: the junction graph of :func:`rosette_bmz.baseline.find_vertices`. Every 2x2
   pixel window holding >= 3 distinct cells is a partial vertex; partial vertices that share
   >= 2 cells and lie less than :data:`~rosette_bmz.constants.MERGE_DISTANCE` (3.5 px) apart are
   one vertex: cells meet at one point when their borders come within about 2 px of it.
2. *Extruding cell*: a cell smaller than
   :data:`~rosette_bmz.constants.SMALL_CELL_FRACTION` (0.5) x the median area of its own
   neighbours, with >= 3 neighbours, touching neither the image edge nor tissue-free space
   (label 0) nor another such cell. It is collapsed, with every vertex on its border, into one
   vertex; it is the centre, not one of the ``k`` cells.
3. *Multiplicity* ``k`` of a vertex = the distinct cells meeting there (the extruding cell
   not counted). **Rosette** = ``k >= 5``
   (:data:`~rosette_bmz.constants.MIN_MULTIPLICITY`): kind ``"extrusion"`` when it closes
   around an extruding cell, else ``"vertex"``. A vertex with ``k == 4`` is a **4-cell
   junction** (kind ``"four_cell"``, or ``"small_cell"`` around a small cell): the look-alike
   that is not a rosette, reported as a *decoy* when it lies farther than the decoy radius
   (a quarter cell diameter, :func:`rosette_bmz.metrics.decoy_radius`) from every rosette
   mask, so that a perfect rosette mask never "hits" a decoy. Two vertices that are no
   rosette, less than :data:`~rosette_bmz.constants.NEAR_MISS_DISTANCE` (7 px) apart but not
   merged, whose cells number >= 5 together, are a *near miss* (reported at their midpoint,
   away from the rosette masks as decoys are): not a rosette either, and the look-alike a
   detector confuses most; the trainer can centre crops on them (``near_miss_fraction``).
4. *Mask*: :func:`rosette_bmz.baseline.rosette_masks`: the rosette's cells (the extruding cell
   included) clipped to a disc of one local cell diameter (``sqrt(median ring-cell area /
   (sqrt(3)/2))``) around the vertex; a pixel two masks would share goes to the nearer centre.

Label images with segmentation gaps (a Cellpose segmentation) can be closed first:
``fill_gaps`` px of unlabelled space next to a cell join it (:func:`rosette_bmz.baseline.grow_cells`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .baseline import find_vertices, grow_cells, rosette_masks
from .constants import MERGE_DISTANCE, MIN_MULTIPLICITY, NEAR_MISS_DISTANCE, SMALL_CELL_FRACTION
from .metrics import decoy_radius

__all__ = ["RosetteTruth", "find_rosettes", "RULE"]

#: The rule in one sentence (written into every synthetic image's JSON).
RULE = (f"rosette = a vertex of the cell junction graph where >= {MIN_MULTIPLICITY} cells meet (partial vertices "
        f"sharing >= 2 cells and < {MERGE_DISTANCE:g} px apart are one vertex), or >= {MIN_MULTIPLICITY} cells "
        f"closing around a small cell (< {SMALL_CELL_FRACTION:g} x its neighbours' median area, not at the image "
        "edge or tissue-free space); 4-cell junctions farther than the decoy radius from every rosette mask are "
        "decoys; mask = the rosette's cells within one local cell diameter of the vertex")

_HEX_AREA = math.sqrt(3) / 2


@dataclass
class RosetteTruth:
    """The output of :func:`find_rosettes`.

    ``rosettes``: one dict per rosette, in instance order: ``id`` (its value in ``mask``),
    ``y``, ``x`` (vertex, px; the extruding cell's centroid for the extrusion kind), ``k``,
    ``kind`` (``"vertex"`` / ``"extrusion"``), ``cells`` (the ``k`` cell ids, ascending),
    ``central`` (extruding cell ids, ascending), ``mask_radius`` (px), ``area`` (mask pixels).
    ``decoys``: the 4-cell junctions away from the rosettes, same keys without ``id``,
    ``mask_radius``, ``area``; kind ``"four_cell"`` / ``"small_cell"``. ``mask``: uint16
    instances. ``vertices``: every merged vertex (k >= 3) of :func:`~rosette_bmz.baseline.find_vertices`.
    ``cell_diameter``: the typical cell diameter (px, from the median cell area) or None.
    ``near_misses``: pairs of non-rosette vertices closer than ``NEAR_MISS_DISTANCE`` with >= 5
    cells together: ``y``, ``x`` (midpoint), ``k`` (cells of the two together), ``distance`` (px).
    """

    rosettes: list[dict[str, Any]]
    decoys: list[dict[str, Any]]
    mask: np.ndarray
    vertices: list[dict[str, Any]] = field(default_factory=list)
    cell_diameter: float | None = None
    near_misses: list[dict[str, Any]] = field(default_factory=list)


def _entry(v: dict[str, Any]) -> dict[str, Any]:
    central = sorted(int(c) for c in v["central"])
    return {"y": round(float(v["y"]), 2), "x": round(float(v["x"]), 2), "k": int(v["k"]),
            "cells": sorted(int(c) for c in v["cells"] if int(c) not in central), "central": central}


def find_rosettes(labels: np.ndarray, *, mask_radius: float = 1.0, cell_diameter: float | None = None,
                  fill_gaps: int = 0, merge_distance: float = MERGE_DISTANCE,
                  small_cell_fraction: float = SMALL_CELL_FRACTION) -> RosetteTruth:
    """Every rosette and 4-cell junction of a cell label image, by the rule of the module doc.

    Parameters
    ----------
    labels : ndarray
        (H, W) integer cell labels, 0 = no tissue; a clean tiling (cells touch) or, with
        ``fill_gaps``, a segmentation with thin gaps.
    mask_radius : float
        Mask clip radius in local cell diameters (1.0: the ground truth's definition).
    cell_diameter : float, optional
        Sets the decoy radius (a quarter of it); default: from the median cell area.
    fill_gaps : int
        Unlabelled pixels within this many px of a cell join it first (0: use ``labels`` as is).
    merge_distance, small_cell_fraction : float
        The rule's two thresholds (keep the defaults: they *are* the definition).

    Returns
    -------
    RosetteTruth
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise ValueError(f"find_rosettes needs a 2D integer cell label image, got {lab.dtype} {lab.shape}")
    lab = lab.astype(np.int32, copy=False)
    if fill_gaps > 0:
        lab = grow_cells(lab, int(fill_gaps))
    area = np.bincount(lab.reshape(-1))
    if cell_diameter is None and area.size > 1 and area[1:].any():
        cell_diameter = math.sqrt(float(np.median(area[1:][area[1:] > 0])) / _HEX_AREA)
    vertices = find_vertices(lab, merge_distance=merge_distance, small_cell_fraction=small_cell_fraction,
                             closed_small_cells=True)
    big = [v for v in vertices if v["k"] >= MIN_MULTIPLICITY]
    mask, radii = rosette_masks(lab, big, mask_radius)
    counts = np.bincount(mask.reshape(-1), minlength=len(big) + 1)
    rosettes = []
    for i, (v, r) in enumerate(zip(big, radii), start=1):
        rosettes.append({"id": i, **_entry(v), "kind": "extrusion" if v["central"] else "vertex",
                         "mask_radius": round(float(r), 3), "area": int(counts[i])})
    radius = decoy_radius({"cell_diameter": cell_diameter})
    far = ndimage.distance_transform_edt(mask == 0) if rosettes else None
    h, w = lab.shape

    def away(y: float, x: float) -> bool:   # farther than the decoy radius from every rosette mask
        if far is None:
            return True
        return far[min(h - 1, max(0, int(round(y)))), min(w - 1, max(0, int(round(x))))] > radius + 1

    decoys = [{**_entry(v), "kind": "small_cell" if v["central"] else "four_cell"} for v in vertices
              if v["k"] == MIN_MULTIPLICITY - 1 and away(v["y"], v["x"])]
    return RosetteTruth(rosettes, decoys, mask, vertices, cell_diameter, _near_misses(vertices, away))


def _near_misses(vertices: list[dict[str, Any]], away) -> list[dict[str, Any]]:
    """Pairs of non-rosette vertices closer than NEAR_MISS_DISTANCE with >= 5 cells together."""
    small = [v for v in vertices if v["k"] < MIN_MULTIPLICITY]
    if len(small) < 2:
        return []
    from scipy.spatial import cKDTree

    pts = np.array([(v["y"], v["x"]) for v in small], dtype=float)
    out = []
    for i, j in sorted(cKDTree(pts).query_pairs(NEAR_MISS_DISTANCE)):
        cells = (set(small[i]["cells"]) | set(small[j]["cells"])) - set(small[i]["central"]) - set(small[j]["central"])
        y, x = (pts[i] + pts[j]) / 2
        if len(cells) >= MIN_MULTIPLICITY and away(y, x):
            out.append({"y": round(float(y), 2), "x": round(float(x), 2), "k": len(cells),
                        "distance": round(float(np.hypot(*(pts[i] - pts[j]))), 2)})
    return out

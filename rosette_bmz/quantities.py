"""Rosette quantities biologists report: topology per proposal, counts per image.

A proposal (a connected region of the probability map, :func:`rosette_bmz.proposals.find_proposals`)
is a blob with a centroid, an area and a probability. What papers report about rosettes is
topology: how many cells meet there, whether they close around an extruding cell, how many
rosettes per cell and per area, what share of the cells takes part. All of it is read off the
cell label image with the classical baseline's junction graph (:mod:`rosette_bmz.baseline`);
nothing is computed twice.

Cells (:func:`cells_for`)
    *labels* input (a Cellpose-style label image): the labels, with unlabelled gaps up to
    :data:`~rosette_bmz.baseline.LABEL_GAP_FILL` px filled (:func:`~rosette_bmz.baseline.grow_cells`);
    *outlines* input (or *channels*, whose channel 1 is the thin outline image): the cells
    recovered by :func:`~rosette_bmz.baseline.cells_from_outlines`, with its *blur* image so
    the vertex merging adapts to the outline band exactly as in the baseline; then, as for
    labels, background pixels within ``LABEL_GAP_FILL`` px of a cell join it. (The recovery
    keeps a network of segmentation gaps as tissue-free space when it is wider than a cell
    radius somewhere, e.g. next to a missed cell; the cells along it would then not touch and
    their vertices would be lost.)

Vertices
    :func:`~rosette_bmz.baseline.find_vertices`: 2x2 windows with >= 3 cells; two such vertices
    sharing a cell-cell border shorter than ``merge_distance`` are one vertex, and a small cell
    is collapsed together with every vertex on its border. The multiplicity ``k`` counts the
    cells around the vertex, not the collapsed small cell. ``merge_distance`` is
    :data:`~rosette_bmz.constants.MERGE_DISTANCE` = 3.5 px, the rosette definition's
    (:mod:`rosette_bmz.definition`; since issue 13 the baseline detector uses it too): cells
    meet at a vertex when their borders come within about 2 px of one point, i.e. when partial
    vertices are up to about 4 px apart, and segmentation noise splits many-cell vertices over
    3-4 px. Of the values tried (2.5, 3.5, 4, 5 px) 3.5 was the largest that created no
    junction of >= 5 cells in the noise-free synthetic tissue of the time, whose chance
    junctions were pulled apart (4 px: 0.5 per 1024² image). Measured then on 16 synthetic
    1024² images (489 planted rosettes, seeds 1000-1015), k read at the true rosettes agreed
    with the true k for, at noise 0 / 0.5 / 1: outlines 100 / 92.4 / 62.0 %, labels 100 / 99.0
    / 92.8 % (with 2.5 px: outlines 99.4 / 88.8 / 56.4 %, labels 99.2 / 95.1 / 77.3 %).

Small (extruding) cell
    The issue suggests "< ~0.3x the median cell area"; this module keeps the baseline's rule,
    area < ``small_cell_fraction`` (0.5) x the median area of the cell's *own neighbours*, with
    >= 3 neighbours, not cut by the image edge and no small neighbour. Measured on 8 noise-free
    synthetic 1024² images (80 extruding cells): relative to the image's median cell area the
    extruding cells measure 0.17-0.70 (median 0.33), so "< 0.3x the median" would find only
    31 % of them (the wedge cells around a rosette and density gradients across the tissue make
    a global median a poor yardstick); relative to their own neighbours they measure
    0.15-0.41, and ordinary cells with >= 5 neighbours at least 0.56, so 0.5 separates the two.
    Kind agreement at the true rosettes (261, noise 0 / 0.5 / 1): 0.5 of the neighbours'
    median: outlines 100 / 98.9 / 87.7 %, labels 100 / 100 / 100 %; 0.3 of it: outlines
    89.3 / 90.4 / 84.3 %, labels 89.3 / 92.3 / 93.1 %.
    ``small_cell_fraction`` is a parameter for users whose extrusions look different.

Matching a proposal to a vertex (:func:`describe_proposals`)
    The candidates are the merged vertices (multiplicity >= 3) whose centre lies inside the
    proposal's region or within ``max_distance`` px of it (default: a quarter of the typical
    cell diameter, ``0.25 * sqrt(median cell area / (sqrt(3)/2))``, about 6 px for 24 px cells:
    half the distance to the neighbouring vertices). The one with the highest multiplicity is
    reported, ties broken by the distance of the vertex to the proposal's centroid. Columns
    added to each proposal row (:data:`TOPOLOGY_COLUMNS`):

    ``k``
        cells meeting at that vertex (0 when no vertex of >= 3 cells is near the proposal);
    ``kind``
        ``"vertex"`` (k cells meet at one point) or ``"extrusion"`` (k cells close around a
        small central cell); empty when ``k`` is 0;
    ``cells``
        the ids of the ``k`` cells in the cell label image (``labels`` input: the user's own
        label ids; outline input: ids of the recovered cells), ascending;
    ``central``
        the id of the extruding cell(s) for the extrusion kind, else empty;
    ``vertex_y``, ``vertex_x``
        the vertex position in pixels (the extruding cell's centroid for the extrusion kind);
        empty when ``k`` is 0;
    ``note``
        empty when exactly one junction of >= 5 cells was found; otherwise
        ``"no junction of >= 5 cells within N px; k is the highest multiplicity found"``,
        ``"no cell junction within N px"`` (``k`` = 0), or
        ``"M junctions of >= 5 cells; k is the highest"`` (the proposal covers several).

    In the CSV (:func:`write_rosette_csv`) ``cells`` and ``central`` are space-separated ids.

Checked proposals (:func:`check_proposals`, ``rosette-bmz predict --check``)
    The network proposes; the vertex graph of the same cells checks. A proposal is kept when a
    junction of >= 5 cells lies in or near it (its ``k``, above) or when the network is sure
    of it (peak probability > :data:`~rosette_bmz.constants.CHECK_SURE`, 0.9). A junction of
    >= 5 cells of the classical baseline's graph (:func:`baseline_vertices`: partial vertices
    merged within the definition's 3.5 px, not the 4 px the ``k`` column allows for outline
    input) that no kept proposal touches is added (its rosette mask by the baseline's mask rule)
    when the network half-saw it (peak probability on that mask > :data:`~rosette_bmz.constants.
    CHECK_SUPPORT`, 0.2). Each row then says where it came from (``source``: ``network`` or
    ``vertex``). Many false proposals of the demo weights sit on 4-cell junctions and near misses
    of the definition, where no >= 5-cell junction is; many rosettes they miss are junctions the
    graph has and the network half-saw. Keeping needs less of the graph than adding: the network
    already proposed it. Measured (docs/metrics.md, "Checked proposals"): mean event F1 over the
    nine synthetic test sets 84.6 -> 88.5 (baseline 86.6).

Per-image summary (:func:`image_summary`)
    Every proposal is a rosette here (the detector's answer); ``n_rosettes_k5`` says how many
    of them have a junction of >= 5 cells in the cell image. Cells are all labelled cells of
    the cell image (after the gap filling / recovery above), cells cut by the image edge
    included (``n_cells_at_edge`` says how many); the tissue area is the labelled pixels.
    A cell *takes part* in a rosette when it is one of the ``cells`` or ``central`` of a
    proposal with ``k > 0``. The dict (the per-image JSON, see :mod:`rosette_bmz.summary`):

    ``image`` (name or None), ``input_kind``, ``n_cells``, ``n_cells_at_edge``,
    ``tissue_area_px``, ``pixel_size_um`` (µm per pixel or None), ``tissue_area_um2``,
    ``n_rosettes``, ``n_rosettes_k5``, ``rosettes_per_1000_cells``, ``rosettes_per_1000_um2``
    (None without a pixel size), ``n_cells_in_rosettes``, ``percent_cells_in_rosette``,
    ``k_histogram`` (``{"5": 3, "6": 1, ...}``, string keys in ascending k, every k that
    occurs, 0 included), ``kinds`` (``{"vertex": n, "extrusion": n, "none": n}``) and
    ``rosettes_from``: ``"network"`` (the network's proposals) or ``"checked"`` (the proposals
    checked against the vertex graph, ``predict --check``). Ratios with a zero denominator are None.

Bad input raises :class:`QuantityError` naming the input (a
:class:`~rosette_bmz.errors.RosetteError` and ``ValueError``: the CLI prints it as one line);
an input image of the wrong kind raises :class:`rosette_bmz.errors.InputError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .baseline import LABEL_GAP_FILL, cells_from_outlines, find_vertices, grow_cells, rosette_masks
from .constants import (CHECK_SUPPORT, CHECK_SURE, MERGE_DISTANCE, MIN_MULTIPLICITY, ROSETTE_SOURCES,
                        SMALL_CELL_FRACTION)
from .errors import QuantityError
from .files import atomic_path
from .inputs import build_input
from .proposals import write_csv

__all__ = ["QuantityError", "Cells", "TOPOLOGY_COLUMNS", "SMALL_CELL_FRACTION", "MERGE_DISTANCE",
           "OUTLINE_MERGE_DISTANCE", "cells_for", "typical_cell_diameter", "cell_vertices", "baseline_vertices",
           "describe_proposals", "check_proposals", "check_image_proposals", "image_summary",
           "topology_values", "write_rosette_csv"]

#: Columns :func:`describe_proposals` adds to a proposal row (and :func:`write_rosette_csv` to the CSV).
TOPOLOGY_COLUMNS = ("k", "kind", "cells", "central", "vertex_y", "vertex_x", "note")
#: ``merge_distance`` for cells recovered from outlines: the rosette definition's 3.5 px plus half
#: a pixel, because splitting the outline band between neighbours moves each recovered border by
#: up to a pixel and spreads a junction's partial vertices. Measured on 6 images of 1024² of the
#: issue-13 generator (286 rosettes, true masks as proposals; 4-cell junctions as discs): k right
#: for 94.8 / 98.6 / 99.7 % (noise 0) and 82.9 / 86.0 / 88.5 % (noise 0.5) at 3.5 / 4 / 4.5 px,
#: while 4-cell junctions read as >= 5 rose from 0.9 / 2.0 / 4.0 % (noise 0) and 2.2 / 4.0 / 5.8 %
#: (noise 0.5): 4 px keeps both errors small.
OUTLINE_MERGE_DISTANCE = MERGE_DISTANCE + 0.5
_HEX_AREA = math.sqrt(3) / 2


@dataclass
class Cells:
    """A cell label image and how it was obtained (the output of :func:`cells_for`).

    ``labels``: int32 (H, W), one id per cell, 0 = no tissue. ``blur``: for outline input, each
    pixel's distance (px) to the nearest cell interior (the baseline's adaptive vertex merging
    uses it); None for label input. ``input_kind``: "labels", "outlines" or "channels".
    The vertex graphs :func:`cell_vertices` computes are kept with it, so describing and checking
    the same cells reads each graph once (treat ``labels`` and ``blur`` as read-only).
    """

    labels: np.ndarray
    blur: np.ndarray | None = None
    input_kind: str = "labels"
    _graphs: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def cells_for(image: np.ndarray, input_kind: str = "outlines", name: str | None = None) -> Cells:
    """The cell label image of an input image, as the baseline reads it.

    Parameters
    ----------
    image : ndarray
        ``"labels"``: integer label image (H, W); ``"outlines"``: binary outline image (H, W);
        ``"channels"``: the model's (2, H, W) input, whose channel 1 is the outline image.
    input_kind : str
        One of ``"labels"``, ``"outlines"``, ``"channels"``.
    name : str, optional
        Names the input in error messages (e.g. the file path).

    Returns
    -------
    Cells
        The cell labels (and the outline blur image for outline input).

    Raises
    ------
    rosette_bmz.inputs.InputError
        The image is not a valid input of that kind (same checks as the model input).
    """
    # the same validation (and messages) as the model's input; channel 1 = the thin outlines
    channels = build_input(image, input_kind, name)
    if input_kind == "labels":
        lab = np.asarray(image)
        lab = lab.reshape(channels.shape[1:])  # (1, H, W) / (H, W, 1) accepted like build_input
        return Cells(grow_cells(lab.astype(np.int32, copy=False), LABEL_GAP_FILL), None, "labels")
    labels, blur = cells_from_outlines(channels[1] > 0, return_blur=True)
    # segmentation gaps wider than a cell radius somewhere (next to a missed cell) are kept as
    # tissue-free space by the recovery; fill their first few px like gaps in a label image
    return Cells(grow_cells(labels, LABEL_GAP_FILL), blur, input_kind)


def _as_cells(cells: Cells | np.ndarray, what: str = "cells") -> Cells:
    if isinstance(cells, Cells):
        return cells
    lab = np.asarray(cells)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise QuantityError(f"{what}: need a 2D integer cell label image (or a Cells from cells_for), "
                            f"got {lab.dtype} {lab.shape}")
    if lab.size and lab.min() < 0:
        raise QuantityError(f"{what}: cell labels must be >= 0, found {lab.min()}")
    return Cells(lab.astype(np.int32, copy=False), None, "labels")


def typical_cell_diameter(cells: Cells | np.ndarray) -> float | None:
    """Centre spacing (px) of hexagonal cells of the median cell area; None without cells."""
    lab = _as_cells(cells).labels
    area = np.bincount(lab.reshape(-1))[1:]
    area = area[area > 0]
    if area.size == 0:
        return None
    return math.sqrt(float(np.median(area)) / _HEX_AREA)


def cell_vertices(cells: Cells | np.ndarray, *, merge_distance: float | None = None,
                  small_cell_fraction: float = SMALL_CELL_FRACTION) -> list[dict]:
    """The merged vertices (multiplicity >= 3) of ``cells``: :func:`~rosette_bmz.baseline.find_vertices`
    with ``merge_distance`` :data:`MERGE_DISTANCE` for label images and :data:`OUTLINE_MERGE_DISTANCE`
    for cells recovered from outlines (the vertex graph :func:`describe_proposals` reads ``k`` from)."""
    c = _as_cells(cells)
    if merge_distance is None:
        merge_distance = MERGE_DISTANCE if c.input_kind == "labels" else OUTLINE_MERGE_DISTANCE
    key = (float(merge_distance), float(small_cell_fraction))
    if key not in c._graphs:
        c._graphs[key] = find_vertices(c.labels, merge_distance=merge_distance,
                                       small_cell_fraction=small_cell_fraction, blur=c.blur)
    return list(c._graphs[key])


def baseline_vertices(cells: Cells | np.ndarray) -> list[dict]:
    """The vertex graph of ``cells`` with the classical baseline's merge distance: :func:`cell_vertices`
    with the rosette definition's :data:`MERGE_DISTANCE` for every input kind, as
    :func:`~rosette_bmz.baseline.detect_rosettes` merges (for label images the same graph as
    :func:`cell_vertices`). :func:`check_proposals` adds junctions from it."""
    return cell_vertices(cells, merge_distance=MERGE_DISTANCE)


def describe_proposals(proposal_labels: np.ndarray, rows: Sequence[dict], cells: Cells | np.ndarray, *,
                       max_distance: float | None = None, small_cell_fraction: float = SMALL_CELL_FRACTION,
                       merge_distance: float | None = None, vertices: list[dict] | None = None
                       ) -> list[dict]:
    """Topology of each proposal: ``k``, ``kind``, participating cells (module doc).

    Parameters
    ----------
    proposal_labels : ndarray
        (H, W) integer proposal labels, 0 = none (from :func:`~rosette_bmz.proposals.find_proposals`).
    rows : sequence of dict
        One dict per proposal with at least ``id``, ``centroid_y``, ``centroid_x``.
    cells : Cells or ndarray
        From :func:`cells_for`, or a plain (H, W) cell label image (no outline blur).
    max_distance : float, optional
        Vertices up to this many px outside a proposal still count (default: a quarter of
        :func:`typical_cell_diameter`).
    small_cell_fraction, merge_distance : float
        Passed to :func:`~rosette_bmz.baseline.find_vertices`; ``merge_distance`` defaults to
        :data:`MERGE_DISTANCE` for label images and :data:`OUTLINE_MERGE_DISTANCE` for cells
        recovered from outlines.
    vertices : list of dict, optional
        Precomputed :func:`cell_vertices` of ``cells`` (skips recomputing it).

    Returns
    -------
    list of dict
        Copies of ``rows`` with the :data:`TOPOLOGY_COLUMNS` added (``cells`` and ``central``
        as lists of int, ``vertex_y``/``vertex_x`` as float or None).

    Raises
    ------
    QuantityError
        Shapes differ, a row lacks a key, or a row's id is not in ``proposal_labels``.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    c = _as_cells(cells)
    plab = np.asarray(proposal_labels)
    if plab.ndim != 2 or plab.dtype.kind not in "iub":
        raise QuantityError(f"proposal labels: need a 2D integer image, got {plab.dtype} {plab.shape}")
    if plab.shape != c.labels.shape:
        raise QuantityError(f"proposal labels {plab.shape} and cell labels {c.labels.shape} differ in shape")
    for r in rows:
        missing = [key for key in ("id", "centroid_y", "centroid_x") if key not in r]
        if missing:
            raise QuantityError(f"proposal row {r!r} lacks {', '.join(missing)}")
    if max_distance is None:
        d = typical_cell_diameter(c)
        max_distance = 0.25 * d if d is not None else 0.0
    if not (math.isfinite(max_distance) and max_distance >= 0):
        raise QuantityError(f"max_distance must be a finite number >= 0, got {max_distance!r}")
    if vertices is None:
        vertices = cell_vertices(c, merge_distance=merge_distance, small_cell_fraction=small_cell_fraction)
    vyx = np.array([[v["y"], v["x"]] for v in vertices], dtype=np.float64).reshape(-1, 2)
    vk = np.array([v["k"] for v in vertices], dtype=np.int64)
    tree = cKDTree(vyx) if len(vertices) else None
    boxes = ndimage.find_objects(plab if plab.dtype.kind in "iu" else plab.astype(np.uint8)) if rows else []
    H, W = plab.shape
    pad = int(math.ceil(max_distance)) + 1
    within = f"{max_distance:.0f} px"
    out = []
    for r in rows:
        pid = int(r["id"])
        box = boxes[pid - 1] if 0 < pid <= len(boxes) else None
        if box is None:
            raise QuantityError(f"proposal {pid} of the table is not in the proposal label image")
        y0, y1 = max(0, box[0].start - pad), min(H, box[0].stop + pad)
        x0, x1 = max(0, box[1].start - pad), min(W, box[1].stop + pad)
        best = None
        n_big = 0
        if tree is not None:
            # vertices in the padded box, then their distance to the region (0 inside)
            cy, cx = 0.5 * (y0 + y1 - 1), 0.5 * (x0 + x1 - 1)
            near = tree.query_ball_point([cy, cx], math.hypot(y1 - y0, x1 - x0) / 2 + 1)
            near = [i for i in near if y0 <= vyx[i, 0] <= y1 - 1 and x0 <= vyx[i, 1] <= x1 - 1]
            if near:
                region = plab[y0:y1, x0:x1] == pid
                dist = ndimage.distance_transform_edt(~region)
                near = np.array(near)
                iy = np.clip(np.rint(vyx[near, 0]).astype(int) - y0, 0, y1 - y0 - 1)
                ix = np.clip(np.rint(vyx[near, 1]).astype(int) - x0, 0, x1 - x0 - 1)
                near = near[dist[iy, ix] <= max_distance]
            if len(near):
                n_big = int((vk[near] >= MIN_MULTIPLICITY).sum())
                to_centroid = np.hypot(vyx[near, 0] - float(r["centroid_y"]), vyx[near, 1] - float(r["centroid_x"]))
                best = int(near[np.lexsort((to_centroid, -vk[near]))[0]])
        row = dict(r)
        if best is None:
            row.update(k=0, kind="", cells=[], central=[], vertex_y=None, vertex_x=None,
                       note=f"no cell junction within {within}")
        else:
            v = vertices[best]
            central = sorted(int(i) for i in v["central"])
            ring = sorted(int(i) for i in v["cells"] if int(i) not in central)
            note = ""
            if v["k"] < MIN_MULTIPLICITY:
                note = (f"no junction of >= {MIN_MULTIPLICITY} cells within {within}; "
                        "k is the highest multiplicity found")
            elif n_big > 1:
                note = f"{n_big} junctions of >= {MIN_MULTIPLICITY} cells; k is the highest"
            row.update(k=int(v["k"]), kind=v["kind"], cells=ring, central=central, vertex_y=float(v["y"]),
                       vertex_x=float(v["x"]), note=note)
        out.append(row)
    return out


def check_proposals(proposal_labels: np.ndarray, rows: Sequence[dict], cells: Cells | np.ndarray,
                    prob: np.ndarray, *, sure: float = CHECK_SURE, support: float = CHECK_SUPPORT,
                    add_from: list[dict] | None = None) -> tuple[np.ndarray, list[dict]]:
    """The network's proposals checked against the vertex graph of the same cells (module doc,
    "Checked proposals").

    Kept: every described proposal (``rows`` from :func:`describe_proposals`) with ``k`` >= 5, or
    whose peak probability is above ``sure``. Added: every junction of >= 5 cells of the
    baseline's graph (``add_from``) that no kept proposal touches, where the network's peak
    probability on its rosette mask (the mask rule of :func:`~rosette_bmz.baseline.rosette_masks`)
    is above ``support``; its pixels next to a kept proposal are left out, so every rosette stays
    its own 8-connected region. A dropped proposal does not hide a junction: measured on the nine
    generalisation sets, that was most of the rosettes the check lost on 6 px lines.

    Parameters
    ----------
    proposal_labels : ndarray
        (H, W) proposal labels of ``rows`` (:func:`~rosette_bmz.proposals.find_proposals`).
    rows : sequence of dict
        The proposals, described (:data:`TOPOLOGY_COLUMNS` present).
    cells : Cells or ndarray
        The cells the rows were described with.
    prob : ndarray
        (H, W) probability map the proposals came from.
    sure, support : float
        In [0, 1]; defaults :data:`~rosette_bmz.constants.CHECK_SURE`,
        :data:`~rosette_bmz.constants.CHECK_SUPPORT`.
    add_from : list of dict, optional
        The vertex graph junctions are added from; default :func:`baseline_vertices` of ``cells``
        (not the graph the rows were described with, which merges more for outline input).

    Returns
    -------
    labels : ndarray
        uint32 (H, W): the kept proposals (ids 1.. in their order), then the added rosettes.
    rows : list of dict
        One per rosette, ids renumbered, with a ``source`` column: ``"network"`` (a kept
        proposal, its row otherwise unchanged) or ``"vertex"`` (an added junction: area and
        probabilities over its mask, the vertex's topology).

    Raises
    ------
    QuantityError
        Shapes differ, a row is not described, or ``sure`` / ``support`` is not in [0, 1].
    """
    from scipy import ndimage

    rows = _topology_rows(rows, "check_proposals")
    c = _as_cells(cells)
    plab = np.asarray(proposal_labels)
    p = np.asarray(prob)
    if plab.shape != c.labels.shape or p.shape != c.labels.shape:
        raise QuantityError(f"check_proposals: proposal labels {plab.shape}, probability {p.shape} and cell labels "
                            f"{c.labels.shape} must have one shape")
    for what, v in (("sure", sure), ("support", support)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise QuantityError(f"check_proposals: {what} must be a number in [0, 1], got {v!r}")
    if add_from is None:
        add_from = baseline_vertices(c)
    kept = [r for r in rows if int(r["k"]) >= MIN_MULTIPLICITY or float(r["max_prob"]) > sure]
    lut = np.zeros(int(plab.max(initial=0)) + 1, dtype=np.uint32)
    out_rows = []
    for new_id, r in enumerate(kept, start=1):
        lut[int(r["id"])] = new_id
        out_rows.append({**r, "id": new_id, "source": "network"})
    out = lut[plab]
    junctions = [v for v in add_from if v["k"] >= MIN_MULTIPLICITY]
    masks, _ = rosette_masks(c.labels, junctions)
    near_proposal = ndimage.binary_dilation(out > 0, np.ones((3, 3), bool)) if junctions else None
    for i, sl in enumerate(ndimage.find_objects(masks), start=1):
        if sl is None:
            continue
        region = masks[sl] == i
        if (out[sl][region] > 0).any():
            continue
        peak = float(p[sl][region].max())
        if not peak > support:
            continue
        region &= ~near_proposal[sl]
        if not region.any():
            continue
        v = junctions[i - 1]
        new_id = len(out_rows) + 1
        out[sl][region] = new_id
        yy, xx = np.nonzero(region)
        central = sorted(int(j) for j in v["central"])
        out_rows.append({"id": new_id, "centroid_y": float(yy.mean() + sl[0].start),
                         "centroid_x": float(xx.mean() + sl[1].start), "area": int(region.sum()),
                         "max_prob": float(p[sl][region].max()), "mean_prob": float(p[sl][region].mean()),
                         "k": int(v["k"]), "kind": v["kind"], "cells": sorted(int(j) for j in v["cells"]
                                                                              if int(j) not in central),
                         "central": central, "vertex_y": float(v["y"]), "vertex_x": float(v["x"]),
                         "note": "", "source": "vertex"})
    return out, out_rows


def check_image_proposals(proposal_labels: np.ndarray, rows: Sequence[dict], prob: np.ndarray, image: np.ndarray,
                          input_kind: str = "outlines", name: str | None = None) -> tuple[np.ndarray, list[dict]]:
    """:func:`check_proposals` from the input image itself: its cells (:func:`cells_for`), the
    proposals described and checked. ``rows`` as
    :func:`~rosette_bmz.proposals.find_proposals` gives them; returns the checked labels and rows."""
    cells = cells_for(image, input_kind, name=name)
    described = describe_proposals(proposal_labels, rows, cells)
    return check_proposals(proposal_labels, described, cells, prob)


def _topology_rows(rows: Iterable[dict], what: str) -> list[dict]:
    rows = list(rows)
    for r in rows:
        missing = [key for key in TOPOLOGY_COLUMNS if key not in r]
        if missing:
            raise QuantityError(f"{what}: proposal row {r.get('id', '?')} lacks {', '.join(missing)} "
                                "(run describe_proposals first)")
    return rows


def image_summary(cells: Cells | np.ndarray, rows: Iterable[dict], pixel_size: float | None = None, *,
                  name: str | None = None, checked: bool = False) -> dict[str, Any]:
    """Per-image counts and rates (module doc, "Per-image summary").

    Parameters
    ----------
    cells : Cells or ndarray
        The cell label image the rows refer to (from :func:`cells_for`).
    rows : iterable of dict
        Proposal rows from :func:`describe_proposals`.
    pixel_size : float, optional
        Pixel size in µm per pixel; adds the tissue area in µm² and rosettes per 1000 µm².
    name : str, optional
        The image's name, stored as ``"image"``.
    checked : bool
        The rows are :func:`check_proposals`' (stored as ``"rosettes_from": "checked"``, so that
        ``rosette-bmz summarize`` does not compare them with the network's own counts).

    Returns
    -------
    dict
        JSON-safe summary (keys in the module doc).

    Raises
    ------
    QuantityError
        Bad pixel size, or rows without the topology columns.
    """
    c = _as_cells(cells)
    rows = _topology_rows(rows, name or "image_summary")
    if pixel_size is not None:
        try:
            pixel_size = float(pixel_size)
        except (TypeError, ValueError):
            raise QuantityError(f"pixel size must be a number (µm per pixel), got {pixel_size!r}") from None
        if not (math.isfinite(pixel_size) and pixel_size > 0):
            raise QuantityError(f"pixel size must be a positive number of µm per pixel, got {pixel_size!r}")
    lab = c.labels
    area = np.bincount(lab.reshape(-1))
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    n_cells = int(ids.size)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])) if lab.size else np.zeros(0, int)
    n_edge = int((edge > 0).sum())
    tissue_px = int(area[1:].sum()) if area.size > 1 else 0
    n = len(rows)
    in_rosette: set[int] = set()
    hist: dict[int, int] = {}
    kinds = {"vertex": 0, "extrusion": 0, "none": 0}
    for r in rows:
        k = int(r["k"])
        hist[k] = hist.get(k, 0) + 1
        kind = r["kind"] or "none"
        if kind not in kinds:
            raise QuantityError(f"{name or 'image_summary'}: proposal {r.get('id', '?')} has kind {kind!r}; "
                                "expected 'vertex', 'extrusion' or ''")
        kinds[kind] += 1
        if k > 0:
            in_rosette.update(int(i) for i in r["cells"])
            in_rosette.update(int(i) for i in r["central"])
    in_rosette.discard(0)
    area_um2 = tissue_px * pixel_size ** 2 if pixel_size is not None else None

    def ratio(num: float, den: float | None, scale: float) -> float | None:
        return round(scale * num / den, 6) if den else None

    return {
        "image": name,
        "input_kind": c.input_kind,
        "n_cells": n_cells,
        "n_cells_at_edge": n_edge,
        "tissue_area_px": tissue_px,
        "pixel_size_um": pixel_size,
        "tissue_area_um2": round(area_um2, 6) if area_um2 is not None else None,
        "n_rosettes": n,
        "n_rosettes_k5": sum(1 for r in rows if int(r["k"]) >= MIN_MULTIPLICITY),
        "rosettes_per_1000_cells": ratio(n, n_cells, 1000.0),
        "rosettes_per_1000_um2": ratio(n, area_um2, 1000.0),
        "n_cells_in_rosettes": len(in_rosette),
        "percent_cells_in_rosette": ratio(len(in_rosette), n_cells, 100.0),
        "k_histogram": {str(k): hist[k] for k in sorted(hist)},
        "kinds": kinds,
        "rosettes_from": ROSETTE_SOURCES[1] if checked else ROSETTE_SOURCES[0],
    }


def _ids(values: Sequence[int]) -> str:
    return " ".join(str(int(i)) for i in values)


def topology_values(row: dict) -> list[str]:
    """The :data:`TOPOLOGY_COLUMNS` of one described proposal row as CSV strings."""
    def coord(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}"

    return [str(int(row["k"])), row["kind"], _ids(row["cells"]), _ids(row["central"]),
            coord(row["vertex_y"]), coord(row["vertex_x"]), row["note"]]


def write_rosette_csv(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """``<name>_rosettes.csv``: the proposal table of :func:`rosette_bmz.proposals.write_csv`
    with the :data:`TOPOLOGY_COLUMNS` appended (napari still opens it as points), written atomically;
    rows of :func:`check_proposals` add their ``source`` column last.
    """
    rows = _topology_rows(rows, str(path))
    checked = any("source" in r for r in rows)
    columns = TOPOLOGY_COLUMNS + (("source",) if checked else ())

    def values(row: dict) -> list[str]:
        return topology_values(row) + ([str(row.get("source", ""))] if checked else [])

    path = Path(path)
    with atomic_path(path) as tmp:
        write_csv(tmp, rows, columns, values)  # the proposal columns, formatted in one place
    return path

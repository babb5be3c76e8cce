"""Synthetic *Nematostella*-like epithelium whose every rosette is known.

The real annotated images are unpublished, so this generator is the data source for training,
evaluation, tests and benchmarks. One call to :func:`generate` returns a :class:`SynthImage`:

``labels``
    (H, W) int32 cell segmentation, one integer per cell, 0 = no tissue (or a gap between two
    segmented cells). This is what a user's Cellpose segmentation would look like: with
    ``noise > 0`` it has jittered boundaries, thin gaps between cells, merged, split and missed
    cells.
``outlines``
    (H, W) uint8 0/1 outlines of ``labels`` in one of three styles (:func:`draw_outlines`):
    Cellpose inner outlines (default), 1 px watershed lines, or 2-6 px thick lines; then
    (``noise > 0``) broken by short gaps and sprinkled with spurious fragments. With
    ``noise == 0`` it equals ``draw_outlines(labels, style)`` exactly.
``rosettes``
    (H, W) uint16 rosette instance labels (0 = none); instance ``i`` is ``meta["rosettes"][i-1]``.
``meta``
    JSON-safe dict: parameters, the rosette list (``id, y, x, k, kind, cells, central, planted,
    ...``), the decoy list (the 4-cell junctions) and counts (planted, found, arisen by chance).

Ground truth: the one definition
--------------------------------
Every rosette of the image is labelled, planted or arisen by chance: the rosettes and decoys are
:func:`rosette_bmz.definition.find_rosettes` of the *final cell label image* ``labels`` (the
segmentation the outlines are drawn from, noise included), with gaps of up to
:data:`~rosette_bmz.baseline.LABEL_GAP_FILL` px closed first: exactly what ``rosette-bmz evaluate
--truth labels`` does with a user's segmentation. Every vertex of the cell junction graph where
>= 5 cells meet (partial vertices less than 3.5 px apart are one vertex), or where >= 5 cells
close around a small (extruding) cell, is a rosette; the 4-cell junctions away from rosettes are
the decoys; each mask is the rosette's cells clipped to a disc of one local cell diameter
(``mask_radius``). The truth is what the network can see: a merge, a gap or a jittered border
that turns a 5-cell junction into two 3-cell ones (or two 3-cell ones into a 5-cell one) changes
it. ``truth="clean"`` reads it off the clean tiling instead (``SynthImage.clean_labels``: the
nearest-seed cells before segmentation noise; the truth until stop 25); the image is the same
either way. ``meta["rosettes"][i]["planted"]`` says whether a planted structure sits there (its
ring cells all meet at that vertex); ``meta["n_planted_found"]`` of ``meta["n_planted"]`` are
found so (on the clean tiling 99.6 % of 450 in 20 training-world images: a very narrow ring cell
can pass for an extruding cell, the rosette is then labelled as the extrusion kind around it; in
the segmentation a few more are lost to jitter and gaps), ``meta["n_chance_rosettes"]`` rosettes
arose by chance (in the tiling or through the noise). Cells of every clean-tiling rosette and of
planted decoys are protected from merges, splits and drops, so a planted rosette's multiplicity
can be read off ``labels`` at any noise level.

How the tissue is made
----------------------
1. *Seeds* in a "tissue" plane (``tiling``): uniform seeds relaxed by a few Lloyd (centroidal
   Voronoi) iterations (``lloyd``; mostly hexagons with pentagons and heptagons, like an
   epithelium), Poisson-disc seeds (``poisson``) or a jittered hexagonal lattice (``hexjitter``).
2. *Planted rosettes* are carved in before the last relaxation: the seeds near a chosen centre
   ``c`` are removed and ``k`` seeds (5..12) are put **at the same distance** from ``c``, which
   makes ``c`` a vertex of exactly ``k`` Voronoi cells. *Wedge* style: the ``k`` seeds evenly
   spaced (wedge cells, straight spokes); *compact* style (``1 - wedge_fraction``): the seeds
   keep the directions of the ``k`` cells nearest ``c``, evened out only as far as needed, on a
   smaller circle, so the junction looks like one that arose by chance. The surrounding seeds
   relax but are held out of an exclusion circle. For the *extrusion* kind a small, irregular
   central cell (radius ``central_radius`` cell diameters) is painted over the tips of the
   ``k`` cells.
3. *Planted hard negatives* are built the same way with ``k = 4``: a 4-cell junction (T1
   intermediate) or a small cell closed by 4 cells. Many more 4-cell junctions arise by chance.
4. Junctions of >= 5 cells that arise by chance (two or more Voronoi vertices a few px apart)
   are kept and labelled; nothing is pulled apart.
5. The pixel grid is mapped into the tissue plane by a smooth map: a conformal density gradient,
   an anisotropic stretch (elongated cells), a large-scale smooth warp and a cell-scale wiggle
   (curved edges). Each pixel takes the label of its nearest seed (the clean tiling). The
   segmentation is rasterised through the same map plus a fine boundary jitter.
6. Optional tissue-free regions (label 0, ``tissue_free``): smooth random blobs or one disc;
   the cells whose centre falls into them are removed, so the tissue edge follows cell outlines.

Segmentation-like noise (``noise`` in [0, 1], 0 = perfect)
---------------------------------------------------------
Jittered boundaries (a displacement field of about ``noise`` px), thin gaps between segmented
cells in parts of the image, rounded mask corners (small holes where three cells meet), merged
neighbour pairs, cells split in two by a straight cut, missed cells (label 0), and in
``outlines`` short breaks and spurious line fragments (as wide as the lines).

Randomness comes from two ``numpy.random.Generator`` streams spawned from ``seed``: one for the
tissue geometry (cells, rosettes, decoys), one for the noise. The same arguments give the same
image, and the same seed at another ``noise`` or outline style gives the same clean tiling
(hence, with ``truth="clean"``, the same rosettes, masks and decoys). :func:`generate_world`
draws the arguments from a named distribution (:mod:`rosette_bmz.worlds`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .constants import OUTLINE_STYLES, SYNTH_TRUTHS, TILINGS, TISSUE_FREE_SHAPES
from .errors import SynthError
from .files import atomic_path
from .inputs import inner_outlines
from .worlds import WORLDS, World, get_world

__all__ = ["SynthImage", "SynthError", "generate", "generate_world", "draw_outlines", "write_dataset",
           "load_dataset", "DEFAULT_CELL_DIAMETER", "MIN_SIZE_CELLS", "FILE_SUFFIXES", "WORLDS", "World",
           "get_world"]

log = logging.getLogger(__name__)

#: Mean apical cell diameter in pixels: Nematostella ectoderm cells are about 3 µm across, at
#: 0.134 µm/px (confocal) that is about 22-25 px.
DEFAULT_CELL_DIAMETER = 24.0

#: An image must be at least this many cell diameters wide (and at least 32 px).
MIN_SIZE_CELLS = 4

#: Files written per image by :func:`write_dataset` (``synth_0000`` + suffix).
FILE_SUFFIXES = ("_labels.tif", "_outlines.tif", "_rosettes.tif", ".json")

_VERSION = 2
_HEX_AREA = math.sqrt(3) / 2  # area of a hexagonal cell of centre spacing 1


@dataclass
class SynthImage:
    """One generated image (see the module docstring for the meaning of each field)."""

    labels: np.ndarray
    outlines: np.ndarray
    rosettes: np.ndarray
    meta: dict = field(default_factory=dict)
    #: The clean cell tiling (int32, before segmentation noise); not written to disk.
    clean_labels: np.ndarray | None = None


# ----------------------------------------------------------------------------- helpers
def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise SynthError(f"size must be an integer or a (height, width) pair, got {size!r}") from None
    return h, w


def _check_args(h: int, w: int, d: float, noise: float) -> None:
    if not (math.isfinite(d) and 12 <= d <= 400):
        raise SynthError(f"cell_diameter must be between 12 and 400 pixels (smaller cells cannot show a "
                         f"12-cell rosette in pixels), got {d!r}")
    if not (math.isfinite(noise) and 0 <= noise <= 1):
        raise SynthError(f"noise must be between 0 (perfect outlines) and 1, got {noise!r}")
    need = max(32, int(math.ceil(MIN_SIZE_CELLS * d)))
    if min(h, w) < need:
        raise SynthError(f"size {h}x{w} is too small: need at least {need} px per side "
                         f"({MIN_SIZE_CELLS} cell diameters of {d:g} px, and at least 32 px)")
    if h * w > 16384 * 16384:
        raise SynthError(f"size {h}x{w} is too large (at most 16384 x 16384)")


def _smooth_field(rng: np.random.Generator, h: int, w: int, spacing: float) -> np.ndarray:
    """Smooth Gaussian random field with unit variance and correlation length ~``spacing`` px.

    Separable radial-basis sum ``A_y @ G @ A_x.T`` with G i.i.d. normal on a grid of step
    ``spacing`` and Gaussian bumps cut at 4 sigma (sparse bases), so even a fine field at full
    resolution costs a few milliseconds.
    """
    from scipy import sparse

    def basis(n: int):
        m = int(math.ceil(n / spacing)) + 4
        centres = (np.arange(m, dtype=np.float32) - 2) * spacing
        pos = np.arange(n, dtype=np.float32)[:, None]
        a = np.exp(-0.5 * ((pos - centres[None, :]) / spacing) ** 2)
        a[a < 3e-4] = 0
        a /= np.sqrt((a * a).sum(axis=1, keepdims=True))
        return sparse.csr_matrix(a.astype(np.float32))

    ay, ax = basis(h), basis(w)
    g = rng.standard_normal((ay.shape[1], ax.shape[1])).astype(np.float32)
    return np.ascontiguousarray(ay @ np.asarray(ax @ g.T).T, dtype=np.float32)


def _choose_k(rng: np.random.Generator, k_range: tuple[int, int]) -> int:
    ks = np.arange(k_range[0], k_range[1] + 1)
    p = 0.6 ** (ks - ks[0])
    return int(rng.choice(ks, p=p / p.sum()))


def _ring_radius(k: int, d: float) -> float:
    """Seed-circle radius for k wedge cells of about one normal cell area each."""
    return d * max(0.45, math.sqrt(_HEX_AREA * k / math.pi) - 0.5)


# ----------------------------------------------------------------------------- main entry
def generate(size: int | Sequence[int] = 1024, seed: int = 0, *, cell_diameter: float | None = None,
             noise: float = 0.5, n_rosettes: int | None = None, rosette_density: float = 1.5,
             extrusion_fraction: float = 0.35, k_range: Sequence[int] = (5, 12),
             n_decoys: int | None = None, decoy_density: float = 1.0, elongation: float | None = None,
             gradient: float | None = None, warp: float = 1.0, wiggle: float = 1.0, tissue_free: float | None = None,
             mask_radius: float = 1.0, lloyd_iterations: int = 4, wedge_fraction: float = 0.5,
             central_radius: Sequence[float] = (0.18, 0.32), tiling: str = "lloyd",
             tissue_free_shape: str = "blobs", outline_style: str = "inner",
             line_width: int | None = None, truth: str = "labels") -> SynthImage:
    """Generate one synthetic epithelium image; its rosettes are read off its label image by the rule.

    Args:
        size: image size, an int (square) or ``(height, width)``.
        seed: seed of the ``numpy.random.Generator``; same arguments give the same image.
        cell_diameter: mean cell diameter in pixels at the image centre (default 24, about
            3 µm at 0.134 µm/px), 12-400.
        noise: segmentation-noise strength in [0, 1]; 0 gives perfect outlines
            (``outlines == draw_outlines(labels, outline_style)``).
        n_rosettes: number of *planted* rosettes (default: Poisson with mean ``rosette_density``
            per 100 cells). Fewer are placed if they do not fit (a warning is logged). Planted
            rosettes and decoys keep at least half a cell diameter of ordinary tissue between them.
            Rosettes that arise by chance in the tiling come on top: every rosette of the image
            is labelled (:func:`rosette_bmz.definition.find_rosettes`).
        rosette_density: mean planted rosettes per 100 cells when ``n_rosettes`` is None.
        extrusion_fraction: probability that a planted rosette is of the extrusion kind.
        k_range: (min, max) cells per planted rosette, within 5..12; smaller k is more frequent.
        n_decoys: number of planted 4-cell hard negatives (default: Poisson, ``decoy_density`` per
            100 cells). Chance 4-cell junctions come on top; all are in ``meta["decoys"]``.
        decoy_density: mean planted decoys per 100 cells when ``n_decoys`` is None.
        elongation: cell aspect ratio (1 = isotropic, at most 2); None draws one in [1, 1.35].
        gradient: ratio of cell size across the image (density gradient, 1-3); None draws one in [1, 1.5].
        warp: strength of the large-scale smooth warp (0 = none, at most 2).
        wiggle: strength of the cell-scale curvature of cell edges (0 = straight Voronoi edges, at most 2).
        tissue_free: fraction of the image without tissue (label 0, at most 0.8); None: 0 for 60 %
            of the seeds, else a fraction in [0.03, 0.15].
        mask_radius: ground-truth clip radius in local cell diameters (0.3-3; see the module docstring).
        lloyd_iterations: relaxation iterations of the ``lloyd`` tiling (more = more regular hexagons).
        wedge_fraction: probability that a planted rosette is of the *wedge* style (k seeds evenly
            spaced on a circle: wedge cells, straight spokes) rather than *compact* (the k cells
            nearest the centre keep their own directions, so the junction looks like one that
            arose by chance).
        central_radius: (min, max) radius of a planted extruding cell, in cell diameters, drawn
            per rosette, within [0.12, 0.34] (larger cells would not be small by the rule).
        tiling: ``"lloyd"`` (relaxed Voronoi), ``"poisson"`` (Poisson-disc seeds, not relaxed) or
            ``"hexjitter"`` (jittered hexagonal lattice); the tissue around planted structures is
            relaxed in every tiling.
        tissue_free_shape: ``"blobs"`` (smooth random regions) or ``"disc"`` (one disc).
        outline_style: ``"inner"`` (Cellpose inner outlines), ``"watershed"`` (1 px lines between
            cells) or ``"thick"`` (lines of ``line_width`` px), see :func:`draw_outlines`.
        line_width: line width of the ``thick`` style, 2-6 (default 2); must be None or 1 otherwise.
        truth: where the rule reads the ground truth: ``"labels"`` (default) the final cell
            label image ``labels``, segmentation noise included, with gaps of up to
            :data:`~rosette_bmz.baseline.LABEL_GAP_FILL` px closed first (exactly what
            ``rosette-bmz evaluate --truth labels`` does with a user's segmentation); ``"clean"``
            the clean tiling before segmentation noise (the truth before stop 25). The image
            (labels, outlines) is the same either way.

    Returns:
        :class:`SynthImage`; ``meta`` holds the values actually used (drawn ones included), the
        rosette and decoy lists, counts of noise events and ``params`` (the arguments as given:
        ``generate(**meta["params"])`` makes the same image again).

    Raises:
        SynthError: an argument out of range (the message names it).
    """
    from .definition import RULE, find_rosettes

    h, w = _size2(size)
    d = float(DEFAULT_CELL_DIAMETER if cell_diameter is None else cell_diameter)
    noise = float(noise)
    _check_args(h, w, d, noise)
    # the arguments as given (None = drawn from the seed): generate(**meta["params"]) repeats it
    params = {"size": [h, w], "seed": seed, "cell_diameter": cell_diameter, "noise": noise,
              "n_rosettes": n_rosettes, "rosette_density": rosette_density,
              "extrusion_fraction": extrusion_fraction, "k_range": [int(k) for k in k_range], "n_decoys": n_decoys,
              "decoy_density": decoy_density, "elongation": elongation, "gradient": gradient, "warp": warp,
              "wiggle": wiggle, "tissue_free": tissue_free, "mask_radius": mask_radius,
              "lloyd_iterations": lloyd_iterations, "wedge_fraction": wedge_fraction,
              "central_radius": [float(c) for c in central_radius], "tiling": tiling,
              "tissue_free_shape": tissue_free_shape, "outline_style": outline_style, "line_width": line_width,
              "truth": truth}
    if truth not in SYNTH_TRUTHS:
        raise SynthError(f"truth must be one of {', '.join(SYNTH_TRUTHS)}, got {truth!r}")
    k_lo, k_hi = (int(k) for k in k_range)
    if not 5 <= k_lo <= k_hi <= 12:
        raise SynthError(f"k_range must satisfy 5 <= min <= max <= 12, got {k_range!r}")
    for name, val in (("n_rosettes", n_rosettes), ("n_decoys", n_decoys)):
        if val is not None and int(val) < 0:
            raise SynthError(f"{name} must be >= 0, got {val!r}")
    for name, val in (("extrusion_fraction", extrusion_fraction), ("wedge_fraction", wedge_fraction)):
        if not 0 <= val <= 1:
            raise SynthError(f"{name} must be in [0, 1], got {val!r}")
    cr_lo, cr_hi = (float(c) for c in central_radius)
    if not 0.12 <= cr_lo <= cr_hi <= 0.34:
        raise SynthError(f"central_radius must satisfy 0.12 <= min <= max <= 0.34 cell diameters, got "
                         f"{central_radius!r}")
    if not 0.3 <= mask_radius <= 3:
        raise SynthError(f"mask_radius must be in [0.3, 3] cell diameters, got {mask_radius!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")
    if tiling not in TILINGS:
        raise SynthError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
    if tissue_free_shape not in TISSUE_FREE_SHAPES:
        raise SynthError(f"tissue_free_shape must be one of {', '.join(TISSUE_FREE_SHAPES)}, got "
                         f"{tissue_free_shape!r}")
    width = _check_style(outline_style, line_width)
    # two independent streams: the tissue geometry (cells, rosettes, decoys) and the segmentation
    # noise, so the same seed gives the same tissue and rosettes at every noise level
    rng, nrng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))

    # --- global tissue parameters
    if elongation is None:
        elongation = float(rng.uniform(1.0, 1.35))
    if gradient is None:
        gradient = float(rng.uniform(1.0, 1.5))
    if tissue_free is None:
        tissue_free = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.03, 0.15))
    if not 1 <= elongation <= 2:
        raise SynthError(f"elongation (cell aspect ratio) must be in [1, 2], got {elongation!r}")
    if not 1 <= gradient <= 3:
        raise SynthError(f"gradient (cell-size ratio across the image) must be in [1, 3], got {gradient!r}")
    if not 0 <= tissue_free <= 0.8:
        raise SynthError(f"tissue_free must be in [0, 0.8], got {tissue_free!r}")
    for name, val in (("warp", warp), ("wiggle", wiggle)):
        if not 0 <= val <= 2:
            raise SynthError(f"{name} must be in [0, 2], got {val!r}")
    if not 0 <= int(lloyd_iterations) <= 50:
        raise SynthError(f"lloyd_iterations must be in [0, 50], got {lloyd_iterations!r}")

    uy, ux = _tissue_map(rng, h, w, d, elongation, gradient, warp, wiggle)

    # --- tissue-free regions (image space)
    tissue = _tissue_region(rng, h, w, d, tissue_free, tissue_free_shape) if tissue_free > 0 else None
    # pixel-level noise amplitudes (jitter, gaps, corners) shrink with cells smaller than the
    # default, so small cells are not swallowed
    px_noise = noise * min(1.0, d / DEFAULT_CELL_DIAMETER)
    # gap half-width field (segmentation gaps between cells), image space
    gap = None
    if noise > 0:
        g = _smooth_field(nrng, h, w, spacing=3 * d)
        gap = np.clip((g - 0.3) * (1.1 * px_noise), 0, 1.0).astype(np.float32)

    # --- seeds in the tissue plane: relaxed uniform, Poisson-disc or jittered hexagons
    m = 2.5 * d
    lo = np.array([uy.min() - m, ux.min() - m])
    hi = np.array([uy.max() + m, ux.max() + m])
    step = d / 5
    gy = np.arange(lo[0], hi[0], step)
    gx = np.arange(lo[1], hi[1], step)
    grid = np.stack(np.meshgrid(gy, gx, indexing="ij"), -1).reshape(-1, 2)
    seeds = _initial_seeds(rng, tiling, lo, hi, d)
    n_first = max(0, lloyd_iterations - 2) if tiling == "lloyd" else 0
    seeds = _lloyd(seeds, np.zeros(len(seeds), bool), grid, n_first, [])

    # --- place planted rosettes and decoys (image-space centres -> tissue-plane structures)
    n_cells_est = h * w / (_HEX_AREA * d * d)
    explicit = n_rosettes is not None or n_decoys is not None
    if n_rosettes is None:
        n_rosettes = int(rng.poisson(rosette_density * n_cells_est / 100))
    if n_decoys is None:
        n_decoys = int(rng.poisson(decoy_density * n_cells_est / 100))
    structures = _place_structures(rng, h, w, d, uy, ux, tissue, int(n_rosettes), int(n_decoys),
                                   extrusion_fraction, (k_lo, k_hi), mask_radius, explicit, wedge_fraction,
                                   (cr_lo, cr_hi))

    keep = np.ones(len(seeds), bool)
    for s in structures:
        c = np.array(s["c"])
        dist = np.hypot(*(seeds - c).T)
        if s["style"] == "compact":
            # the k cells nearest the centre keep their directions (uneven, as in the tissue)
            near = np.argsort(dist)[:s["k"]]
            s["angles"] = _spread_angles(np.arctan2(*(seeds[near] - c).T), s["k"])
        keep &= dist > s["rho"] + (0.67 if s["central"] else 0.55) * d
    seeds = seeds[keep]
    n_free = len(seeds)
    fixed_list = []
    exclusions = []
    for s in structures:
        c = np.array(s["c"])
        if "angles" in s:
            ang = s["angles"]
        else:
            ang = s["theta0"] + 2 * np.pi * np.arange(s["k"]) / s["k"]
            ang = ang + rng.uniform(-0.18, 0.18, s["k"]) * (2 * np.pi / s["k"])
        ring = c + s["rho"] * np.stack([np.sin(ang), np.cos(ang)], -1)
        start = n_free + sum(len(f) for f in fixed_list)
        s["seed_ids"] = list(range(start, start + s["k"]))
        fixed_list.append(ring)
        # free seeds stay outside this circle, so the structure's k seeds are the nearest to c
        # (more room around a central cell, whose ring neighbours are cut short)
        exclusions.append((c, s["rho"] + (0.54 if s["central"] else 0.42) * d))
    if fixed_list:
        seeds = np.concatenate([seeds] + fixed_list)
    fixed = np.zeros(len(seeds), bool)
    fixed[n_free:] = True
    if tiling == "lloyd":
        seeds = _lloyd(seeds, fixed, grid, lloyd_iterations - n_first, exclusions)
    elif structures:
        # other tilings keep their own statistics: only the tissue around planted structures relaxes
        far = np.ones(len(seeds), bool)
        for s in structures:
            far &= np.hypot(*(seeds - np.array(s["c"])).T) > s["radius"] + 1.5 * d
        seeds = _lloyd(seeds, fixed | far, grid, 2, exclusions)

    # --- rasterise: nearest seed of each pixel's tissue-plane position. The clean tiling (the
    # ground truth) uses the smooth map; the segmentation adds a fine boundary jitter
    i1 = _rasterise(seeds, uy, ux, None)[0]
    n_all = len(seeds)
    if noise > 0:
        sp = max(2.5, d / 7)
        amp = 0.9 * px_noise
        uyn = uy + amp * _smooth_field(nrng, h, w, sp)
        uxn = ux + amp * _smooth_field(nrng, h, w, sp)
        n1, n2, n3, in_gap, in_corner = _rasterise(seeds, uyn, uxn, gap, corner=1.2 * px_noise)
    else:
        uyn, uxn = uy, ux
        n1 = i1

    # --- paint central cells (extrusion rosettes, small-cell decoys) into both tilings
    cell_id = i1.astype(np.int32)        # clean tiling by seed index; painted cells get n_all + j
    noisy_id = n1.astype(np.int32) if noise > 0 else cell_id
    for j, s in enumerate(s for s in structures if s["central"]):
        s["central_id"] = n_all + j
        sl, inside, _rim = _central_cell(s, h, w, None, uy, ux)
        cell_id[sl][inside] = s["central_id"]
        if noise > 0:
            sl, inside, rim = _central_cell(s, h, w, gap, uyn, uxn)
            noisy_id[sl][inside] = s["central_id"]
            in_gap[sl][inside] = rim[inside]
    n_ids = n_all + sum(1 for s in structures if s["central"])

    # --- clean labels (sequential ids), tissue-free regions removed
    planted_ids = _protected_ids(structures)
    clean_seed, gone = _remove_tissue_free(cell_id, tissue, n_ids, planted_ids)
    lut, n_clean = _sequential_lut(clean_seed, n_ids, min_area=0.12 * _HEX_AREA * d * d, keep=planted_ids)
    clean_labels = lut[clean_seed + 1]

    # --- the rule on the clean tiling: its rosettes' cells are kept through the noise below (and
    # with truth="clean" it is the ground truth)
    clean_truth = find_rosettes(clean_labels, mask_radius=mask_radius, cell_diameter=d)
    seed_of = np.full(n_clean + 1, -1, np.int64)          # clean label -> seed id
    present = np.flatnonzero(lut[1:])
    seed_of[lut[1:][present]] = present

    # --- segmentation noise on labels; the cells of every clean rosette and planted decoy are kept
    protected = planted_ids | {int(seed_of[c]) for r in clean_truth.rosettes for c in r["cells"] + r["central"]}
    noise_stats = {"merged": 0, "split": 0, "dropped": 0}
    if noise > 0:
        seg_seed = np.where(gone[noisy_id], -1, noisy_id) if gone is not None else noisy_id
        ext, free, noise_stats = _merge_drop(nrng, seg_seed, n_ids, noise, protected)
        seg_seed = ext[seg_seed + 1]
        # gaps only between cells that are still different after the merges (a merged pair
        # becomes one mask without a border inside); painted central cells keep their rim gap
        e1, e2, e3 = ext[n1 + 1], ext[n2 + 1], ext[n3 + 1]
        in_gap &= (e1 != e2) | (noisy_id >= n_all)
        # rounded mask corners: a small hole where three (still distinct) cells meet
        in_gap |= in_corner & (e1 != e2) & (e1 != e3) & (e2 != e3) & (noisy_id < n_all)
        seg_seed[in_gap] = -1
        del e1, e2, e3, n2, n3, in_corner
        seg_seed = _split_cells(nrng, seg_seed, free, noise, d, noise_stats)
        lut2, n_cells = _sequential_lut(seg_seed, int(seg_seed.max()) + 1, min_area=4, keep=protected)
        labels = lut2[seg_seed + 1]
        # seed id + 1 -> its cell in ``labels`` (merged cells: the cell they were merged into;
        # dropped cells: 0)
        lut2x = np.zeros(max(len(lut2), n_ids + 2), np.int64)
        lut2x[:len(lut2)] = lut2
        final_lut = lut2x[ext[:n_ids + 1] + 1]
    else:
        labels = clean_labels
        n_cells = n_clean
        final_lut = lut

    # --- ground truth: the rule on the final label image (default) or on the clean tiling
    if truth == "labels":
        from .baseline import LABEL_GAP_FILL

        rule = find_rosettes(labels, mask_radius=mask_radius, cell_diameter=d, fill_gaps=LABEL_GAP_FILL)
        ros_meta, dec_meta, planted_stats = _label_truth(rule, structures, final_lut)
    else:
        rule = clean_truth
        ros_meta, dec_meta, planted_stats = _label_truth(rule, structures, lut)
        if noise > 0:   # the clean cell ids, re-expressed in the numbering of ``labels``
            new_of = np.zeros(n_clean + 1, np.int64)
            ok = seed_of >= 0
            new_of[ok] = final_lut[seed_of[ok] + 1]
            for entry in ros_meta + dec_meta:
                entry["cells"] = [int(new_of[c]) for c in entry["cells"]]
                entry["central"] = [int(new_of[c]) for c in entry["central"]]

    outlines = draw_outlines(labels, outline_style, width)
    if noise > 0:
        outline_stats = _outline_noise(nrng, outlines, labels, noise, d, width)
        noise_stats.update(outline_stats)

    meta: dict[str, Any] = {
        "generator": "rosette_bmz.synth", "version": _VERSION, "seed": int(seed),
        "size": [h, w], "cell_diameter": d, "noise": noise,
        "elongation": round(float(elongation), 4), "gradient": round(float(gradient), 4),
        "warp": float(warp), "wiggle": float(wiggle), "tissue_free": round(float(tissue_free), 4),
        "tissue_free_shape": tissue_free_shape, "tiling": tiling, "outline_style": outline_style,
        "line_width": width, "mask_radius": float(mask_radius), "rule": RULE, "truth": truth,
        "n_cells": int(n_cells), "n_cells_clean": int(n_clean),
        "n_rosettes": len(ros_meta), **planted_stats,
        "noise_events": {k: int(v) for k, v in noise_stats.items()},
        "rosettes": ros_meta, "decoys": dec_meta, "near_misses": rule.near_misses,
        "params": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()},
    }
    return SynthImage(labels=labels.astype(np.int32, copy=False), outlines=outlines, rosettes=rule.mask,
                      meta=meta, clean_labels=clean_labels.astype(np.int32, copy=False))


def generate_world(size: int | Sequence[int] = 1024, seed: int = 0, world: str | World = "train",
                   **overrides: Any) -> SynthImage:
    """One image of a :mod:`world <rosette_bmz.worlds>`: its settings drawn from ``seed``, then ``generate``.

    The generator seed is ``seed + world.seed_offset``, as in :func:`write_dataset`. ``overrides``
    (any ``generate`` keyword, e.g. ``noise=0``) replace drawn settings. ``meta["world"]`` names
    the world; ``generate(**meta["params"])`` repeats the image.
    """
    wd = get_world(world)
    gseed = int(seed) + wd.seed_offset
    kwargs = {**wd.draw(gseed), **overrides}
    img = generate(size, gseed, **kwargs)
    img.meta["world"] = wd.name
    return img


# ----------------------------------------------------------------------------- pieces
def _check_style(style: str, width: int | None) -> int:
    """Validate an outline style and return its line width in px."""
    if style not in OUTLINE_STYLES:
        raise SynthError(f"outline_style must be one of {', '.join(OUTLINE_STYLES)}, got {style!r}")
    if style == "thick":
        width = 2 if width is None else width
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 2 <= width <= 6:
            raise SynthError(f"line_width of the thick style must be an integer in [2, 6], got {width!r}")
        return int(width)
    if width not in (None, 1):
        raise SynthError(f"line_width must be None or 1 for the {style} style (use outline_style='thick'), "
                         f"got {width!r}")
    return 1


def draw_outlines(labels: np.ndarray, style: str = "inner", width: int | None = None) -> np.ndarray:
    """Binary (uint8 0/1) outlines of a cell label image in one of :data:`OUTLINE_STYLES`.

    ``inner``: Cellpose's inner outlines (:func:`rosette_bmz.inputs.inner_outlines`): every cell
    pixel with a 4-neighbour outside the cell, so 2 px between two cells and a segmentation gap
    shows as a double line. ``watershed``: a 1 px line between cells, as a watershed segmentation
    draws it: unlabelled gaps up to 2 px wide are closed first, then of every 4-adjacent pair of
    pixels in different cells the upper/left one is line (the cell pixel at tissue-free space);
    the image edge is not outlined. ``thick``: the watershed lines widened to ``width`` px
    (2-6, default 2). Any of these is a valid model input for :func:`rosette_bmz.inputs.from_outlines`.
    """
    width = _check_style(style, width)
    lab = np.asarray(labels)
    if style == "inner":
        return inner_outlines(lab).astype(np.uint8)
    from .baseline import grow_cells

    if (lab == 0).any():
        lab = grow_cells(lab, 2)
    line = np.zeros(lab.shape, bool)
    for p, q, lp, lq in ((lab[:-1, :], lab[1:, :], line[:-1, :], line[1:, :]),
                         (lab[:, :-1], lab[:, 1:], line[:, :-1], line[:, 1:])):
        diff = p != q
        lp |= diff & (p > 0)
        lq |= diff & (p == 0)
    if width > 1:
        line = _widen(line, width)
    return line.astype(np.uint8)


def _widen(line: np.ndarray, width: int) -> np.ndarray:
    """A 1 px line widened to ``width`` px (a 2x2 step for even widths, then 4-neighbour steps)."""
    from scipy import ndimage

    out = line
    if width % 2 == 0:
        out = ndimage.binary_dilation(out, structure=np.ones((2, 2), bool))
    for _ in range((width - 1) // 2):
        out = ndimage.binary_dilation(out, structure=ndimage.generate_binary_structure(2, 1))
    return out


def _tissue_region(rng, h, w, d, fraction, shape):
    """Bool (H, W): True where there is tissue; ``fraction`` of the image is tissue-free."""
    if shape == "disc":
        r = math.sqrt(fraction * h * w / math.pi)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.ogrid[:h, :w]
        return (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
    f = _smooth_field(rng, h, w, spacing=5 * d)
    thr = np.quantile(f[::4, ::4], 1 - fraction)
    return f < thr


def _initial_seeds(rng, tiling, lo, hi, d):
    """Seeds filling the tissue-plane box [lo, hi] at one seed per hexagonal cell of diameter ``d``."""
    n_seeds = int(round(np.prod(hi - lo) / (_HEX_AREA * d * d)))
    if tiling == "hexjitter":
        # hexagonal lattice of spacing d (one seed per hexagon of area sqrt(3)/2 d^2), rotated,
        # shifted and jittered by 0.2 d
        span = float(np.hypot(*(hi - lo))) / 2 + 2 * d
        ii = np.arange(-int(span / d) - 2, int(span / d) + 3)
        jj = np.arange(-int(span / (d * _HEX_AREA)) - 2, int(span / (d * _HEX_AREA)) + 3)
        a, b = np.meshgrid(ii, jj, indexing="ij")
        pts = np.stack([b * d * _HEX_AREA, (a + 0.5 * (b % 2)) * d], -1).reshape(-1, 2)
        th = rng.uniform(0, np.pi)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        pts = pts @ rot.T + (lo + hi) / 2 + rng.uniform(0, d, 2)
        pts = pts + rng.normal(0, 0.2 * d, pts.shape)
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        return pts[inside]
    if tiling == "poisson":
        return _poisson_disc(rng, lo, hi, 0.74 * d, n_seeds)
    return lo + rng.random((n_seeds, 2)) * (hi - lo)


def _poisson_disc(rng, lo, hi, r, n_target):
    """Poisson-disc seeds: random sequential adsorption of uniform candidates, no two closer than ``r``."""
    from scipy import sparse
    from scipy.spatial import cKDTree

    n_cand = 6 * n_target
    cand = lo + rng.random((n_cand, 2)) * (hi - lo)
    pairs = cKDTree(cand).query_pairs(r, output_type="ndarray")
    adj = sparse.coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n_cand, n_cand))
    adj = (adj + adj.T).tocsr()
    blocked = np.zeros(n_cand, bool)
    accepted = np.zeros(n_cand, bool)
    indptr, indices = adj.indptr, adj.indices
    for i in range(n_cand):        # candidates are in random order: first come, first placed
        if blocked[i]:
            continue
        accepted[i] = True
        blocked[indices[indptr[i]:indptr[i + 1]]] = True
    return cand[accepted]


def _spread_angles(angles, k):
    """Sorted directions of k cells, pulled towards even spacing just enough that every gap is
    0.7-1.5 x the even spacing and below 160 degrees (so no ring cell is small enough to pass
    for an extruding cell, and the centre stays inside the ring)."""
    th = np.sort(np.mod(angles, 2 * np.pi))
    even = 2 * np.pi * np.arange(k) / k
    off = np.angle(np.mean(np.exp(1j * (th - even))))
    target = off + even
    th = target + np.angle(np.exp(1j * (th - target)))        # unwrap around the even positions
    for a in np.linspace(0, 1, 11):
        t = (1 - a) * th + a * target
        gaps = np.diff(np.concatenate([t, [t[0] + 2 * np.pi]]))
        if gaps.min() >= 0.7 * 2 * np.pi / k and gaps.max() <= min(np.radians(160), 1.5 * 2 * np.pi / k):
            return t
    return target


def _remove_tissue_free(cell_id, tissue, n_ids, keep_ids):
    """Cells whose centroid lies in tissue-free space are removed (-1), so the tissue edge runs along
    cell outlines, like the edge of a real epithelium. Returns the map and the removed-id flags."""
    if tissue is None:
        return cell_id, None
    h, w = cell_id.shape
    yy, xx = np.indices((h, w), dtype=np.float32)
    flat = cell_id.ravel()
    cnt = np.maximum(np.bincount(flat, minlength=n_ids), 1)
    cy = np.clip(np.rint(np.bincount(flat, yy.ravel(), minlength=n_ids) / cnt), 0, h - 1).astype(np.intp)
    cx = np.clip(np.rint(np.bincount(flat, xx.ravel(), minlength=n_ids) / cnt), 0, w - 1).astype(np.intp)
    gone = ~tissue[cy, cx]
    gone[sorted(keep_ids)] = False
    return np.where(gone[cell_id], -1, cell_id), gone


def _label_truth(truth, structures, lut):
    """Meta entries of the rule's rosettes and decoys, with which ones were planted.

    ``lut[seed id + 1]`` is a seed's cell in the label image the rule read. A planted structure
    is *found* when one rule vertex holds all its ring cells (and its central cell): ``planted``
    is then True on that entry (``style`` says wedge or compact). Returns the rosette list, the
    decoy list and the counts for ``meta``.
    """
    ros = [dict(r, planted=False) for r in truth.rosettes]
    dec = [dict(r, planted=False) for r in truth.decoys]
    found = k_differs = planted_r = planted_d = found_d = 0
    for s in structures:
        ring = {int(lut[i + 1]) for i in s["seed_ids"]}
        central = {int(lut[s["central_id"] + 1])} if s["central"] else set()
        pool = ros if s["rosette"] else dec
        match = next((e for e in pool if ring <= set(e["cells"]) and central <= set(e["central"])), None)
        if s["rosette"]:
            planted_r += 1
            if match is not None:
                found += 1
                k_differs += match["k"] != s["k"]
                match.update(planted=True, style=s["style"])
        else:
            planted_d += 1
            if match is not None:
                found_d += 1
                match["planted"] = True
    stats = {"n_planted": planted_r, "n_planted_found": found, "n_planted_k_differs": k_differs,
             "n_chance_rosettes": sum(1 for r in ros if not r["planted"]),
             "n_planted_decoys": planted_d, "n_planted_decoys_found": found_d, "n_decoys": len(dec)}
    return ros, dec, stats


def _tissue_map(rng, h, w, d, elongation, gradient, warp, wiggle):
    """Tissue-plane coordinates (uy, ux) of every pixel (float32)."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y = np.arange(h, dtype=np.float32) - cy
    x = np.arange(w, dtype=np.float32) - cx
    z = (x[None, :] + 1j * y[:, None]).astype(np.complex64)
    phi = rng.uniform(0, 2 * np.pi)
    # density gradient: conformal map u = (exp(a z') - 1) / a, local scale exp(a Re z')
    a = math.log(gradient) / max(h, w)
    if a > 0:
        rot = np.complex64(np.exp(1j * phi))
        u = (np.exp(a * z * rot) - 1) / (a * rot)
    else:
        u = z
    uy, ux = u.imag.astype(np.float32), u.real.astype(np.float32)
    # anisotropy: cells elongated by `elongation` along a random direction (area preserving)
    if elongation > 1:
        th = rng.uniform(0, np.pi)
        c, s = math.cos(th), math.sin(th)
        along, across = ux * c + uy * s, -ux * s + uy * c
        e = math.sqrt(elongation)
        along, across = along / e, across * e
        ux, uy = along * c - across * s, along * s + across * c
    # large-scale smooth warp
    if warp > 0:
        sp = 6 * d
        amp = 0.10 * sp * warp
        uy = uy + amp * _smooth_field(rng, h, w, sp)
        ux = ux + amp * _smooth_field(rng, h, w, sp)
    # cell-scale wiggle: gently curved cell edges, as in real apical outlines
    if wiggle > 0:
        sp = 0.6 * d
        amp = 0.06 * d * wiggle
        uy = uy + amp * _smooth_field(rng, h, w, sp)
        ux = ux + amp * _smooth_field(rng, h, w, sp)
    return uy.astype(np.float32), ux.astype(np.float32)


def _rasterise(seeds, uy, ux, gap, corner=0.0):
    """Nearest seed of every pixel (exact), and with ``gap`` the pixels near borders and corners.

    Equal to querying every pixel, but faster: the nearest and second-nearest seeds are first
    found on every second pixel; a pixel whose tissue-plane distance ``delta`` to that coarse
    point is small compared with the coarse point's slack ``d2 - d1`` provably has the same
    nearest seed (triangle inequality: ``d2 - d1 > 2 delta``), and its distance to any cell
    border is at least ``(d2 - d1 - 2 delta) / 2``. Only the other pixels (near borders) are
    queried one by one.

    Returns ``i1`` (seed index per pixel), ``i2`` and ``i3`` (second and third nearest seeds
    where they matter, else ``i1``), ``in_gap`` (within ``gap`` of the border with the
    second-nearest cell) and ``in_corner`` (within ``corner`` of the border with the third-nearest
    cell, i.e. near a junction); the last four are None without ``gap``.
    """
    from scipy.spatial import cKDTree

    h, w = uy.shape
    tree = cKDTree(seeds)
    cy, cx = uy[::2, ::2], ux[::2, ::2]
    dq, iq = tree.query(np.stack([cy.ravel(), cx.ravel()], -1), k=2, workers=-1)

    def up(a):
        return np.ascontiguousarray(np.repeat(np.repeat(a.reshape(cy.shape), 2, 0), 2, 1)[:h, :w])

    delta = np.hypot(uy - up(cy), ux - up(cx))
    need = 2.0 * delta if gap is None else 2.0 * (delta + np.maximum(gap, corner)) + 1e-3
    safe = up((dq[:, 1] - dq[:, 0]).astype(np.float32)) > need
    i1 = up(iq[:, 0].astype(np.int32))
    todo = np.flatnonzero(~safe)
    pts = np.stack([uy.ravel()[todo], ux.ravel()[todo]], -1)
    if gap is None:
        i1.ravel()[todo] = tree.query(pts, k=1, workers=-1)[1]
        return i1, None, None, None, None
    dist, idx = tree.query(pts, k=3, workers=-1)
    i1.ravel()[todo] = idx[:, 0]
    i2, i3 = i1.copy(), i1.copy()
    i2.ravel()[todo] = idx[:, 1]
    i3.ravel()[todo] = idx[:, 2]

    def border(j):
        sep = np.hypot(*(seeds[idx[:, 0]] - seeds[idx[:, j]]).T)
        return (dist[:, j] ** 2 - dist[:, 0] ** 2) / (2 * np.maximum(sep, 1e-6))

    in_gap = np.zeros((h, w), bool)
    in_gap.ravel()[todo] = border(1) < gap.ravel()[todo]
    in_corner = np.zeros((h, w), bool)
    in_corner.ravel()[todo] = border(2) < corner
    return i1, i2, i3, in_gap, in_corner


def _lloyd(seeds, fixed, grid, iters, exclusions):
    from scipy.spatial import cKDTree

    seeds = seeds.copy()
    n = len(seeds)
    for _ in range(iters):
        idx = cKDTree(seeds).query(grid, k=1, workers=-1)[1]
        cnt = np.bincount(idx, minlength=n)
        sy = np.bincount(idx, weights=grid[:, 0], minlength=n)
        sx = np.bincount(idx, weights=grid[:, 1], minlength=n)
        ok = (cnt > 0) & ~fixed
        seeds[ok, 0] = sy[ok] / cnt[ok]
        seeds[ok, 1] = sx[ok] / cnt[ok]
        _push_out(seeds, fixed, exclusions)
    _push_out(seeds, fixed, exclusions)
    return seeds


def _push_out(seeds, fixed, exclusions):
    for c, r in exclusions:
        v = seeds - c
        dist = np.hypot(v[:, 0], v[:, 1])
        bad = (dist < r) & ~fixed
        if bad.any():
            dd = np.maximum(dist[bad], 1e-6)[:, None]
            seeds[bad] = c + v[bad] / dd * r


def _jacobian_scale(uy, ux, y, x):
    """Local pixel -> tissue length scale sqrt(|det J|) at pixel (y, x)."""
    h, w = uy.shape
    y0, y1 = max(0, y - 2), min(h - 1, y + 2)
    x0, x1 = max(0, x - 2), min(w - 1, x + 2)
    dyy = (uy[y1, x] - uy[y0, x]) / max(1, y1 - y0)
    dxy = (ux[y1, x] - ux[y0, x]) / max(1, y1 - y0)
    dyx = (uy[y, x1] - uy[y, x0]) / max(1, x1 - x0)
    dxx = (ux[y, x1] - ux[y, x0]) / max(1, x1 - x0)
    return math.sqrt(abs(float(dyy * dxx - dxy * dyx))) or 1.0


def _place_structures(rng, h, w, d, uy, ux, tissue, n_ros, n_dec, extrusion_fraction, k_range, mask_radius,
                      explicit=False, wedge_fraction=1.0, central_radius=(0.255, 0.345)):
    """Choose non-overlapping centres (image space) for planted rosettes and decoys."""
    from scipy import ndimage

    dist_bg = None
    if tissue is not None:
        # distance to the nearest tissue-free pixel, on a 4x coarser grid (ample for a margin
        # of more than a cell diameter)
        dist_bg = 4.0 * ndimage.distance_transform_edt(tissue[::4, ::4])
    plans = []
    for i in range(n_ros + n_dec):
        is_ros = i < n_ros
        if is_ros:
            k = _choose_k(rng, k_range)
            central = bool(rng.random() < extrusion_fraction)
            kind = "extrusion" if central else "vertex"
            style = "wedge" if rng.random() < wedge_fraction else "compact"
        else:
            k = 4
            central = bool(rng.random() < 0.3)
            kind = "small_cell" if central else "four_cell"
            style = "wedge"
        plans.append((is_ros, k, central, kind, style))
    out: list[dict] = []
    for is_ros, k, central, kind, style in plans:
        rho = _ring_radius(k, d) * float(rng.uniform(0.95, 1.1) if style == "wedge" else rng.uniform(0.85, 1.0))
        if central:
            rho *= 1.2  # room for the central cell
        radius = rho + (0.67 if central else 0.55) * d  # tissue-plane radius of the structure's cells
        for _attempt in range(300):
            margin = int(math.ceil(max(mask_radius, 0.6) * d + 2))
            if h - 2 * margin < 1 or w - 2 * margin < 1:
                break
            y = int(rng.integers(margin, h - margin))
            x = int(rng.integers(margin, w - margin))
            scale = _jacobian_scale(uy, ux, y, x)
            if dist_bg is not None and dist_bg[y // 4, x // 4] < (radius / scale) + d + 4:
                continue
            c = (float(uy[y, x]), float(ux[y, x]))
            if any(math.hypot(c[0] - o["c"][0], c[1] - o["c"][1]) < radius + o["radius"] + 0.5 * d for o in out):
                continue
            out.append({"rosette": is_ros, "k": k, "central": central, "kind": kind, "style": style, "rho": rho,
                         "radius": radius, "y": y, "x": x, "c": c, "theta0": float(rng.uniform(0, 2 * np.pi)),
                         "d": d, "d_local": d / scale, "central_r": d * float(rng.uniform(*central_radius)),
                         "harm": rng.uniform(-0.08, 0.08, 4).tolist(), "phase": rng.uniform(0, 2 * np.pi, 4).tolist()})
            break
    n_r = sum(s["rosette"] for s in out)
    n_d = len(out) - n_r
    if n_r < n_ros or n_d < n_dec:
        log.log(logging.WARNING if explicit else logging.INFO,
                "placed %d of %d rosettes and %d of %d decoys; the image has no room for more", n_r, n_ros, n_d, n_dec)
    return out


def _central_cell(s, h, w, gap, uy, ux):
    """Slice, inside-mask and rim-gap mask of the small central cell of structure ``s``.

    The cell is a slightly irregular disc of radius ``central_r`` in the *tissue plane* (the
    same plane as the seeds), so it is stretched like its neighbours and every one of the ``k``
    wedge tips around it is cut at the same tissue-plane width.
    """
    r0 = s["central_r"]
    rmax = int(math.ceil(r0 * 1.3 * 2.5 * s["d_local"] / s["d"])) + 2
    y, x = s["y"], s["x"]
    sl = (slice(max(0, y - rmax), min(h, y + rmax + 1)), slice(max(0, x - rmax), min(w, x + rmax + 1)))
    dy, dx = uy[sl] - s["c"][0], ux[sl] - s["c"][1]
    r = np.hypot(dy, dx)
    th = np.arctan2(dy, dx)
    rc = np.full_like(r, r0)
    for n, (a, p) in enumerate(zip(s["harm"], s["phase"]), start=2):
        rc = rc + r0 * a * np.cos(n * th + p)
    inside = r <= rc
    g = float(gap[y, x]) if gap is not None else 0.0
    rim = r > rc - 2 * g
    return sl, inside, rim


def _protected_ids(structures):
    """Seed / painted ids of all rosette and decoy cells."""
    out = set()
    for s in structures:
        out.update(list(s["seed_ids"]) + ([s["central_id"]] if s["central"] else []))
    return out


def _sequential_lut(seed_map, n_ids, min_area, keep=()):
    """Lookup table ``lut[id + 1] -> 1..n`` for ids present with at least ``min_area`` pixels (-1 -> 0).

    Ids in ``keep`` (protected structure cells) stay whenever they are present at all.
    """
    counts = np.bincount((seed_map + 1).ravel(), minlength=n_ids + 1)
    counts[0] = 0
    present = counts >= min_area
    keep = np.asarray(sorted(keep), dtype=np.int64) + 1
    present[keep] |= counts[keep] > 0
    lut = np.zeros(len(counts), np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut, int(present.sum())


def _merge_drop(rng, seg, n_ids, noise, protected):
    """Choose merges (adjacent pairs) and drops (missed cells) among unprotected cells.

    ``seg`` is the clean tiling by id (-1 = none). Returns ``ext`` with ``ext[id + 1]`` = the id
    after merges (-1 for dropped cells and for -1 itself), the ids still free for splits, and
    counts.
    """
    stats = {"merged": 0, "split": 0, "dropped": 0}
    prot = np.zeros(n_ids + 1, bool)
    prot[list(protected)] = True
    present = np.unique(seg[::3, ::3])
    present = present[(present >= 0)]
    cand = present[~prot[present]]
    mapping = np.arange(n_ids + 1, dtype=np.int64)
    used: set[int] = set()
    if len(cand):
        # merges: random adjacent pairs of unprotected cells (each cell in at most one merge)
        pairs = []
        for a, b in ((seg[:, :-1], seg[:, 1:]), (seg[:-1, :], seg[1:, :])):
            sel = (a != b) & (a >= 0) & (b >= 0)
            pairs.append(np.minimum(a[sel], b[sel]).astype(np.int64) * (n_ids + 1) + np.maximum(a[sel], b[sel]))
        code = np.unique(np.concatenate(pairs))
        pairs = np.stack([code // (n_ids + 1), code % (n_ids + 1)], 1)
        pairs = pairs[~prot[pairs[:, 0]] & ~prot[pairs[:, 1]]]
        n_merge = int(rng.binomial(len(cand), 0.035 * noise))
        if n_merge and len(pairs):
            for p in pairs[rng.permutation(len(pairs))]:
                if stats["merged"] >= n_merge:
                    break
                i, j = int(p[0]), int(p[1])
                if i in used or j in used:
                    continue
                used.update((i, j))
                mapping[j] = i
                stats["merged"] += 1
        # drops: cells the segmentation missed (label 0)
        n_drop = int(rng.binomial(len(cand), 0.01 * noise))
        for i in rng.permutation(cand):
            if stats["dropped"] >= n_drop:
                break
            i = int(i)
            if i in used:
                continue
            used.add(i)
            mapping[i] = -1
            stats["dropped"] += 1
    ext = np.concatenate([[-1], mapping])
    free = np.array([i for i in cand.tolist() if i not in used], dtype=np.int64)
    return ext, free, stats


def _split_cells(rng, seg, free, noise, d, stats):
    """In place: cut some unprotected cells in two by a straight line near their centroid."""
    from scipy import ndimage

    n_split = int(rng.binomial(len(free), 0.03 * noise))
    if not n_split:
        return seg
    next_id = int(seg.max()) + 1
    objs = ndimage.find_objects(seg + 1)
    for i in rng.permutation(free)[:n_split].tolist():
        sl = objs[i] if i < len(objs) else None
        if sl is None:
            continue
        sub = seg[sl]
        yy, xx = np.nonzero(sub == i)
        if len(yy) < 0.4 * _HEX_AREA * d * d:
            continue
        th = rng.uniform(0, np.pi)
        proj = (yy - yy.mean()) * math.sin(th) + (xx - xx.mean()) * math.cos(th)
        off = rng.uniform(-0.2, 0.2) * (proj.max() - proj.min())
        side = proj > off
        sub[yy[side], xx[side]] = next_id
        next_id += 1
        stats["split"] += 1
    return seg


def _outline_noise(rng, outlines, labels, noise, d, width=1):
    """In-place: short breaks in the outlines and spurious line fragments inside cells.

    With lines ``width`` px wide the breaks are wider by ``(width - 1) / 2`` px (so they cut the
    line) and the fragments are widened like the lines.
    """
    h, w = outlines.shape
    stats = {"gaps": 0, "fragments": 0}
    ys, xs = np.nonzero(outlines)
    n_out = len(ys)
    if n_out == 0:
        return stats
    n_cells_est = h * w / (_HEX_AREA * d * d)
    n_gaps = int(rng.poisson(0.3 * noise * n_cells_est))
    pick = rng.integers(0, n_out, n_gaps)
    rad = rng.uniform(1.0, 1.5 + 1.5 * noise, n_gaps) + (width - 1) / 2
    for y, x, r in zip(ys[pick], xs[pick], rad):
        ri = int(math.ceil(r))
        y0, y1 = max(0, y - ri), min(h, y + ri + 1)
        x0, x1 = max(0, x - ri), min(w, x + ri + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        outlines[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = 0
    stats["gaps"] = n_gaps
    # spurious fragments: short slightly curved lines starting inside a cell
    n_frag = int(rng.poisson(0.15 * noise * n_cells_est))
    frag = np.zeros_like(outlines) if width > 1 else outlines
    for _ in range(n_frag):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        th = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(3, 0.4 * d)
        curv = rng.uniform(-0.15, 0.15)
        steps = int(length * 1.5)
        for _s in range(steps):
            yi, xi = int(y), int(x)
            if 0 <= yi < h and 0 <= xi < w:
                frag[yi, xi] = 1
            y += math.sin(th) / 1.5
            x += math.cos(th) / 1.5
            th += curv
    if width > 1:
        outlines |= _widen(frag > 0, width).astype(outlines.dtype)
    stats["fragments"] = n_frag
    return stats


# ----------------------------------------------------------------------------- files


def write_image(img: SynthImage, out: str | os.PathLike, stem: str) -> list[Path]:
    """Write one :class:`SynthImage` as ``<stem>_labels.tif``, ``_outlines.tif``, ``_rosettes.tif``, ``.json``."""
    import tifffile

    out = Path(out)
    paths = []
    for suffix, arr in (("_labels.tif", img.labels), ("_outlines.tif", img.outlines),
                        ("_rosettes.tif", img.rosettes)):
        p = out / f"{stem}{suffix}"
        with atomic_path(p) as tmp:
            tifffile.imwrite(tmp, arr, compression="zlib")
        paths.append(p)
    p = out / f"{stem}.json"
    text = json.dumps(img.meta, indent=1)
    with atomic_path(p) as tmp:
        tmp.write_text(text + "\n")
    paths.append(p)
    return paths


def write_dataset(out: str | os.PathLike, n: int = 4, size: int | Sequence[int] = 1024, seed: int = 0,
                  noise: float | None = None, cell_diameter: float | None = None, progress: bool = True,
                  world: str | World | None = None, **kwargs: Any) -> list[Path]:
    """Generate ``n`` images and write them into ``out``.

    Without ``world`` image ``i`` is ``generate(size, seed + i, noise=noise, ...)`` (``noise``
    default 0.5); with a world (a name of :data:`~rosette_bmz.worlds.WORLDS` or a
    :class:`~rosette_bmz.worlds.World`) it is ``generate_world(size, seed + i, world)``: settings
    drawn per image, generator seed ``seed + world.seed_offset + i``; ``noise``,
    ``cell_diameter`` and extra keyword arguments, when given, replace the drawn values.

    Per image: ``synth_0000_labels.tif`` (int32), ``synth_0000_outlines.tif`` (uint8 0/1),
    ``synth_0000_rosettes.tif`` (uint16 instances) and ``synth_0000.json`` (meta). Each file is
    written to a temporary name first and renamed, so no half-written file is left behind.
    Returns the JSON paths.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SynthError(f"n (number of images) must be a positive integer, got {n!r}")
    h, w = _size2(size)
    wd = get_world(world) if world is not None else None
    if cell_diameter is not None:
        d = float(cell_diameter)
    else:
        d = float(wd.cell_diameter[1]) if wd is not None else DEFAULT_CELL_DIAMETER
    _check_args(h, w, d, 0.5 if noise is None else float(noise))  # fail before creating anything
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    given = dict(kwargs)
    if noise is not None:
        given["noise"] = noise
    if cell_diameter is not None:
        given["cell_diameter"] = cell_diameter
    written = []
    for i in tqdm(range(int(n)), desc="synth", unit="img", disable=not progress):
        if wd is not None:
            img = generate_world((h, w), int(seed) + i, wd, **given)
        else:
            img = generate((h, w), seed=int(seed) + i, **{"noise": 0.5, **given})
        stem = f"synth_{i:04d}"
        written.append(write_image(img, out, stem)[-1])
        log.info("%s: %d cells, %d rosettes (%d planted), %d decoys", stem, img.meta["n_cells"],
                 len(img.meta["rosettes"]), img.meta["n_planted_found"], len(img.meta["decoys"]))
    return written


def load_dataset(directory: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, dict]]:
    """Read a folder written by :func:`write_dataset`: a list of ``(stem, labels, outlines, rosettes, meta)``.

    Images are found by their JSON files (``*.json`` with the three TIFFs beside them), sorted by
    stem.
    """
    import tifffile

    directory = Path(directory)
    if not directory.is_dir():
        raise SynthError(f"{directory}: no such directory")
    items = []
    for js in sorted(directory.glob("*.json")):
        stem = js.stem
        tifs = [directory / f"{stem}{s}" for s in FILE_SUFFIXES[:3]]
        if not all(t.is_file() for t in tifs):
            continue
        try:
            meta = json.loads(js.read_text())
            arrays = [tifffile.imread(t) for t in tifs]
        except Exception as exc:
            raise SynthError(f"{js}: cannot read synthetic image ({type(exc).__name__}: {exc})") from None
        items.append((stem, arrays[0], arrays[1], arrays[2], meta))
    if not items:
        raise SynthError(f"{directory}: no synthetic images found (expected synth_0000.json with "
                         "synth_0000_labels.tif, _outlines.tif, _rosettes.tif beside it)")
    return items

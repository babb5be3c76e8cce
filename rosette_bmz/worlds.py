"""Worlds: named distributions of generator settings (domain randomisation and test worlds).

A :class:`World` gives every knob of :func:`rosette_bmz.synth.generate` either a fixed value
or a range; :meth:`World.draw` draws one image's settings from a seed (its own random stream,
so the same seed always gives the same settings, and the settings do not disturb the
generator's streams). ``rosette-bmz synth --world NAME`` and the trainer's
``data.synth.world`` use the presets of :data:`WORLDS`:

``train``
    The randomised training distribution (every range below).
``heldout``
    The same distribution, seeds shifted by 1,000,000: in-distribution test images that share
    no seed with training images written from seeds below that.
``default``
    ``generate()``'s defaults (24 px cells, Cellpose inner outlines, noise 0.5, 1.5 planted
    rosettes per 100 cells, half of them wedges): the setting the pre-issue-13 demo weights were
    trained on, now with every rosette labelled.
``train_wide``
    The training distribution with cells of 12-48 px (12 px is the generator's smallest; centre
    and local diameters; seeds shifted by 9,000,000): training data for weights meant to cover the
    cell sizes of ``small_cells`` and ``large_cells`` too (which are then no longer "other
    worlds" for those weights).
``small_cells``, ``large_cells``, ``wide_lines``, ``wider_lines``, ``noise1``, ``poisson``, ``hexjitter``
    "Other worlds": the training distribution with one setting *outside* its training range
    (cells of 12 px or 45 px without a size gradient; 4-5 px outline lines, on cells of 24-40 px
    so that the lines cover less than the input guard's 45 % of the image; 6 px lines on cells
    of 36-48 px, outside the range of weights trained with widened lines too; noise 1; a
    Poisson-disc or a jittered-hexagon Voronoi tiling instead of the relaxed one). Each has its
    own seed offset. They measure generalisation (``benchmarks/generalisation.py``).

The knobs of the training world and why (each is an argument of ``generate``):

=======================  ====================  ==============================================
knob                     train range           notes
=======================  ====================  ==============================================
cell_diameter            14-40 px (log-unif.)  cell diameter at the image centre
gradient                 1-2                   cell-size ratio across the image, capped so that
                                               the local diameters stay within 14-40 px
elongation               1-1.5                 cell aspect ratio (anisotropy)
warp, wiggle             0-1.5, 0.3-1.5        large-scale warp, curved cell edges
tiling                   lloyd                 relaxed Voronoi (2-6 Lloyd iterations)
noise                    0-0.8                 segmentation noise (1 is the noise1 world)
outline_style            inner/watershed/thick Cellpose inner outlines, 1 px watershed lines,
                                               2-3 px lines (equally likely)
rosette_density          0.3-4 per 100 cells   sparse to dense planted rosettes (log-uniform);
                                               chance rosettes come on top
wedge_fraction           0-1                   planted rosettes with symmetric wedge cells vs.
                                               compact ones from the tissue's own cells
extrusion_fraction       0.15-0.5              planted rosettes closing around a small cell
central_radius           0.18-0.32 diameters   size of the extruding cell (per rosette)
k_range                  5-12                  cells per planted rosette
decoy_density            0.3-1.5 per 100 cells planted 4-cell junctions / small cells with 4
                                               neighbours (chance ones come on top)
tissue_free              40 % of images:       fraction without tissue, as smooth blobs or
                         3-20 %, blobs or disc one disc
=======================  ====================  ==============================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .constants import OUTLINE_STYLES, TILINGS, TISSUE_FREE_SHAPES
from .errors import SynthError

__all__ = ["World", "WORLDS", "get_world", "IN_DISTRIBUTION_WORLDS", "OTHER_WORLDS"]

#: Salt of the settings stream (``SeedSequence([seed, salt])``), so settings draws never reuse
#: the generator's own streams.
_SALT = 0x5E771


@dataclass(frozen=True)
class World:
    """A distribution of generator settings; a pair ``(lo, hi)`` is drawn per image, ``(v, v)`` is fixed.

    Tuples of names (``tiling``, ``outline_style``, ``tissue_free_shape``) are drawn with equal
    probability. See the module doc for what each knob means and the training ranges.
    """

    name: str
    description: str
    cell_diameter: tuple[float, float] = (14.0, 40.0)
    gradient: tuple[float, float] = (1.0, 2.0)
    elongation: tuple[float, float] = (1.0, 1.5)
    warp: tuple[float, float] = (0.0, 1.5)
    wiggle: tuple[float, float] = (0.3, 1.5)
    tiling: tuple[str, ...] = ("lloyd",)
    lloyd_iterations: tuple[int, int] = (2, 6)
    noise: tuple[float, float] = (0.0, 0.8)
    outline_style: tuple[str, ...] = OUTLINE_STYLES
    thick_width: tuple[int, int] = (2, 3)
    rosette_density: tuple[float, float] = (0.3, 4.0)
    wedge_fraction: tuple[float, float] = (0.0, 1.0)
    extrusion_fraction: tuple[float, float] = (0.15, 0.5)
    central_radius: tuple[float, float] = (0.18, 0.32)
    k_range: tuple[int, int] = (5, 12)
    decoy_density: tuple[float, float] = (0.3, 1.5)
    tissue_free_probability: float = 0.4
    tissue_free: tuple[float, float] = (0.03, 0.2)
    tissue_free_shape: tuple[str, ...] = TISSUE_FREE_SHAPES
    #: Local cell diameters (centre diameter times the gradient's spread) stay in this range;
    #: None: no cap (the ``gradient`` range is used as it is).
    local_diameter: tuple[float, float] | None = (14.0, 40.0)
    #: Image ``i`` of a dataset written from ``seed`` uses generator seed ``seed + seed_offset + i``.
    seed_offset: int = 0

    def __post_init__(self) -> None:
        for key in ("cell_diameter", "gradient", "elongation", "warp", "wiggle", "noise", "rosette_density",
                    "wedge_fraction", "extrusion_fraction", "central_radius", "decoy_density", "tissue_free",
                    "lloyd_iterations", "thick_width", "k_range"):
            lo, hi = getattr(self, key)
            if not lo <= hi:
                raise SynthError(f"world {self.name}: {key} range must be (low, high), got {(lo, hi)!r}")
        for key, allowed in (("tiling", TILINGS), ("outline_style", OUTLINE_STYLES),
                             ("tissue_free_shape", TISSUE_FREE_SHAPES)):
            bad = [v for v in getattr(self, key) if v not in allowed]
            if bad or not getattr(self, key):
                raise SynthError(f"world {self.name}: {key} must be a non-empty tuple of {allowed}, got "
                                 f"{getattr(self, key)!r}")

    def draw(self, seed: int) -> dict[str, Any]:
        """One image's ``generate`` keyword arguments (no ``size``/``seed``), drawn from ``seed``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SALT]))

        def uni(r: tuple[float, float], log: bool = False) -> float:
            lo, hi = (float(v) for v in r)
            if lo == hi:
                return lo
            if log:
                return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            return float(rng.uniform(lo, hi))

        def pick(options: tuple[str, ...]) -> str:
            return options[int(rng.integers(len(options)))]

        d = round(uni(self.cell_diameter, log=True), 3)
        g_hi = float(self.gradient[1])
        if self.local_diameter is not None:
            lo, hi = self.local_diameter
            # local diameters span d / sqrt(g) .. d * sqrt(g) across the image
            g_hi = min(g_hi, (hi / d) ** 2, (d / lo) ** 2)
        g_lo = min(float(self.gradient[0]), max(1.0, g_hi))
        gradient = round(uni((g_lo, max(g_lo, g_hi))), 4)
        style = pick(self.outline_style)
        width = int(rng.integers(self.thick_width[0], self.thick_width[1] + 1)) if style == "thick" else None
        has_free = rng.random() < self.tissue_free_probability
        tissue_free = round(uni(self.tissue_free), 4) if has_free else 0.0
        return {
            "cell_diameter": d,
            "gradient": gradient,
            "elongation": round(uni(self.elongation), 4),
            "warp": round(uni(self.warp), 4),
            "wiggle": round(uni(self.wiggle), 4),
            "tiling": pick(self.tiling),
            "lloyd_iterations": int(rng.integers(self.lloyd_iterations[0], self.lloyd_iterations[1] + 1)),
            "noise": round(uni(self.noise), 4),
            "outline_style": style,
            "line_width": width,
            "rosette_density": round(uni(self.rosette_density, log=True), 4),
            "wedge_fraction": round(uni(self.wedge_fraction), 4),
            "extrusion_fraction": round(uni(self.extrusion_fraction), 4),
            "central_radius": [float(v) for v in self.central_radius],
            "k_range": [int(v) for v in self.k_range],
            "decoy_density": round(uni(self.decoy_density), 4),
            "tissue_free": tissue_free,
            "tissue_free_shape": pick(self.tissue_free_shape),
        }

    def describe(self) -> dict[str, Any]:
        """The world's settings as a JSON-safe dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


_TRAIN = World("train", "the randomised training distribution (domain randomisation)")

#: The named worlds (see the module doc).
WORLDS: dict[str, World] = {w.name: w for w in (
    _TRAIN,
    replace(_TRAIN, name="heldout", description="the training distribution, other seeds (in-distribution test)",
            seed_offset=1_000_000),
    World("default", "generate()'s defaults (24 px cells, inner outlines, noise 0.5): the setting the "
          "pre-issue-13 demo weights were trained on", cell_diameter=(24.0, 24.0), gradient=(1.0, 1.5),
          elongation=(1.0, 1.35), warp=(1.0, 1.0), wiggle=(1.0, 1.0), lloyd_iterations=(4, 4), noise=(0.5, 0.5),
          outline_style=("inner",), rosette_density=(1.5, 1.5), wedge_fraction=(0.5, 0.5),
          extrusion_fraction=(0.35, 0.35), decoy_density=(1.0, 1.0), tissue_free=(0.03, 0.15),
          tissue_free_shape=("blobs",), local_diameter=None, seed_offset=8_000_000),
    replace(_TRAIN, name="small_cells",
            description="cells of 12 px, no size gradient (train world: 14-40 px; train_wide: 12-48 px)",
            cell_diameter=(12.0, 12.0), gradient=(1.0, 1.0), local_diameter=None, seed_offset=2_000_000),
    replace(_TRAIN, name="large_cells",
            description="cells of 45 px, no size gradient (train world: 14-40 px; train_wide: 12-48 px)",
            cell_diameter=(45.0, 45.0), gradient=(1.0, 1.0), local_diameter=None, seed_offset=3_000_000),
    # cells of >= 20 px only: 5 px lines around 14 px cells would cover 57 % of the image, which the
    # input guard refuses (more than 45 % foreground looks like a filled mask, inputs.check_values)
    replace(_TRAIN, name="wide_lines", description="4-5 px outline lines (training: inner / watershed / 2-3 px), "
            "cells of 24-40 px", outline_style=("thick",), thick_width=(4, 5), cell_diameter=(24.0, 40.0),
            local_diameter=(20.0, 40.0), seed_offset=4_000_000),
    # stop 28: the world_lines weights widen 30 % of their training crops' lines by 1-2 px, which puts
    # wide_lines' 4-5 px inside their range; 6 px lines (the generator's widest) stay outside it
    # (cells of >= 32 px, for the same input guard: the lines cover 25-30 % of the image)
    replace(_TRAIN, name="wider_lines", description="6 px outline lines (training: inner / watershed / 2-3 px, "
            "widened by up to 2 px in world_lines), cells of 36-48 px", outline_style=("thick",), thick_width=(6, 6),
            cell_diameter=(36.0, 48.0), local_diameter=(32.0, 48.0), seed_offset=10_000_000),
    replace(_TRAIN, name="noise1", description="segmentation noise 1 (training: 0-0.8)",
            noise=(1.0, 1.0), seed_offset=5_000_000),
    replace(_TRAIN, name="poisson", description="Poisson-disc Voronoi tiling, not relaxed (training: Lloyd-relaxed)",
            tiling=("poisson",), seed_offset=6_000_000),
    replace(_TRAIN, name="hexjitter", description="jittered hexagonal-lattice Voronoi tiling (training: "
            "Lloyd-relaxed)", tiling=("hexjitter",), seed_offset=7_000_000),
    replace(_TRAIN, name="train_wide", description="the training distribution with cells of 12-48 px (local "
            "diameters too): the cell sizes of small_cells and large_cells inside the training range",
            cell_diameter=(12.0, 48.0), local_diameter=(12.0, 48.0), seed_offset=9_000_000),
)}

#: The worlds within the training ranges, and the "other worlds" (one setting outside them).
IN_DISTRIBUTION_WORLDS = ("train", "heldout", "default", "train_wide")
OTHER_WORLDS = tuple(n for n in WORLDS if n not in IN_DISTRIBUTION_WORLDS)


def get_world(world: str | World) -> World:
    """A :class:`World` by name (or the world itself); :class:`SynthError` names the known ones."""
    if isinstance(world, World):
        return world
    try:
        return WORLDS[str(world)]
    except KeyError:
        raise SynthError(f"unknown world {world!r}; known worlds: {', '.join(WORLDS)}") from None

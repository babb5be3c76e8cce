"""Evaluation metrics: the published model card's table, plus precision and decoys.

Every number of the model card is computed here, from a probability map ``prob``
(float, 0..1, shape (H, W)) and a ground-truth rosette instance image ``rosettes``
(integer, 0 = no rosette, one id per rosette). A binary prediction (e.g. the classical
baseline's mask) is a probability map with values 0 and 1. All definitions are also in
``docs/metrics.md``; thresholds compare with ``>=`` (except the proposals, see below).

Pixel level (all images of a dataset pooled unless stated otherwise)

* **pixel Dice**: the *soft* Dice coefficient on the probabilities, ``2 Σ p·g / (Σ p + Σ g)``
  with ``p`` the probability and ``g`` the binary ground truth, computed per image and
  averaged over the images (images where both sums are 0 are left out: 0/0). This is the
  quantity the published training loss optimises (``1 - Dice`` on probabilities).
* **pixel F1**: the *hard* F1 over all pixels of all images pooled, prediction =
  ``p >= threshold`` (0.5): ``2 TP / (2 TP + FP + FN)``.
* **pixel recall**: ``TP / (TP + FN)``, same pooled hard counts; **pixel precision**:
  ``TP / (TP + FP)``.

  A hard Dice over pooled pixels is *identical* to F1, so the card's two different values
  (Dice 0.51, F1 0.61) must come from two different computations; this is our reading:
  Dice on the soft probabilities, per image, as in the validation loss; F1 on the
  thresholded mask over all pixels, as ``sklearn.metrics.f1_score`` on flattened arrays
  gives. The report also carries the two other variants (``pixel_dice_hard_mean``: hard
  Dice per image averaged; ``pixel_dice_soft_pooled``) so the sensitivity is visible.

Event level (each ground-truth rosette is one event; counts summed over images)

* **event recall**: a rosette is *detected* if at least one of its pixels has
  ``p >= 0.5``; recall = detected / all rosettes.
* **coverage tiers**, the fraction of a rosette's pixels above a threshold:
  ``>= 10 %`` of its pixels at ``p >= 0.4``; ``> 80 %`` and ``> 40 %`` of its pixels at
  ``p >= 0.5``. Each is reported as the fraction of all rosettes in that tier (the tiers
  are not exclusive).
* **completely missed**: no pixel of the rosette reaches ``p >= 0.5`` (the complement of
  event recall, as on the card: 30/269 = 269 - 239).

What a reviewer pays for (not on the card)

* **proposals**: connected components (8-connectivity) of ``p > 0.5`` with at least
  10 pixels, the published post-processing (threshold 0.5, objects under 10 px removed),
  computed by the same function that writes ``rosette-bmz predict``'s proposals
  (:func:`rosette_bmz.proposals.find_proposals`; it compares with ``>``, the only place
  here that does: a pixel at exactly 0.5 counts for the pixel and event metrics but
  starts no proposal). **proposals per image** = their number / number of images.
* **event precision**: proposals that overlap a ground-truth rosette by at least one pixel /
  all proposals. **false proposals per image**: proposals that overlap none / images.
* **decoy hits**: a decoy (a non-rosette vertex: a 4-cell junction or a small cell closed by 4
  cells, by the rosette definition, :mod:`rosette_bmz.definition`, away from every rosette;
  listed with its centre ``y, x`` in the synthetic JSON ``meta["decoys"]``) is hit
  if any proposal has a pixel within ``r`` pixels (Euclidean) of its centre. ``r`` is a
  quarter of the cell diameter when known (about half the distance to the neighbouring
  vertices, so a hit is a proposal closer to the decoy than to any other vertex), else
  :data:`DEFAULT_DECOY_RADIUS`. Reported as hits / decoys.

Ratios whose denominator is 0 are ``None`` (shown as "n/a").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .constants import DEFAULT_DECOY_RADIUS, MIN_PROPOSAL_SIZE, THRESHOLD

__all__ = [
    "THRESHOLD", "TIER_LOW_THRESHOLD", "MIN_PROPOSAL_SIZE", "DEFAULT_DECOY_RADIUS",
    "soft_dice", "pixel_counts", "rosette_pixel_stats", "event_counts", "proposal_components",
    "proposals_on_rosettes", "proposal_counts", "decoy_hits", "decoy_radius", "ImageCounts", "image_counts",
    "summarize", "MetricsAccumulator",
]

log = logging.getLogger(__name__)

#: Lower threshold of the card's first coverage tier (>= 10 % of pixels at 0.4).
TIER_LOW_THRESHOLD = 0.4


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _check_pair(prob: np.ndarray, rosettes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.asarray(prob)
    rosettes = np.asarray(rosettes)
    if prob.ndim != 2:
        raise ValueError(f"probability map must be 2D (H, W), got shape {prob.shape}")
    if prob.shape != rosettes.shape:
        raise ValueError(f"probability map {prob.shape} and ground truth {rosettes.shape} differ in shape")
    if rosettes.dtype.kind not in "biu":
        raise ValueError(f"ground-truth rosettes must be an integer label image, got dtype {rosettes.dtype}")
    return prob.astype(np.float64, copy=False), rosettes


# ----------------------------------------------------------------------------- pixel level
def soft_dice(prob: np.ndarray, gt: np.ndarray) -> float | None:
    """Soft Dice ``2 Σ p·g / (Σ p + Σ g)`` of probabilities ``prob`` vs binary ``gt > 0``.

    ``None`` when both sums are 0 (empty prediction and empty ground truth).
    """
    p = np.asarray(prob, dtype=np.float64)
    g = np.asarray(gt) > 0
    return _ratio(2.0 * p[g].sum(), p.sum() + g.sum())


def pixel_counts(prob: np.ndarray, gt: np.ndarray, threshold: float = THRESHOLD) -> tuple[int, int, int]:
    """Hard pixel counts ``(TP, FP, FN)`` of ``prob >= threshold`` against ``gt > 0``."""
    pred = np.asarray(prob) >= threshold
    g = np.asarray(gt) > 0
    tp = int(np.count_nonzero(pred & g))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(g)) - tp


# ----------------------------------------------------------------------------- event level
def rosette_pixel_stats(prob: np.ndarray, rosettes: np.ndarray, threshold: float = THRESHOLD,
                        low_threshold: float = TIER_LOW_THRESHOLD) -> dict[str, np.ndarray]:
    """Per ground-truth rosette: ``ids``, ``area`` (pixels), ``n_high`` (pixels ``>= threshold``),
    ``n_low`` (pixels ``>= low_threshold``). Arrays in the order of ``ids`` (ascending)."""
    prob, rosettes = _check_pair(prob, rosettes)
    ids, inverse = np.unique(rosettes, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = ids.size
    area = np.bincount(inverse, minlength=n)
    n_high = np.bincount(inverse, weights=(prob >= threshold).reshape(-1), minlength=n)
    n_low = np.bincount(inverse, weights=(prob >= low_threshold).reshape(-1), minlength=n)
    keep = ids != 0
    return {"ids": ids[keep], "area": area[keep].astype(np.int64), "n_high": n_high[keep].astype(np.int64),
            "n_low": n_low[keep].astype(np.int64)}


def event_counts(prob: np.ndarray, rosettes: np.ndarray) -> dict[str, int]:
    """Counts of the card's event rows for one image.

    ``n_rosettes``; ``detected`` (>= 1 pixel at ``p >= 0.5``); ``cov10_at04`` (>= 10 % of the
    pixels at ``p >= 0.4``); ``cov80_at05`` (> 80 % at ``p >= 0.5``); ``cov40_at05`` (> 40 % at
    ``p >= 0.5``); ``missed`` (no pixel at ``p >= 0.5``).
    """
    s = rosette_pixel_stats(prob, rosettes)
    area, high, low = s["area"], s["n_high"], s["n_low"]
    return {
        "n_rosettes": int(area.size),
        "detected": int(np.count_nonzero(high >= 1)),
        # integer forms of low/area >= 0.10, high/area > 0.80, high/area > 0.40 (no rounding issues)
        "cov10_at04": int(np.count_nonzero(10 * low >= area)),
        "cov80_at05": int(np.count_nonzero(10 * high > 8 * area)),
        "cov40_at05": int(np.count_nonzero(10 * high > 4 * area)),
        "missed": int(np.count_nonzero(high == 0)),
    }


# ----------------------------------------------------------------------------- proposals
def proposal_components(prob: np.ndarray, threshold: float = THRESHOLD, min_size: int = MIN_PROPOSAL_SIZE
                        ) -> tuple[np.ndarray, int]:
    """Proposals exactly as ``rosette-bmz predict`` writes them (:func:`rosette_bmz.proposals.find_proposals`):
    8-connected components of ``prob > threshold`` with ``>= min_size`` pixels.

    Returns ``(labels, n)`` with ids ``1..n``.
    """
    from .proposals import find_proposals

    labels, rows = find_proposals(np.asarray(prob), threshold=threshold, min_size=min_size)
    return labels, len(rows)


def proposals_on_rosettes(components: np.ndarray, n: int, rosettes: np.ndarray) -> np.ndarray:
    """Bool ``(n + 1,)``: entry ``i`` is True when proposal ``i`` overlaps a ground-truth rosette by
    >= 1 pixel (entry 0, the background, is ignored)."""
    hit = np.zeros(n + 1, dtype=bool)
    hit[np.asarray(components)[np.asarray(rosettes) > 0]] = True
    return hit


def proposal_counts(components: np.ndarray, n: int, rosettes: np.ndarray) -> tuple[int, int]:
    """``(n_proposals, n_matched)``: proposals overlapping a ground-truth rosette by >= 1 pixel."""
    if n == 0:
        return 0, 0
    return n, int(proposals_on_rosettes(components, n, rosettes)[1:].sum())


def decoy_radius(meta: Mapping[str, Any] | None) -> float:
    """Decoy radius in pixels: a quarter of ``meta["cell_diameter"]``, else the default."""
    d = (meta or {}).get("cell_diameter")
    try:
        d = float(d) if d is not None else None
    except (TypeError, ValueError):
        d = None
    return 0.25 * d if d and d > 0 else DEFAULT_DECOY_RADIUS


def decoy_hits(components: np.ndarray, decoys: Iterable[Mapping[str, Any]], radius: float) -> tuple[int, int]:
    """``(n_hit, n_decoys)``: decoys with a proposal pixel within ``radius`` px of their centre."""
    comp = np.asarray(components) > 0
    h, w = comp.shape
    r = int(np.floor(radius))
    hits = total = 0
    for d in decoys:
        total += 1
        y, x = float(d["y"]), float(d["x"])
        y0, y1 = max(0, int(np.floor(y - radius))), min(h, int(np.ceil(y + radius)) + 1)
        x0, x1 = max(0, int(np.floor(x - radius))), min(w, int(np.ceil(x + radius)) + 1)
        if y0 >= y1 or x0 >= x1 or r < 0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2
        if np.any(comp[y0:y1, x0:x1] & disc):
            hits += 1
    return hits, total


# ----------------------------------------------------------------------------- per image + dataset
@dataclass
class ImageCounts:
    """Everything one image contributes to the dataset summary (all additive except the Dice lists)."""

    n_images: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    soft_inter2: float = 0.0        # Σ 2·p·g, pooled
    soft_sum: float = 0.0           # Σ p + Σ g, pooled
    n_rosettes: int = 0
    detected: int = 0
    cov10_at04: int = 0
    cov80_at05: int = 0
    cov40_at05: int = 0
    missed: int = 0
    n_proposals: int = 0
    n_matched: int = 0
    decoys_hit: int = 0
    n_decoys: int = 0
    dice_soft: list = field(default_factory=list)   # per image, None = undefined
    dice_hard: list = field(default_factory=list)

    def __iadd__(self, other: "ImageCounts") -> "ImageCounts":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def image_counts(prob: np.ndarray, rosettes: np.ndarray, decoys: Sequence[Mapping[str, Any]] = (), *,
                 threshold: float = THRESHOLD, min_size: int = MIN_PROPOSAL_SIZE,
                 radius: float = DEFAULT_DECOY_RADIUS) -> ImageCounts:
    """All counts of one image (see the module doc for every definition)."""
    prob, rosettes = _check_pair(prob, rosettes)
    g = rosettes > 0
    tp, fp, fn = pixel_counts(prob, g, threshold)
    inter2 = 2.0 * float(prob[g].sum())
    ssum = float(prob.sum()) + float(np.count_nonzero(g))
    comps, n = proposal_components(prob, threshold, min_size)
    n_prop, n_match = proposal_counts(comps, n, rosettes)
    hit, n_dec = decoy_hits(comps, decoys, radius)
    ev = event_counts(prob, rosettes)
    return ImageCounts(n_images=1, tp=tp, fp=fp, fn=fn, soft_inter2=inter2, soft_sum=ssum,
                       n_proposals=n_prop, n_matched=n_match, decoys_hit=hit, n_decoys=n_dec,
                       dice_soft=[_ratio(inter2, ssum)], dice_hard=[_ratio(2 * tp, 2 * tp + fp + fn)], **ev)


def _mean_defined(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(c: ImageCounts) -> dict[str, Any]:
    """Dataset metrics from summed counts (module doc); counts are kept next to each ratio."""
    return {
        "n_images": c.n_images,
        "pixel_dice": _mean_defined(c.dice_soft),
        "pixel_f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "pixel_recall": _ratio(c.tp, c.tp + c.fn),
        "pixel_precision": _ratio(c.tp, c.tp + c.fp),
        "pixel_dice_hard_mean": _mean_defined(c.dice_hard),
        "pixel_dice_soft_pooled": _ratio(c.soft_inter2, c.soft_sum),
        "pixel_tp": c.tp, "pixel_fp": c.fp, "pixel_fn": c.fn,
        "n_rosettes": c.n_rosettes,
        "event_recall": _ratio(c.detected, c.n_rosettes), "n_detected": c.detected,
        "coverage_ge10_at04": _ratio(c.cov10_at04, c.n_rosettes), "n_coverage_ge10_at04": c.cov10_at04,
        "coverage_gt80_at05": _ratio(c.cov80_at05, c.n_rosettes), "n_coverage_gt80_at05": c.cov80_at05,
        "coverage_gt40_at05": _ratio(c.cov40_at05, c.n_rosettes), "n_coverage_gt40_at05": c.cov40_at05,
        "completely_missed": _ratio(c.missed, c.n_rosettes), "n_missed": c.missed,
        "n_proposals": c.n_proposals, "n_proposals_matched": c.n_matched,
        "event_precision": _ratio(c.n_matched, c.n_proposals),
        "proposals_per_image": _ratio(c.n_proposals, c.n_images),
        "false_proposals_per_image": _ratio(c.n_proposals - c.n_matched, c.n_images),
        "n_decoys": c.n_decoys, "n_decoys_hit": c.decoys_hit,
        "decoy_hit_rate": _ratio(c.decoys_hit, c.n_decoys),
    }


class MetricsAccumulator:
    """Add images one by one (``add``), read the dataset metrics with ``summary()``."""

    def __init__(self, threshold: float = THRESHOLD, min_size: int = MIN_PROPOSAL_SIZE) -> None:
        self.threshold = threshold
        self.min_size = min_size
        self.counts = ImageCounts()
        self.per_image: list[dict[str, Any]] = []

    def add(self, prob: np.ndarray, rosettes: np.ndarray, decoys: Sequence[Mapping[str, Any]] = (), *,
            radius: float = DEFAULT_DECOY_RADIUS, name: str | None = None) -> ImageCounts:
        c = image_counts(prob, rosettes, decoys, threshold=self.threshold, min_size=self.min_size,
                         radius=radius)
        self.counts += c
        row = summarize(c)
        row["name"] = name
        self.per_image.append(row)
        return c

    def summary(self) -> dict[str, Any]:
        return summarize(self.counts)

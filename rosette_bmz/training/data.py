"""Training data: image sources, the published crop sampler and augmentation.

Every image becomes a :class:`Sample`: the binary outline image (or, for the 2-channel
kind, both channels), the binary rosette mask, the rosette instance labels (for event
metrics) and known hard negatives: 4-cell junctions and near misses, from a synthetic image's
JSON, or for your own images read off the outlines by the definition (:func:`hard_points`).

Crops follow the published recipe: ``centred_fraction`` of them (0.7) are centred on a
random rosette pixel, the rest at a random position (plus, optionally, crops centred on
hard negatives). Augmentation (Albumentations) transforms the *binary outline image* and
the mask together with nearest-neighbour interpolation, so the input stays binary; the
two model channels are built afterwards with :func:`rosette_bmz.inputs.from_outlines`,
exactly as at inference time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..constants import DEFAULT_DECOY_RADIUS, IMAGE_SUFFIXES, MIN_MULTIPLICITY
from ..inputs import channels_from_foreground, from_channels, from_labels, from_outlines, read_image, validated

from ..errors import TrainingDataError
from .config import CROP_FRACTIONS, AugmentConfig, DataConfig, ReplayConfig

log = logging.getLogger(__name__)

__all__ = ["TrainingDataError", "Sample", "load_samples", "match_pairs", "split_samples", "sample_crop",
           "choose_crop_kind", "hard_points", "error_points", "replay_world", "replay_samples",
           "build_augmentation", "CropSampler", "to_input", "IMAGE_SUFFIXES"]

_MASK_SUFFIXES = ("_rosettes", "_rosette", "_mask", "_masks")
_IMAGE_SUFFIXES_STRIP = ("_outlines", "_outline", "_labels", "_channels")


@dataclass
class Sample:
    """One training or validation image.

    ``image`` is (H, W) uint8 0/1 outlines, or (H, W, 2) uint8 0/1 channels when
    ``kind == "channels"``; ``mask`` (H, W) uint8 0/1 rosette pixels; ``instances`` (H, W)
    int32 rosette instance labels; ``decoys`` (N, 2) int (y, x) hard negatives (crop centres),
    ``near_misses``, ``extrusions`` (extrusion rosettes' centres) and ``errors`` (the model's own
    current mistakes, :func:`error_points`) the same for their crop kinds,
    ``decoy_meta`` the same as dicts for :mod:`rosette_bmz.metrics` with ``decoy_radius``;
    ``centres`` (N, 2) int (y, x) rosette vertices (None: the instances' centroids).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    kind: str = "outlines"
    decoys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    near_misses: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    extrusions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    errors: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    decoy_meta: list = field(default_factory=list)
    decoy_radius: float = DEFAULT_DECOY_RADIUS
    centres: np.ndarray | None = None
    rosette_pixels: np.ndarray = field(init=False, repr=False)
    _focus: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rosette_pixels = np.flatnonzero(self.mask.ravel())

    @property
    def focus(self) -> np.ndarray:
        """(H, W) uint8: 1 within ``decoy_radius`` of a rosette vertex, a 4-cell junction or a near miss.

        Where the rule decides between rosette and look-alike (``loss.junction_weight`` weighs the
        BCE there); made on first use and kept.
        """
        if self._focus is None:
            centres = self.centres
            if centres is None:
                from scipy import ndimage

                n = int(self.instances.max())
                com = ndimage.center_of_mass(np.ones(self.shape), self.instances, range(1, n + 1)) if n else []
                centres = np.round(np.asarray(com, dtype=float).reshape(-1, 2)).astype(np.int64)
            self._focus = disc_map(self.shape, np.concatenate([centres, self.decoys, self.near_misses]),
                                   self.decoy_radius)
        return self._focus

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    @property
    def n_rosettes(self) -> int:
        return int(len(np.unique(self.instances)) - (1 if (self.instances == 0).any() else 0))


def disc_map(shape: tuple[int, int], points: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) uint8: 1 within ``radius`` px of any of the (N, 2) (y, x) ``points`` in the image, else 0.

    The baseline's sparse dilation (:func:`rosette_bmz.baseline._dilate_points` with its disk).
    """
    from ..baseline import _dilate_points, _disk

    h, w = shape
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)]
    seeds = np.zeros(shape, bool)
    seeds[pts[:, 0], pts[:, 1]] = True
    return _dilate_points(seeds, _disk(radius)).astype(np.uint8)


def to_input(image: np.ndarray, kind: str) -> np.ndarray:
    """A sample's image (outlines or channels, see :class:`Sample`) -> float32 (2, H, W).

    The images were validated whole when they were loaded (or drawn by the generator), so a crop
    is converted without the input checks: a crop of a dense patch (small cells, thick lines) may
    hold more foreground than :data:`~rosette_bmz.inputs.MAX_OUTLINE_FRACTION` allows a whole
    image."""
    if kind == "channels":
        return np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)
    return channels_from_foreground(np.asarray(image) > 0)


# ----------------------------------------------------------------------------- sources
def _instances_from_mask(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    values = np.unique(mask)
    if values.size > 2:  # already instance labels (e.g. a napari Labels layer)
        return mask.astype(np.int32)
    return label(mask > 0, connectivity=2).astype(np.int32)


def _points(items: Sequence[dict]) -> np.ndarray:
    """(N, 2) int64 (y, x) of dicts with ``y`` / ``x`` keys, rounded to pixels."""
    pts = [(int(round(d["y"])), int(round(d["x"]))) for d in items]
    return np.asarray(pts, dtype=np.int64).reshape(-1, 2)


def _points_from_meta(meta: dict, key: str = "decoys") -> np.ndarray:
    return _points((meta or {}).get(key, []))


def _synth_sample(name: str, outlines: np.ndarray, rosettes: np.ndarray, meta: dict) -> Sample:
    image = (np.asarray(outlines) > 0).astype(np.uint8)
    from ..metrics import decoy_radius

    inst = np.asarray(rosettes).astype(np.int32)
    return Sample(name=name, image=image, mask=(inst > 0).astype(np.uint8), instances=inst, kind="outlines",
                  decoys=_points_from_meta(meta), near_misses=_points_from_meta(meta, "near_misses"),
                  extrusions=_points([r for r in (meta or {}).get("rosettes", []) if r.get("kind") == "extrusion"]),
                  decoy_meta=list((meta or {}).get("decoys", [])),
                  decoy_radius=float(decoy_radius(meta)), centres=_points_from_meta(meta, "rosettes"))


def _load_synth(cfg: DataConfig) -> list[Sample]:
    from ..synth import generate, generate_world

    s = cfg.synth
    given = {k: v for k, v in (("noise", s.noise), ("cell_diameter", s.cell_diameter)) if v is not None}
    out = []
    for i in range(s.n_images):
        if s.world is not None:
            img = generate_world(s.size, s.seed + i, s.world, **given)
            name = f"{s.world}_seed{s.seed + i}"
        else:
            img = generate(s.size, seed=s.seed + i, **{"noise": 0.5, **given})
            name = f"synth_seed{s.seed + i}"
        out.append(_synth_sample(name, img.outlines, img.rosettes, img.meta))
    return out


def _load_synth_dir(directory: str | os.PathLike) -> list[Sample]:
    from ..synth import load_dataset

    d = Path(directory)
    if not d.is_dir():
        raise TrainingDataError(f"synthetic data folder {d}: no such directory")
    items = load_dataset(d)
    if not items:
        raise TrainingDataError(f"synthetic data folder {d}: no synth_*.tif images found "
                                "(write some with `rosette-bmz synth --out DIR`)")
    # validated whole here: the crops taken from them later are not (see to_input)
    return [_synth_sample(stem, validated(outlines, "outlines", str(d / stem)), rosettes, meta)
            for stem, _labels, outlines, rosettes, meta in items]


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def match_pairs(images: str | os.PathLike, masks: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair each image with its mask by file stem.

    ``a.tif`` pairs with ``a.tif`` (in the mask folder), ``a_rosettes.tif``, ``a_mask.tif`` or
    ``a_masks.tif``; ``a_outlines.tif`` / ``a_labels.tif`` also pair with ``a_rosettes.tif`` etc.
    (the layout ``rosette-bmz synth`` writes). Images and masks may share one folder.
    """
    idir, mdir = Path(images), Path(masks)
    for what, d in (("--images", idir), ("--masks", mdir)):
        if not d.is_dir():
            raise TrainingDataError(f"{what} {d}: no such directory")
    mask_files = {p.stem: p for p in _files(mdir)}
    if not mask_files:
        raise TrainingDataError(f"--masks {mdir}: no mask files ({'/'.join(IMAGE_SUFFIXES)})")
    same = idir.resolve() == mdir.resolve()
    pairs: list[tuple[Path, Path]] = []
    unmatched: list[Path] = []
    for img in _files(idir):
        stem = img.stem
        bases = [stem] + [stem[: -len(s)] for s in _IMAGE_SUFFIXES_STRIP if stem.endswith(s)]
        cands = ([] if same else [stem]) + [b + s for b in bases for s in _MASK_SUFFIXES]
        hit = next((mask_files[c] for c in cands if c in mask_files and mask_files[c] != img), None)
        if hit is None:
            unmatched.append(img)
        else:
            pairs.append((img, hit))
    used = {m for _, m in pairs}   # in a shared folder the masks are not images without masks
    pairs = [(i, m) for i, m in pairs if i not in used]
    unmatched = [p for p in unmatched if p not in used]
    if unmatched:
        names = ", ".join(p.name for p in unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise TrainingDataError(
            f"--images {idir}: {len(unmatched)} image(s) without a mask in {mdir}: {names} (a mask must "
            f"have the same file stem, optionally followed by {', '.join(_MASK_SUFFIXES)})")
    if not pairs:
        raise TrainingDataError(f"--images {idir}: no images ({'/'.join(IMAGE_SUFFIXES)}) found")
    return pairs


def _load_folder(images: str, masks: str, kind: str) -> list[Sample]:
    out = []
    for img_path, mask_path in match_pairs(images, masks):
        arr = read_image(img_path)
        name = str(img_path)
        if kind == "channels":
            image = np.moveaxis(from_channels(arr, name), 0, -1).astype(np.uint8)
        elif kind == "labels":
            image = from_labels(arr, name)[1].astype(np.uint8)   # channel 1 = the thin outlines
        else:
            image = from_outlines(arr, name)[1].astype(np.uint8)
        m = np.asarray(read_image(mask_path))
        if m.ndim == 3 and 1 in (m.shape[0], m.shape[-1]):
            m = m.reshape(m.shape[1:] if m.shape[0] == 1 else m.shape[:-1])
        if m.shape != image.shape[:2]:
            raise TrainingDataError(f"mask {mask_path}: shape {m.shape} does not match image {img_path} "
                                    f"{image.shape[:2]}")
        if m.dtype.kind not in "biuf" or (m.dtype.kind == "f" and not np.isfinite(m).all()):
            raise TrainingDataError(f"mask {mask_path}: must be a numeric label or binary image")
        if (m < 0).any():
            raise TrainingDataError(f"mask {mask_path}: negative values")
        inst = _instances_from_mask(m)
        decoys, near = hard_points(image[..., 1] if kind == "channels" else image, inst > 0, str(img_path))
        out.append(Sample(name=img_path.stem, image=image, mask=(inst > 0).astype(np.uint8), instances=inst,
                          kind="channels" if kind == "channels" else "outlines", decoys=decoys, near_misses=near))
    empty = [s.name for s in out if not s.rosette_pixels.size]
    n_empty = len(empty)
    if n_empty == len(out):
        raise TrainingDataError(f"--masks {masks}: every mask is empty; paint the rosettes (pixels > 0)")
    if n_empty:
        log.warning("%d of %d masks contain no rosette (%s): those images teach only what is not a rosette",
                    n_empty, len(out), ", ".join(empty[:5]) + (", ..." if n_empty > 5 else ""))
    return out


def hard_points(outlines: np.ndarray, mask: np.ndarray, name: str | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Hard negatives of an image without a generator's JSON (a reviewer's corrections, your masks).

    The cells are recovered from the binary ``outlines`` as the baseline and the quantities read
    them (:func:`rosette_bmz.quantities.cells_for`), and :func:`rosette_bmz.definition.find_rosettes`
    lists their 4-cell junctions and near misses. Points within a quarter cell diameter of the
    rosette ``mask`` (the annotator's truth, which wins over the rule) are dropped. Returns two
    (N, 2) int64 arrays of (y, x): 4-cell junctions, near misses.
    """
    from scipy import ndimage

    from ..definition import find_rosettes
    from ..metrics import decoy_radius
    from ..quantities import cells_for

    cells = cells_for(np.asarray(outlines) > 0, "outlines", name)
    truth = find_rosettes(cells.labels)
    radius = decoy_radius({"cell_diameter": truth.cell_diameter})
    far = ndimage.distance_transform_edt(~np.asarray(mask, bool)) if np.any(mask) else None
    h, w = mask.shape

    def points(items: list) -> np.ndarray:
        pts = _points(items)
        pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)]
        return pts if far is None else pts[far[pts[:, 0], pts[:, 1]] > radius]

    four = [v for v in truth.vertices if v["k"] == MIN_MULTIPLICITY - 1]   # 4-cell junctions, small cells with 4
    return points(four), points(truth.near_misses)


def load_samples(cfg: DataConfig) -> list[Sample]:
    """All images of the configured source, as :class:`Sample` objects."""
    if cfg.source == "synth":
        return _load_synth(cfg)
    if cfg.source == "synth_dir":
        if not cfg.synth_dir:
            raise TrainingDataError("data.source is synth_dir but data.synth_dir is not set (--synth-dir)")
        return _load_synth_dir(cfg.synth_dir)
    if not cfg.images or not cfg.masks:
        raise TrainingDataError("training on your own images needs both --images DIR and --masks DIR")
    return _load_folder(cfg.images, cfg.masks, cfg.input_kind)


def replay_world(replay: ReplayConfig, init: str | os.PathLike | None) -> str:
    """The world replay images come from: ``replay.world``, or for ``auto`` the world the ``init``
    weights were trained on (their sidecar's ``training_config.data``), else ``train``."""
    import json

    from ..checkpoint import sidecar_path

    if replay.world != "auto":
        return replay.world
    if init is None:
        return "train"
    try:
        data = json.loads(sidecar_path(init).read_text())["training_config"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return "train"
    world = (data.get("synth") or {}).get("world")
    if data.get("source") in ("synth", "synth_dir") and world is None:
        return "default"     # the generator's fixed default setting (noise 0.5, 24 px cells)
    return world if isinstance(world, str) else "train"


def replay_samples(replay: ReplayConfig, init: str | os.PathLike | None) -> list[Sample]:
    """``replay.n_images`` synthetic images of :func:`replay_world` (none when replay is off)."""
    from ..synth import generate_world

    if replay.fraction <= 0:
        return []
    world = replay_world(replay, init)
    log.info("replay: %d images of the %r world, %.0f %% of the crops", replay.n_images, world,
             100 * replay.fraction)
    out = []
    for i in range(replay.n_images):
        img = generate_world(replay.size, replay.seed + i, world)
        out.append(_synth_sample(f"replay_{world}_seed{replay.seed + i}", img.outlines, img.rosettes, img.meta))
    return out


def split_samples(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split by image (published: 80/20). With one image, validation reuses it (logged)."""
    n = len(samples)
    if n == 0:
        raise TrainingDataError("no training images")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = [samples[i] for i in sorted(order[:n_val])]
    train = [samples[i] for i in sorted(order[n_val:])]
    if not val:   # val_fraction 0 (review.yaml) asks for this; with one image it is the only choice
        (log.warning if val_fraction > 0 else log.info)("%d image(s): validating on the training image(s)", n)
        val = list(train)
    return train, val


# ----------------------------------------------------------------------------- crops
def error_points(prob: np.ndarray, sample: Sample, threshold: float, min_size: int) -> np.ndarray:
    """(N, 2) int (y, x): where the prediction ``prob`` of ``sample`` is wrong: the centroid of every
    proposal (component of ``prob > threshold`` with >= ``min_size`` px, :mod:`rosette_bmz.metrics`)
    that touches no rosette pixel (a false proposal, as event precision counts it), and the centroid
    of every rosette that no proposal touches (stricter than event recall, which counts a rosette
    found with one pixel above the threshold, even in a component under ``min_size``)."""
    from scipy import ndimage

    from ..metrics import proposal_components, proposals_on_rosettes

    comp, n = proposal_components(prob, threshold, min_size)
    points = []
    if n:
        false = np.flatnonzero(~proposals_on_rosettes(comp, n, sample.mask)[1:]) + 1
        if false.size:
            points.append(np.asarray(ndimage.center_of_mass(np.ones(comp.shape), comp, false)).reshape(-1, 2))
    ids = np.unique(sample.instances[sample.instances > 0])
    if ids.size:
        found = np.zeros(int(ids.max()) + 1, dtype=bool)
        found[sample.instances[(comp > 0) & (sample.instances > 0)]] = True
        missed = ids[~found[ids]]
        if missed.size:
            centres = ndimage.center_of_mass(np.ones(comp.shape), sample.instances, missed)
            points.append(np.asarray(centres, dtype=float).reshape(-1, 2))
    if not points:
        return np.zeros((0, 2), dtype=np.int64)
    return np.round(np.concatenate(points)).astype(np.int64)


def choose_crop_kind(rng: np.random.Generator, centred_fraction: float, hard_negative_fraction: float,
                     near_miss_fraction: float = 0.0, extrusion_fraction: float = 0.0,
                     error_fraction: float = 0.0) -> str:
    """``centred`` (on a rosette pixel), ``hard`` (on a 4-cell junction), ``near_miss``,
    ``extrusion`` (on an extrusion rosette), ``error`` (on one of the model's mistakes) or ``random``."""
    u = rng.random()
    edge = 0.0
    for kind, fraction in zip(CROP_FRACTIONS, (centred_fraction, hard_negative_fraction, near_miss_fraction,
                                               extrusion_fraction, error_fraction)):
        edge += fraction
        if u < edge:
            return kind
    return "random"


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - a.shape[0]), max(0, size - a.shape[1])
    if not ph and not pw:
        return a
    return np.pad(a, [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2))


def sample_crop(sample: Sample, size: int, rng: np.random.Generator, kind: str = "random"
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Cut a ``size`` x ``size`` crop of image and mask.

    ``kind="centred"``: the crop is centred on a random rosette pixel (shifted only where it
    would leave the image); ``"hard"``: on a random hard negative (4-cell junction);
    ``"near_miss"``: on a random near miss (:mod:`rosette_bmz.definition`); ``"extrusion"``: on a
    random extrusion rosette's centre; ``"error"``: on one of the model's mistakes (``sample.errors``); ``"random"``:
    uniform. Falls back to ``random`` when the image has none of the kind asked for. Images smaller
    than ``size`` are zero-padded (bottom/right). Returns (image crop, mask crop, centre
    (y, x) in image coordinates).
    """
    h, w = sample.shape
    centre = None
    if kind == "centred" and sample.rosette_pixels.size:
        flat = int(sample.rosette_pixels[rng.integers(sample.rosette_pixels.size)])
        centre = divmod(flat, w)
    elif kind in ("hard", "near_miss", "extrusion", "error") and len(
            pts := {"hard": sample.decoys, "near_miss": sample.near_misses, "extrusion": sample.extrusions,
                    "error": sample.errors}[kind]):
        cy, cx = pts[rng.integers(len(pts))]
        centre = (int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1)))
    if centre is None:
        H, W = max(h, size), max(w, size)
        y0, x0 = int(rng.integers(0, H - size + 1)), int(rng.integers(0, W - size + 1))
        centre = (y0 + size // 2, x0 + size // 2)
    centre = (int(centre[0]), int(centre[1]))
    return crop_like(sample.image, size, centre), crop_like(sample.mask, size, centre), centre


def crop_like(a: np.ndarray, size: int, centre: tuple[int, int]) -> np.ndarray:
    """The ``size`` x ``size`` window of ``a`` that :func:`sample_crop` cut around ``centre``."""
    H, W = max(a.shape[0], size), max(a.shape[1], size)
    y0 = int(np.clip(centre[0] - size // 2, 0, H - size))
    x0 = int(np.clip(centre[1] - size // 2, 0, W - size))
    return np.ascontiguousarray(_pad_to(a, size)[y0:y0 + size, x0:x0 + size])


def build_augmentation(cfg: AugmentConfig, crop_size: int, seed: int | None = None):
    """The Albumentations pipeline (nearest interpolation for image and mask), or None."""
    if not cfg.enabled:
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    nearest = cv2.INTER_NEAREST
    t = cfg.affine_translate
    lo, hi = cfg.dropout_size
    hole = (max(1, int(round(lo * crop_size))), max(1, int(round(hi * crop_size))))
    transforms = [
        A.HorizontalFlip(p=cfg.flip_p),
        A.VerticalFlip(p=cfg.flip_p),
        A.RandomRotate90(p=cfg.rotate90_p),
        A.ElasticTransform(alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma, interpolation=nearest,
                           mask_interpolation=nearest, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0,
                           p=cfg.elastic_p),
        A.Affine(scale=tuple(cfg.affine_scale), translate_percent=(-t, t), rotate=(-cfg.affine_rotate,
                 cfg.affine_rotate), interpolation=nearest, mask_interpolation=nearest,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=cfg.affine_p),
        A.CoarseDropout(num_holes_range=tuple(cfg.dropout_holes), hole_height_range=hole,
                        hole_width_range=hole, fill=0, fill_mask=None, p=cfg.dropout_p),
    ]
    return A.Compose(transforms, seed=seed)


def widen_lines(image: np.ndarray, by: int, max_fraction: float = 1.0) -> np.ndarray:
    """A binary outline image with every line ``by`` px wider (dilation with an elliptic kernel of
    side ``1 + by``), or less wide, down to unchanged, where the lines would cover more than
    ``max_fraction`` of the image."""
    import cv2

    image = np.ascontiguousarray(image, dtype=np.uint8)
    for b in range(by, 0, -1):
        wide = cv2.dilate(image, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (1 + b, 1 + b)))
        if np.count_nonzero(wide) <= max_fraction * wide.size:
            return wide
    return image


class CropSampler:
    """Draws ``samples_per_epoch`` augmented crops per epoch, deterministic per (seed, epoch)."""

    def __init__(self, samples: Sequence[Sample], data: DataConfig, augment: AugmentConfig, seed: int = 0,
                 replay: Sequence[Sample] = (), junction_weight: float = 0.0):
        if not samples:
            raise TrainingDataError("no training images")
        self.samples = list(samples)
        self.replay = list(replay)
        self.data = data
        self.seed = seed
        self.junction_weight = float(junction_weight)
        self.augment = build_augmentation(augment, data.crop_size, seed)
        self.widen = ((augment.widen_p if augment.enabled else 0.0), augment.widen_by, augment.widen_max_fraction)

    def crop(self, rng: np.random.Generator, widen_rng: np.random.Generator | None = None
             ) -> tuple[np.ndarray, np.ndarray, str, np.ndarray | None]:
        """One (2, S, S) float32 input, (S, S) uint8 mask, the crop kind and the (S, S) float32 pixel
        weights of the BCE (``1 + junction_weight`` on :attr:`Sample.focus`; None when that is 0).

        With replay images, a ``data.replay.fraction`` of the crops comes from them. Line widening
        (``augment.widen_p``) draws from ``widen_rng`` (default ``rng``), so with its own generator
        the crops themselves do not depend on it.
        """
        d = self.data
        pool = self.samples
        if self.replay and rng.random() < d.replay.fraction:
            pool = self.replay
        sample = pool[int(rng.integers(len(pool)))]
        kind = choose_crop_kind(rng, *(getattr(d, f) for f in CROP_FRACTIONS.values()))
        img, msk, centre = sample_crop(sample, d.crop_size, rng, kind)
        focus = crop_like(sample.focus, d.crop_size, centre) if self.junction_weight else None
        if self.augment is not None:     # the same geometric transform for mask (and focus)
            if focus is None:
                out = self.augment(image=img, mask=msk)
                img, msk = out["image"], out["mask"]
            else:
                out = self.augment(image=img, masks=[msk, focus])
                img, (msk, focus) = out["image"], out["masks"]
        p, (lo, hi), most = self.widen
        wr = rng if widen_rng is None else widen_rng
        if p and sample.kind == "outlines" and wr.random() < p:
            img = widen_lines(img, int(wr.integers(lo, hi + 1)), most)
        weight = None if focus is None else 1 + self.junction_weight * (np.asarray(focus) > 0).astype(np.float32)
        return to_input(img, sample.kind), msk.astype(np.uint8), kind, weight

    def epoch(self, epoch: int, batch_size: int
              ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Batches (B, 2, S, S) float32 inputs, (B, 1, S, S) float32 masks and (B, 1, S, S) float32
        BCE pixel weights (None without ``junction_weight``) for one epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        widen_rng = np.random.default_rng([self.seed, epoch, 1])
        if self.augment is not None:
            self.augment.set_random_seed(int(rng.integers(2**31 - 1)))
        n = self.data.samples_per_epoch
        for start in range(0, n, batch_size):
            xs, ys, ws = [], [], []
            for _ in range(min(batch_size, n - start)):
                x, y, _, w = self.crop(rng, widen_rng)
                xs.append(x)
                ys.append(y[None].astype(np.float32))
                ws.append(w)
            yield np.stack(xs), np.stack(ys), (None if ws[0] is None else np.stack(ws)[:, None])

    def n_batches(self, batch_size: int) -> int:
        return -(-self.data.samples_per_epoch // batch_size)

"""Training configuration: pydantic models loaded from YAML.

Every field has a docstring (what it means and the published value where there is one).
Unknown keys are refused (``extra="forbid"``), so a typo in a YAML file is an error
rather than a silently ignored setting. ``configs/published.yaml`` (beside this module) is the
published recipe; ``demo.yaml`` is what the shipped demo weights were trained with and
``finetune.yaml`` the short schedule for human-in-the-loop fine-tuning; ``review.yaml`` the
schedule for a review round on 1-8 corrected images (no held-out image, a fixed number of steps,
the last weights kept).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ..constants import PRECISIONS
from ..inputs import MAX_OUTLINE_FRACTION
from ..errors import ConfigError

__all__ = ["ConfigError", "ModelConfig", "SynthConfig", "ReplayConfig", "DataConfig", "AugmentConfig", "LossConfig",
           "OptimConfig", "TrainConfig", "load_config", "CONFIG_DIR"]

#: Where the shipped configs live (``published.yaml``, ``demo.yaml``, ``finetune.yaml``, ``review.yaml``).
CONFIG_DIR = Path(__file__).parent / "configs"
#: Crop kind -> the data setting that gives it its share of the crops (centred on a rosette pixel,
#: a 4-cell junction, a near miss, an extrusion rosette, one of the model's own mistakes), in the
#: order they are drawn; the rest are random crops.
CROP_FRACTIONS = {"centred": "centred_fraction", "hard": "hard_negative_fraction",
                  "near_miss": "near_miss_fraction", "extrusion": "extrusion_fraction",
                  "error": "error_fraction"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelConfig(_Strict):
    """Which network to train."""

    base_channels: int = Field(64, ge=2, multiple_of=2)
    """Width of the first U-Net level. 64 is the published model (31.4 M parameters); 16 gives the
    1.96 M-parameter demo model (7.8 MB file)."""

    init: Optional[str] = None
    """Start from these weights instead of a random initialisation: a checkpoint (.pt/.pth) or a
    BioImage Model Zoo ``rdf.yaml``. The width is then read off the weights (fine-tuning), unless
    ``widen`` is set."""

    widen: bool = False
    """With ``init``: train at ``base_channels`` when it is wider than the init's weights, starting
    from them widened (:func:`rosette_bmz.checkpoint.widen_model`: the same function, the new
    channels silent at first) instead of from scratch. Off: the init's width is kept."""


class SynthConfig(_Strict):
    """Synthetic images generated on the fly with ``rosette_bmz.synth.generate``."""

    n_images: int = Field(40, ge=1)
    """Number of synthetic images (split into train/validation by image)."""

    size: int = Field(768, ge=64)
    """Height and width of each image in pixels."""

    seed: int = 0
    """Image ``i`` is generated with seed ``seed + i`` (same convention as ``rosette-bmz synth``)."""

    world: Optional[str] = None
    """Draw every image's generator settings from this named world (``rosette_bmz.worlds``):
    ``train`` is the randomised training distribution (cell diameter 14-40 px with a size
    gradient, Cellpose / watershed / 2-3 px outlines, noise 0-0.8, anisotropy, compact and wedge
    rosettes of k 5-12, extruding cells of varying size, tissue-free regions, 0.3-4 planted
    rosettes per 100 cells on top of the chance ones). Image ``i`` then uses generator seed
    ``seed + i + world.seed_offset``. None: fixed settings (``noise``, ``cell_diameter``, all else
    the generator's defaults)."""

    noise: Optional[float] = Field(None, ge=0, le=1)
    """Segmentation-noise strength of the generator (0 = perfect outlines). None: 0.5, or with a
    ``world`` drawn per image; a value given here replaces the world's draw."""

    cell_diameter: Optional[float] = None
    """Mean cell diameter in pixels. None: the generator's default (24), or with a ``world`` drawn
    per image; a value given here replaces the world's draw."""

    @field_validator("world")
    @classmethod
    def _known_world(cls, v: Optional[str]) -> Optional[str]:
        from ..worlds import WORLDS

        if v is not None and v not in WORLDS:
            raise ValueError(f"unknown world {v!r}; known worlds: {', '.join(WORLDS)}")
        return v


class ReplayConfig(_Strict):
    """Replay: synthetic images of the world the starting weights learned, mixed into fine-tuning.

    A review round trains on the 1-8 images a reviewer corrected; alone, those pull the model
    towards their own look and it forgets the rest (measured: precision on the old world fell
    from 0.90 to 0.66-0.83). Drawing part of every batch from images of the world the weights
    came from keeps what they knew while the corrections teach the new look."""

    fraction: float = Field(0.0, ge=0, lt=1)
    """Fraction of the training crops drawn from the replay images (0 = no replay)."""

    world: str = "auto"
    """World of the replay images (``rosette_bmz.worlds``). ``auto``: the world the ``--init``
    weights were trained on, read off their sidecar (``<weights>.json``, ``data.synth.world``;
    a run on the generator's fixed default setting reads as ``default``); ``train`` where the
    weights carry no such record (e.g. an rdf.yaml)."""

    n_images: int = Field(8, ge=1)
    """Number of replay images, generated once when training starts."""

    size: int = Field(512, ge=64)
    """Height and width of each replay image in pixels."""

    seed: int = 2_000_000
    """Replay image ``i`` uses world seed ``seed + i`` (far from the seeds of training images)."""

    @field_validator("world")
    @classmethod
    def _known_world(cls, v: str) -> str:
        from ..worlds import WORLDS

        if v != "auto" and v not in WORLDS:
            raise ValueError(f"unknown world {v!r}; use auto or one of {', '.join(WORLDS)}")
        return v


class DataConfig(_Strict):
    """Where the training images and rosette masks come from, and how crops are drawn."""

    source: Literal["synth", "synth_dir", "folder"] = "synth"
    """``synth``: generate on the fly (see ``synth``); ``synth_dir``: a folder written by
    ``rosette-bmz synth``; ``folder``: user images (``images``) and rosette masks (``masks``)
    matched by file name, e.g. masks painted in napari."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    """Generator settings for ``source: synth``."""

    synth_dir: Optional[str] = None
    """Folder written by ``rosette-bmz synth`` (``source: synth_dir``)."""

    images: Optional[str] = None
    """Folder of outline (or label) images, TIFF/NPY/PNG (``source: folder``)."""

    masks: Optional[str] = None
    """Folder of rosette masks, one per image, same file stem (optionally with a ``_rosettes`` /
    ``_mask`` / ``_masks`` suffix). Instance labels or binary; every pixel > 0 is rosette."""

    input_kind: Literal["outlines", "labels", "channels"] = "outlines"
    """What the images in ``images`` are: binary outlines, a cell label image, or the 2-channel input."""

    val_fraction: float = Field(0.2, ge=0, lt=1)
    """Fraction of images held out for validation (split by image, published: 0.2)."""

    split_seed: int = 0
    """Seed of the train/validation split."""

    crop_size: int = Field(512, ge=16, multiple_of=16)
    """Training crop height and width in pixels (published: 512)."""

    centred_fraction: float = Field(0.7, ge=0, le=1)
    """Fraction of crops centred on a random rosette pixel (published: 0.7; the rest are random)."""

    hard_negative_fraction: float = Field(0.0, ge=0, le=1)
    """Fraction of crops centred on a known hard negative (a 4-cell junction from the synthetic
    images' JSON). Not in the published recipe (0 there); the demo uses it to cut false positives on
    4-cell junctions. Images without known decoys fall back to random crops."""

    near_miss_fraction: float = Field(0.0, ge=0, le=1)
    """Fraction of crops centred on a known near miss (two vertices closer than 7 px, not merged,
    with >= 5 cells together: no rosette by the rule, but the look-alike a detector confuses most;
    :mod:`rosette_bmz.definition`, from the synthetic images' JSON). Images without known near
    misses fall back to random crops."""

    extrusion_fraction: float = Field(0.0, ge=0, le=1)
    """Fraction of crops centred on a known extrusion rosette (a small cell closed by >= 5 cells,
    planted or arisen by chance, from the synthetic images' JSON). The world_seg weights found 58 %
    of the chance ones against the baseline's 80 % (issue 13, stop 26). Images without known extrusion
    rosettes fall back to random crops."""

    error_fraction: float = Field(0.0, ge=0, le=1)
    """Fraction of crops centred on one of the model's own current mistakes on the training images:
    a false proposal (a component at ``threshold`` / ``min_size`` touching no rosette) or a missed
    rosette (hard example mining). The trainer finds them by predicting every training image (and
    every replay image), at the start and every ``error_refresh`` epochs; images without a mistake
    fall back to random crops."""

    error_refresh: int = Field(10, ge=1)
    """Epochs between two searches for the model's mistakes (``error_fraction``); each predicts
    every training image once (about as long as validating on that many images)."""

    samples_per_epoch: int = Field(200, ge=1)
    """Crops drawn per epoch (each epoch draws fresh random crops from the training images)."""

    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    """Synthetic images of the starting weights' world mixed into the training crops (fine-tuning)."""

    val_tile: int = Field(1024, ge=16, multiple_of=16)
    """Validation predicts whole held-out images with the runner (halo tiling: the same result as one
    pass over the whole image) in tiles of at most this size, and at least 240 px (more than twice
    the 112 px tile context)."""

    @model_validator(mode="after")
    def _check_fractions(self) -> "DataConfig":
        parts = {k: getattr(self, k) for k in CROP_FRACTIONS.values()}
        if sum(parts.values()) > 1 + 1e-9:
            raise ValueError(" + ".join(f"{k} ({v:g})" for k, v in parts.items()) + " must not exceed 1")
        return self


class AugmentConfig(_Strict):
    """Albumentations pipeline, applied identically to input and mask (nearest interpolation, so
    the binary outline image stays binary; the 2 input channels are built after augmentation)."""

    enabled: bool = True
    """Switch all augmentation on or off."""

    flip_p: float = Field(0.5, ge=0, le=1)
    """Probability of a horizontal flip and (independently) of a vertical flip."""

    rotate90_p: float = Field(0.5, ge=0, le=1)
    """Probability of a random multiple-of-90-degree rotation."""

    elastic_p: float = Field(0.3, ge=0, le=1)
    """Probability of ElasticTransform."""

    elastic_alpha: float = 120.0
    """ElasticTransform alpha (published: 120)."""

    elastic_sigma: float = 6.0
    """ElasticTransform sigma (published: 6)."""

    affine_p: float = Field(0.5, ge=0, le=1)
    """Probability of the Affine transform."""

    affine_scale: tuple[float, float] = (0.9, 1.1)
    """Affine scale range (published: 0.9-1.1)."""

    affine_translate: float = Field(0.1, ge=0, le=1)
    """Affine shift as a fraction of the crop size, +- (published: 10 %)."""

    affine_rotate: float = Field(15.0, ge=0, le=180)
    """Affine rotation in degrees, +- (published: 15)."""

    dropout_p: float = Field(0.3, ge=0, le=1)
    """Probability of CoarseDropout (rectangles of the outline image set to 0; the mask is kept)."""

    dropout_holes: tuple[int, int] = (1, 4)
    """CoarseDropout number of holes (min, max)."""

    dropout_size: tuple[float, float] = (0.03, 0.08)
    """CoarseDropout hole height/width as a fraction of the crop size (min, max)."""

    widen_p: float = Field(0.0, ge=0, le=1)
    """Probability of widening the lines of an outline-image crop (a binary dilation after the
    geometric transforms; the rosette mask is kept): outline width is a property of the segmentation tool,
    not of the tissue. 0 (the default) leaves the crops, and their random draws, as before."""

    widen_by: tuple[int, int] = (1, 2)
    """Range (min, max, in px) by which a widened crop's lines grow: a dilation with an elliptic
    kernel of side ``1 + by``: 1 px lines become 2-3 px wide, 2-3 px ones 3-5 px."""

    widen_max_fraction: float = Field(0.35, gt=0, le=MAX_OUTLINE_FRACTION)
    """A crop's lines are widened by less (or not at all) where the widened lines would cover more
    than this fraction of it: thick lines on small cells are not an outline image any tool draws
    (the input guard refuses more than 45 %)."""

    @field_validator("widen_by")
    @classmethod
    def _widen_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 8:
            raise ValueError(f"must be (min, max) with 1 <= min <= max <= 8, got {list(v)}")
        return v


class LossConfig(_Strict):
    """loss = bce_weight * BCE + dice_weight * (1 - Dice), both on probabilities (published: 0.5/0.5)."""

    bce_weight: float = Field(0.5, ge=0)
    """Weight of the binary cross-entropy term."""

    dice_weight: float = Field(0.5, ge=0)
    """Weight of the (1 - soft Dice) term."""

    smooth: float = Field(1.0, ge=0)
    """Smoothing constant of the soft Dice, (2*|P.G| + s) / (|P| + |G| + s), over the whole batch."""

    junction_weight: float = Field(0.0, ge=0)
    """Extra BCE weight where the rule decides: pixels within a quarter cell diameter (the decoy
    radius) of a rosette vertex, a 4-cell junction or a near miss weigh ``1 + junction_weight``,
    the rest 1 (a weighted mean, so the loss keeps its scale). 0 (published): every pixel alike.
    The mask is mostly the painting of whole cells; the few pixels where 5 cells meet or 4 do
    carry the decision between a rosette and its look-alike. Measured (stop 25, ``world_seg`` with
    ``junction_weight: 8`` against 0, same start, 14 epochs each): validation event F1 0.835-0.856
    against 0.846-0.860, decoys hit 5.0-5.7 % against 5.3-6.7 %; no gain, so no shipped config
    sets it."""


class OptimConfig(_Strict):
    """Optimiser, learning-rate schedule and stopping."""

    lr: float = Field(1e-4, gt=0)
    """AdamW learning rate (published: 1e-4)."""

    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay (PyTorch default 0.01)."""

    precision: str = "fp32"
    """Arithmetic of the training forward/backward passes. ``fp32``: full precision; ``bf16``:
    bfloat16 autocast for convolutions (weights, optimiser and loss stay fp32; the final logits are
    cast to fp32 before the sigmoid) - about 1.7x faster on CPUs with native bf16 (AVX-512 BF16,
    AMX), slower elsewhere; ``auto``: bf16 where the CPU (or GPU) has it, else fp32. On the CPU the
    network also runs in channels-last layout (about 1.4x faster, same arithmetic)."""

    l2sp: float = Field(0.0, ge=0)
    """L2-SP: weight of a penalty ``sum((w - w_init)^2)`` that holds the weights near the ``--init``
    weights (Li et al. 2018), on top of the loss; 0 = off. Another guard against forgetting
    besides ``data.replay``."""

    freeze_batchnorm: bool = False
    """Keep the BatchNorm layers' running mean and variance as the ``--init`` weights have them
    (the layers normalise with those statistics while training, as at prediction; their scale and
    shift still learn). Without it, a short fine-tune on a few images replaces the statistics of
    the whole training set with those of its crop mix (momentum 0.1: after 50 steps less than
    1 % of the old ones remain). Measured on a 2-image review round (README, "Review in
    napari"): no change in precision on either world, so ``review.yaml`` leaves it off."""

    ema: float = Field(0.0, ge=0, lt=1)
    """Exponential moving average of the weights (decay per optimisation step; 0 = off). With it,
    validation, ``best.pt`` and ``last.pt`` use the averaged weights (``last_state.pt`` keeps the
    raw ones for ``--resume``). The average of the last ~1/(1 - ema) steps sits at a steadier
    operating point than any single step's weights: at 80 steps an epoch, 0.995 averages about
    the last 2.5 epochs."""

    @model_validator(mode="after")
    def _check_schedule(self) -> "OptimConfig":
        if self.schedule == "cosine":
            if self.min_lr >= self.lr:
                raise ValueError(f"min_lr ({self.min_lr:g}) must be below lr ({self.lr:g}) for schedule: cosine")
            if self.warmup_epochs >= self.epochs:
                raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        if v not in PRECISIONS:
            raise ValueError(f"unknown precision {v!r}; choose one of {', '.join(PRECISIONS)}")
        return v

    batch_size: int = Field(4, ge=1)
    """Crops per optimisation step (published: 4)."""

    epochs: int = Field(100, ge=1)
    """Maximum number of epochs (published: 100)."""

    schedule: Literal["plateau", "cosine"] = "plateau"
    """Learning-rate schedule. ``plateau`` (published): ReduceLROnPlateau on the validation loss
    (``plateau_factor``, ``plateau_patience``). ``cosine``: a fixed schedule per optimisation step,
    a linear warm-up over ``warmup_epochs`` to ``lr``, then a cosine decay to ``min_lr`` at
    ``epochs`` (a warm restart when ``--init`` weights have converged at a lower rate)."""

    warmup_epochs: int = Field(0, ge=0)
    """``schedule: cosine``: epochs of linear warm-up from ``lr / steps`` to ``lr``."""

    min_lr: float = Field(0.0, ge=0)
    """``schedule: cosine``: the learning rate the decay ends at (after ``epochs``)."""

    plateau_factor: float = Field(0.5, gt=0, lt=1)
    """ReduceLROnPlateau factor on the validation loss (published: 0.5)."""

    plateau_patience: int = Field(7, ge=0)
    """ReduceLROnPlateau patience in epochs (published: 7)."""

    early_stopping_patience: int = Field(15, ge=1)
    """Stop after this many epochs without a lower validation loss (published: 15)."""

    max_minutes: Optional[float] = Field(None, gt=0)
    """Wall-clock budget: stop after the epoch that crosses it (None = no limit)."""

    best_metric: Literal["val_loss", "val_event_f1", "last"] = "val_loss"
    """What ``best.pt`` is chosen by: lowest validation loss (published), highest event F1 at 0.5, or
    ``last``: the weights after the last epoch (a fixed schedule; with a handful of images there is
    no independent image to select on, see ``review.yaml``)."""

    validate_every: int = Field(1, ge=0)
    """Validate every this many epochs and always after the last one; 0 = only after the last.
    Epochs without validation log no validation metrics and do not count for the plateau
    scheduler or early stopping."""


class TrainConfig(_Strict):
    """A complete training run."""

    name: str = "run"
    """Name of the run (written into the sidecar)."""

    out: str = "runs/run"
    """Run directory: best.pt, last.pt (+ .json sidecars), last_state.pt, log.csv."""

    seed: int = 0
    """Seed for weights, crop sampling and augmentation (runs are repeatable on the same device)."""

    device: str = "auto"
    """auto (cuda, then mps, then cpu), cuda, mps or cpu."""

    threads: Optional[int] = Field(None, ge=1)
    """torch CPU threads (None = torch's default)."""

    threshold: float = Field(0.5, gt=0, lt=1)
    """Probability threshold of the validation event metrics."""

    min_size: int = Field(10, ge=0)
    """Predicted components smaller than this (pixels) are ignored by the validation event metrics."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """Network."""

    data: DataConfig = Field(default_factory=DataConfig)
    """Data and crops."""

    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Augmentation."""

    loss: LossConfig = Field(default_factory=LossConfig)
    """Loss."""

    optim: OptimConfig = Field(default_factory=OptimConfig)
    """Optimiser and schedule."""


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML config (a path, or the name of a shipped config in ``configs/``) and apply dotted overrides.

    ``overrides`` maps dotted keys to values, e.g. ``{"optim.epochs": 3, "data.images": "x/"}``;
    ``None`` values are skipped.
    """
    import yaml

    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and (CONFIG_DIR / p).is_file():
            p = CONFIG_DIR / p
        elif not p.is_file() and (CONFIG_DIR / f"{p}.yaml").is_file():
            p = CONFIG_DIR / f"{p}.yaml"
        if not p.is_file():
            raise ConfigError(f"training config {path}: no such file (shipped configs: "
                              f"{', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))})")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"training config {p}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"training config {p}: expected a mapping at the top level, got "
                              f"{type(raw).__name__}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"training config {path or '(defaults)'}: " + "; ".join(lines)) from None

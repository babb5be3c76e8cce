"""Training loop: the published recipe, resumable runs, and fine-tuning from given weights.

    rosette-bmz train --config demo --synth-dir data/demo_synth
    rosette-bmz train --config published --images DIR --masks DIR
    rosette-bmz train --init rdf.yaml --images DIR --masks DIR      # fine-tune (finetune.yaml)

A run directory holds ``best.pt`` and ``last.pt`` (state dicts written with
:func:`rosette_bmz.checkpoint.save_checkpoint`, each with its JSON sidecar: architecture,
training config, data description, metrics per epoch), ``last_state.pt`` (optimizer,
scheduler and early-stopping state for ``--resume``, read with ``weights_only=True``) and
``log.csv`` (one row per epoch).

Validation runs on whole held-out images (split by image). Besides the loss it reports
the model-card metrics of :mod:`rosette_bmz.metrics` at ``threshold``: pixel Dice, event
recall, event precision (proposals of at least ``min_size`` px that overlap a ground-truth
rosette) and, for synthetic data, the fraction of decoys (4-cell junctions) hit. Whole
images are predicted by the runner (halo tiling in tiles of at most ``data.val_tile``, equal to
one pass over the whole image), as ``rosette-bmz predict`` does.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..constants import DEFAULT_HALO, DIVISOR
from ..files import atomic_path

from .config import ConfigError, TrainConfig, load_config
from .data import (CropSampler, Sample, TrainingDataError, error_points, load_samples, replay_samples,
                   replay_world, split_samples, to_input)

log = logging.getLogger(__name__)

__all__ = ["rosette_loss", "select_device", "load_init_state", "train", "validate", "mine_errors", "TrainResult",
           "resolve_config"]

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_bce", "val_dice", "val_pixel_f1", "val_event_recall",
               "val_event_precision", "val_event_f1", "val_decoy_hit_rate", "val_proposals", "lr", "seconds")


# ----------------------------------------------------------------------------- loss
def rosette_loss(prob, target, bce_weight: float = 0.5, dice_weight: float = 0.5, smooth: float = 1.0,
                 weight=None):
    """``bce_weight * BCE + dice_weight * (1 - Dice)`` on probabilities (the published loss).

    ``prob`` are sigmoid outputs in [0, 1]; BCE is the pixel mean (log clamped at -100 as in
    PyTorch), or with ``weight`` (pixel weights, same shape) the weighted mean
    ``sum(w * bce) / sum(w)``; soft Dice = (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth) over
    the whole batch. Returns (loss, bce, dice) tensors.
    """
    import torch.nn.functional as F

    prob = prob.float()
    target = target.float()
    if weight is None:
        bce = F.binary_cross_entropy(prob, target)
    else:
        weight = weight.float()
        bce = (weight * F.binary_cross_entropy(prob, target, reduction="none")).sum() / weight.sum()
    inter = (prob * target).sum()
    dice = (2 * inter + smooth) / (prob.sum() + target.sum() + smooth)
    return bce_weight * bce + dice_weight * (1 - dice), bce, dice


# ----------------------------------------------------------------------------- device / init
def cosine_factor(step: int, *, steps_per_epoch: int, cfg) -> float:
    """``schedule: cosine``: the learning rate after ``step`` optimisation steps, as a fraction of
    ``cfg.lr`` (``cfg``: an :class:`~rosette_bmz.training.config.OptimConfig`): a linear ramp over
    ``warmup_epochs``, then half a cosine down to ``min_lr`` at the end of ``epochs``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch, warm + 1)
    if step < warm:
        return (step + 1) / warm
    floor = cfg.min_lr / cfg.lr
    t = min(1.0, (step - warm) / (total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def select_device(name: str = "auto"):
    """``auto``: cuda, then mps, then cpu; otherwise the named device (checked)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ConfigError(f"device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps': Apple MPS is not available on this machine")
    return torch.device(name)


def load_init_state(path: str | os.PathLike):
    """State dict to start from: a checkpoint, or the ``pytorch_state_dict`` weights of an rdf.yaml."""
    from ..checkpoint import load_state_dict
    from ..errors import CheckpointError, ModelError
    from ..runner.models import resolve_model

    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            p = resolve_model(p).weight_path("pytorch_state_dict")
        except ModelError as exc:
            raise CheckpointError(f"--init: {exc} (give a checkpoint, or a model rdf.yaml with "
                                  "weights.pytorch_state_dict)") from None
    return load_state_dict(p)


def resolve_precision(precision: str, device) -> str:
    """``fp32`` or ``bf16`` for ``optim.precision`` on ``device`` (``auto``: bf16 where it is native)."""
    import torch

    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        try:
            flags = Path("/proc/cpuinfo").read_text()
            native = native and (" avx512_bf16" in flags or " amx_bf16" in flags)
        except OSError:
            pass
        return "bf16" if native else "fp32"
    return "fp32"


def _fp32_logits(model) -> None:
    """Cast the final conv's output to fp32, so the sigmoid (and the loss) never see bf16."""
    model.final[0].register_forward_hook(lambda _mod, _inp, out: out.float())


def train_mode(model, cfg: TrainConfig):
    """``model.train()``, with the BatchNorm layers left in eval mode under ``optim.freeze_batchnorm``."""
    import torch

    model.train()
    if cfg.optim.freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


@contextlib.contextmanager
def _calibrated(model, offset: float):
    """The model with its final bias lowered by ``offset`` (the init's calibration) inside the block."""
    import torch

    if not offset:
        yield model
        return
    bias = model.final[0].bias
    with torch.no_grad():
        bias -= offset
    try:
        yield model
    finally:
        with torch.no_grad():
            bias += offset


class WeightAverage:
    """Exponential moving average of a model's weights (``optim.ema``): ``model`` is a copy that
    :meth:`update` moves toward the trained model after each step (floating-point buffers, i.e.
    BatchNorm statistics, too; the step counter is copied)."""

    def __init__(self, model, decay: float):
        import copy

        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def update(self, model) -> None:
        import torch

        with torch.no_grad():
            for avg, live in zip(self.model.state_dict().values(), model.state_dict().values()):
                if avg.is_floating_point():
                    avg.lerp_(live, 1.0 - self.decay)
                else:
                    avg.copy_(live)


# ----------------------------------------------------------------------------- validation
def validate(model, samples: Sequence[Sample], cfg: TrainConfig, device) -> dict:
    """Validation loss (the training formula over all pixels) and the evaluation metrics.

    Pixel Dice, event recall/precision and decoy hits are :mod:`rosette_bmz.metrics`'
    definitions (the model-card table), at ``cfg.threshold`` and ``cfg.min_size``.
    """
    from ..metrics import MetricsAccumulator
    from ..runner import predict

    was_training = model.training
    model.eval()
    acc = MetricsAccumulator(threshold=cfg.threshold, min_size=cfg.min_size)
    bce_sum = inter = psum = gsum = 0.0
    npix = 0
    tiny = math.exp(-100)   # PyTorch's BCE clamps log() at -100
    for s in samples:
        prob = predict(to_input(s.image, s.kind), model,
                       tile=max(cfg.data.val_tile, 2 * DEFAULT_HALO + DIVISOR))
        g = s.mask.astype(np.float64)
        p = prob.astype(np.float64)
        bce_sum += float(-(g * np.log(np.clip(p, tiny, 1)) + (1 - g) * np.log(np.clip(1 - p, tiny, 1))).sum())
        inter += float((p * g).sum())
        psum += float(p.sum())
        gsum += float(g.sum())
        npix += p.size
        acc.add(prob, s.instances, s.decoy_meta, radius=s.decoy_radius, name=s.name)
    if was_training:
        train_mode(model, cfg)
    smooth = cfg.loss.smooth
    bce = bce_sum / max(npix, 1)
    loss = cfg.loss.bce_weight * bce + cfg.loss.dice_weight * (1 - (2 * inter + smooth) / (psum + gsum + smooth))
    m = acc.summary()

    def num(v):
        return float("nan") if v is None else float(v)

    recall, precision = num(m["event_recall"]), num(m["event_precision"])
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return {
        "val_loss": loss, "val_bce": bce, "val_dice": num(m["pixel_dice"]), "val_pixel_f1": num(m["pixel_f1"]),
        "val_event_recall": recall, "val_event_precision": precision, "val_event_f1": num(f1),
        "val_decoy_hit_rate": num(m["decoy_hit_rate"]), "val_proposals": num(m["proposals_per_image"]),
        "val_counts": {k: m[k] for k in ("n_rosettes", "n_detected", "n_proposals", "n_proposals_matched",
                                         "n_decoys", "n_decoys_hit")},
    }


def mine_errors(model, samples: Sequence[Sample], cfg: TrainConfig, progress: bool = False) -> int:
    """Predict every sample whole (as :func:`validate` does) and set its ``errors`` to the model's
    mistakes there (:func:`rosette_bmz.training.data.error_points` at ``cfg.threshold`` /
    ``cfg.min_size``), the crop centres of ``data.error_fraction``. Returns how many in all."""
    from ..runner import predict

    was_training = model.training
    model.eval()
    items = samples
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(samples, desc="finding the model's mistakes", unit="image", leave=False, mininterval=2.0)
    total = 0
    for s in items:
        prob = predict(to_input(s.image, s.kind), model,
                       tile=max(cfg.data.val_tile, 2 * DEFAULT_HALO + DIVISOR))
        s.errors = error_points(prob, s, cfg.threshold, cfg.min_size)
        total += len(s.errors)
    if was_training:
        train_mode(model, cfg)
    return total


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    """Where a run's files are and how it ended."""

    out: Path
    best: Path
    last: Path
    best_epoch: int
    epochs_run: int
    stopped: str
    history: list


def _describe(train_s: Sequence[Sample], val_s: Sequence[Sample], cfg: TrainConfig) -> dict:
    d = cfg.data
    desc = {"source": d.source, "n_train_images": len(train_s), "n_val_images": len(val_s),
            "train_images": [s.name for s in train_s], "val_images": [s.name for s in val_s],
            "train_rosettes": int(sum(s.n_rosettes for s in train_s)),
            "val_rosettes": int(sum(s.n_rosettes for s in val_s)),
            "image_shapes": sorted({f"{s.shape[0]}x{s.shape[1]}" for s in list(train_s) + list(val_s)})}
    if d.source == "synth":
        desc["synth"] = d.synth.model_dump(mode="json")
    elif d.source == "synth_dir":
        desc["synth_dir"] = d.synth_dir
    else:
        desc.update(images=d.images, masks=d.masks, input_kind=d.input_kind)
    return desc


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _write_csv(path: Path, history: list) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k, "")) for k in LOG_COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _no_validation() -> dict:
    """Validation metrics of an epoch that was not validated (``optim.validate_every``)."""
    nan = float("nan")
    return {k: nan for k in LOG_COLUMNS if k.startswith("val_")} | {"val_counts": None}


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int, int, float], None] | None = None) -> TrainResult:
    """Run (or resume) training as configured; returns the run's files and history.

    ``on_epoch(row)`` is called after each epoch with its log row; ``on_step(epoch, step,
    steps_per_epoch, loss)`` after each optimisation step (e.g. a progress bar in a GUI).
    """
    import torch

    from ..checkpoint import CheckpointError, build_model, load_state_dict, save_checkpoint, widen_model
    from ..model import AttentionUNet

    t_start = time.monotonic()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    out = Path(cfg.out)
    last_path, best_path, state_path = out / "last.pt", out / "best.pt", out / "last_state.pt"
    if not resume and last_path.exists():
        raise FileExistsError(f"run directory {out} already holds a run (last.pt); use --resume to continue "
                              "it or choose another --out")
    if resume and not (last_path.is_file() and state_path.is_file()):
        raise CheckpointError(f"--resume: {out} has no last.pt + last_state.pt to continue from")

    if cfg.optim.l2sp > 0:   # before the data are loaded or generated (minutes for synthetic data)
        if not cfg.model.init:
            raise ConfigError("optim.l2sp needs model.init (the weights to hold the model near)")
        if cfg.model.widen:
            raise ConfigError("optim.l2sp holds the weights near model.init's, which model.widen changes the "
                              "shape of: use one or the other")

    samples = load_samples(cfg.data)
    train_s, val_s = split_samples(samples, cfg.data.val_fraction, cfg.data.split_seed)
    data_desc = _describe(train_s, val_s, cfg)
    log.info("data: %d train / %d val images (%d / %d rosettes)", len(train_s), len(val_s),
             data_desc["train_rosettes"], data_desc["val_rosettes"])
    replay = replay_samples(cfg.data.replay, cfg.model.init)
    if replay:
        data_desc["replay"] = {"world": replay_world(cfg.data.replay, cfg.model.init), "images": len(replay),
                               "fraction": cfg.data.replay.fraction}
    sampler = CropSampler(train_s, cfg.data, cfg.augment, seed=cfg.seed, replay=replay,
                          junction_weight=cfg.loss.junction_weight)

    torch.manual_seed(cfg.seed)
    init_desc = None
    if resume:
        model = build_model(load_state_dict(last_path), f"checkpoint {last_path}")
    elif cfg.model.init:
        model = build_model(load_init_state(cfg.model.init), f"--init {cfg.model.init}")
        init_desc = str(cfg.model.init)
        if cfg.model.widen and cfg.model.base_channels > model.base_channels:
            log.info("widening %s from base %d to %d", cfg.model.init, model.base_channels, cfg.model.base_channels)
            init_desc = f"{cfg.model.init} (widened from base {model.base_channels})"
            model = widen_model(model, cfg.model.base_channels)
        elif model.base_channels != cfg.model.base_channels:
            log.info("width %d taken from %s (config said %d)", model.base_channels, cfg.model.init,
                     cfg.model.base_channels)
    else:
        model = AttentionUNet(in_channels=2, out_channels=1, base_channels=cfg.model.base_channels)
    # A calibrated --init (rosette-bmz calibrate) carries its threshold as an offset on the final bias:
    # train without it, and put it back on every validated and saved model, so the run keeps the
    # operating point (a resumed run's last.pt carries it too).
    calibration = None
    st = torch.load(state_path, map_location="cpu", weights_only=True) if resume else None
    if st is not None:
        calibration = st.get("calibration")
    elif cfg.model.init:
        from ..calibrate import calibration_threshold

        t = calibration_threshold(cfg.model.init)
        calibration = {"threshold": t, "from": str(cfg.model.init)} if t is not None else None
    offset = 0.0
    if calibration:
        from ..calibrate import logit

        offset = logit(float(calibration["threshold"]))
        with torch.no_grad():
            model.final[0].bias += offset
        log.info("keeping the calibrated threshold %.2f of %s", calibration["threshold"], calibration["from"])
    kwargs = {"in_channels": model.in_channels, "out_channels": model.out_channels,
              "base_channels": model.base_channels}
    train_mode(model.to(device), cfg)
    cpu = device.type == "cpu"
    if cpu:   # oneDNN's fast convolutions want NHWC
        model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.optim.ema > 0:   # last.pt holds the averaged weights; the raw ones are in last_state.pt
        ema = WeightAverage(model, cfg.optim.ema)
        if resume:
            raw = st.get("model")
            if raw is None:
                raise CheckpointError(f"--resume with optim.ema: {state_path} holds no raw weights (the run "
                                      "was started without optim.ema)")
            model.load_state_dict(raw)
    evaluated = ema.model if ema is not None else model
    precision = resolve_precision(cfg.optim.precision, device)
    if precision == "bf16":
        _fp32_logits(model)
    log.info("training precision %s%s", precision, ", channels-last" if cpu else "")
    anchor = None
    if cfg.optim.l2sp > 0:   # L2-SP: hold the weights near the --init weights (checked above)
        start = build_model(load_init_state(cfg.model.init), f"--init {cfg.model.init}") if resume else model
        anchor = [p.detach().clone().to(device) for p in start.parameters()]
        if resume and offset:   # the init file carries its calibration; the model trains without it
            anchor[[n for n, _ in start.named_parameters()].index("final.0.bias")] += offset
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.schedule == "cosine":   # per step: linear warm-up, cosine decay to min_lr
        steps = sampler.n_batches(cfg.optim.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(cosine_factor, steps_per_epoch=steps,
                                                               cfg=cfg.optim))
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.optim.plateau_factor,
                                                           patience=cfg.optim.plateau_patience)
    history: list = []
    start_epoch, best_value, best_epoch, best_loss, bad_epochs = 1, None, 0, None, 0
    if resume:
        # states written before the key existed: ReduceLROnPlateau's state has a patience, LambdaLR's none
        was = st.get("schedule") or ("plateau" if "patience" in st["scheduler"] else "cosine")
        if was != cfg.optim.schedule:
            raise ConfigError(f"--resume: {state_path} was trained with optim.schedule {was}, the config says "
                              f"{cfg.optim.schedule}; resume with the run's own schedule (or start a new run with "
                              "--init)")
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch = int(st["epoch"]) + 1
        best_epoch, bad_epochs = int(st["best_epoch"]), int(st["bad_epochs"])
        best_value = float(st["best_value"]) if st["best_value"] is not None else None
        best_loss = float(st["best_loss"]) if st["best_loss"] is not None else None
        history = json.loads(st["history"])
        init_desc = st.get("init")
        log.info("resuming %s at epoch %d", out, start_epoch)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("AttentionUNet(%s): %d parameters on %s", kwargs, n_params, device)

    def metadata(kind: str, epoch: int) -> dict:
        return {
            "format": "rosette-bmz training sidecar v1",
            "checkpoint": kind, "epoch": epoch,
            "architecture": {"callable": "rosette_bmz.model.AttentionUNet", "kwargs": kwargs,
                             "parameters": n_params},
            "training_config": cfg.model_dump(mode="json"),
            "init": init_desc, "data": data_desc, **({"calibration": calibration} if calibration else {}),
            "best": {"epoch": best_epoch, "metric": cfg.optim.best_metric, "value": _finite(best_value)},
            "metrics": [{k: _finite(v) for k, v in row.items()} for row in history],
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "device": str(device)},
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    stopped = "epochs"
    epoch = start_epoch - 1
    if start_epoch > cfg.optim.epochs:
        stopped = "already complete"
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        t0 = time.monotonic()
        mined = None
        if cfg.data.error_fraction > 0 and (epoch - start_epoch) % cfg.data.error_refresh == 0:
            with _calibrated(evaluated, offset):
                mined = mine_errors(evaluated, [*train_s, *replay], cfg, progress)
            log.info("epoch %d: %d mistakes of the model on the %d training and %d replay images (crop "
                     "centres of data.error_fraction)", epoch, mined, len(train_s), len(replay))
        train_mode(model, cfg)
        losses = []
        batches = sampler.epoch(epoch, cfg.optim.batch_size)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(batches, total=sampler.n_batches(cfg.optim.batch_size), desc=f"epoch {epoch}",
                       unit="batch", leave=False, mininterval=2.0)
            batches = bar
        for xb, yb, wb in batches:
            x = torch.from_numpy(xb).to(device)
            if cpu:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(yb).to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                prob = model(x)
            loss, _, _ = rosette_loss(prob, y, cfg.loss.bce_weight, cfg.loss.dice_weight, cfg.loss.smooth,
                                      None if wb is None else torch.from_numpy(wb).to(device))
            if anchor is not None:
                loss = loss + cfg.optim.l2sp * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: training loss is {loss.item()}; lower optim.lr")
            loss.backward()
            opt.step()
            if cfg.optim.schedule == "cosine":
                sched.step()
            if ema is not None:
                ema.update(model)
            losses.append(float(loss.item()))
            if on_step is not None:
                on_step(epoch, len(losses), sampler.n_batches(cfg.optim.batch_size), losses[-1])
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if bar is not None:
            bar.close()
        every = cfg.optim.validate_every
        validated = epoch == cfg.optim.epochs or (every > 0 and epoch % every == 0)
        with _calibrated(evaluated, offset):
            val = validate(evaluated, val_s, cfg, device) if validated else _no_validation()
        if validated and cfg.optim.schedule == "plateau":
            sched.step(val["val_loss"])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), **{k: v for k, v in val.items()
                                                                          if k != "val_counts"},
               "val_counts": val["val_counts"], **({"mined_errors": mined} if mined is not None else {}),
               "lr": float(opt.param_groups[0]["lr"]),
               "seconds": round(time.monotonic() - t0, 2)}
        history.append(row)
        if validated:
            if best_loss is None or val["val_loss"] < best_loss:
                best_loss, bad_epochs = val["val_loss"], 0
            else:
                bad_epochs += 1
        with _calibrated(evaluated, offset):
            if cfg.optim.best_metric == "last":
                best_value, best_epoch = None, epoch
                save_checkpoint(evaluated, best_path, metadata("best", epoch))
            elif _is_better(cfg.optim.best_metric, val[cfg.optim.best_metric], best_value):
                best_value, best_epoch = float(val[cfg.optim.best_metric]), epoch
                save_checkpoint(evaluated, best_path, metadata("best", epoch))
            save_checkpoint(evaluated, last_path, metadata("last", epoch))
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                 "best_epoch": best_epoch, "best_value": best_value, "best_loss": best_loss,
                 "bad_epochs": bad_epochs, "history": json.dumps(history, default=_finite), "init": init_desc,
                 "calibration": calibration, "schedule": cfg.optim.schedule}
        if ema is not None:
            state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        _write_csv(out / "log.csv", history)
        if on_epoch is not None:
            on_epoch(row)
        log.info("epoch %d: train %.4f val %.4f dice %.3f recall %.3f precision %.3f", epoch, row["train_loss"],
                 row["val_loss"], row["val_dice"], row["val_event_recall"], row["val_event_precision"])
        if bad_epochs >= cfg.optim.early_stopping_patience:
            stopped = f"early stopping (no lower val loss for {bad_epochs} epochs)"
            break
        if cfg.optim.max_minutes and (time.monotonic() - t_start) / 60 >= cfg.optim.max_minutes:
            stopped = f"time budget ({cfg.optim.max_minutes:g} min)"
            break
    if not best_path.exists() and last_path.exists():  # e.g. NaN metrics only: last is the best we have
        with _calibrated(evaluated, offset):
            save_checkpoint(evaluated, best_path, metadata("best", epoch))
    return TrainResult(out=out, best=best_path, last=last_path, best_epoch=best_epoch,
                       epochs_run=len(history), stopped=stopped, history=history)


def resolve_config(config: str | os.PathLike | None = None, *, init: str | None = None, out: str | None = None,
                   resume: bool = False, epochs: int | None = None, max_minutes: float | None = None,
                   seed: int | None = None, device: str | None = None, images: str | None = None,
                   masks: str | None = None, synth_dir: str | None = None,
                   input_kind: str | None = None, precision: str | None = None) -> tuple[TrainConfig, bool]:
    """The run's TrainConfig: a config file (default ``finetune`` with ``init``, else ``published``)
    with these settings on top; ``resume`` without a config continues with the run's saved config."""
    if config is None:
        if resume and out:
            side = Path(out) / "last.json"
            if side.is_file():
                saved = json.loads(side.read_text()).get("training_config")
                if saved:
                    cfg = TrainConfig.model_validate(saved)
                    if epochs:
                        cfg.optim.epochs = epochs
                    if max_minutes:
                        cfg.optim.max_minutes = max_minutes
                    if precision:
                        cfg.optim.precision = precision
                    return cfg, True
        config = "finetune.yaml" if init else "published.yaml"
    overrides = {"model.init": init, "out": out, "optim.epochs": epochs, "optim.max_minutes": max_minutes,
                 "seed": seed, "optim.precision": precision}
    if device and device != "auto":
        overrides["device"] = device
    if images or masks:
        if not (images and masks):
            raise TrainingDataError("give both --images DIR and --masks DIR")
        overrides.update({"data.source": "folder", "data.images": images, "data.masks": masks})
    if synth_dir:
        overrides.update({"data.source": "synth_dir", "data.synth_dir": synth_dir})
    if input_kind:
        overrides["data.input_kind"] = input_kind
    return load_config(config, overrides), resume


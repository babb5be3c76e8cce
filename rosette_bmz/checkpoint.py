"""One checkpoint loader for export, prediction and training.

Accepts what people actually save: a bare ``state_dict``; a dict holding one under
``state_dict`` or ``model_state_dict`` (optionally with other entries such as the
optimizer); keys prefixed ``module.`` by ``nn.DataParallel``/DDP. Files are read with
``torch.load(weights_only=True)``, so a pickle payload in an untrusted file is
refused rather than executed. The architecture is inferred from the weights
(``enc1.0.weight`` has shape ``(base, in_channels, 3, 3)``, ``final.0.weight``
``(out_channels, base, 1, 1)``), and a JSON sidecar ``<checkpoint>.json`` written by
the trainer, when present, is returned alongside.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError
from .files import atomic_path
from .model import AttentionUNet

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "LoadedModel", "calibration_threshold_of", "load_checkpoint",
           "load_state_dict", "infer_kwargs", "check_finite",
           "build_model", "save_checkpoint", "sidecar_path"]


@dataclass
class LoadedModel:
    """A model in eval mode with the kwargs that rebuild it and the checkpoint's metadata."""

    model: AttentionUNet
    kwargs: dict
    path: Path | None = None
    metadata: dict = field(default_factory=dict)


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.json``: the trainer's description of a checkpoint."""
    return Path(checkpoint).with_suffix(".json")


def calibration_threshold_of(metadata: Any) -> float | None:
    """The threshold ``rosette-bmz calibrate`` baked into a model's final bias, or None.

    ``metadata``: a checkpoint sidecar or the rdf's ``config.rosette_bmz`` section, both of the
    form ``{"calibration": {"threshold": t}}``; a value outside (0, 1) counts as absent.
    """
    cal = metadata.get("calibration") if isinstance(metadata, Mapping) else None
    t = cal.get("threshold") if isinstance(cal, Mapping) else None
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 else None


def _unwrap(obj: Any, source: str) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: not a state dict (got {type(obj).__name__}); expected a "
                              "dict of tensors or a dict holding one under 'state_dict'/'model_state_dict'")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def load_state_dict(path: str | os.PathLike) -> "OrderedDict[str, torch.Tensor]":
    """Read a state dict from ``path`` safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads, truncated files, not a torch file at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as weights only ({first}). Files that need arbitrary "
            "code to unpickle are refused; save the model with torch.save(model.state_dict(), path)"
        ) from None
    return _unwrap(obj, f"checkpoint {path}")


def infer_kwargs(state: Mapping[str, torch.Tensor], source: str = "state dict") -> dict:
    """Architecture kwargs (JSON-safe) read off the weights' shapes."""
    try:
        w_in, w_out = state["enc1.0.weight"], state["final.0.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing {exc.args[0]!r}; this is not an Attention U-Net "
                              f"rosette checkpoint (first keys: {list(state)[:4]})") from None
    if w_in.dim() != 4 or w_out.dim() != 4:
        raise CheckpointError(f"{source}: enc1.0.weight/final.0.weight must be conv kernels, got shapes "
                              f"{tuple(w_in.shape)} and {tuple(w_out.shape)}")
    return {"in_channels": int(w_in.shape[1]), "out_channels": int(w_out.shape[0]),
            "base_channels": int(w_in.shape[0])}


def check_finite(state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Refuse weights holding NaN or infinite values, naming the first such tensor."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        n = int((~torch.isfinite(state[bad[0]])).sum())
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise CheckpointError(f"{source}: weights contain NaN or infinite values: {bad[0]} has {n} of "
                              f"{state[bad[0]].numel()}{more}; the checkpoint is broken (a diverged training run?)")


def build_model(state: Mapping[str, torch.Tensor], source: str = "state dict") -> AttentionUNet:
    """An ``AttentionUNet`` sized from ``state`` with the weights loaded strictly, in eval mode."""
    kwargs = infer_kwargs(state, source)
    check_finite(state, source)
    try:
        model = AttentionUNet(**kwargs)
    except ValueError as exc:  # e.g. an odd width: enc1.0.weight does not come from this architecture
        raise CheckpointError(f"{source}: cannot build the Attention U-Net from these weights ({exc}; "
                              f"enc1.0.weight has shape {tuple(state['enc1.0.weight'].shape)})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        def _few(items: list) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = [f"{len(missing)} missing key(s): {_few(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected key(s): {_few(unexpected)}" if unexpected else "",
                 f"{len(mismatched)} shape mismatch(es): {_few(mismatched)}" if mismatched else ""]
        raise CheckpointError(f"{source} does not fit AttentionUNet({kwargs}): "
                              + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model.eval()


#: Convolutions that read a concatenation ``[upsampled (C), attention-gated skip (C)]``.
_CONCAT_INPUTS = frozenset(f"dec{i}.0.weight" for i in (1, 2, 3, 4))


def widen_model(model: AttentionUNet, base_channels: int) -> AttentionUNet:
    """``model`` widened to ``base_channels``, computing exactly the same function.

    Every old channel keeps its weights; each new channel starts from the architecture's random
    initialisation (the caller seeds torch) for its incoming weights, and its outgoing weights into
    the old channels are zero, so the new channels are silent until training moves those weights
    (their gradients are not zero). Lets a wider model start from narrower trained weights
    instead of from scratch. Returns the new model in eval mode.
    """
    old_b = model.base_channels
    if (isinstance(base_channels, bool) or not isinstance(base_channels, int) or base_channels < old_b
            or base_channels % 2):
        raise CheckpointError(f"cannot widen a base-{old_b} model to {base_channels!r}: give an even width "
                              f">= {old_b}")
    wide = AttentionUNet(model.in_channels, model.out_channels, base_channels)
    if base_channels == old_b:
        wide.load_state_dict(model.state_dict())
        return wide.eval()
    old_state = model.state_dict()
    state = {}
    for key, new in wide.state_dict().items():
        old = old_state[key]
        if new.shape == old.shape:
            state[key] = old.clone()
            continue
        w = new.clone()
        if w.dim() == 1:
            w[: old.shape[0]] = old
            state[key] = w
            continue
        swap = key.startswith("upconv")   # ConvTranspose2d kernels are (in, out, kh, kw)
        w, old = (w.transpose(0, 1), old.transpose(0, 1)) if swap else (w, old)
        n_out, n_in = old.shape[0], old.shape[1]
        if key in _CONCAT_INPUTS:      # the two halves of the concatenation move apart
            h_old, h_new = n_in // 2, w.shape[1] // 2
            cols = torch.tensor([*range(h_old), *range(h_new, h_new + h_old)])
        else:
            cols = torch.arange(n_in)
        w[:n_out] = 0                  # old channels: nothing from the new inputs ...
        w[:n_out, cols] = old          # ... and their old weights from the old ones
        state[key] = (w.transpose(0, 1) if swap else w).contiguous()
    wide.load_state_dict(state)
    return wide.eval()


def load_checkpoint(path: str | os.PathLike) -> LoadedModel:
    """Load a checkpoint file into an eval-mode ``AttentionUNet`` (width inferred)."""
    path = Path(path)
    state = load_state_dict(path)
    model = build_model(state, f"checkpoint {path}")
    meta: dict = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable sidecar %s: %s", side, exc)
    kwargs = infer_kwargs(state)
    log.info("loaded %s: AttentionUNet(%s), %d parameters", path, kwargs,
             sum(p.numel() for p in model.parameters()))
    return LoadedModel(model=model, kwargs=kwargs, path=path, metadata=meta)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model``'s state dict (and ``metadata`` as the JSON sidecar) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in model.state_dict().items())
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    if metadata is not None:
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
    return path

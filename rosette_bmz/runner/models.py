"""Where the weights come from: an rdf.yaml package, a checkpoint, or a module.

* an ``rdf.yaml`` (or a folder holding one): the package's weight entries
  (``weights.onnx.source``, ``weights.torchscript.source``,
  ``weights.pytorch_state_dict.source``) are read relative to the rdf with plain YAML,
  so the onnx path never imports torch or bioimageio;
* a checkpoint (``.pt``/``.pth``): loaded with the one checkpoint loader; for
  ``torchscript`` / ``onnx`` it is converted on the fly into a temporary folder by the
  converters (:func:`weights_file`, :mod:`rosette_bmz.convert`), which check agreement
  with eager PyTorch; for ``bioimageio`` it is exported as a package (:func:`package_for`);
* an ``nn.Module`` (``torch``; converted like a checkpoint for the other formats).

The weight-format adapters (:mod:`rosette_bmz.runner.backends`) only load what this
module hands them. Errors a user can fix raise :class:`~rosette_bmz.errors.ModelError`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import DEFAULT_HALO
from ..errors import ModelError
from ..files import sha256_of

log = logging.getLogger(__name__)

__all__ = ["ModelSource", "resolve_model", "load_torch_module", "weights_file", "package_for", "default_threads",
           "CHECKPOINT_SUFFIXES", "verify_sha256"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def default_threads() -> int:
    """Cores this process may run on (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- model sources
@dataclass
class ModelSource:
    """Where the weights are: an rdf.yaml package, a checkpoint file, or a module."""

    kind: str                                  # "rdf" | "checkpoint" | "module"
    path: Path | None = None                   # rdf.yaml or checkpoint
    module: Any = None                         # torch nn.Module for kind == "module"
    rdf: dict = field(default_factory=dict)    # parsed rdf.yaml
    halo: int = DEFAULT_HALO
    in_channels: int = 2
    pad_mode: str | None = None                # border padding the rdf declares (bioimageio.core's)
    width: int | None = None                   # base_channels of the AttentionUNet, when known

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else type(self.module).__name__

    def weight_path(self, fmt: str) -> Path:
        """Path of the package's ``fmt`` weights (``onnx``, ``torchscript``, ``pytorch_state_dict``)."""
        entry = (self.rdf.get("weights") or {}).get(fmt)
        if not entry or not entry.get("source"):
            have = ", ".join(sorted((self.rdf.get("weights") or {}))) or "none"
            raise ModelError(f"{self.path}: the package has no {fmt} weights (it has: {have})")
        src = str(entry["source"])
        if "://" in src:
            raise ModelError(f"{self.path}: {fmt} weights are a URL ({src}); download the package first")
        path = (self.path.parent / src).resolve()
        if not path.is_file():
            raise ModelError(f"{self.path}: {fmt} weights file {path} is missing")
        verify_sha256(path, entry.get("sha256"), f"{self.path}: {fmt} weights")
        return path


def verify_sha256(path: Path, expected: Any, what: str) -> None:
    """Refuse ``path`` when the rdf declares a SHA-256 it does not have (corrupted or replaced file).

    Hashed once per file and process (cached by size and modification time): 0.07 s for a
    120 MB file (the published weights' size) on this 2-core CPU.
    """
    if not expected:
        return
    actual = sha256_of(path)
    if actual != str(expected).lower():
        raise ModelError(f"{what} {path.name}: SHA-256 {actual[:16]}... does not match the rdf's "
                         f"{str(expected)[:16]}...; the file is corrupted or was replaced: download or export "
                         "the package again")


def _rdf_halo_and_channels(rdf: dict, path: Path) -> tuple[int, int, str | None]:
    halo, channels, pad = DEFAULT_HALO, 2, None   # None: not declared (bioimageio.core then pads symmetric)
    try:
        outputs = rdf.get("outputs") or []
        halos = [int(ax.get("halo", 0)) for out in outputs for ax in (out.get("axes") or [])
                 if isinstance(ax, dict) and ax.get("halo")]
        if halos:
            halo = max(halos)
        inputs = rdf.get("inputs") or []
        for ax in (inputs[0].get("axes") or []) if inputs else []:
            if isinstance(ax, dict) and ax.get("type") == "channel":
                channels = len(ax.get("channel_names") or []) or channels
        declared = inputs[0].get("pad") if inputs else None
        if isinstance(declared, dict) and declared.get("mode"):
            pad = str(declared["mode"])
            if pad == "constant" and float(declared.get("value", 0)) != 0:
                raise ModelError(f"{path}: constant padding with value {declared['value']} is not supported")
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: cannot read inputs/outputs of the rdf ({exc})") from None
    return halo, channels, pad


def resolve_model(model: Any) -> ModelSource:
    """Classify ``model`` (rdf.yaml / package folder / checkpoint / nn.Module)."""
    if not isinstance(model, (str, os.PathLike)):
        if hasattr(model, "state_dict") and callable(model):
            return ModelSource("module", module=model)
        raise ModelError(f"model must be an rdf.yaml, a checkpoint path or a torch module, got {type(model).__name__}")
    path = Path(model)
    if path.is_dir():
        cands = sorted(path.glob("rdf.yaml")) + sorted(path.glob("*.bioimageio.yaml"))
        if not cands:
            raise ModelError(f"{path}: folder holds no rdf.yaml")
        path = cands[0]
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            rdf = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelError(f"{path}: cannot read the rdf ({type(exc).__name__}: {exc})") from None
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            kind = rdf.get("type") if isinstance(rdf, dict) else None
            raise ModelError(f"{path}: not a bioimage.io model rdf (type: {kind})")
        halo, channels, pad = _rdf_halo_and_channels(rdf, path)
        try:
            width = int(rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["base_channels"])
        except (KeyError, TypeError, ValueError):
            width = None
        return ModelSource("rdf", path=path.resolve(), rdf=rdf, halo=halo, in_channels=channels, pad_mode=pad,
                           width=width)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return ModelSource("checkpoint", path=path)
    raise ModelError(f"{path}: unknown model file type {path.suffix or '(none)'}; give an rdf.yaml or a "
                     f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")


def load_torch_module(src: ModelSource):
    """An eval-mode AttentionUNet for ``src`` (imports torch)."""
    from ..checkpoint import load_checkpoint

    if src.kind == "module":
        module = src.module.eval()
    elif src.kind == "checkpoint":
        module = load_checkpoint(src.path).model
    else:
        module = load_checkpoint(src.weight_path("pytorch_state_dict")).model
    src.width = int(getattr(module, "base_channels", 0)) or src.width
    src.in_channels = int(getattr(module, "in_channels", 0)) or src.in_channels
    return module


def weights_file(src: ModelSource, fmt: str, workdir: Path) -> Path:
    """The ``fmt`` weights (``onnx`` / ``torchscript``) of ``src``: the package's own file, or a
    checkpoint / module converted into ``workdir`` by :mod:`rosette_bmz.convert` (checked
    against eager PyTorch first)."""
    if src.kind == "rdf":
        return src.weight_path(fmt)
    import torch

    from ..convert import check_agreement, to_onnx, to_torchscript

    module = load_torch_module(src)
    example = torch.zeros((1, src.in_channels, 64, 64), dtype=torch.float32)
    rng = np.random.default_rng(0)
    probe = (rng.random((1, src.in_channels, 64, 64)) < 0.2).astype(np.float32)
    if fmt == "onnx":
        path = to_onnx(module, workdir / "weights.onnx", example)
        check_agreement(module, probe, onnx=path)
    else:
        path = to_torchscript(module, workdir / "weights.torchscript.pt", example)
        check_agreement(module, probe, torchscript=path)
    log.info("converted %s to %s in %s", src.name, fmt, path)
    return path




def package_for(src: ModelSource, workdir: Path) -> ModelSource:
    """``src`` as a BioImage Model Zoo package: itself if it is one, else a checkpoint exported
    into ``workdir`` (the exporter's checks, without bioimageio.core's test_model)."""
    if src.kind == "rdf":
        return src
    if src.kind != "checkpoint":
        raise ModelError("the bioimageio backend needs an rdf.yaml (or a checkpoint to export)")
    from ..export import export_package

    return resolve_model(export_package(src.path, workdir / "package", run_test=False))

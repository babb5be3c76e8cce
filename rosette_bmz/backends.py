"""One small adapter per weight format: ``torch``, ``torchscript``, ``onnx``, ``bioimageio``.

Every tile backend has one job: ``run(batch)`` maps a C-contiguous float32 batch
``(N, 2, h, w)`` (``h``, ``w`` multiples of 16) to float32 probabilities ``(N, h, w)``.
Tiling, padding and stitching live in :mod:`rosette_bmz.predict`; the ``bioimageio``
backend is the exception: it hands the whole image to bioimageio.core, which does its own
blocking (``predict_image``).

Where the weights come from (:func:`resolve_model`):

* an ``rdf.yaml`` (or a folder holding one): the package's weight entries
  (``weights.onnx.source``, ``weights.torchscript.source``,
  ``weights.pytorch_state_dict.source``) are read relative to the rdf with plain YAML,
  so the onnx path never imports torch or bioimageio;
* a checkpoint (``.pt``/``.pth``): ``torch`` loads it with the shared loader; for
  ``torchscript`` / ``onnx`` it is converted on the fly into a temporary folder with the
  shared converters (:mod:`rosette_bmz.convert`), which check agreement with eager PyTorch;
* an ``nn.Module`` (``torch``; converted like a checkpoint for the other formats).

Errors a user can fix (missing file, no weights of the requested format, wrong package)
raise :class:`ModelError`, a :class:`~rosette_bmz.checkpoint.CheckpointError`, so the CLI
prints them as one line.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "DEFAULT_HALO", "ModelError", "ModelSource", "TileBackend", "TorchBackend",
           "TorchScriptBackend", "OnnxBackend", "BioimageioBackend", "resolve_model", "default_threads"]

BACKENDS: tuple[str, ...] = ("onnx", "torch", "torchscript", "bioimageio")

#: Output halo the package declares (pixels cropped from each side of a tile) and the context
#: the runner crops: 112 px covers the network's ~100 px receptive field, so tiles agree with a
#: whole-image pass (64 px left seams up to 1.7e-1 in bioimageio.core's blocking; docs/tiling.md).
DEFAULT_HALO = 112

#: Height and width of a tile must be multiples of this (four 2x poolings).
DIVISOR = 16

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class ModelError(ValueError):
    """The model given to the runner cannot be used (missing file, no such weights, ...).

    Not a CheckpointError subclass on purpose: checkpoint.py imports torch, and the onnx
    path must not; the CLI lists ModelError among its user errors by name.
    """


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
            raise ModelError(f"{self.path}: {fmt} weights are remote ({src}); download the package first")
        path = (self.path.parent / src).resolve()
        if not path.is_file():
            raise ModelError(f"{self.path}: {fmt} weights file {path} is missing")
        return path


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
    if path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        return ModelSource("checkpoint", path=path)
    raise ModelError(f"{path}: unknown model file type {path.suffix or '(none)'}; give an rdf.yaml or a "
                     f"checkpoint ({', '.join(_CHECKPOINT_SUFFIXES)})")


def _load_torch_module(src: ModelSource):
    """An eval-mode AttentionUNet for ``src`` (imports torch)."""
    from .checkpoint import load_checkpoint

    if src.kind == "module":
        module = src.module.eval()
    elif src.kind == "checkpoint":
        module = load_checkpoint(src.path).model
    else:
        module = load_checkpoint(src.weight_path("pytorch_state_dict")).model
    src.width = int(getattr(module, "base_channels", 0)) or src.width
    return module


def _converted(src: ModelSource, fmt: str, tmpdir: Path) -> Path:
    """Convert a checkpoint/module to ``fmt`` into ``tmpdir`` (checked against eager PyTorch)."""
    import torch

    from .convert import check_agreement, to_onnx, to_torchscript

    module = _load_torch_module(src)
    example = torch.zeros((1, src.in_channels, 64, 64), dtype=torch.float32)
    rng = np.random.default_rng(0)
    probe = (rng.random((1, src.in_channels, 64, 64)) < 0.2).astype(np.float32)
    if fmt == "onnx":
        path = to_onnx(module, tmpdir / "weights.onnx", example)
        check_agreement(module, probe, onnx=path)
    else:
        path = to_torchscript(module, tmpdir / "weights.torchscript.pt", example)
        check_agreement(module, probe, torchscript=path)
    log.info("converted %s to %s in %s", src.name, fmt, path)
    return path


# ----------------------------------------------------------------------------- tile backends
class TileBackend:
    """Runs the network on a batch of tiles: (N, C, h, w) float32 -> (N, h, w) float32."""

    name = "base"
    #: True for backends that do their own blocking on the whole image.
    whole_image = False

    def __init__(self, src: ModelSource, threads: int | None = None):
        self.source = src
        self.threads = threads or default_threads()
        self.halo = src.halo
        self.in_channels = src.in_channels
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _tmpdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="rosette-bmz-")
        return Path(self._tmp.name)

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source.name}, threads={self.threads})"


class TorchBackend(TileBackend):
    """Eager PyTorch (checkpoint, nn.Module, or the package's pytorch_state_dict)."""

    name = "torch"

    def __init__(self, src: ModelSource, threads: int | None = None):
        super().__init__(src, threads)
        import torch

        torch.set_num_threads(self.threads)
        self._torch = torch
        self.module = self._load(src)

    def _load(self, src: ModelSource):
        return _load_torch_module(src)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(batch))
        return out[:, 0].numpy()


class TorchScriptBackend(TorchBackend):
    """TorchScript weights (from the package, or traced from a checkpoint on the fly)."""

    name = "torchscript"

    def _load(self, src: ModelSource):
        path = (src.weight_path("torchscript") if src.kind == "rdf"
                else _converted(src, "torchscript", self._tmpdir()))
        return self._torch.jit.load(str(path), map_location="cpu").eval()


class OnnxBackend(TileBackend):
    """onnxruntime on the CPU: one session, intra-op threads = cores, full graph optimisation.

    From an rdf.yaml this imports neither torch nor bioimageio.
    """

    name = "onnx"

    def __init__(self, src: ModelSource, threads: int | None = None, session_options: dict | None = None):
        super().__init__(src, threads)
        import onnxruntime as ort

        path = src.weight_path("onnx") if src.kind == "rdf" else _converted(src, "onnx", self._tmpdir())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory pattern: onnxruntime would plan one more block per input shape on top of its
        # arena, which took 4.7 instead of 2.8 GB for a 1136 px tile at base 64 and 3.3 instead of
        # 2.1 GB for a 2048 px tile at base 16, at the same or lower speed (measured 2026-11-24).
        # The arena stays: without it base 16 ran 1.3-1.5x slower.
        opts.enable_mem_pattern = False
        for key, value in (session_options or {}).items():
            if hasattr(opts, key):
                setattr(opts, key, value)
            else:
                opts.add_session_config_entry(key, str(value))
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: batch})[0][:, 0]


class BioimageioBackend(TileBackend):
    """bioimageio.core's own prediction pipeline on the rdf.yaml, with its own blocking.

    ``predict_image`` gives the whole image (padded to a multiple of 16) to
    ``bioimageio.core.predict(..., blocksize_parameter=n)``; the block size is the rdf's
    parameterized size ``min + n * step`` and the halo the one the rdf declares.
    """

    name = "bioimageio"
    whole_image = True

    def __init__(self, src: ModelSource, threads: int | None = None, weight_format: str | None = None,
                 blocksize_parameter: int | None = None):
        super().__init__(src, threads)
        if src.kind != "rdf":
            if src.kind == "checkpoint":
                src = self._export(src)
            else:
                raise ModelError("the bioimageio backend needs an rdf.yaml (or a checkpoint to export)")
            self.source = src
        from bioimageio.core import create_prediction_pipeline
        from bioimageio.spec import load_model_description

        try:
            descr = load_model_description(str(src.path), perform_io_checks=False)
        except Exception as exc:
            raise ModelError(f"{src.path}: bioimageio.spec cannot load it ({type(exc).__name__}: {exc})") from None
        if weight_format is None:
            weight_format = "onnx" if getattr(descr.weights, "onnx", None) is not None else None
        self.descr = descr
        self.weight_format = weight_format
        self.blocksize_parameter = blocksize_parameter
        self.pipeline = create_prediction_pipeline(descr, weights_format=weight_format)
        self._input_id = str(descr.inputs[0].id)
        self._output_id = str(descr.outputs[0].id)
        self._input_axes = [str(a.id) for a in descr.inputs[0].axes]
        self._mins = {str(a.id): int(a.size.min) for a in descr.inputs[0].axes
                      if hasattr(getattr(a, "size", None), "step")}
        self._steps = {str(a.id): int(a.size.step) for a in descr.inputs[0].axes
                       if hasattr(getattr(a, "size", None), "step")}

    def _export(self, src: ModelSource) -> ModelSource:
        try:
            from .export import export_package
        except ImportError as exc:  # pragma: no cover - until the exporter lands
            raise ModelError(f"{src.path}: the bioimageio backend needs an rdf.yaml ({exc})") from None
        rdf = export_package(src.path, self._tmpdir() / "package", run_test=False)
        return resolve_model(rdf)

    def _block_size(self) -> dict[str, int]:
        """Input block side per spatial axis: the rdf's ``min + n * step`` (n: blocksize_parameter)."""
        n = 10 if self.blocksize_parameter is None else self.blocksize_parameter   # bioimageio.core's default
        sizes = {}
        for ax in self.descr.inputs[0].axes:
            size = getattr(ax, "size", None)
            if hasattr(size, "min") and hasattr(size, "step"):
                sizes[str(ax.id)] = int(size.min) + n * int(size.step)
        return sizes

    def predict_image(self, x: np.ndarray, pad: str | None = None) -> np.ndarray:
        """(C, H, W) float32 of any size -> (H, W) float32, blocked by bioimageio.core.

        bioimageio.core pads the image border by the declared halo, with ``pad`` (numpy
        mode name; default the rdf's declaration, else bioimageio.core's ``symmetric``), and
        needs the image to be at least one block: the image is first padded (same mode) at
        the bottom/right to at least one block and to a multiple of 16, and cropped back.
        """
        from bioimageio.core import Tensor
        from bioimageio.core.digest_spec import create_sample_for_model
        from bioimageio.spec.model.v0_5 import ConstantPadding

        mode = pad or self.source.pad_mode or "symmetric"
        # a string "constant" would make xarray pad with NaN: zeros need the descr object
        self.pipeline.pad_mode = {k: (ConstantPadding(value=0) if mode == "constant" else mode)
                                  for k in self.pipeline.pad_mode}
        C, H, W = x.shape
        block = self._block_size()
        by, bx = block.get("y", H), block.get("x", W)
        # bioimageio.core places the last block flush with the image end; the network is not
        # shift-invariant (4 max-poolings), so a block off the 16 px grid predicts differently
        # (up to 0.45 on a 700 px image with the demo weights). Padding the image to a multiple
        # of 16 keeps every block on the grid.
        ty, tx = max(by, -(-H // DIVISOR) * DIVISOR), max(bx, -(-W // DIVISOR) * DIVISOR)
        if (ty, tx) != (H, W):
            x = np.pad(x, ((0, 0), (0, ty - H), (0, tx - W)), mode=mode)
        arr = x[None] if self._input_axes[0] == "batch" else x
        tensor = Tensor.from_numpy(np.ascontiguousarray(arr, dtype=np.float32), dims=tuple(self._input_axes))
        ns = {(self._input_id, a): int((size - self._mins[a]) // self._steps[a]) for a, size in block.items()}
        # not bioimageio.core.predict(model=pipeline): it unloads the pipeline when done, and an
        # unloaded pipeline cannot be reused; this is the call it makes, with the same pipeline kept.
        sample = create_sample_for_model(self.descr, inputs={self._input_id: tensor}, sample_id="image")
        sample = self.pipeline.predict_sample_with_blocking(sample, ns=ns)
        out = np.asarray(sample.members[self._output_id].data, dtype=np.float32)
        return out.reshape(out.shape[-2:])[:H, :W]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.predict_image(t) for t in batch])

    def close(self) -> None:
        self.pipeline = None  # bioimageio.core's unload() blocks when nothing was loaded twice; drop it
        super().close()

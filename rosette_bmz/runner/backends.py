"""One small adapter per weight format: ``torch``, ``torchscript``, ``onnx``, ``openvino``, ``bioimageio``.

Every tile backend has one job: ``run(batch)`` maps a C-contiguous float32 batch
``(N, 2, h, w)`` (``h``, ``w`` multiples of 16) to float32 probabilities ``(N, h, w)``.
Tiling, padding and stitching live in :mod:`rosette_bmz.runner.engine`; the ``bioimageio``
backend is the exception: it hands the whole image to bioimageio.core, which does its own
blocking (``predict_image``). Which file a backend loads comes from
:mod:`rosette_bmz.runner.models` (the package's weights, or a checkpoint converted there).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .models import ModelSource, default_threads, load_torch_module, package_for, weights_file
from .tiling import pad_like_runner

log = logging.getLogger(__name__)

__all__ = ["TileBackend", "TorchBackend", "TorchScriptBackend", "OnnxBackend", "OpenVinoBackend", "BioimageioBackend",
           "make_backend"]


class TileBackend:
    """Runs the network on a batch of tiles: (N, C, h, w) float32 -> (N, h, w) float32."""

    name = "base"
    #: True for backends that do their own blocking on the whole image.
    whole_image = False

    def __init__(self, src: ModelSource, threads: int | None = None):
        self.source = src
        self.threads = threads or default_threads()
        self.halo = src.halo
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def in_channels(self) -> int:
        """Input channels of the loaded weights (a checkpoint's are known once it is loaded)."""
        return self.source.in_channels

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
        return load_torch_module(src)

    def run(self, batch: np.ndarray) -> np.ndarray:
        device = next(iter(self.module.parameters()), self._torch.zeros(0)).device
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(batch).to(device))
        return out[:, 0].float().cpu().numpy()


class TorchScriptBackend(TorchBackend):
    """TorchScript weights (from the package, or traced from a checkpoint on the fly)."""

    name = "torchscript"

    def _load(self, src: ModelSource):
        path = weights_file(src, "torchscript", self._tmpdir())
        return self._torch.jit.load(str(path), map_location="cpu").eval()


class OnnxBackend(TileBackend):
    """onnxruntime on the CPU: one session, intra-op threads = cores, full graph optimisation.

    From an rdf.yaml this imports neither torch nor bioimageio.
    """

    name = "onnx"

    def __init__(self, src: ModelSource, threads: int | None = None, session_options: dict | None = None):
        super().__init__(src, threads)
        import onnxruntime as ort

        path = weights_file(src, "onnx", self._tmpdir())
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


class OpenVinoBackend(TileBackend):
    """OpenVINO's CPU plugin on the package's ONNX weights (optional extra ``openvino``).

    The same ONNX file as ``onnx``, compiled by OpenVINO (oneDNN's JIT kernels) once per tile
    shape; faster than onnxruntime on AVX2 CPUs (benchmarks/results/openvino.md). fp32 is
    forced (``INFERENCE_PRECISION_HINT``): on CPUs with bf16 units OpenVINO would otherwise
    compute in bfloat16. From an rdf.yaml this imports neither torch nor bioimageio.
    """

    name = "openvino"

    def __init__(self, src: ModelSource, threads: int | None = None):
        super().__init__(src, threads)
        try:
            import openvino as ov
        except ImportError:
            raise ModelError("the openvino backend needs OpenVINO: pip install 'rosette-bmz[openvino]' "
                             "(or use --backend onnx)") from None
        path = weights_file(src, "onnx", self._tmpdir())
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own exception types
            raise ModelError(f"{path}: OpenVINO cannot load it ({type(exc).__name__}: {exc})") from None
        self._input = self._model.inputs[0].get_any_name()
        self._config = {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": "f32",
                        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self._compiled: dict[tuple[int, ...], object] = {}

    def _for_shape(self, shape: tuple[int, ...]):
        """The model compiled for this batch shape (static shapes: oneDNN picks kernels per shape)."""
        if shape not in self._compiled:
            model = self._model.clone()
            model.reshape({self._input: list(shape)})
            try:
                self._compiled[shape] = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            except Exception as exc:
                raise ModelError(f"OpenVINO cannot compile the model for input {shape} "
                                 f"({type(exc).__name__}: {exc})") from None
        return self._compiled[shape]

    def run(self, batch: np.ndarray) -> np.ndarray:
        request = self._for_shape(tuple(int(v) for v in batch.shape))
        out = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(out[0][:, 0], dtype=np.float32)

    def close(self) -> None:
        self._compiled.clear()
        super().close()


class BioimageioBackend(TileBackend):
    """bioimageio.core's own prediction pipeline on the rdf.yaml, with its own blocking.

    ``predict_image`` gives the whole image (padded as the runner pads it) to
    ``bioimageio.core.predict(..., blocksize_parameter=n)``; the block size is the rdf's
    parameterized size ``min + n * step`` and the halo the one the rdf declares.
    """

    name = "bioimageio"
    whole_image = True

    def __init__(self, src: ModelSource, threads: int | None = None, weight_format: str | None = None,
                 blocksize_parameter: int | None = None):
        super().__init__(src, threads)
        src = self.source = package_for(src, self._tmpdir())
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

    def _block_size(self) -> dict[str, int]:
        """Input block side per spatial axis: the rdf's ``min + n * step`` (n: blocksize_parameter)."""
        n = 10 if self.blocksize_parameter is None else self.blocksize_parameter   # bioimageio.core's default
        sizes = {}
        for ax in self.descr.inputs[0].axes:
            size = getattr(ax, "size", None)
            if hasattr(size, "min") and hasattr(size, "step"):
                sizes[str(ax.id)] = int(size.min) + n * int(size.step)
        return sizes

    def predict_image(self, x: np.ndarray, pad: str | None = None, border: int | None = None) -> np.ndarray:
        """(C, H, W) float32 of any size -> (H, W) float32, blocked by bioimageio.core.

        The image is padded exactly as the runner's halo mode pads it (:func:`pad_like_runner`:
        ``border`` px of ``pad`` on every side, then up to the 16 px grid and to at least one
        block, all mirrored about the *real* image edge), handed to bioimageio.core, and the
        result cropped back. ``pad``: numpy mode name; default the rdf's declaration, else
        bioimageio.core's ``symmetric``. ``border``: default as the runner's
        (``Predictor.border_for``): 0 for ``constant``, the halo for mirroring.

        bioimageio.core then pads this image once more by the declared halo (same mode), but
        that padding lies ``border`` px outside the real image, beyond the network's ~100 px
        receptive field when ``border`` >= the halo, so the four backends agree (~1e-5). (Padding
        only up to the grid let bioimageio.core mirror the fill a second time: up to 0.99 at the
        last column of a 700 x 900 image.) With ``border`` < the halo (the default ``constant``
        padding has 0) the runner's tiles end at the image, on the network's own zero padding,
        while bioimageio.core still adds its halo: the two differ near the border.
        """
        from bioimageio.core import Tensor
        from bioimageio.core.digest_spec import create_sample_for_model
        from bioimageio.spec.model.v0_5 import ConstantPadding

        mode = pad or self.source.pad_mode or "symmetric"
        if border is None:
            border = 0 if mode == "constant" else self.halo
        # a string "constant" would make xarray pad with NaN: zeros need the descr object
        self.pipeline.pad_mode = {k: (ConstantPadding(value=0) if mode == "constant" else mode)
                                  for k in self.pipeline.pad_mode}
        _, H, W = x.shape
        block = self._block_size()
        # bioimageio.core places the last block flush with the image end; the network is not
        # shift-invariant (4 max-poolings), so a block off the 16 px grid predicts differently
        # (up to 0.45 on a 700 px image with the demo weights). A padded image of a multiple of
        # 16 keeps every block on the runner's grid (which starts at the padded image's origin).
        x = pad_like_runner(x, mode, border, (block.get("y", 0), block.get("x", 0)))
        arr = x[None] if self._input_axes[0] == "batch" else x
        tensor = Tensor.from_numpy(np.ascontiguousarray(arr, dtype=np.float32), dims=tuple(self._input_axes))
        ns = {(self._input_id, a): int((size - self._mins[a]) // self._steps[a]) for a, size in block.items()}
        # not bioimageio.core.predict(model=pipeline): it unloads the pipeline when done, and an
        # unloaded pipeline cannot be reused; this is the call it makes, with the same pipeline kept.
        sample = create_sample_for_model(self.descr, inputs={self._input_id: tensor}, sample_id="image")
        sample = self.pipeline.predict_sample_with_blocking(sample, ns=ns)
        out = np.asarray(sample.members[self._output_id].data, dtype=np.float32)
        return out.reshape(out.shape[-2:])[border:border + H, border:border + W]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.predict_image(t) for t in batch])

    def close(self) -> None:
        self.pipeline = None  # bioimageio.core's unload() blocks when nothing was loaded twice; drop it
        super().close()


def make_backend(src: ModelSource, backend: str, threads: int | None = None, *, session_options: dict | None = None,
                 weight_format: str | None = None, blocksize_parameter: int | None = None) -> TileBackend:
    """The ``backend`` adapter (one of :data:`~rosette_bmz.constants.BACKENDS`) for ``src``."""
    if backend == "torch":
        return TorchBackend(src, threads)
    if backend == "torchscript":
        return TorchScriptBackend(src, threads)
    if backend == "onnx":
        return OnnxBackend(src, threads, session_options)
    if backend == "openvino":
        return OpenVinoBackend(src, threads)
    if backend == "bioimageio":
        return BioimageioBackend(src, threads, weight_format=weight_format, blocksize_parameter=blocksize_parameter)
    from ..constants import BACKENDS

    raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

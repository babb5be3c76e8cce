"""Weight-format converters shared by the exporter and the runner.

Each converter writes one file atomically (temporary name, then rename) and returns its
path. ``check_agreement`` runs eager PyTorch, TorchScript and ONNX on the same input and
raises :class:`ConversionError` if any differs by more than the tolerance, so nothing that
disagrees with eager PyTorch is ever written into a package.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "ConversionError", "to_torchscript", "to_onnx", "run_torchscript", "run_onnx",
           "run_eager", "check_agreement"]

#: deepImageJ reads ONNX opset <= 17 and no external data files.
ONNX_OPSET = 17


class ConversionError(RuntimeError):
    """A converted model disagrees with eager PyTorch (or could not be converted)."""


def _tmp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def to_torchscript(model: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """Trace ``model`` (eval mode) on ``example`` and save it as TorchScript."""
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
        traced.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_onnx(model: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor,
            opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` to a single-file ONNX graph with dynamic batch, y and x."""
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model.eval(), (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch", 2: "y", 3: "x"}, "output": {0: "batch", 2: "y", 3: "x"}},
                do_constant_folding=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_eager(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def run_torchscript(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def run_onnx(path: str | os.PathLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def check_agreement(model: torch.nn.Module, x: np.ndarray, torchscript: str | os.PathLike | None = None,
                    onnx: str | os.PathLike | None = None, tol: float = 1e-4) -> dict[str, float]:
    """Max abs difference of each converted format from eager PyTorch on ``x``; raises above ``tol``."""
    ref = run_eager(model, x)
    diffs: dict[str, float] = {}
    for name, path, runner in (("torchscript", torchscript, run_torchscript), ("onnx", onnx, run_onnx)):
        if path is None:
            continue
        out = runner(path, x)
        if out.shape != ref.shape:
            raise ConversionError(f"{name} output shape {out.shape} != eager {ref.shape}")
        diffs[name] = float(np.abs(out - ref).max())
        log.info("%s vs eager: max abs diff %.3g", name, diffs[name])
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise ConversionError("converted weights disagree with eager PyTorch: " + ", ".join(
            f"{k} max abs diff {v:.3g} > {tol:g}" for k, v in bad.items()))
    return diffs

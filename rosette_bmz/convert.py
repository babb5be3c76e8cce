"""Weight-format converters shared by the exporter and the runner.

Each converter writes one file atomically (temporary name, then rename) and returns its
path. ``check_agreement`` runs eager PyTorch, TorchScript and ONNX on the same input and
raises :class:`ConversionError` if any differs by more than the tolerance, so nothing that
disagrees with eager PyTorch is ever written into a package.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import ConversionError
from .files import atomic_path

log = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "ConversionError", "to_torchscript", "to_torchscript_reproducible", "to_onnx",
           "run_torchscript", "run_onnx", "run_eager", "check_agreement", "save_state_dict_bytes",
           "strip_torchscript_debug"]

#: deepImageJ reads ONNX opset <= 17 and no external data files.
ONNX_OPSET = 17


def strip_torchscript_debug(data: bytes) -> bytes:
    """Rewrite a TorchScript archive without its ``*.debug_pkl`` records.

    Those records map graph nodes to Python source lines and hold the absolute paths of the
    files that were traced (this checkout, this venv), so two checkouts would write different
    bytes. ``torch.jit.load`` does not need them; the archive is rewritten with torch's own
    zip writer (aligned records, deterministic ``serialization_id``).
    """
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for name in reader.get_all_records():
        if name.endswith(".debug_pkl") or name == ".data/serialization_id":
            continue
        record = reader.get_record(name)
        writer.write_record(name, record, len(record))
    writer.write_end_of_file()
    return out.getvalue()


def save_state_dict_bytes(state) -> bytes:
    """``torch.save`` of a state dict into bytes that depend on the tensors only.

    Saving to a file would name the archive's root folder after the file (a temporary name
    here), so the bytes are produced in memory (root ``archive/``) and written afterwards.
    """
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buf)
    return buf.getvalue()


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), example, check_trace=False, _store_inputs=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return strip_torchscript_debug(buf.getvalue())


def _write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def to_torchscript(model: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """Trace ``model`` (eval mode) on ``example`` and save it as TorchScript.

    The example input is not stored in the file and source-line debug records are dropped
    (:func:`strip_torchscript_debug`). Traced class names get a per-process counter suffix,
    so for byte-identical files across exports use :func:`to_torchscript_reproducible`.
    """
    return _write_file(Path(path), _torchscript_bytes(model, example))


def to_torchscript_reproducible(callable_name: str, kwargs: dict, weights: str | os.PathLike,
                                path: str | os.PathLike, example_shape: tuple[int, ...]) -> Path:
    """Trace ``rosette_bmz.model.<callable_name>(**kwargs)`` with ``weights`` in a fresh interpreter.

    TorchScript numbers the classes it creates per process (``___torch_mangle_N``), so tracing
    a second model in the same process writes different bytes. A fresh interpreter makes the
    file a function of the weights, the architecture and the torch version only.

    The interpreter hands the archive back on its stdout and this process writes the file:
    a child never writes into the package, so an export killed mid-trace leaves no orphan
    that could write into (or re-create) its build folder after it was cleaned up.
    """
    path = Path(path)
    args = {"callable": callable_name, "kwargs": kwargs, "weights": str(Path(weights).resolve()),
            "shape": list(example_shape)}
    env = dict(os.environ, PYTHONHASHSEED="0")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "rosette_bmz.convert", json.dumps(args)],
                          capture_output=True, env=env)
    if proc.returncode != 0 or not proc.stdout.startswith(b"PK"):
        err = (proc.stderr or b"").decode(errors="replace").strip() or f"exit status {proc.returncode}, no archive"
        tail = "\n".join(err.splitlines()[-8:])
        raise ConversionError(f"TorchScript tracing of {callable_name}({kwargs}) failed:\n{tail}")
    return _write_file(path, proc.stdout)


def _torchscript_main(argv: list[str]) -> int:
    """Child of :func:`to_torchscript_reproducible`: the TorchScript archive goes to stdout."""
    from . import model as arch

    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # stray prints cannot corrupt the archive
    args = json.loads(argv[0])
    module = getattr(arch, args["callable"])(**args["kwargs"])
    state = torch.load(args["weights"], map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    with out:
        out.write(_torchscript_bytes(module.eval(), torch.zeros(args["shape"], dtype=torch.float32)))
    return 0


def to_onnx(model: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor,
            opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` to a single-file ONNX graph with dynamic batch, y and x."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            model.eval(), (example,), str(tmp), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch", 2: "y", 3: "x"}, "output": {0: "batch", 2: "y", 3: "x"}},
            do_constant_folding=True)
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


if __name__ == "__main__":  # used by to_torchscript_reproducible
    sys.exit(_torchscript_main(sys.argv[1:]))

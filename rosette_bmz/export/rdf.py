"""The rdf.yaml dialect every consumer reads: format 0.5.4, written by hand as plain YAML.

bioimageio.spec >= 0.5.11 would write ``documentation`` and ``covers`` as objects, which
BiaPy (spec 0.5.7), ilastik/tiktorch (spec 0.5.9) and deepImageJ cannot read, so the file is
never re-saved through bioimageio.spec; the spec only *validates* it (:func:`validate_rdf`).
No ``github_user`` on authors (its online check fails offline), no ``dependencies`` (BiaPy
refuses them); axes are written explicitly (batch, channel, ``id: y``, ``id: x``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..constants import DEFAULT_HALO, DIVISOR, PACKAGE_MIN_SIZE, RDF_CONFIG_KEY
from ..errors import ExportError
from ..files import sha256_of
from .variants import Variant

__all__ = ["FORMAT_VERSION", "HALO", "REPRODUCIBILITY", "DEFAULT_TIMESTAMP", "MODEL_CARD_URL", "build_rdf",
           "write_rdf_yaml", "validate_rdf", "format_summary", "timestamp_for", "onnx_opset"]

#: The rdf dialect every consumer reads (see the module docstring).
FORMAT_VERSION = "0.5.4"
#: Output halo per side in pixels (what a tiling consumer should crop): the runner's context,
#: which covers the receptive field (64 px left seams of up to 1.7e-1 in bioimageio.core's blocks).
HALO = DEFAULT_HALO
#: Declared in config.bioimageio.reproducibility_tolerance (|out - test| <= abs + rel * |test|).
REPRODUCIBILITY = {"absolute_tolerance": 1e-4, "relative_tolerance": 1e-3, "mismatched_elements_per_million": 0}
#: Used as the rdf timestamp when neither the checkpoint sidecar nor SOURCE_DATE_EPOCH gives one.
DEFAULT_TIMESTAMP = "2026-01-01T00:00:00Z"
MODEL_CARD_URL = "https://huggingface.co/NoahBruderer/nematostella_rosette_detection"
OKTAY_DOI = "10.48550/arXiv.1804.03999"
TAGS = ("2d", "pytorch", "torchscript", "onnx", "unet", "attention-unet", "semantic-segmentation",
        "segmentation", "fluorescence-light-microscopy", "confocal", "cells", "epithelium",
        "cell-boundaries", "nematostella", "nematostella-vectensis", "cnidaria", "rosette",
        "morphogenesis", "human-in-the-loop")


def write_rdf_yaml(rdf: dict, path: Path) -> Path:
    """Write ``rdf`` as plain YAML (key order kept, block style): the 0.5.4 dialect, never via the spec."""
    import yaml

    text = yaml.safe_dump(rdf, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    path.write_text(text, encoding="utf-8")
    return path


def validate_rdf(path: Path) -> None:
    """Format validation (with file hashes) by the installed bioimageio.spec; raises ExportError."""
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(path)
    summary = descr.validation_summary
    if isinstance(descr, InvalidDescr) or summary.status not in ("passed", "valid-format"):
        raise ExportError(f"{path}: bioimageio.spec validation failed:\n{format_summary(summary)}")


def format_summary(summary: Any) -> str:
    for attr in ("format_md", "format"):
        fn = getattr(summary, attr, None)
        if callable(fn):
            try:
                return str(fn())
            except Exception:  # pragma: no cover - formatting helpers differ between versions
                pass
    return str(summary)


def timestamp_for(meta: dict, explicit: str | None) -> str:
    if explicit:
        return explicit
    for key in ("written", "timestamp", "created", "finished", "saved_at", "date"):
        value = meta.get(key)
        if isinstance(value, str) and len(value) >= 10:
            return value
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        from datetime import datetime, timezone

        return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return DEFAULT_TIMESTAMP


def _file(path: Path, root: Path) -> dict:
    return {"source": path.relative_to(root).as_posix(), "sha256": sha256_of(path)}


def _axes_in(variant: Variant) -> list[dict]:
    size = {"min": PACKAGE_MIN_SIZE, "step": DIVISOR}
    return [
        {"type": "batch"},
        {"type": "channel", "channel_names": list(variant.channel_names)},
        {"type": "space", "id": "y", "size": dict(size)},
        {"type": "space", "id": "x", "size": dict(size)},
    ]


def build_rdf(*, root: Path, files: dict[str, Path], variant: Variant, kwargs: dict, name: str,
               description: str, authors: Sequence[dict], timestamp: str, torch_version: str,
               out_channels: int, calibration: float | None = None) -> dict:
    """The rdf dict; ``calibration``: the threshold baked into the final bias (``config.rosette_bmz``)."""
    pkg = files
    if variant.kind == "channels":
        preprocessing = [{"id": "scale_range", "kwargs": {
            "axes": ["y", "x"], "min_percentile": 0.0, "max_percentile": 100.0}}]
        data = {"type": "float32", "range": [0.0, 1.0]}
    else:
        preprocessing = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
        data = {"type": "float32"}
    out_names = ["rosette"] if out_channels == 1 else [f"rosette_{i}" for i in range(out_channels)]
    inp = {
        "id": variant.input_id,
        "description": variant.description,
        "axes": _axes_in(variant),
        "test_tensor": _file(pkg["test_input"], root),
        "sample_tensor": _file(pkg["sample_input"], root),
        "data": data,
        "preprocessing": preprocessing,
    }
    out = {
        "id": "probability",
        "description": "per-pixel rosette probability in [0, 1]; threshold 0.5, drop objects < 10 px",
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": out_names},
            {"type": "space", "id": "y", "size": {"tensor_id": variant.input_id, "axis_id": "y"}, "halo": HALO},
            {"type": "space", "id": "x", "size": {"tensor_id": variant.input_id, "axis_id": "x"}, "halo": HALO},
        ],
        "test_tensor": _file(pkg["test_output"], root),
        "sample_tensor": _file(pkg["sample_output"], root),
        "data": {"type": "float32", "range": [0.0, 1.0]},
    }
    from .. import __version__

    return {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "id": "nematostella-rosette-detector" + ("" if variant.kind == "channels" else f"-{variant.kind}"),
        "name": name,
        "description": description,
        "version": __version__,
        "timestamp": timestamp,
        "authors": [dict(a) for a in authors],
        "cite": [
            {"text": "Nematostella Rosette Detector: Attention U-Net for epithelial rosette detection in "
                     "Nematostella vectensis (published model card)", "url": MODEL_CARD_URL},
            {"text": "Oktay O. et al. (2018) Attention U-Net: Learning Where to Look for the Pancreas. "
                     "arXiv:1804.03999", "doi": OKTAY_DOI},
        ],
        "license": "MIT",
        "tags": list(TAGS),
        "documentation": pkg["readme"].relative_to(root).as_posix(),
        "covers": [pkg["cover"].relative_to(root).as_posix()],
        "inputs": [inp],
        "outputs": [out],
        "weights": {
            "pytorch_state_dict": {
                **_file(pkg["state_dict"], root),
                "architecture": {
                    **_file(pkg["architecture"], root),
                    "callable": variant.callable,
                    "kwargs": dict(kwargs),
                },
                "pytorch_version": torch_version,
            },
            "torchscript": {**_file(pkg["torchscript"], root), "parent": "pytorch_state_dict",
                            "pytorch_version": torch_version},
            "onnx": {**_file(pkg["onnx"], root), "parent": "pytorch_state_dict", "opset_version": onnx_opset()},
        },
        "config": {"bioimageio": {"reproducibility_tolerance": [dict(REPRODUCIBILITY)]},
                   **({RDF_CONFIG_KEY: {"calibration": {"threshold": float(calibration)}}}
                      if calibration is not None else {})},
    }


def onnx_opset() -> int:
    from ..convert import ONNX_OPSET

    return ONNX_OPSET

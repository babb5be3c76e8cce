"""BioImage Model Zoo exporter: one ``rdf.yaml`` that bioimageio.core, BiaPy, ilastik and deepImageJ read.

``python -m rosette_bmz.export --checkpoint CKPT [--out DIR] [--force] [--zip PATH]
[--input-kind channels|outlines|labels]`` writes ``DIR/rdf.yaml`` and ``DIR/model_package/``.

Why the file looks the way it does (each point was measured against the consumer):

* ``format_version: 0.5.4`` written as plain YAML by this module, with ``documentation`` and
  ``covers`` as plain strings. bioimageio.spec >= 0.5.11 would write them as objects, which
  BiaPy (spec 0.5.7), ilastik/tiktorch (spec 0.5.9) and deepImageJ cannot read, so the file is
  never re-saved through bioimageio.spec; the spec is only used to *validate* it.
* No ``github_user`` on authors (its online check fails offline) and no ``dependencies`` entry
  (BiaPy refuses packages that declare one).
* Axes written explicitly (batch, channel, ``id: y``, ``id: x``); y/x are ``512 + 16 n`` with an
  output halo of 112 px: the network's receptive field is ~100 px, and with a 64 px halo
  bioimageio.core's own blocking left seams of up to 1.7e-1 (112 px: 2.4e-5). BiaPy tiles at the
  minimum size without overlap (256 px tiles left seams of 6e-3, 512 px none), ilastik keeps
  512 - 2*112 = 288 px per 512 px tile, deepImageJ tiles by min/step with the halo as overlap.
* Preprocessing ``scale_range`` (percentiles 0-100 per channel) is the identity on binary 0/1
  input (up to eps = 1e-6) and keeps BiaPy from adding its own z-score normalisation;
  ``binarize`` would be rejected by BiaPy.
* Weights: ``pytorch_state_dict`` (architecture = a verbatim copy of ``rosette_bmz/model.py``),
  ``torchscript`` and ``onnx`` (opset 17, one file, dynamic batch/y/x), both with parent
  ``pytorch_state_dict``. Before anything is written they must agree with eager PyTorch on the
  test input within 1e-4 (:func:`rosette_bmz.convert.check_agreement`).
* The package is built in a temporary folder, validated by bioimageio.spec and tested by
  ``bioimageio.core.test_model``; only a passing package is moved into place. An existing
  package is replaced only with ``force=True``.
* Reproducible: the weight files, test tensors, sample TIFFs and the rdf are byte-identical
  when the same checkpoint is exported twice with the same torch version (the TorchScript file
  is traced in a fresh interpreter and stripped of source-path debug records; see
  :mod:`rosette_bmz.convert`). Test outputs are computed by eager PyTorch on this CPU; another
  CPU may differ in the last bits (far below the declared reproducibility tolerance).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import string
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import DEFAULT_HALO
from .files import atomic_path

log = logging.getLogger(__name__)

__all__ = ["ExportError", "export_package", "export_cli", "build_test_data", "write_rdf_yaml",
           "validate_rdf", "FORMAT_VERSION", "PACKAGE_DIR", "MIN_SIZE", "STEP", "HALO", "TEST_SEED",
           "TEST_SIZE", "INPUT_KINDS", "repo_root"]

#: The rdf dialect every consumer reads (see the module docstring).
FORMAT_VERSION = "0.5.4"
#: Folder (beside rdf.yaml) that holds every file the rdf points to.
PACKAGE_DIR = "model_package"
#: ParameterizedSize of y and x: min + n * step. 512 because BiaPy tiles at the minimum size.
MIN_SIZE = 512
STEP = 16
#: Output halo per side in pixels (what a tiling consumer should crop): the runner's context,
#: which covers the receptive field (64 px left seams of up to 1.7e-1 in bioimageio.core's blocks).
HALO = DEFAULT_HALO
#: Synthetic test image: ``rosette_bmz.synth.generate(TEST_SIZE, seed=TEST_SEED)``.
TEST_SEED = 1
TEST_SIZE = 512
#: Eager vs TorchScript vs ONNX on the test input.
AGREEMENT_TOL = 1e-4
#: Declared in config.bioimageio.reproducibility_tolerance (|out - test| <= abs + rel * |test|).
REPRODUCIBILITY = {"absolute_tolerance": 1e-4, "relative_tolerance": 1e-3, "mismatched_elements_per_million": 0}
#: Used as the rdf timestamp when neither the checkpoint sidecar nor SOURCE_DATE_EPOCH gives one.
DEFAULT_TIMESTAMP = "2026-01-01T00:00:00Z"
#: Covers must stay below 500 KB (BioImage Model Zoo guideline); RGB PNGs above this (480 KB) are palettised.
COVER_MAX_BYTES = 480_000
MODEL_CARD_URL = "https://huggingface.co/NoahBruderer/nematostella_rosette_detection"
OKTAY_DOI = "10.48550/arXiv.1804.03999"
INPUT_KINDS = ("channels", "outlines", "labels")
DEFAULT_AUTHORS = ({"name": "rosette-bmz developers"},)
TAGS = ("2d", "pytorch", "torchscript", "onnx", "unet", "attention-unet", "semantic-segmentation",
        "segmentation", "fluorescence-light-microscopy", "confocal", "cells", "epithelium",
        "cell-boundaries", "nematostella", "nematostella-vectensis", "cnidaria", "rosette",
        "morphogenesis", "human-in-the-loop")
_DOCS = Path(__file__).with_name("package_docs")


class ExportError(RuntimeError):
    """The package could not be built or did not pass validation/testing; nothing was written."""


@dataclass(frozen=True)
class _Variant:
    kind: str
    callable: str
    input_id: str
    channel_names: tuple[str, ...]
    description: str
    title: str


_VARIANTS = {
    "channels": _Variant(
        "channels", "AttentionUNet", "boundaries", ("thick_boundaries", "outlines"),
        "2 binary channels from cell outlines: find_boundaries(outlines, mode='thick'), outlines "
        "(see README)",
        "two binary boundary channels"),
    "outlines": _Variant(
        "outlines", "OutlinesAttentionUNet", "outlines", ("outlines",),
        "binary cell-outline image (value > 0 = line); the 2 input channels are built in the network",
        "a binary outline image (1 channel)"),
    "labels": _Variant(
        "labels", "LabelsAttentionUNet", "labels", ("labels",),
        "cell label image (0 = background); outlines and the 2 input channels are built in the network",
        "a cell label image (1 channel)"),
}
for _v in _VARIANTS.values():
    assert len(_v.description) <= 128, _v.description


_BIAPY_NOTE = {
    "outlines": (" BiaPy ignores `ensure_dtype` and z-scores the image itself; that keeps every line "
                 "pixel above zero and the background below, so the output is unchanged (measured: "
                 "identical)."),
    "labels": (" **Not for BiaPy:** BiaPy ignores `ensure_dtype` and z-scores the image itself, which "
               "moves every label below the mean label number below zero, so those cells lose their "
               "outlines and the output is wrong. In BiaPy use the 2-channel or the outlines package; "
               "bioimageio.core, ilastik and deepImageJ apply the declared preprocessing exactly."),
}


def repo_root() -> Path:
    """The source checkout that holds this package (default output folder)."""
    return Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- test data
@dataclass
class TestData:
    """What the package's test tensors are made of."""

    model_input: np.ndarray      # (1, C, H, W) float32 as the exported model reads it
    channels: np.ndarray         # (1, 2, H, W) float32: the published 2-channel input (Python builder)
    n_rosettes: int
    seed: int


def build_test_data(input_kind: str = "channels", seed: int = TEST_SEED, size: int = TEST_SIZE) -> TestData:
    """Synthetic test image with rosettes, as the exported model of ``input_kind`` reads it."""
    from .inputs import from_labels, from_outlines
    from .synth import generate

    img = generate(size, seed=seed)
    n_rosettes = len(img.meta.get("rosettes", []))
    if input_kind == "labels":
        channels = from_labels(img.labels, name=f"synthetic labels (seed {seed})")
        model_input = img.labels.astype(np.float32)[None, None]
    else:
        channels = from_outlines(img.outlines, name=f"synthetic outlines (seed {seed})")
        model_input = (channels[None] if input_kind == "channels"
                       else (img.outlines > 0).astype(np.float32)[None, None])
    return TestData(np.ascontiguousarray(model_input, dtype=np.float32),
                    np.ascontiguousarray(channels[None], dtype=np.float32), n_rosettes, seed)


# ----------------------------------------------------------------------------- rdf writing
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
        raise ExportError(f"{path}: bioimageio.spec validation failed:\n{_format_summary(summary)}")


def _format_summary(summary: Any) -> str:
    for attr in ("format_md", "format"):
        fn = getattr(summary, attr, None)
        if callable(fn):
            try:
                return str(fn())
            except Exception:  # pragma: no cover - formatting helpers differ between versions
                pass
    return str(summary)


def _timestamp(meta: dict, explicit: str | None) -> str:
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
    return {"source": path.relative_to(root).as_posix(), "sha256": _sha256(path)}


def _axes_in(variant: _Variant) -> list[dict]:
    size = {"min": MIN_SIZE, "step": STEP}
    return [
        {"type": "batch"},
        {"type": "channel", "channel_names": list(variant.channel_names)},
        {"type": "space", "id": "y", "size": dict(size)},
        {"type": "space", "id": "x", "size": dict(size)},
    ]


def _build_rdf(*, root: Path, files: dict[str, Path], variant: _Variant, kwargs: dict, name: str,
               description: str, authors: Sequence[dict], timestamp: str, torch_version: str,
               out_channels: int) -> dict:
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
    from . import __version__

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
            "onnx": {**_file(pkg["onnx"], root), "parent": "pytorch_state_dict", "opset_version": _opset()},
        },
        "config": {"bioimageio": {"reproducibility_tolerance": [dict(REPRODUCIBILITY)]}},
    }


def _opset() -> int:
    from .convert import ONNX_OPSET

    return ONNX_OPSET


# ----------------------------------------------------------------------------- cover and docs
def _render_cover(channels: np.ndarray, prob: np.ndarray, path: Path) -> Path:
    """PNG, 2:1: left the input (outlines dark on white, thick band grey), right the overlay."""
    from PIL import Image

    thick, thin = channels[0] > 0.5, channels[1] > 0.5
    left = np.full(thin.shape + (3,), 255, dtype=np.uint8)
    left[thick] = (200, 200, 200)
    left[thin] = (40, 40, 40)
    base = np.full(thin.shape + (3,), 255.0)
    base[thin] = (120, 120, 120)
    p = np.clip(prob, 0.0, 1.0)[..., None]
    magenta = np.array([230.0, 0.0, 160.0])
    alpha = 0.9 * p ** 2  # gamma 2: the faint background haze of low probabilities stays light
    right = np.round(base * (1 - alpha) + magenta * alpha).astype(np.uint8)
    sep = np.full((thin.shape[0], 4, 3), 255, dtype=np.uint8)
    img = np.concatenate([left, sep, right], axis=1)
    h = thin.shape[0]
    pil = Image.fromarray(img).resize((2 * h, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    if buf.tell() > COVER_MAX_BYTES:  # busy images: a 256-colour palette keeps the cover small
        buf = io.BytesIO()
        pil.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())
    return path


def _validation_section(checkpoint: Path) -> str:
    report = checkpoint.with_name(checkpoint.stem + ".eval.json")
    if report.is_file():
        try:
            data = json.loads(report.read_text())
            table = data.get("table_markdown")
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable evaluation report %s: %s", report, exc)
            table = None
        if table:
            source = data.get("data") or data.get("dataset") or ""
            where = f" on `{Path(str(source)).name}`" if source else ""
            return (f"Evaluation of these weights by `rosette-bmz evaluate`{where} (from `{report.name}`), "
                    "model and the classical vertex-multiplicity baseline side by side; definitions "
                    "follow the published model card (event recall: a rosette counts as found if >= 1 "
                    "of its pixels is >= 0.5).\n\n" + table.strip())
    return ("Not evaluated: no evaluation report (`" + report.name + "`, written by `rosette-bmz "
            "evaluate --out`) was found beside the checkpoint when this package was exported. The "
            "published model card reports, for the published weights on 54 held-out confocal images "
            "(269 rosettes): pixel Dice 0.51, event recall 88.8 %. Those numbers do not describe "
            "other weights.")


def _input_section(variant: _Variant) -> str:
    build = (
        "The published network reads two binary channels made from a Cellpose-style outline image "
        "`outlines` (thin 1 px lines inside each cell's border), in this order:\n\n"
        "| channel | content |\n|---|---|\n"
        "| 0 `thick_boundaries` | `skimage.segmentation.find_boundaries(outlines > 0, mode=\"thick\")` "
        "(a 2–3 px band) |\n"
        "| 1 `outlines` | `outlines > 0` (the thin lines) |\n\n"
        "From a label image (one integer per cell, e.g. Cellpose masks) draw the outlines first: a "
        "pixel of cell *i* is an outline pixel if one of its 4 direct neighbours is not *i* (another "
        "cell, background, or outside the image).\n\n"
        "```python\nimport numpy as np\nfrom skimage.segmentation import find_boundaries\n\n"
        "def inner_outlines(labels):\n"
        "    p = np.pad(labels, 1)\n    c = p[1:-1, 1:-1]\n"
        "    return ((p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)) & (c > 0)\n\n"
        "def two_channels(outlines):\n    fg = outlines > 0\n"
        "    return np.stack([find_boundaries(fg, mode=\"thick\"), fg]).astype(np.float32)  # (2, H, W)\n```\n\n"
        "or, with the `rosette-bmz` package: `rosette_bmz.from_outlines(outlines)` / "
        "`rosette_bmz.from_labels(labels)`.")
    if variant.kind == "channels":
        return build + ("\n\nThis package expects that (2, H, W) image, float32 0/1 (in Fiji: a 2-channel "
                        "32-bit stack; in ilastik: a 2-channel image).")
    if variant.kind == "outlines":
        return ("This package reads **one channel: the binary outline image itself** (0/1, 0/255 or "
                "boolean; every value > 0 is a line), and builds the two published channels inside the "
                "network with exactly the rule below (verified to give the same output as the Python "
                "builder on the test image).\n\n" + build)
    return ("This package reads **one channel: the cell label image itself** (e.g. Cellpose masks; "
            "whole numbers, 0 = background, fewer than 16,777,216 labels), and draws the outlines and "
            "the two published channels inside the network with exactly the rules below (verified to "
            "give the same output as the Python builder on the test image).\n\n" + build)


def _render_readme(path: Path, fields: dict) -> Path:
    template = string.Template((_DOCS / "README.md.template").read_text(encoding="utf-8"))
    path.write_text(template.substitute(fields), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- export
def _check_target(out_dir: Path, force: bool, zip_path: Path | None) -> None:
    rdf, pkg = out_dir / "rdf.yaml", out_dir / PACKAGE_DIR
    existing = [p for p in (rdf,) if p.exists()] + ([pkg] if pkg.is_dir() and any(pkg.iterdir()) else [])
    if zip_path is not None and zip_path.exists():
        existing.append(zip_path)
    if existing and not force:
        raise FileExistsError(f"{', '.join(map(str, existing))} already exist(s); pass --force "
                              "(force=True) to replace the package")
    if pkg.exists() and not pkg.is_dir():
        raise FileExistsError(f"{pkg} exists and is not a folder")


def _write_zip(rdf_path: Path, zip_path: Path) -> Path:
    """Deterministic zip (fixed dates, sorted names) of rdf.yaml + model_package/."""
    root = rdf_path.parent
    members = [rdf_path] + sorted(p for p in (root / PACKAGE_DIR).rglob("*") if p.is_file())
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in members:
            info = zipfile.ZipInfo(p.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, p.read_bytes())
    return zip_path


def export_package(checkpoint: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                   force: bool = False, zip_path: str | os.PathLike | None = None,
                   input_kind: str = "channels", run_test: bool = True, name: str | None = None,
                   authors: Sequence[dict] | None = None, timestamp: str | None = None,
                   test_seed: int = TEST_SEED) -> Path:
    """Export ``checkpoint`` as a BioImage Model Zoo package; returns the path of ``rdf.yaml``.

    Args:
        checkpoint: state dict file (anything :func:`rosette_bmz.load_checkpoint` reads).
        out_dir: folder for ``rdf.yaml`` + ``model_package/`` (default: the repository root).
        force: replace an existing package (otherwise ``FileExistsError``).
        zip_path: also write the package as a zip archive here.
        input_kind: ``channels`` (the published 2-channel input), ``outlines`` or ``labels``
            (1-channel models that build the 2 channels inside the graph).
        run_test: run ``bioimageio.core.test_model`` before moving the package into place.
        name, authors, timestamp: rdf metadata (authors as ``[{"name": ..., "affiliation": ...}]``,
            never ``github_user``); the timestamp defaults to the checkpoint sidecar's, then
            ``SOURCE_DATE_EPOCH``, then a fixed date, so that re-exports are byte-identical.
        test_seed: seed of the synthetic test image.
    """
    import torch

    from . import model as arch
    from .checkpoint import load_checkpoint
    from .convert import (ConversionError, check_agreement, run_eager, save_state_dict_bytes, to_onnx,
                          to_torchscript_reproducible)

    if input_kind not in _VARIANTS:
        raise ValueError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    variant = _VARIANTS[input_kind]
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir) if out_dir is not None else repo_root()
    zip_path = Path(zip_path) if zip_path is not None else None
    _check_target(out_dir, force, zip_path)

    loaded = load_checkpoint(checkpoint)
    kwargs = dict(loaded.kwargs)
    if kwargs["in_channels"] != 2:
        raise ExportError(f"checkpoint {checkpoint}: the package describes the published 2-channel input, "
                          f"but the weights expect {kwargs['in_channels']} input channel(s)")
    state = loaded.model.state_dict()
    if variant.kind == "channels":
        arch_kwargs = kwargs
        model = loaded.model
    else:
        arch_kwargs = {"out_channels": kwargs["out_channels"], "base_channels": kwargs["base_channels"]}
        model = getattr(arch, variant.callable)(**arch_kwargs)
        model.load_state_dict(state, strict=True)
    model = model.eval()
    n_params = sum(p.numel() for p in model.parameters())

    from tqdm.auto import tqdm

    bar = tqdm(total=7 if run_test else 6, desc=f"export {checkpoint.name}", unit="step", disable=None)

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update(1)

    bar.set_postfix_str("test image")
    data = build_test_data(input_kind, seed=test_seed)
    log.info("test image: seed %d, %d rosettes, input %s", data.seed, data.n_rosettes, data.model_input.shape)
    test_output = run_eager(model, data.model_input).astype(np.float32)
    if variant.kind != "channels":
        reference = run_eager(loaded.model, data.channels)
        diff = float(np.abs(reference - test_output).max())
        log.info("%s model vs Python input builder + 2-channel model: max abs diff %.3g", input_kind, diff)
        if not diff <= AGREEMENT_TOL:
            raise ExportError(f"in-graph {input_kind} input builder disagrees with the Python builder: "
                              f"max abs diff {diff:.3g} > {AGREEMENT_TOL:g}")

    out_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".rosette-export-", dir=out_dir))
    try:
        pkg = build / PACKAGE_DIR
        pkg.mkdir()
        files = {
            "state_dict": pkg / "weights.pt",
            "architecture": pkg / "model.py",
            "torchscript": pkg / "weights_torchscript.pt",
            "onnx": pkg / "weights.onnx",
            "test_input": pkg / "test_input.npy",
            "test_output": pkg / "test_output.npy",
            "sample_input": pkg / "sample_input.tif",
            "sample_output": pkg / "sample_output.tif",
            "cover": pkg / "cover.png",
            "readme": pkg / "README.md",
        }
        step("TorchScript")
        files["state_dict"].write_bytes(save_state_dict_bytes(state))
        shutil.copyfile(Path(arch.__file__), files["architecture"])
        to_torchscript_reproducible(variant.callable, arch_kwargs, files["state_dict"], files["torchscript"],
                                    tuple(data.model_input.shape))
        step("ONNX")
        with torch.no_grad():
            to_onnx(model, files["onnx"], torch.zeros(data.model_input.shape, dtype=torch.float32))
        step("agreement")
        try:
            diffs = check_agreement(model, data.model_input, torchscript=files["torchscript"],
                                    onnx=files["onnx"], tol=AGREEMENT_TOL)
        except ConversionError as exc:
            raise ExportError(f"checkpoint {checkpoint}: {exc}; nothing was written") from None
        log.info("agreement with eager PyTorch: %s", diffs)

        import tifffile

        step("files")
        np.save(files["test_input"], data.model_input, allow_pickle=False)
        np.save(files["test_output"], test_output, allow_pickle=False)
        tifffile.imwrite(files["sample_input"], data.model_input[0], photometric="minisblack", compression="zlib")
        tifffile.imwrite(files["sample_output"], test_output[0], photometric="minisblack", compression="zlib")
        _render_cover(data.channels[0], test_output[0, 0], files["cover"])

        torch_version = torch.__version__.split("+")[0]
        title = name or "Nematostella epithelial rosette detector (Attention U-Net)"
        synthetic = _trained_on_synthetic(loaded.metadata)
        if synthetic:
            weights_line = ("demo weights trained by `rosette-bmz train` on **synthetic** epithelium images "
                            "(`rosette_bmz.synth`), not on microscopy data.")
            limitation_weights = ("These are demo weights trained on synthetic images only. They show that "
                                  "the package, the tools and the workflow work; they are not the published "
                                  "model and have not been validated on real *Nematostella* images. For real "
                                  "data, export the published checkpoint or a model fine-tuned on your "
                                  "annotations.")
        else:
            weights_line = (f"`{checkpoint.name}` (see Validation for what is known about their "
                            "accuracy).")
            limitation_weights = ("Only the Validation section below says how well these particular weights "
                                  "work; without it, treat the output as unvalidated.")
        description = ("Attention U-Net that proposes epithelial rosettes (>= 5 cells meeting at one vertex, "
                       "or closing around an extruding cell) in Nematostella vectensis from cell "
                       "boundaries: it reads " + variant.title + " and returns a per-pixel rosette "
                       "probability for expert review." + (" Demo weights trained on synthetic data."
                                                           if synthetic else ""))
        frac = float((test_output > 0.5).mean())
        readme_fields = {
            "name": title,
            "summary": description,
            "weights_line": weights_line,
            "limitation_weights": limitation_weights,
            "input_title": variant.title,
            "input_section": _input_section(variant),
            "output_id": "probability",
            "halo": HALO,
            "ilastik_core": MIN_SIZE - 2 * HALO,
            "preprocessing_name": ("scale_range" if variant.kind == "channels" else "ensure_dtype (float32)"),
            "preprocessing_note": (
                " with percentiles 0 and 100 per channel over y and x: on binary 0/1 input it is the "
                "identity (up to 1e-6), and declaring it stops BiaPy from adding a z-score normalisation "
                "of its own. Do not normalise the input yourself." if variant.kind == "channels" else
                ": the values are only cast to float32 (an 8/16-bit image can be given as is); no "
                "normalisation. Do not normalise the input yourself." + _BIAPY_NOTE.get(variant.kind, "")),
            "validation": _validation_section(checkpoint),
            "version": _package_version(),
            "checkpoint_name": checkpoint.name,
            "checkpoint_sha256": _sha256(checkpoint),
            "kwargs_text": ", ".join(f"{k}={v}" for k, v in kwargs.items()),
            "n_params": f"{n_params:,}",
            "callable": variant.callable,
            "opset": _opset(),
            "test_size": TEST_SIZE,
            "test_seed": data.seed,
            "n_test_rosettes": data.n_rosettes,
            "test_max": f"{float(test_output.max()):.2f}",
            "test_frac": f"{100 * frac:.1f} %",
            "base_channels": kwargs["base_channels"],
            "model_card_url": MODEL_CARD_URL,
        }
        _render_readme(files["readme"], readme_fields)

        rdf = _build_rdf(root=build, files=files, variant=variant, kwargs=arch_kwargs, name=title,
                         description=description, authors=list(authors or DEFAULT_AUTHORS),
                         timestamp=_timestamp(loaded.metadata, timestamp), torch_version=torch_version,
                         out_channels=kwargs["out_channels"])
        rdf_tmp = write_rdf_yaml(rdf, build / "rdf.yaml")
        for f in [rdf_tmp, *pkg.iterdir()]:
            f.chmod(0o644)
        step("validation")
        validate_rdf(rdf_tmp)
        if run_test:
            step("bioimageio.core test_model")
            _run_bioimageio_test(rdf_tmp)

        target_rdf, target_pkg = out_dir / "rdf.yaml", out_dir / PACKAGE_DIR
        _check_target(out_dir, force, None)  # nothing appeared meanwhile
        old = build / ".old"
        old.mkdir()
        if target_pkg.exists():
            os.replace(target_pkg, old / PACKAGE_DIR)
        os.replace(pkg, target_pkg)
        os.replace(rdf_tmp, target_rdf)
        step("done")
    finally:
        bar.close()
        shutil.rmtree(build, ignore_errors=True)
    if zip_path is not None:
        _write_zip(target_rdf, zip_path)
    log.info("wrote %s (+ %s/)", target_rdf, target_pkg)
    return target_rdf


def _trained_on_synthetic(meta: dict) -> bool:
    """True if the trainer's sidecar says the weights were trained on ``rosette_bmz.synth`` data."""
    config = meta.get("training_config") if isinstance(meta.get("training_config"), dict) else {}
    data = json.dumps([meta.get("data"), config.get("data")], default=str).lower()
    return "synth" in data


def _package_version() -> str:
    from . import __version__

    return __version__


def _run_bioimageio_test(rdf: Path) -> None:
    from bioimageio.core import test_model

    summary = test_model(rdf)
    if summary.status != "passed":
        raise ExportError(f"bioimageio.core test_model failed for the new package; nothing was written:\n"
                          f"{_format_summary(summary)}")
    log.info("bioimageio.core test_model: %s", summary.status)


# ----------------------------------------------------------------------------- CLI
def export_cli(args: argparse.Namespace) -> int:
    """``rosette-bmz export`` / ``python -m rosette_bmz.export``."""
    authors = [{"name": a.strip()} for a in (getattr(args, "author", None) or []) if a.strip()] or None
    rdf = export_package(args.checkpoint, args.out, force=args.force, zip_path=args.zip,
                         input_kind=args.input_kind, run_test=not args.skip_test,
                         name=getattr(args, "name", None), authors=authors)
    print(f"wrote {rdf} and {rdf.parent / PACKAGE_DIR}/" + (f" and {args.zip}" if args.zip else ""))
    if args.skip_test:
        print("warning: bioimageio.core test_model was skipped")
    else:
        print("bioimageio.core test_model: passed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import _user_errors, add_export_arguments

    parser = argparse.ArgumentParser(prog="python -m rosette_bmz.export",
                                     description="Write a BioImage Model Zoo package (rdf.yaml + model_package/).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    add_export_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return export_cli(args)
    except Exception as exc:
        if isinstance(exc, _user_errors() + (ExportError,)):
            import sys

            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    import sys

    sys.exit(main())

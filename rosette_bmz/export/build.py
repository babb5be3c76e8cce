"""``export_package``: a checkpoint in, a tested BioImage Model Zoo package out, in named steps.

1. load the checkpoint and make the variant's network (:func:`_load`);
2. the synthetic test image and the network's output on it (:func:`_test_case`);
3. in a temporary build folder beside the target: the weights three times, proven equal
   (:func:`_write_weights`), test tensors, samples, cover and README (:func:`_write_files`),
   the hand-written rdf (:mod:`.rdf`);
4. bioimageio.spec validation and bioimageio.core ``test_model``;
5. only then swap the package into place (:func:`_swap_into_place`), and optionally zip it.

Any failure stops with one :class:`~rosette_bmz.errors.ExportError` and leaves the old
package untouched; the build folder is always removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ExportError
from ..files import atomic_path, sha256_of
from . import docs
from .rdf import HALO, MODEL_CARD_URL, build_rdf, format_summary, onnx_opset, timestamp_for, validate_rdf, \
    write_rdf_yaml
from .testdata import TEST_SEED, TEST_SIZE, TestData, build_test_data
from .variants import BIAPY_NOTE, Variant, variant_for

log = logging.getLogger(__name__)

__all__ = ["export_package", "remove_stale_builds", "PACKAGE_DIR", "AGREEMENT_TOL", "DEFAULT_AUTHORS"]

#: Folder (beside rdf.yaml) that holds every file the rdf points to.
PACKAGE_DIR = "model_package"
#: Eager vs TorchScript vs ONNX on the test input.
AGREEMENT_TOL = 1e-4
DEFAULT_AUTHORS = ({"name": "rosette-bmz developers"},)
#: The package's files, by role, inside PACKAGE_DIR.
_FILES = {"state_dict": "weights.pt", "architecture": "model.py", "torchscript": "weights_torchscript.pt",
          "onnx": "weights.onnx", "test_input": "test_input.npy", "test_output": "test_output.npy",
          "sample_input": "sample_input.tif", "sample_output": "sample_output.tif", "cover": "cover.png",
          "readme": "README.md"}


@dataclass
class _Loaded:
    """The checkpoint's network, as the chosen variant exports it."""

    checkpoint: Path
    variant: Variant
    model: Any            # the variant's eval-mode network (reads the variant's input)
    channels_model: Any   # the 2-channel network the checkpoint holds
    kwargs: dict          # the checkpoint's architecture kwargs
    arch_kwargs: dict     # the variant's architecture kwargs (written into the rdf)
    state: dict
    metadata: dict

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _load(checkpoint: Path, variant: Variant) -> _Loaded:
    from .. import model as arch
    from ..checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    kwargs = dict(loaded.kwargs)
    if kwargs["in_channels"] != 2:
        raise ExportError(f"checkpoint {checkpoint}: the package describes the published 2-channel input, "
                          f"but the weights expect {kwargs['in_channels']} input channel(s)")
    state = loaded.model.state_dict()
    if variant.kind == "channels":
        arch_kwargs, model = kwargs, loaded.model
    else:
        arch_kwargs = {"out_channels": kwargs["out_channels"], "base_channels": kwargs["base_channels"]}
        model = getattr(arch, variant.callable)(**arch_kwargs)
        model.load_state_dict(state, strict=True)
    return _Loaded(checkpoint, variant, model.eval(), loaded.model, kwargs, arch_kwargs, state, loaded.metadata)


def _test_case(m: _Loaded, seed: int) -> tuple[TestData, np.ndarray]:
    """The test image and the eager output on it; a 1-channel variant must equal the Python builder."""
    from ..convert import run_eager

    data = build_test_data(m.variant.kind, seed=seed)
    log.info("test image: seed %d, %d rosettes, input %s", data.seed, data.n_rosettes, data.model_input.shape)
    test_output = run_eager(m.model, data.model_input).astype(np.float32)
    if m.variant.kind != "channels":
        reference = run_eager(m.channels_model, data.channels)
        diff = float(np.abs(reference - test_output).max())
        log.info("%s model vs Python input builder + 2-channel model: max abs diff %.3g", m.variant.kind, diff)
        if not diff <= AGREEMENT_TOL:
            raise ExportError(f"in-graph {m.variant.kind} input builder disagrees with the Python builder: "
                              f"max abs diff {diff:.3g} > {AGREEMENT_TOL:g}")
    return data, test_output


def _write_weights(m: _Loaded, files: dict[str, Path], data: TestData, step: Callable[[str], None]) -> None:
    """State dict + architecture file, TorchScript and ONNX, each proven equal to eager PyTorch."""
    import torch

    from .. import model as arch
    from ..convert import check_agreement, save_state_dict_bytes, to_onnx, to_torchscript_reproducible
    from ..errors import ConversionError

    step("TorchScript")
    files["state_dict"].write_bytes(save_state_dict_bytes(m.state))
    shutil.copyfile(Path(arch.__file__), files["architecture"])
    to_torchscript_reproducible(m.variant.callable, m.arch_kwargs, files["state_dict"], files["torchscript"],
                                tuple(data.model_input.shape))
    step("ONNX")
    with torch.no_grad():
        to_onnx(m.model, files["onnx"], torch.zeros(data.model_input.shape, dtype=torch.float32))
    step("agreement")
    try:
        diffs = check_agreement(m.model, data.model_input, torchscript=files["torchscript"], onnx=files["onnx"],
                                tol=AGREEMENT_TOL)
    except ConversionError as exc:
        raise ExportError(f"checkpoint {m.checkpoint}: {exc}; nothing was written") from None
    log.info("agreement with eager PyTorch: %s", diffs)


def _readme_fields(m: _Loaded, data: TestData, test_output: np.ndarray, title: str, description: str,
                   synthetic: bool) -> dict:
    from .. import __version__
    from ..constants import PACKAGE_MIN_SIZE

    v = m.variant
    if synthetic:
        weights_line = ("demo weights trained by `rosette-bmz train` on **synthetic** epithelium images "
                        "(`rosette_bmz.synth`), not on microscopy data.")
        limitation_weights = ("These are demo weights trained on synthetic images only. They show that "
                              "the package, the tools and the workflow work; they are not the published "
                              "model and have not been validated on real *Nematostella* images. For real "
                              "data, export the published checkpoint or a model fine-tuned on your "
                              "annotations.")
    else:
        weights_line = f"`{m.checkpoint.name}` (see Validation for what is known about their accuracy)."
        limitation_weights = ("Only the Validation section below says how well these particular weights "
                              "work; without it, treat the output as unvalidated.")
    frac = float((test_output > 0.5).mean())
    return {
        "name": title,
        "summary": description,
        "weights_line": weights_line,
        "limitation_weights": limitation_weights,
        "input_title": v.title,
        "input_section": docs.input_section(v),
        "output_id": "probability",
        "halo": HALO,
        "ilastik_core": PACKAGE_MIN_SIZE - 2 * HALO,
        "preprocessing_name": ("scale_range" if v.kind == "channels" else "ensure_dtype (float32)"),
        "preprocessing_note": (
            " with percentiles 0 and 100 per channel over y and x: on binary 0/1 input it is the "
            "identity (up to 1e-6), and declaring it stops BiaPy from adding a z-score normalisation "
            "of its own. Do not normalise the input yourself." if v.kind == "channels" else
            ": the values are only cast to float32 (an 8/16-bit image can be given as is); no "
            "normalisation. Do not normalise the input yourself." + BIAPY_NOTE.get(v.kind, "")),
        "validation": docs.validation_section(m.checkpoint),
        "version": __version__,
        "checkpoint_name": m.checkpoint.name,
        "checkpoint_sha256": sha256_of(m.checkpoint),
        "kwargs_text": ", ".join(f"{k}={v}" for k, v in m.kwargs.items()),
        "n_params": f"{m.n_params:,}",
        "callable": v.callable,
        "opset": onnx_opset(),
        "test_size": TEST_SIZE,
        "test_seed": data.seed,
        "n_test_rosettes": data.n_rosettes,
        "test_max": f"{float(test_output.max()):.2f}",
        "test_frac": f"{100 * frac:.1f} %",
        "base_channels": m.kwargs["base_channels"],
        "model_card_url": MODEL_CARD_URL,
    }


def _describe(m: _Loaded, synthetic: bool) -> str:
    return ("Attention U-Net that proposes epithelial rosettes (>= 5 cells meeting at one vertex, "
            "or closing around an extruding cell) in Nematostella vectensis from cell "
            "boundaries: it reads " + m.variant.title + " and returns a per-pixel rosette "
            "probability for expert review." + (" Demo weights trained on synthetic data." if synthetic else ""))


def _write_files(m: _Loaded, files: dict[str, Path], data: TestData, test_output: np.ndarray, title: str,
                 description: str, synthetic: bool) -> None:
    """Test tensors, TIFF samples, cover picture and README."""
    import tifffile

    np.save(files["test_input"], data.model_input, allow_pickle=False)
    np.save(files["test_output"], test_output, allow_pickle=False)
    tifffile.imwrite(files["sample_input"], data.model_input[0], photometric="minisblack", compression="zlib")
    tifffile.imwrite(files["sample_output"], test_output[0], photometric="minisblack", compression="zlib")
    docs.render_cover(data.channels[0], test_output[0, 0], files["cover"])
    docs.render_readme(files["readme"], _readme_fields(m, data, test_output, title, description, synthetic))


_BUILD_PREFIX = ".rosette-export-"


def _build_prefix() -> str:
    """Build folders carry the host and process that own them: ``.rosette-export-<host>-<pid>-<random>``."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    return f"{_BUILD_PREFIX}{host}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_builds(out_dir: Path) -> list[Path]:
    """Delete build folders left in ``out_dir`` by exports that were killed.

    Only provably stale ones: made on this host by a process that no longer runs (POSIX only;
    a folder of a live export, of another host, or of unknown origin is kept and reported).
    Returns the folders removed.
    """
    removed = []
    host = _build_prefix()[len(_BUILD_PREFIX):].rsplit("-", 2)[0]
    for d in sorted(out_dir.glob(_BUILD_PREFIX + "*")):
        rest = d.name[len(_BUILD_PREFIX):].rsplit("-", 2)
        if (os.name == "posix" and d.is_dir() and len(rest) == 3 and rest[0] == host and rest[1].isdigit()
                and not _alive(int(rest[1]))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            log.info("removed %s, left by an export that was killed", d)
        else:
            log.warning("%s: left by another export (still running, another host, or an older version); "
                        "delete it by hand if no export is running", d)
    return removed


@contextmanager
def _build_folder(out_dir: Path) -> Iterator[Path]:
    """A fresh hidden build folder in ``out_dir`` (same file system: the final swap is a rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out_dir)
    build = Path(tempfile.mkdtemp(prefix=_build_prefix(), dir=out_dir))
    try:
        yield build
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _swap_into_place(build: Path, out_dir: Path, force: bool) -> Path:
    """Move the tested package from ``build`` onto ``out_dir`` (the old one goes into ``build``)."""
    _check_target(out_dir, force, None)  # nothing appeared meanwhile
    target_rdf, target_pkg = out_dir / "rdf.yaml", out_dir / PACKAGE_DIR
    old = build / ".old"
    old.mkdir()
    if target_pkg.exists():
        os.replace(target_pkg, old / PACKAGE_DIR)
    os.replace(build / PACKAGE_DIR, target_pkg)
    os.replace(build / "rdf.yaml", target_rdf)
    return target_rdf


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


def _run_bioimageio_test(rdf: Path) -> None:
    from bioimageio.core import test_model

    summary = test_model(rdf)
    if summary.status != "passed":
        raise ExportError(f"bioimageio.core test_model failed for the new package; nothing was written:\n"
                          f"{format_summary(summary)}")
    log.info("bioimageio.core test_model: %s", summary.status)


def export_package(checkpoint: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                   force: bool = False, zip_path: str | os.PathLike | None = None,
                   input_kind: str = "channels", run_test: bool = True, name: str | None = None,
                   authors: Sequence[dict] | None = None, timestamp: str | None = None,
                   test_seed: int = TEST_SEED, progress: bool | None = None) -> Path:
    """Export ``checkpoint`` as a BioImage Model Zoo package; returns the path of ``rdf.yaml``.

    Args:
        checkpoint: state dict file (anything :func:`rosette_bmz.load_checkpoint` reads).
        out_dir: folder for ``rdf.yaml`` + ``model_package/`` (default: the current directory).
        force: replace an existing package (otherwise ``FileExistsError``).
        zip_path: also write the package as a zip archive here.
        input_kind: ``channels`` (the published 2-channel input), ``outlines`` or ``labels``
            (1-channel models that build the 2 channels inside the graph).
        run_test: run ``bioimageio.core.test_model`` before moving the package into place.
        name, authors, timestamp: rdf metadata (authors as ``[{"name": ..., "affiliation": ...}]``,
            never ``github_user``); the timestamp defaults to the checkpoint sidecar's, then
            ``SOURCE_DATE_EPOCH``, then a fixed date, so that re-exports are byte-identical.
        test_seed: seed of the synthetic test image.
        progress: show a progress bar (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    variant = variant_for(input_kind)
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir) if out_dir is not None else Path.cwd()
    zip_path = Path(zip_path) if zip_path is not None else None
    _check_target(out_dir, force, zip_path)

    m = _load(checkpoint, variant)
    synthetic = docs.trained_on_synthetic(m.metadata)
    title = name or "Nematostella epithelial rosette detector (Attention U-Net)"
    description = _describe(m, synthetic)
    bar = tqdm(total=7 if run_test else 6, desc=f"export {checkpoint.name}", unit="step",
               disable=None if progress is None else not progress)

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update(1)

    try:
        bar.set_postfix_str("test image")
        data, test_output = _test_case(m, test_seed)
        with _build_folder(out_dir) as build:
            (build / PACKAGE_DIR).mkdir()
            files = {role: build / PACKAGE_DIR / fname for role, fname in _FILES.items()}
            _write_weights(m, files, data, step)
            step("files")
            _write_files(m, files, data, test_output, title, description, synthetic)
            import torch

            from ..checkpoint import calibration_threshold_of

            rdf = build_rdf(root=build, files=files, variant=variant, kwargs=m.arch_kwargs, name=title,
                            description=description, authors=list(authors or DEFAULT_AUTHORS),
                            timestamp=timestamp_for(m.metadata, timestamp),
                            torch_version=torch.__version__.split("+")[0], out_channels=m.kwargs["out_channels"],
                            calibration=calibration_threshold_of(m.metadata))
            rdf_tmp = write_rdf_yaml(rdf, build / "rdf.yaml")
            for f in [rdf_tmp, *(build / PACKAGE_DIR).iterdir()]:
                f.chmod(0o644)
            step("validation")
            validate_rdf(rdf_tmp)
            if run_test:
                step("bioimageio.core test_model")
                _run_bioimageio_test(rdf_tmp)
            target_rdf = _swap_into_place(build, out_dir, force)
            step("done")
    finally:
        bar.close()
    if zip_path is not None:
        _write_zip(target_rdf, zip_path)
    log.info("wrote %s (+ %s/)", target_rdf, target_rdf.parent / PACKAGE_DIR)
    return target_rdf

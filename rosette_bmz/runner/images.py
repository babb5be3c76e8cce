"""Predicting image files: folders in, probability maps + rosette proposals out.

Each input ``<stem>`` gets ``<stem>_prob.tif`` (float32), ``<stem>_rosettes.tif`` (uint32,
one number per proposal), ``<stem>_rosettes.csv`` (+ ``<stem>_overlay.png``), all written
under temporary names and renamed only when every one is complete
(:func:`rosette_bmz.files.atomic_paths`).

Images larger than ``stream_pixels`` (default 4096^2) are streamed: the file is
memory-mapped (NPY, uncompressed TIFF; a compressed single-image TIFF is first decoded
strip by strip into a scratch file), checked strip by strip with the same validators as an
image in memory (:func:`rosette_bmz.inputs.check_values`), the 2-channel input is built per
tile (:class:`~rosette_bmz.runner.sources.RawSource`) and the probability TIFF is written
into a memory-mapped output file, so memory grows with the tile, not the image.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..constants import (IMAGE_SUFFIXES, INPUT_KINDS, MIN_PROPOSAL_SIZE, SUMMARY_CSV, SUMMARY_SUFFIX, THRESHOLD,
                         ZARR_SUFFIX)
from ..errors import InputError, ModelError, OutputError
from ..files import atomic_paths, temp_name
from ..inputs import build_input, check_size, check_values, is_zarr, open_zarr, read_image, squeeze
from ..proposals import find_proposals, release, write_csv, write_overlay, write_tiff
from .engine import Predictor, load_predictor, predict_array, predict_source
from .sources import ArraySource, RawSource
from .tiling import ACTIVATION_BUDGET

log = logging.getLogger(__name__)

__all__ = ["FileResult", "FolderRun", "collect_inputs", "map_lazily", "open_lazy", "predict_file",
           "predict_file_safely", "failed_result", "predict_files", "image_stem", "STREAM_PIXELS", "OUTPUT_SUFFIXES"]

#: Images with more pixels than this are streamed from disk (memory O(tile)).
STREAM_PIXELS = 4096 * 4096
OUTPUT_SUFFIXES = ("_prob.tif", "_rosettes.tif", "_rosettes.csv", "_overlay.png", "_prob.ome.zarr")


def image_stem(path: str | os.PathLike) -> str:
    """The name outputs are named after: the file name without its suffix (``.ome.zarr`` / ``.zarr`` whole)."""
    path = Path(path)
    name = path.name
    for suffix in (".ome" + ZARR_SUFFIX, ZARR_SUFFIX):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return path.stem


@dataclass
class FileResult:
    """What happened to one input file."""

    path: Path
    ok: bool
    outputs: dict[str, Path] = field(default_factory=dict)
    n_proposals: int = 0
    shape: tuple[int, ...] = ()
    streamed: bool = False
    seconds: float = 0.0
    error: str = ""
    #: the image's rosette summary (:func:`rosette_bmz.quantities.image_summary`), when computed
    summary: dict | None = None


def collect_inputs(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike | None = None
                   ) -> tuple[list[Path], list[FileResult]]:
    """Expand files and folders (sorted, matching suffixes); missing inputs become failures."""
    files: list[Path] = []
    failed: list[FileResult] = []
    out_dir = Path(out_dir).resolve() if out_dir is not None else None
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not is_zarr(p):
            found = sorted(f for f in p.iterdir() if not f.name.startswith(".")
                           and ((f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(f))
                           and not (out_dir is not None and p.resolve() == out_dir
                                    and f.name.endswith(OUTPUT_SUFFIXES)))
            if not found:
                failed.append(FileResult(p, False, error=f"{p}: folder holds no {'/'.join(IMAGE_SUFFIXES)} files"))
            files.extend(found)
        elif p.is_file() or is_zarr(p):
            files.append(p)
        else:
            failed.append(FileResult(p, False, error=f"{p}: no such file or folder"))
    seen: dict[str, Path] = {}
    unique: list[Path] = []
    for f in files:
        stem = image_stem(f)
        if stem in seen:
            failed.append(FileResult(f, False, error=f"{f}: same name stem as {seen[stem]}; its outputs "
                                                       "would overwrite each other (rename one)"))
            continue
        seen[stem] = f
        unique.append(f)
    return unique, failed


def map_lazily(path: Path) -> Any:
    """A zarr / OME-Zarr store opened lazily, or an NPY / TIFF memory-mapped; ``ValueError`` (from
    tifffile) for a TIFF that cannot be mapped (compressed or not contiguous)."""
    if is_zarr(path):
        return open_zarr(path)
    if path.suffix.lower() == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    import tifffile

    return tifffile.memmap(path, mode="r")


def open_lazy(path: Path, stream_pixels: int, scratch: Path) -> Any:
    """A memory-mapped view of an NPY or TIFF, a lazily read zarr store, or None (then the file is read whole).

    Uncompressed TIFFs are mapped directly; a zarr / OME-Zarr store is opened lazily
    (:func:`~rosette_bmz.inputs.open_zarr`: a slice reads only the chunks it touches). A
    compressed single-image TIFF larger than ``stream_pixels`` is decoded strip by strip (or
    tile by tile) into the uncompressed ``scratch`` file, which is then mapped: memory
    O(strip), disk O(image).
    """
    suffix = path.suffix.lower()
    if is_zarr(path):
        return open_zarr(path)
    try:
        if suffix == ".npy":
            return map_lazily(path)
        if suffix in (".tif", ".tiff"):
            import tifffile

            try:
                return map_lazily(path)
            except ValueError:  # compressed or not contiguous
                pass
            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                if len(tf.pages) != 1 or len(page.shape) != 2 or page.shape[0] * page.shape[1] <= stream_pixels:
                    return None
                H, W = page.shape
                out = np.lib.format.open_memmap(scratch, mode="w+", dtype=page.dtype, shape=(H, W))
                for seg, idx, shape in page.segments():
                    if seg is None:
                        continue
                    y, x = idx[-3], idx[-2]
                    h, w = min(shape[-3], H - y), min(shape[-2], W - x)
                    out[y:y + h, x:x + w] = np.asarray(seg).reshape(shape[-3], shape[-2])[:h, :w]
                out.flush()
                log.info("%s: compressed TIFF decoded into %s for streaming", path, scratch)
                return out
    except Exception as exc:  # odd NPY / TIFF: read it whole instead (errors are reported there)
        log.info("%s: cannot memory-map (%s); reading it whole", path, exc)
    return None


def check_options(quantities: bool, check: bool) -> None:
    """Refuse the vertex check without the rosette quantities it reads (one message for every caller)."""
    if check and not quantities:
        raise InputError("the vertex check (--check) reads the rosette quantities' vertex graph: "
                         "it cannot run with --no-quantities (quantities=False)")


def predict_file(path: str | os.PathLike, predictor: Predictor, input_kind: str, out_dir: str | os.PathLike, *,
                 mode: str = "halo", tile: int | None = None, batch: int | None = None, threshold: float = THRESHOLD,
                 min_size: int = MIN_PROPOSAL_SIZE, overlay: bool = False, progress: bool | Any = False,
                 stream_pixels: int = STREAM_PIXELS, quantities: bool = True,
                 pixel_size: float | None = None, tta: bool = False, check: bool = False) -> FileResult:
    """Predict one file and write ``<stem>_prob.tif``, ``_rosettes.tif``, ``_rosettes.csv`` (+ overlay).

    With ``quantities`` (images held in memory), each proposal also gets its topology
    (``k``, ``kind``, cells; :mod:`rosette_bmz.quantities`) in the CSV, and the image a
    ``<stem>_summary.json`` (``pixel_size`` in µm/px adds rosettes per 1000 µm²). All outputs
    are written under temporary names and renamed only when every one of them is complete,
    so a failure leaves nothing half-written. ``tta``: average the 8 rotations / flips
    (:func:`~rosette_bmz.runner.engine.predict_tta`; images held in memory only). ``check``: the
    rosettes written are the proposals checked against the vertex graph
    (:func:`rosette_bmz.quantities.check_proposals`; needs ``quantities``), with a ``source``
    column in the CSV; the probability map stays the network's.
    """
    import tifffile

    if input_kind not in INPUT_KINDS:
        raise InputError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    check_options(quantities, check)
    t0 = time.perf_counter()
    path = Path(path)
    name = str(path)
    out_dir = Path(out_dir)
    stem = image_stem(path)
    scratch = temp_name(out_dir / f"{stem}_decoded.npy")
    lazy = arr = source = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lazy = (None if predictor.backend.whole_image or not (path.is_file() or is_zarr(path))
                else open_lazy(path, stream_pixels, scratch))
        streamed = False
        if lazy is not None:
            arr = squeeze(lazy, input_kind, name)
            check_size(arr.shape, name)
            streamed = arr.shape[-2] * arr.shape[-1] > stream_pixels
        if streamed and quantities:
            log.info("%s: streamed from disk; rosette quantities need the whole image and are skipped", path)
        if streamed and tta:
            log.warning("%s: streamed from disk; test-time augmentation needs the whole image and is skipped", path)
        if check and streamed:
            log.warning("%s: streamed from disk; the vertex check needs the whole image and is skipped", path)
        quantities = quantities and not streamed
        finals = {"prob": out_dir / f"{stem}_prob.tif", "labels": out_dir / f"{stem}_rosettes.tif",
                  "csv": out_dir / f"{stem}_rosettes.csv"}
        if overlay:
            finals["overlay"] = out_dir / f"{stem}_overlay.png"
        if quantities:
            finals["summary"] = out_dir / f"{stem}{SUMMARY_SUFFIX}"
        summary = None
        with atomic_paths(finals) as tmps:
            x = None
            if streamed:
                H, W = arr.shape[-2], arr.shape[-1]
                check_values(arr, input_kind, name)
                source = ArraySource(arr) if input_kind == "channels" else RawSource(arr, input_kind)
                prob = tifffile.memmap(tmps["prob"], shape=(H, W), dtype=np.float32, photometric="minisblack")
                predict_source(source, predictor, mode, tile, batch, progress, prob, desc=path.name,
                               budget=predictor.budget or ACTIVATION_BUDGET)
                release(prob)
                labels_out = tifffile.memmap(tmps["labels"], shape=(H, W), dtype=np.uint32,
                                             photometric="minisblack")
                labels, rows = find_proposals(prob, threshold, min_size, out=labels_out)
                labels.flush()
            else:
                raw = read_image(path)
                x = build_input(raw, input_kind, name=name)
                check_size(x.shape, name)
                H, W = x.shape[-2:]
                prob = predict_array(x, predictor, mode, tile, batch, progress, None, desc=path.name, tta=tta)
                labels, rows = find_proposals(prob, threshold, min_size)
                write_tiff(tmps["prob"], prob)
            if quantities:
                from ..quantities import (cells_for, check_proposals, describe_proposals, image_summary,
                                          write_rosette_csv)
                from ..summary import write_image_summary

                cells = cells_for(raw, input_kind, name=name)
                rows = describe_proposals(labels, rows, cells)
                if check:
                    labels, rows = check_proposals(labels, rows, cells, prob)
                summary = image_summary(cells, rows, pixel_size, name=stem, checked=check)
                write_rosette_csv(tmps["csv"], rows)
                write_image_summary(tmps["summary"], summary)
            else:
                write_csv(tmps["csv"], rows)
            if not streamed:
                write_tiff(tmps["labels"], labels)
            if overlay:
                write_overlay(tmps["overlay"], labels, prob, background=None if x is None else x[1])
            del prob, labels
        return FileResult(path, True, outputs=dict(finals), n_proposals=len(rows), shape=(int(H), int(W)),
                          streamed=streamed, seconds=time.perf_counter() - t0, summary=summary)
    finally:
        lazy = arr = source = None
        scratch.unlink(missing_ok=True)


#: What the steps after the network import (proposals; quantities), fetched in the background.
_AFTER_NETWORK = ("scipy.ndimage",)
_AFTER_NETWORK_QUANTITIES = ("rosette_bmz.quantities", "skimage.morphology", "scipy.spatial", "scipy.sparse.csgraph")
#: The progress bars' library (tqdm pulls in importlib.metadata and asyncio: 0.1 s on a slow start).
_PROGRESS = ("tqdm.auto",)


def prefetch_imports(quantities: bool = True, names: tuple[str, ...] | None = None) -> threading.Thread:
    """Import what proposals (and quantities) need in a background thread, while the network runs.

    scipy's import costs a few tenths of a second of one core before the first pixel is
    labelled; onnxruntime and torch release the GIL while they compute, so the import overlaps
    the first image's inference instead of following it. Call it after the model is loaded
    (its imports are done by then; concurrent imports of one module only wait on each other).
    ``names``: import these instead (e.g. the progress bar's library while the model loads).
    """
    import importlib

    if names is None:
        names = _AFTER_NETWORK + (_AFTER_NETWORK_QUANTITIES if quantities else ())

    def fetch() -> None:
        for n in names:
            try:
                importlib.import_module(n)
            except Exception:  # pragma: no cover - the real import later reports the problem
                log.debug("prefetch of %s failed", n, exc_info=True)

    t = threading.Thread(target=fetch, name="rosette-bmz-prefetch", daemon=True)
    t.start()
    return t


def predict_file_safely(path: str | os.PathLike, predictor: Predictor, input_kind: str, out_dir: str | os.PathLike,
                        **kwargs: Any) -> FileResult:
    """:func:`predict_file`, with any failure but a broken model turned into a failed :class:`FileResult`.

    The one per-file error handling of a folder run (here and on dask workers,
    :mod:`rosette_bmz.distributed`): one bad file must not stop the others; its error names
    the file. A :class:`ModelError` (the model itself is broken) is raised.
    """
    f = Path(path)
    try:
        r = predict_file(f, predictor, input_kind, out_dir, **kwargs)
        log.info("%s: %d proposal(s) in %.2f s", f, r.n_proposals, r.seconds)
        return r
    except ModelError:
        raise
    except Exception as exc:  # one bad file must not stop a folder run
        return failed_result(f, exc)


def failed_result(path: Path, exc: BaseException) -> FileResult:
    """A failed :class:`FileResult` whose one-line error names ``path`` (user errors keep their message)."""
    if isinstance(exc, InputError):
        msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    else:
        msg = f"{path}: {type(exc).__name__}: {exc}"
    log.debug("failed on %s", path, exc_info=exc)
    return FileResult(path, False, error=msg)


class FolderRun:
    """The bookkeeping every run over files shares (single process or dask).

    Checks the output folder up front (:class:`OutputError` if it is a file), expands the
    inputs (:func:`collect_inputs`), reports each result once (to ``on_result``, else failures
    to the log), removes the output folder again if it was new and stayed empty (:meth:`close`),
    and writes the folder's ``summary.csv`` from every ``*_summary.json`` in it (:meth:`finish`).
    """

    def __init__(self, inputs: Iterable[str | os.PathLike] | str | os.PathLike, out_dir: str | os.PathLike,
                 on_result: Callable[[FileResult], None] | None = None) -> None:
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        self.out = Path(out_dir)
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"output folder {self.out}: exists and is not a folder")
        self.new_out = not self.out.exists()
        self.files, self.failed = collect_inputs(inputs, out_dir)
        self.results: list[FileResult] = []
        self.on_result = on_result
        self.bar: Any = None
        for r in self.failed:
            self.report(r)

    def show_progress(self, enabled: bool, total: int) -> None:
        """A progress bar over ``total`` images (only when ``enabled`` and there is more than one)."""
        if enabled and total > 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="images", unit="image", dynamic_ncols=True, file=sys.stderr)

    def report(self, r: FileResult, tick: bool = False) -> None:
        """Record ``r`` and report it once; ``tick`` advances the progress bar."""
        self.results.append(r)
        if self.on_result:
            self.on_result(r)
        elif not r.ok:
            log.error("%s", r.error)
        if tick and self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        """Close the progress bar; remove the output folder if this run made it and it stayed empty."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.new_out and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def finish(self) -> list[FileResult]:
        if any(r.ok and r.summary for r in self.results):   # every summary in the folder, earlier runs too
            from ..summary import find_image_summaries, read_image_summary, write_summary_csv

            write_summary_csv(self.out / SUMMARY_CSV, [read_image_summary(p) for p in find_image_summaries(self.out)])
        return self.results


def predict_files(inputs: Iterable[str | os.PathLike] | str | os.PathLike, model: Any, backend: str = "onnx",
                  input_kind: str = "outlines", out_dir: str | os.PathLike = "predictions", *, mode: str = "halo",
                  tile: int | None = None, batch: int | None = None, threads: int | None = None,
                  threshold: float = THRESHOLD, min_size: int = MIN_PROPOSAL_SIZE, overlay: bool = False,
                  progress: bool = False, stream_pixels: int = STREAM_PIXELS, quantities: bool = True,
                  pixel_size: float | None = None, tta: bool = False, check: bool = False,
                  on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Predict every image in ``inputs`` (files and/or folders) into ``out_dir``.

    ``model``: an rdf.yaml / checkpoint / module, or a :class:`Predictor` (reused). A bad
    file is recorded as a failed :class:`FileResult` (its error names the file) and the
    other files still run; each failure is logged, or handed to ``on_result`` when given (so
    it is reported once). A model that turns out broken (:class:`ModelError`) stops the run.
    ``out_dir`` is created when needed and removed again if it was new and stayed empty.
    With ``quantities``, ``out_dir/summary.csv`` gets one row per ``*_summary.json`` in ``out_dir``.
    ``tta``, ``check`` and the rest: as :func:`predict_file`. Returns one result per input file, in order.
    """
    check_options(quantities, check)
    run = FolderRun(inputs, out_dir, on_result)
    files, report = run.files, run.report
    owned = not isinstance(model, Predictor)
    if files and progress and owned:
        prefetch_imports(names=_PROGRESS)    # while onnxruntime builds its session
    predictor = load_predictor(model, backend, threads) if owned else model
    if files:
        prefetch_imports(quantities)
    run.show_progress(progress, len(files))
    try:
        for f in files:
            r = predict_file_safely(f, predictor, input_kind, out_dir, mode=mode, tile=tile, batch=batch,
                                    threshold=threshold, min_size=min_size, overlay=overlay, progress=progress,
                                    stream_pixels=stream_pixels, quantities=quantities, pixel_size=pixel_size,
                                    tta=tta, check=check)
            report(r, tick=True)
    finally:
        if owned:
            predictor.close()
        run.close()
    return run.finish()

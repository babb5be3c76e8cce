"""The runner on dask.distributed: thousands of images, and images of 20k x 20k px.

The same code runs on a laptop (``local:N``: a :class:`distributed.LocalCluster` of N worker
processes on 127.0.0.1) and on a cluster (``tcp://HOST:PORT``: the scheduler of any dask
cluster, e.g. one started by dask-jobqueue on SLURM/PBS or by dask-kubernetes; see
docs/dask.md). Nothing here is a second runner: every pixel goes through
:func:`rosette_bmz.runner.engine.predict_source` and the backends, every file through the
same atomic writers, every error through the same per-file handling.

Workers
    Each worker process loads the model once, from its path (an onnxruntime session cannot
    be pickled), on its first task (:func:`worker_predictor`), with intra-op threads = its
    share of the cores of its machine (cores / worker threads on that machine), so N
    workers on N cores do not oversubscribe them. ``threads`` overrides the share.

A folder (or many files)
    One task per image: :func:`rosette_bmz.runner.images.predict_file_safely` on a worker,
    so the outputs (TIFFs, CSV with the rosette quantities, ``<stem>_summary.json``) are those
    of the single-process runner, written by the worker under temporary names and renamed when
    complete; a bad image gives one error line and the rest completes. A worker that dies
    mid-run loses its tasks to the others (dask reschedules them); the temporary files a
    killed task leaves behind are removed at the end.

A large image (more than ``stream_pixels``, default 4096^2)
    Cut into chunks of ``chunk`` px (default 1024, on the 16 px grid). Each chunk task reads
    its window -- the chunk plus 112 px of context on every side, clipped to the image padded
    as the single-process runner pads it (zeros at the bottom/right up to a multiple of 16 by
    default; mirror padding of the package's halo on every side when asked), starting on the
    16 px grid -- predicts it with the runner and keeps the chunk: the same numbers as one
    whole-image pass, like the runner's halo mode (docs/tiling.md). The probability goes into
    an OME-Zarr store (NGFF 0.4, ``<stem>_prob.ome.zarr``, chunks = ``chunk``, with a
    pyramid) that napari opens lazily; the proposal labels go into its ``labels/rosettes``.

    Proposals are labelled per chunk (8-connected), the components touching across chunk
    borders (diagonals included) are joined on the client, and the joined components are
    numbered in raster order of their first pixel, dropping those under ``min_size`` -- the
    order :func:`rosette_bmz.proposals.find_proposals` gives, so the CSV is identical to a
    single-process run. The statistics are sums over the same pixels; areas and centroids are
    sums of integers and the probability sums are exact in float64 (all values above the
    threshold are multiples of 2^-24 for thresholds >= 0.5, and of 2^-27 for >= 0.0625), so
    the order the chunks are added in changes nothing. Rosette quantities need the whole cell
    graph and are skipped, as for an image the single-process runner streams.

    Memory per worker is bounded by the chunk, not the image: the window's input and
    probability (2 x 4 + 4 bytes per window pixel), the chunk's labels, and the activations of
    one forward pass, which the runner keeps under its streaming budget
    (:data:`~rosette_bmz.runner.tiling.ACTIVATION_BUDGET`); benchmarks/results/dask.md
    gives the measured peak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .constants import DASK_CHUNK, DEFAULT_HALO, DIVISOR, INPUT_KINDS, MIN_PROPOSAL_SIZE, THRESHOLD
from .errors import ClusterError, InputError, ModelError, OutputError
from .files import atomic_paths, temp_name
from .inputs import check_size, check_values, is_zarr, open_zarr, squeeze
from .proposals import component_sums, label_components, write_csv
from .runner.engine import Predictor, load_predictor, predict_source
from .runner.images import (STREAM_PIXELS, FileResult, FolderRun, check_options, failed_result, image_stem,
                            map_lazily, open_lazy, predict_file_safely)
from .runner.models import default_threads
from .runner.sources import ArraySource, RawSource
from .runner.tiling import ACTIVATION_BUDGET

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK", "ZARR_OUTPUT_SUFFIX", "ModelSpec", "Chunk", "connect", "local_cluster_options",
           "chunk_windows",
           "worker_predictor", "predict_files_dask", "predict_image_dask", "read_zarr_prob", "read_zarr_labels"]

#: Side of a chunk of a large image (px, a multiple of 16) and of the output store's zarr chunks.
DEFAULT_CHUNK = DASK_CHUNK
#: The store a large image's probability (and its ``labels/rosettes``) is written into.
ZARR_OUTPUT_SUFFIX = "_prob.ome.zarr"
#: Pyramid levels of the output store stop once the longer side is at most this.
_PYRAMID_MIN_SIDE = 1024


# ----------------------------------------------------------------------------- the cluster

def _check_args(input_kind: str, chunk: int) -> None:
    if input_kind not in INPUT_KINDS:
        raise InputError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    if chunk % DIVISOR or chunk < 64:
        raise InputError(f"chunk {chunk}: must be a multiple of {DIVISOR} and at least 64")

def _dask():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--dask needs dask.distributed and zarr: pip install 'rosette-bmz[dask]'") from None
    return distributed


@contextlib.contextmanager
def connect(spec: Any) -> Iterator[Any]:
    """A :class:`distributed.Client` for ``spec``, closed (with its cluster, if started here) on exit.

    ``spec``: ``"local"`` / ``"local:N"`` (a LocalCluster of N single-threaded worker processes
    on 127.0.0.1 only; N defaults to the cores), ``"tcp://HOST:PORT"`` (a running scheduler),
    or an existing Client (used as is, not closed).
    """
    distributed = _dask()
    if isinstance(spec, distributed.Client):
        yield spec
        return
    text = str(spec).strip()
    cluster = None
    try:
        if text == "local" or text.startswith("local:"):
            n = text.partition(":")[2]
            try:
                workers = int(n) if n else default_threads()
            except ValueError:
                raise ClusterError(f"--dask {text}: expected local:N with N a number of workers") from None
            if workers < 1:
                raise ClusterError(f"--dask {text}: at least one worker")
            cluster = distributed.LocalCluster(**local_cluster_options(workers))
            client = distributed.Client(cluster)
        elif "://" in text:
            try:
                client = distributed.Client(text, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"--dask {text}: cannot reach the dask scheduler ({exc})") from None
        else:
            raise ClusterError(f"--dask {text!r}: use local:N or tcp://HOST:PORT (a dask scheduler)")
    except Exception:
        if cluster is not None:
            cluster.close()
        raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def local_cluster_options(workers: int) -> dict:
    """:class:`distributed.LocalCluster` settings of ``local:N``: N single-threaded worker processes,
    every socket (scheduler, workers, nannies, their HTTP servers) on 127.0.0.1 at a free port."""
    return dict(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)


def _host(address: str) -> str:
    from urllib.parse import urlparse

    return urlparse(address).hostname or address


def _thread_shares(client: Any) -> tuple[tuple[str, int], ...]:
    """Intra-op threads per task on each machine: its cores / the worker threads running there."""
    info = client.scheduler_info(n_workers=-1)["workers"] if _accepts_n_workers(client) \
        else client.scheduler_info()["workers"]
    if not info:
        raise ClusterError("the dask cluster has no workers")
    cores = client.run(default_threads)
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for addr, w in info.items():
        h = _host(addr)
        slots[h] = slots.get(h, 0) + int(w.get("nthreads", 1))
        host_cores[h] = max(host_cores.get(h, 1), int(cores.get(addr, 1)))
    return tuple(sorted((h, max(1, host_cores[h] // slots[h])) for h in slots))


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


# ----------------------------------------------------------------------------- the model on the workers
@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model itself: a path and the runner's settings (picklable)."""

    model: str
    backend: str = "onnx"
    threads: int | None = None                  # intra-op threads; None = the worker's share
    shares: tuple[tuple[str, int], ...] = ()    # (host, threads) from :func:`_thread_shares`
    pad: str | None = None
    tile: int | None = None
    context: int | None = None
    border: int | None = None

    def threads_here(self, address: str | None) -> int:
        if self.threads:
            return self.threads
        share = dict(self.shares).get(_host(address)) if address else None
        return share or default_threads()


_PREDICTORS: dict[tuple[ModelSpec, int], Predictor] = {}
_LOCK = threading.Lock()


def worker_predictor(spec: ModelSpec) -> Predictor:
    """The model of ``spec`` in this process, loaded on first use and kept (one per worker)."""
    address = None
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        address = get_worker().address
    threads = spec.threads_here(address)
    with _LOCK:
        pred = _PREDICTORS.get((spec, threads))
        if pred is None:
            pred = load_predictor(spec.model, spec.backend, threads, pad=spec.pad, tile=spec.tile,
                                  context=spec.context, border=spec.border)
            _PREDICTORS[(spec, threads)] = pred
            log.info("worker %s: loaded %s (%s, %d intra-op threads)", address, spec.model, spec.backend, threads)
        return pred


def _model_path(model: Any, threads: int | None) -> str:
    """The model's absolute path, checked before any cluster is started."""
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError("the dask runner loads the model on every worker from its file: give the path of an "
                         "rdf.yaml, a package folder or a checkpoint, not a loaded model")
    path = Path(model)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or package folder")
    if threads is not None and threads < 1:
        raise ModelError(f"threads must be at least 1, got {threads}")
    return str(path.resolve())


def _model_spec(model: Any, backend: str, client: Any, threads: int | None, pad: str | None, tile: int | None,
                context: int | None, border: int | None) -> ModelSpec:
    return ModelSpec(_model_path(model, threads), backend, threads, _thread_shares(client), pad, tile, context,
                     border)


# ----------------------------------------------------------------------------- chunk geometry
@dataclass(frozen=True)
class Chunk:
    """One chunk of a large image: its core ``[y0, y1) x [x0, x1)`` in image coordinates, and the
    window ``[wy0, wy1) x [wx0, wx1)`` predicted for it, in coordinates of the padded image."""

    i: int
    j: int
    y0: int
    y1: int
    x0: int
    x1: int
    wy0: int
    wy1: int
    wx0: int
    wx1: int


def _ceil16(n: int) -> int:
    return -(-n // DIVISOR) * DIVISOR


def chunk_windows(H: int, W: int, chunk: int = DEFAULT_CHUNK, border: int = 0,
                  context: int = DEFAULT_HALO) -> list[Chunk]:
    """Chunks of ``chunk`` px covering ``H x W`` and their windows (row by row).

    The padded image is the single-process runner's: ``border`` px on every side, then up to
    a multiple of 16 at the bottom/right (:func:`~rosette_bmz.runner.tiling.pad_like_runner`);
    the real image starts at ``(border, border)``. Each window starts on the 16 px grid at
    least ``context`` px before the core (or at the padded image's top/left edge) and ends
    ``context`` px or more after it (or at its bottom/right edge), so its core is what one
    pass over the whole padded image gives.
    """
    if chunk % DIVISOR or chunk < DIVISOR:
        raise ValueError(f"chunk ({chunk}) must be a positive multiple of {DIVISOR}")
    Hp, Wp = _ceil16(H + 2 * border), _ceil16(W + 2 * border)
    out = []
    for i, y0 in enumerate(range(0, H, chunk)):
        y1 = min(H, y0 + chunk)
        for j, x0 in enumerate(range(0, W, chunk)):
            x1 = min(W, x0 + chunk)
            out.append(Chunk(i, j, y0, y1, x0, x1,
                             max(0, (y0 + border - context) // DIVISOR * DIVISOR),
                             min(Hp, _ceil16(y1 + border + context)),
                             max(0, (x0 + border - context) // DIVISOR * DIVISOR),
                             min(Wp, _ceil16(x1 + border + context))))
    return out


# ----------------------------------------------------------------------------- worker tasks
def _file_task(path: str, spec: ModelSpec, input_kind: str, out_dir: str, kwargs: dict) -> FileResult:
    return predict_file_safely(path, worker_predictor(spec), input_kind, out_dir, **kwargs)


def _geometry_task(spec: ModelSpec) -> dict:
    pred = worker_predictor(spec)
    return {"pad": pred.pad_mode, "border": pred.border_for(pred.pad_mode), "context": pred.context,
            "whole_image": bool(pred.backend.whole_image), "name": pred.name}


_SOURCES: dict[tuple[str, str, int], Any] = {}


def _open_image(path: str, input_kind: str, name: str) -> Any:
    """The image at ``path`` read lazily (zarr, memory-mapped NPY or uncompressed TIFF), squeezed to
    (H, W) or (2, H, W). The client has already decoded a compressed TIFF into an NPY."""
    return squeeze(map_lazily(Path(path)), input_kind, name)


def _source(path: str, input_kind: str, name: str):
    key = (path, input_kind, os.stat(path).st_mtime_ns)
    with _LOCK:
        src = _SOURCES.get(key)
        if src is None:
            arr = _open_image(path, input_kind, name)
            src = ArraySource(arr) if input_kind == "channels" else RawSource(arr, input_kind)
            _SOURCES.clear()       # one large image at a time: keep only the current one open
            _SOURCES[key] = src
        return src


def _chunk_task(spec: ModelSpec, image: str, input_kind: str, name: str, store: str, c: Chunk, H: int, W: int,
                geometry: dict, threshold: float, batch: int | None) -> dict:
    """Predict one chunk into the store; return its components' statistics and border labels."""
    import zarr

    pred = worker_predictor(spec)
    src = _source(image, input_kind, name)
    P = geometry["border"]
    window = np.empty((src.channels, c.wy1 - c.wy0, c.wx1 - c.wx0), dtype=np.float32)
    src.fill(window, c.wy0, c.wx0, P, geometry["pad"])
    # the window is already padded (and a multiple of 16): the runner must add nothing more
    bare = dataclasses.replace(pred, border=0)
    prob = predict_source(ArraySource(window), bare, "halo", spec.tile, batch, False, None, pad="constant",
                          budget=pred.budget or ACTIVATION_BUDGET)
    del window
    core = np.ascontiguousarray(prob[c.y0 + P - c.wy0:c.y1 + P - c.wy0, c.x0 + P - c.wx0:c.x1 + P - c.wx0])
    del prob
    zarr.open_array(str(Path(store) / "0"), mode="r+")[c.y0:c.y1, c.x0:c.x1] = core
    lab, n = label_components(core > threshold)
    stats = {"n": n, "edges": (lab[0].copy(), lab[-1].copy(), lab[:, 0].copy(), lab[:, -1].copy())}
    if n:
        stats.update(component_sums(lab, core, n, c.y0, c.x0, first_width=W))
    return stats


def _relabel_task(store: str, c: Chunk, threshold: float, lut: np.ndarray) -> int:
    """Label the chunk again (deterministic, so a rerun after a lost worker gives the same) and
    write the final proposal ids."""
    import zarr

    core = zarr.open_array(str(Path(store) / "0"), mode="r")[c.y0:c.y1, c.x0:c.x1]
    lab, n = label_components(core > threshold)
    if n + 1 != lut.size:
        raise RuntimeError(f"chunk {c.i},{c.j}: {n} components on relabelling, {lut.size - 1} before")
    zarr.open_array(str(Path(store) / "labels" / "rosettes" / "0"), mode="r+")[c.y0:c.y1, c.x0:c.x1] = lut[lab]
    return n


def _downsample_task(store: str, level: int, y0: int, y1: int, x0: int, x1: int) -> None:
    """One chunk of pyramid level ``level`` from level - 1: 2 x 2 means (probability), every
    second pixel (labels); odd edges repeat the last row / column."""
    import zarr

    for group, reduce in (("", "mean"), ("labels/rosettes", "pick")):
        base = Path(store) / group if group else Path(store)
        prev = zarr.open_array(str(base / str(level - 1)), mode="r")
        h, w = prev.shape
        a = prev[2 * y0:min(h, 2 * y1), 2 * x0:min(w, 2 * x1)]
        ty, tx = 2 * (y1 - y0), 2 * (x1 - x0)
        if a.shape != (ty, tx):
            a = np.pad(a, ((0, ty - a.shape[0]), (0, tx - a.shape[1])), mode="edge")
        out = (a.reshape(ty // 2, 2, tx // 2, 2).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
               if reduce == "mean" else a[::2, ::2])
        zarr.open_array(str(base / str(level)), mode="r+")[y0:y1, x0:x1] = out


# ----------------------------------------------------------------------------- the output store
def _levels(H: int, W: int) -> list[tuple[int, int]]:
    shapes = [(H, W)]
    while max(shapes[-1]) > _PYRAMID_MIN_SIDE:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _multiscales(name: str, n_levels: int) -> list[dict]:
    return [{"version": "0.4", "name": name,
             "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
             "datasets": [{"path": str(k), "coordinateTransformations": [{"type": "scale",
                                                                          "scale": [2.0 ** k, 2.0 ** k]}]}
                          for k in range(n_levels)]}]


def _create_store(path: Path, H: int, W: int, chunk: int, name: str) -> list[tuple[int, int]]:
    """An empty OME-Zarr (NGFF 0.4) image: probability levels ``0..`` and ``labels/rosettes/0..``."""
    import zarr

    shapes = _levels(H, W)
    keys = {"name": "v2", "separator": "/"}       # NGFF 0.4: '/' between chunk indices
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    labels = root.create_group("labels")
    rosettes = labels.create_group("rosettes")
    for k, shape in enumerate(shapes):
        c = (min(chunk, shape[0]), min(chunk, shape[1]))
        root.create_array(str(k), shape=shape, chunks=c, dtype="float32", fill_value=0.0, chunk_key_encoding=keys)
        rosettes.create_array(str(k), shape=shape, chunks=c, dtype="uint32", fill_value=0, chunk_key_encoding=keys)
    root.attrs["multiscales"] = _multiscales(f"{name} rosette probability", len(shapes))
    labels.attrs["labels"] = ["rosettes"]
    rosettes.attrs.update({"multiscales": _multiscales("rosettes", len(shapes)),
                           "image-label": {"version": "0.4", "source": {"image": "../../"}}})
    return shapes


def read_zarr_prob(store: str | os.PathLike) -> np.ndarray:
    """The full-resolution probability map of an output store (read whole)."""
    return np.asarray(open_zarr(store)[...])


def read_zarr_labels(store: str | os.PathLike) -> np.ndarray:
    """The full-resolution proposal labels of an output store (read whole)."""
    return np.asarray(open_zarr(Path(store) / "labels" / "rosettes")[...])


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the finished store ``tmp`` onto ``final`` (an older one is moved aside first)."""
    old = None
    if final.exists():
        old = temp_name(final)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- joining chunk components
def _join(stats: list[dict], chunks: list[Chunk], W: int, min_size: int) -> tuple[list[dict], list[np.ndarray]]:
    """Components joined across chunk borders (8-connected), numbered as find_proposals numbers them."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets = np.cumsum([0] + [s["n"] for s in stats])
    total = int(offsets[-1])
    where = {(c.i, c.j): k for k, c in enumerate(chunks)}
    pairs_a: list[np.ndarray] = []
    pairs_b: list[np.ndarray] = []

    def link(ka: int, a: np.ndarray, kb: int, b: np.ndarray) -> None:
        """Join labels a[t] with b[t + d] for d in -1, 0, 1 (both > 0)."""
        for d in (-1, 0, 1):
            la = a[max(0, -d):len(a) - max(0, d)]
            lb = b[max(0, d):len(b) - max(0, -d)]
            m = (la > 0) & (lb > 0)
            if m.any():
                pairs_a.append(offsets[ka] + la[m].astype(np.int64) - 1)
                pairs_b.append(offsets[kb] + lb[m].astype(np.int64) - 1)

    for k, c in enumerate(chunks):
        top, bottom, left, right = stats[k]["edges"]
        below, beside = where.get((c.i + 1, c.j)), where.get((c.i, c.j + 1))
        if below is not None:
            link(k, bottom, below, stats[below]["edges"][0])
        if beside is not None:
            link(k, right, beside, stats[beside]["edges"][2])
        for dj, mine, theirs in ((1, -1, 0), (-1, 0, -1)):          # the two diagonal corners below
            kd = where.get((c.i + 1, c.j + dj))
            if kd is not None and bottom[mine] and stats[kd]["edges"][0][theirs]:
                pairs_a.append(np.array([offsets[k] + int(bottom[mine]) - 1]))
                pairs_b.append(np.array([offsets[kd] + int(stats[kd]["edges"][0][theirs]) - 1]))
    if total == 0:
        return [], [np.zeros(1, dtype=np.uint32) for _ in chunks]
    a = np.concatenate(pairs_a) if pairs_a else np.zeros(0, dtype=np.int64)
    b = np.concatenate(pairs_b) if pairs_b else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(total, total))
    n, comp = connected_components(graph, directed=False)

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate([s[key][1:] if s["n"] else np.zeros(0, dtype) for s in stats]).astype(dtype)

    area = np.bincount(comp, cat("area", np.int64), n).round().astype(np.int64)
    sum_y = np.bincount(comp, cat("sum_y", np.float64), n)
    sum_x = np.bincount(comp, cat("sum_x", np.float64), n)
    sum_p = np.bincount(comp, cat("sum_p", np.float64), n)
    max_p = np.zeros(n)
    np.maximum.at(max_p, comp, cat("max_p", np.float64))
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, comp, np.concatenate([s["first"] if s["n"] else np.zeros(0, np.int64) for s in stats]))
    keep = np.flatnonzero(area >= max(1, min_size))
    keep = keep[np.argsort(first[keep], kind="stable")]
    new_id = np.zeros(n, dtype=np.uint32)
    new_id[keep] = np.arange(1, keep.size + 1, dtype=np.uint32)
    luts = [np.concatenate([[0], new_id[comp[offsets[k]:offsets[k + 1]]]]).astype(np.uint32)
            for k in range(len(chunks))]
    rows = [{"id": int(new_id[g]), "centroid_y": float(sum_y[g] / area[g]), "centroid_x": float(sum_x[g] / area[g]),
             "area": int(area[g]), "max_prob": float(max_p[g]), "mean_prob": float(sum_p[g] / area[g])}
            for g in keep.tolist()]
    return rows, luts


# ----------------------------------------------------------------------------- one large image
def _gather(client: Any, futures: list, what: str, progress: bool) -> list:
    """Results of ``futures`` in order (a task lost with its worker is rerun by dask)."""
    from distributed import as_completed

    bar = None
    if progress:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc=what, unit="chunk", leave=False, dynamic_ncols=True, file=sys.stderr)
    try:
        for _ in as_completed(futures):
            if bar is not None:
                bar.update(1)
        return client.gather(futures)
    finally:
        if bar is not None:
            bar.close()


def _predict_large(client: Any, spec: ModelSpec, path: Path, input_kind: str, out_dir: Path, *, chunk: int,
                   threshold: float, min_size: int, batch: int | None, progress: bool, geometry: dict) -> FileResult:
    t0 = time.perf_counter()
    name, stem = str(path), image_stem(path)
    if geometry["whole_image"]:
        raise ModelError("the bioimageio backend predicts whole images; use onnx, torchscript or torch for "
                         "a chunked image on dask")
    scratch = temp_name(out_dir / f"{stem}_decoded.npy")
    final = out_dir / f"{stem}{ZARR_OUTPUT_SUFFIX}"
    store = temp_name(final)
    try:
        lazy = open_lazy(path, 0, scratch)
        if lazy is None:
            raise InputError(f"{name}: cannot be read lazily; give an NPY, an uncompressed or single-image "
                             "TIFF, or a zarr / OME-Zarr store")
        image = str(scratch) if scratch.exists() else str(path)   # a compressed TIFF, decoded once here
        arr = squeeze(lazy, input_kind, name)
        check_size(arr.shape, name)
        check_values(arr, input_kind, name)
        H, W = int(arr.shape[-2]), int(arr.shape[-1])
        del arr, lazy
        chunks = chunk_windows(H, W, chunk, geometry["border"], geometry["context"])
        shapes = _create_store(store, H, W, chunk, stem)
        futures = [client.submit(_chunk_task, spec, image, input_kind, name, str(store), c, H, W, geometry,
                                 threshold, batch, pure=False) for c in chunks]
        stats = _gather(client, futures, f"{path.name}: chunks", progress)
        rows, luts = _join(stats, chunks, W, min_size)
        del stats, futures
        futures = [client.submit(_relabel_task, str(store), c, threshold, lut, pure=False)
                   for c, lut in zip(chunks, luts)]
        _gather(client, futures, f"{path.name}: labels", progress)
        for level in range(1, len(shapes)):
            h, w = shapes[level]
            futures = [client.submit(_downsample_task, str(store), level, y0, min(h, y0 + chunk), x0,
                                     min(w, x0 + chunk), pure=False)
                       for y0 in range(0, h, chunk) for x0 in range(0, w, chunk)]
            _gather(client, futures, f"{path.name}: level {level}", progress)
        finals = {"csv": out_dir / f"{stem}_rosettes.csv"}
        with atomic_paths(finals) as tmps:
            write_csv(tmps["csv"], rows)
            _swap_in(store, final)
        return FileResult(path, True, outputs={"zarr": final, **finals}, n_proposals=len(rows), shape=(H, W),
                          streamed=True, seconds=time.perf_counter() - t0)
    finally:
        scratch.unlink(missing_ok=True)
        shutil.rmtree(store, ignore_errors=True)


def _pixels(path: Path, input_kind: str) -> int:
    """Pixels of the image at ``path`` from its header alone (0 if it cannot tell)."""
    try:
        if is_zarr(path):
            arr = open_zarr(path)
        elif path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                shape = tf.series[0].shape
            dims = [d for d in shape if d > 4]
            return int(dims[-2] * dims[-1]) if len(dims) >= 2 else 0
        else:
            return 0
        arr = squeeze(arr, input_kind, str(path))
        return int(arr.shape[-2] * arr.shape[-1])
    except Exception:  # the worker reads it and reports what is wrong
        return 0


def predict_image_dask(path: str | os.PathLike, model: Any, dask: Any = "local", backend: str = "onnx",
                       input_kind: str = "outlines", out_dir: str | os.PathLike = "predictions", *,
                       chunk: int = DEFAULT_CHUNK, threads: int | None = None, threshold: float = THRESHOLD,
                       min_size: int = MIN_PROPOSAL_SIZE, batch: int | None = None, pad: str | None = None,
                       tile: int | None = None, context: int | None = None, border: int | None = None,
                       progress: bool = False) -> FileResult:
    """One image, chunked across the cluster whatever its size (see the module doc).

    Writes ``<stem>_prob.ome.zarr`` (probability, ``labels/rosettes``, pyramid) and
    ``<stem>_rosettes.csv``. Errors are raised (a :class:`~rosette_bmz.errors.RosetteError`
    for what a user can fix).
    """
    _check_args(input_kind, chunk)
    path, out = Path(path), Path(out_dir)
    if not (path.is_file() or is_zarr(path)):
        raise InputError(f"{path}: no such file")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output folder {out}: exists and is not a folder")
    _model_path(model, threads)
    out.mkdir(parents=True, exist_ok=True)
    with connect(dask) as client:
        spec = _model_spec(model, backend, client, threads, pad, tile, context, border)
        geometry = client.submit(_geometry_task, spec, pure=False).result()
        return _predict_large(client, spec, path, input_kind, out, chunk=chunk, threshold=threshold,
                              min_size=min_size, batch=batch, progress=progress, geometry=geometry)


def _remove_orphans(out_dir: Path, paths: Iterable[Path]) -> None:
    """Temporary files of tasks that died with their worker (the rerun wrote the outputs): ``.<stem>_*.tmp``,
    and ``..<stem>_*.tmp`` where a writer (e.g. the CSV's) made its own temporary file of a temporary path."""
    import glob

    for path in paths:
        stem = glob.escape(image_stem(path))
        for orphan in [*out_dir.glob(f".{stem}_*.tmp"), *out_dir.glob(f"..{stem}_*.tmp")]:
            if orphan.is_dir():
                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)


def predict_files_dask(inputs: Iterable[str | os.PathLike] | str | os.PathLike, model: Any, dask: Any = "local",
                       backend: str = "onnx", input_kind: str = "outlines",
                       out_dir: str | os.PathLike = "predictions", *, mode: str = "halo", tile: int | None = None,
                       batch: int | None = None, threads: int | None = None, threshold: float = THRESHOLD,
                       min_size: int = MIN_PROPOSAL_SIZE, overlay: bool = False, stream_pixels: int = STREAM_PIXELS,
                       quantities: bool = True, pixel_size: float | None = None, pad: str | None = None,
                       context: int | None = None, border: int | None = None, chunk: int = DEFAULT_CHUNK,
                       progress: bool = False, tta: bool = False, check: bool = False,
                       on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """:func:`rosette_bmz.runner.predict_files` on a dask cluster: same arguments, same outputs.

    ``dask``: ``"local:N"``, ``"tcp://HOST:PORT"`` or a :class:`distributed.Client`
    (:func:`connect`). ``model`` must be a path (every worker loads it). Images up to
    ``stream_pixels`` are one task each; larger ones are chunked (``chunk`` px) across the
    cluster into ``<stem>_prob.ome.zarr`` + ``<stem>_rosettes.csv`` (halo mode only). A bad
    file is a failed :class:`FileResult` (one error line) and the others complete; a broken
    model (:class:`~rosette_bmz.errors.ModelError`) stops the run. Returns one result per
    input, in order. ``tta`` (8 rotations / flips averaged) and ``check`` (the vertex check of the
    proposals) apply to the one-task images; chunked ones are predicted once, unchecked (logged).
    """
    _check_args(input_kind, chunk)
    check_options(quantities, check)
    run = FolderRun(inputs, out_dir, on_result)
    files, failed, out, report = run.files, run.failed, run.out, run.report
    done: dict[Path, FileResult] = {}
    large: list[Path] = []
    small: list[Path] = []
    for f in files:
        (large if _pixels(f, input_kind) > stream_pixels else small).append(f)
    if large and mode != "halo":
        raise InputError(f"{large[0]}: images over {stream_pixels} px are chunked on dask in halo mode only "
                         f"(got mode {mode!r})")
    kwargs = dict(mode=mode, tile=tile, batch=batch, threshold=threshold, min_size=min_size, overlay=overlay,
                  progress=False, stream_pixels=stream_pixels, quantities=quantities, pixel_size=pixel_size, tta=tta,
                  check=check)
    if not files:
        return list(failed)
    _model_path(model, threads)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with connect(dask) as client:
            from distributed import as_completed

            spec = _model_spec(model, backend, client, threads, pad, tile, context, border)
            futures = {client.submit(_file_task, str(f), spec, input_kind, str(out), kwargs, pure=False): f
                       for f in small}
            geometry = client.submit(_geometry_task, spec, pure=False).result() if large else None
            for f in large:
                if overlay or quantities or tta or check:
                    log.info("%s: chunked on dask; overlay, rosette quantities, test-time augmentation and the "
                             "vertex check need the whole image and are skipped", f)
                try:
                    r = _predict_large(client, spec, f, input_kind, out, chunk=chunk, threshold=threshold,
                                       min_size=min_size, batch=batch, progress=progress, geometry=geometry)
                except ModelError:
                    raise
                except Exception as exc:
                    r = failed_result(f, exc)
                done[f] = r
                report(r)
            run.show_progress(progress, len(futures))
            for fut in as_completed(list(futures)):
                try:
                    r = fut.result()
                except ModelError:
                    for other in futures:
                        other.cancel()
                    raise
                except Exception as exc:  # the task itself failed (e.g. its worker died too often)
                    r = failed_result(futures[fut], exc)
                done[futures[fut]] = r
                report(r, tick=True)
    finally:
        if out.is_dir():
            _remove_orphans(out, files)
        run.close()
    run.finish()
    return list(failed) + [done[f] for f in files]

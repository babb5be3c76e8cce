"""The runner on dask.distributed equals the single-process runner (issue 15).

One LocalCluster of 2 single-threaded worker processes on 127.0.0.1 serves the module; the
demo package (rdf.yaml, base 16, onnx) is the model. Equality: probabilities within 1e-6,
labels and proposal CSVs identical, for a folder (with a worker killed mid-run and a bad
file), a 3072^2 image chunked across both workers, odd sizes with zero and mirror padding,
and zarr / OME-Zarr input.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from distributed import Client, LocalCluster

from rosette_bmz import distributed as rd
from rosette_bmz.constants import DEFAULT_HALO, DIVISOR
from rosette_bmz.runner import load_predictor, predict_file, predict_files
from rosette_bmz.synth import generate

ROOT = Path(__file__).resolve().parents[1]
RDF = ROOT / "rdf.yaml"


@pytest.fixture(scope="module")
def client():
    with LocalCluster(**rd.local_cluster_options(2)) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def predictor():
    with load_predictor(RDF, "onnx") as p:
        yield p


@pytest.fixture(scope="module")
def tissue():
    return generate(1024, seed=1, noise=0.5).outlines.astype(np.uint8)


def _image(tissue: np.ndarray, h: int, w: int) -> np.ndarray:
    """A larger outline image: the tissue repeated and shifted so its seams miss the chunk borders."""
    reps = -(-max(h, w) // tissue.shape[0])
    return np.ascontiguousarray(np.roll(np.tile(tissue, (reps, reps)), (300, 500), axis=(0, 1))[:h, :w])


def _same(single: Path, stem: str, dask_out: Path, dask_stem: str | None = None) -> float:
    """Assert the chunked outputs equal the single-process ones; return max |prob diff|."""
    dask_stem = dask_stem or stem
    store = dask_out / f"{dask_stem}_prob.ome.zarr"
    p1, p2 = tifffile.imread(single / f"{stem}_prob.tif"), rd.read_zarr_prob(store)
    diff = float(np.abs(p1 - p2).max())
    assert diff <= 1e-6, diff
    np.testing.assert_array_equal(tifffile.imread(single / f"{stem}_rosettes.tif"), rd.read_zarr_labels(store))
    assert (single / f"{stem}_rosettes.csv").read_text() == (dask_out / f"{dask_stem}_rosettes.csv").read_text()
    return diff


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("H,W,chunk,border", [(3072, 3072, 1024, 0), (700, 650, 256, 0), (1000, 333, 128, 112),
                                              (100, 90, 64, 5)])
def test_chunk_windows_cover_the_image_on_the_grid_with_context(H, W, chunk, border):
    Hp, Wp = -(-(H + 2 * border) // 16) * 16, -(-(W + 2 * border) // 16) * 16
    cover = np.zeros((H, W), dtype=int)
    for c in rd.chunk_windows(H, W, chunk, border, DEFAULT_HALO):
        cover[c.y0:c.y1, c.x0:c.x1] += 1
        for a0, a1, w0, w1, n in ((c.y0, c.y1, c.wy0, c.wy1, Hp), (c.x0, c.x1, c.wx0, c.wx1, Wp)):
            assert w0 % DIVISOR == 0 and (w1 % DIVISOR == 0) and 0 <= w0 < w1 <= n
            assert w0 == 0 or a0 + border - w0 >= DEFAULT_HALO          # context before the core
            assert w1 == n or w1 - (a1 + border) >= DEFAULT_HALO        # and after it
    assert (cover == 1).all()


# ----------------------------------------------------------------------------- a folder
def test_folder_equals_single_process_with_a_worker_killed_and_a_bad_file(client, predictor, tissue, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        np.save(folder / f"img{k}.npy", np.ascontiguousarray(np.roll(tissue, 97 * k, axis=1)[:480, :512]))
    np.save(folder / "bad.npy", np.arange(480 * 512, dtype=np.int32).reshape(480, 512))   # a label image
    single = predict_files(folder, predictor, out_dir=tmp_path / "single", pixel_size=0.134)
    assert [r.ok for r in single] == [False] + [True] * 6

    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker(r) -> None:
        if killed or not r.ok:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])

    out = tmp_path / "dask"
    res = rd.predict_files_dask(folder, RDF, client, out_dir=out, pixel_size=0.134, on_result=kill_a_busy_worker)
    assert killed, "no worker was busy to be killed"
    assert [r.path.name for r in res] == [r.path.name for r in single]
    bad = [r for r in res if not r.ok]
    assert len(bad) == 1 and bad[0].path.name == "bad.npy" and "bad.npy" in bad[0].error
    assert "\n" not in bad[0].error and bad[0].error == single[0].error
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "single").iterdir())      # nothing half-written left
    for k in range(6):
        np.testing.assert_allclose(tifffile.imread(out / f"img{k}_prob.tif"),
                                   tifffile.imread(tmp_path / "single" / f"img{k}_prob.tif"), rtol=0, atol=1e-6)
        for suffix in ("_rosettes.tif",):
            np.testing.assert_array_equal(tifffile.imread(out / f"img{k}{suffix}"),
                                          tifffile.imread(tmp_path / "single" / f"img{k}{suffix}"))
        for suffix in ("_rosettes.csv", "_summary.json"):
            assert (out / f"img{k}{suffix}").read_text() == (tmp_path / "single" / f"img{k}{suffix}").read_text()
    assert (out / "summary.csv").read_text() == (tmp_path / "single" / "summary.csv").read_text()


def _load(spec):
    pred = rd.worker_predictor(spec)
    return id(pred), pred.backend.threads, len(rd._PREDICTORS)


def test_orphans_of_a_killed_worker_are_removed_nested_temporaries_too(tmp_path):
    # a worker killed between a writer's own temporary file and its rename leaves "..<name>.tmp.<...>.tmp"
    from rosette_bmz.files import temp_name

    inner = temp_name(temp_name(tmp_path / "img1_rosettes.csv"))
    outer = temp_name(tmp_path / "img1_prob.tif")
    keep = [tmp_path / "img1_prob.tif", temp_name(tmp_path / "img10_prob.tif"), tmp_path / ".img1_notes.txt"]
    for f in [inner, outer, *keep]:
        f.write_text("x")
    assert inner.name.startswith("..img1_rosettes.csv.")
    rd._remove_orphans(tmp_path, [Path("in/img1.tif")])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


def test_workers_load_the_model_once_with_their_share_of_the_cores(client):
    shares = dict(rd._thread_shares(client))
    assert shares == {"127.0.0.1": max(1, len(os.sched_getaffinity(0)) // 2)}
    spec = rd._model_spec(RDF, "onnx", client, None, None, None, None, None)
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    on_each = lambda: [client.submit(_load, spec, workers=[w], pure=False).result() for w in workers]  # noqa: E731
    first, again = on_each(), on_each()
    assert len(first) == 2 and first == again                  # the same session, kept
    assert {threads for _, threads, _ in first} == {shares["127.0.0.1"]}


def test_the_test_cluster_listens_on_127_0_0_1_only(client):
    import psutil

    pids = {os.getpid(), *client.run(os.getpid).values()}
    pids |= {p.pid for pid in list(pids) for p in psutil.Process(pid).children()}
    listening = {(c.laddr.ip, pid) for pid in pids for c in psutil.Process(pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening and {ip for ip, _ in listening} == {"127.0.0.1"}


# ----------------------------------------------------------------------------- a large image
@pytest.mark.slow
def test_3072_image_chunked_across_two_workers_equals_single_process(client, predictor, tissue, tmp_path):
    np.save(tmp_path / "big.npy", _image(tissue, 3072, 3072))
    predict_file(tmp_path / "big.npy", predictor, "outlines", tmp_path / "single", quantities=False)
    r = rd.predict_image_dask(tmp_path / "big.npy", RDF, client, out_dir=tmp_path / "dask", chunk=1024)
    assert r.ok and r.shape == (3072, 3072) and r.n_proposals > 100
    _same(tmp_path / "single", "big", tmp_path / "dask")
    store = zarr.open_group(str(tmp_path / "dask" / "big_prob.ome.zarr"), mode="r")
    ms = store.attrs["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"] and store["2"].shape == (768, 768)
    assert store["labels"].attrs["labels"] == ["rosettes"]
    assert store["labels/rosettes"].attrs["image-label"]["source"]["image"] == "../../"
    assert store["0"].chunks == (1024, 1024)


@pytest.mark.parametrize("pad", ["constant", "symmetric"])
def test_odd_size_and_padding_chunked_equals_single_process(client, tissue, tmp_path, pad):
    """700 x 650 in 256 px chunks: bottom/right zero padding to the grid, or mirror padding on
    every side (border = the halo); proposals cross chunk borders and corners."""
    np.save(tmp_path / "odd.npy", _image(tissue, 700, 650))
    with load_predictor(RDF, "onnx", pad=pad) as pred:
        predict_file(tmp_path / "odd.npy", pred, "outlines", tmp_path / "single", quantities=False)
    r = rd.predict_image_dask(tmp_path / "odd.npy", RDF, client, out_dir=tmp_path / "dask", chunk=256, pad=pad,
                              min_size=10)
    assert r.ok and r.n_proposals > 3
    _same(tmp_path / "single", "odd", tmp_path / "dask")


def test_zarr_and_ome_zarr_input(client, predictor, tissue, tmp_path):
    img = _image(tissue, 600, 640)
    np.save(tmp_path / "a.npy", img)
    folder = tmp_path / "in"
    folder.mkdir()
    plain = zarr.create_array(str(folder / "b.zarr"), shape=img.shape, chunks=(256, 256), dtype=img.dtype)
    plain[...] = img
    ome = zarr.open_group(str(folder / "c.ome.zarr"), mode="w", zarr_format=2)
    ome.create_array("0", shape=(1, 1, 1) + img.shape, chunks=(1, 1, 1, 256, 256), dtype=img.dtype)[...] = \
        img[None, None, None]
    ome.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "tczyx"],
                                 "datasets": [{"path": "0"}]}]
    ref = tmp_path / "single"
    predict_file(tmp_path / "a.npy", predictor, "outlines", ref)
    # single process: in memory, and streamed from the store
    for name, stream in (("b.zarr", 10**9), ("c.ome.zarr", 1000)):
        r = predict_file(folder / name, predictor, "outlines", tmp_path / f"single_{stream}", stream_pixels=stream)
        assert r.ok and r.streamed == (stream == 1000) and r.outputs["csv"].name == f"{name[0]}_rosettes.csv"
        np.testing.assert_allclose(tifffile.imread(r.outputs["prob"]), tifffile.imread(ref / "a_prob.tif"),
                                   atol=1e-6, rtol=0)
        np.testing.assert_array_equal(tifffile.imread(r.outputs["labels"]), tifffile.imread(ref / "a_rosettes.tif"))
    # on dask: a folder of two stores, one task each (outputs as from the npy), then one of them chunked
    res = rd.predict_files_dask(folder, RDF, client, out_dir=tmp_path / "dask")
    assert [(r.path.name, r.ok, r.streamed) for r in res] == [("b.zarr", True, False), ("c.ome.zarr", True, False)]
    for stem in "bc":
        for suffix in ("_rosettes.csv", "_summary.json"):
            text = (tmp_path / "dask" / f"{stem}{suffix}").read_text()
            assert text.replace(f'"{stem}"', '"a"') == (ref / f"a{suffix}").read_text()
    # the vertex check on the workers: the same checked table as in one process
    predict_file(tmp_path / "a.npy", predictor, "outlines", tmp_path / "single_check", check=True)
    res = rd.predict_files_dask(folder / "b.zarr", RDF, client, out_dir=tmp_path / "dask_check", check=True)
    assert res[0].ok
    checked = (tmp_path / "single_check" / "a_rosettes.csv").read_text()
    assert (tmp_path / "dask_check" / "b_rosettes.csv").read_text() == checked and ",source" in checked
    predict_file(tmp_path / "a.npy", predictor, "outlines", tmp_path / "single_q", quantities=False)
    r = rd.predict_image_dask(folder / "c.ome.zarr", RDF, client, out_dir=tmp_path / "chunked", chunk=256)
    assert r.ok and r.outputs["zarr"].name == "c_prob.ome.zarr"
    _same(tmp_path / "single_q", "a", tmp_path / "chunked", "c")


# ----------------------------------------------------------------------------- errors and the CLI
def test_bad_cluster_spec_and_model_are_one_line_errors(tmp_path, capsys):
    from rosette_bmz.cli import main
    from rosette_bmz.errors import ClusterError, ModelError

    with pytest.raises(ClusterError, match="local:N or tcp://"):
        with rd.connect("slurm"):
            pass
    with pytest.raises(ClusterError, match="number of workers"):
        with rd.connect("local:two"):
            pass
    np.save(tmp_path / "x.npy", np.zeros((64, 64), np.uint8))
    rc = main(["predict", str(tmp_path / "x.npy"), "--model", str(tmp_path / "none.yaml"), "--out",
               str(tmp_path / "o"), "--dask", "local:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {tmp_path / 'none.yaml'}: no such model file or package folder"]
    with pytest.raises(ModelError, match="from its file"):
        rd.predict_files_dask(tmp_path / "x.npy", object(), "local:1", out_dir=tmp_path / "o")


def test_cli_predict_dask_folder(tissue, tmp_path, capsys):
    from rosette_bmz.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "a.npy", tissue[:256, :320])
    np.save(folder / "b.npy", np.full((256, 256), 7, np.uint8))       # a filled mask, not outlines
    rc = main(["predict", str(folder), "--model", str(RDF), "--out", str(tmp_path / "o"), "--dask", "local:2"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == \
        [ln for ln in err.splitlines() if "b.npy" in ln] and "b.npy" in err
    assert "predicted 1/2 image(s) with the onnx backend on dask (local:2)" in out
    assert (tmp_path / "o" / "a_rosettes.csv").is_file() and json.loads((tmp_path / "o" / "a_summary.json").read_text())

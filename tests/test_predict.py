"""Tiled runner: tile plans, stitching against whole-image / reference outputs, backends, files, CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rosette_bmz.constants import BACKENDS, DEFAULT_HALO, PUBLISHED_OVERLAP, PUBLISHED_WINDOW
from rosette_bmz.errors import ModelError
from rosette_bmz.inputs import InputError, from_labels, from_outlines
from rosette_bmz.runner import (DEFAULT_TILE, halo_plan, load_predictor, mirror_index, predict, predict_files,
                                published_plan)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_model(tiny_state):
    from rosette_bmz.checkpoint import build_model

    return build_model(tiny_state)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_model, tmp_path_factory):
    from rosette_bmz.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny.pt", {"note": "test"})


@pytest.fixture(scope="session")
def torch_pred(tiny_model):
    return load_predictor(tiny_model, "torch", threads=2)


@pytest.fixture(scope="session")
def onnx_pred(tiny_ckpt):
    return load_predictor(tiny_ckpt, "onnx", threads=2)


@pytest.fixture(scope="session")
def package(tiny_ckpt, tmp_path_factory):
    """A real package from the exporter (bioimageio.core's test_model skipped for time)."""
    from rosette_bmz.export import export_package

    return export_package(tiny_ckpt, tmp_path_factory.mktemp("pkg"), run_test=False)


@pytest.fixture(scope="session")
def synth_images():
    from types import SimpleNamespace

    from rosette_bmz.synth import generate

    out = {}
    for i, shape in enumerate([(250, 270), (70, 45), (600, 130)]):
        s = generate((max(shape[0], 100), max(shape[1], 100)), seed=i + 3, cell_diameter=16)
        h, w = shape
        out[shape] = SimpleNamespace(labels=s.labels[:h, :w], outlines=np.ascontiguousarray(s.outlines[:h, :w]))
    return out


def _whole(model, x, pad=0, mode="constant"):
    """Reference: one eager forward pass over the image padded by ``pad`` (+ to a multiple of 16)."""
    import torch

    _, H, W = x.shape
    ry, rx = (-(H + 2 * pad)) % 16, (-(W + 2 * pad)) % 16
    xp = np.pad(x, ((0, 0), (pad, pad + ry), (pad, pad + rx)), mode=mode)
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(xp[None])))[0, 0, pad:pad + H, pad:pad + W].numpy()


def _published_reference(model, x):
    """Straightforward sliding window: 512 windows, stride 384, last one flush, uniform averaging."""
    import torch

    _, H, W = x.shape
    xp = np.zeros((2, max(H, 512), max(W, 512)), dtype=np.float32)
    xp[:, :H, :W] = x
    Hp, Wp = xp.shape[1:]
    acc = np.zeros((Hp, Wp))
    cnt = np.zeros((Hp, Wp))
    ys = sorted({*range(0, Hp - 512 + 1, 384), Hp - 512})
    xs = sorted({*range(0, Wp - 512 + 1, 384), Wp - 512})
    for y in ys:
        for x0 in xs:
            with torch.no_grad():
                p = model(torch.from_numpy(xp[None, :, y:y + 512, x0:x0 + 512].copy()))[0, 0].numpy()
            acc[y:y + 512, x0:x0 + 512] += p
            cnt[y:y + 512, x0:x0 + 512] += 1
    return (acc / cnt)[:H, :W]


# ----------------------------------------------------------------------------- plans
@pytest.mark.parametrize("tile", [160, 256, 512, 1024])
def test_halo_plan_covers_every_pixel_once_with_halo_context(tile):
    halo = 64
    for length in list(range(1, 200, 7)) + [511, 512, 513, 1000, 1024, 1152, 2048, 3000, 8192 + 128]:
        plan = halo_plan(length, tile, halo)
        assert plan.padded % 16 == 0 and plan.padded >= length and plan.size % 16 == 0
        assert plan.size <= max(tile, 16) or len(plan.starts) == 1
        covered = np.zeros(plan.padded, int)
        for s, (c0, c1) in zip(plan.starts, plan.cores):
            assert s % 16 == 0 and 0 <= s and s + plan.size <= plan.padded
            assert s <= c0 < c1 <= s + plan.size
            assert c0 - s >= halo or s == 0            # context before the core, or the image edge
            assert s + plan.size - c1 >= halo or s + plan.size == plan.padded
            covered[c0:c1] += 1
        assert (covered == 1).all()
        # fewest tiles: one fewer could not cover the padded length
        n = len(plan.starts)
        if n > 1:
            assert 2 * (tile - halo) + (n - 3) * (tile - 2 * halo) < plan.padded


def test_published_plan_is_the_documented_sliding_window():
    assert published_plan(300).starts == (0,) and published_plan(300).padded == PUBLISHED_WINDOW
    assert published_plan(512).starts == (0,)
    assert published_plan(1024).starts == (0, 384, 512)
    assert published_plan(1152).starts == (0, 384, 640)     # 768 + 512 > 1152: flush window at 640
    assert published_plan(1280).starts == (0, 384, 768)     # fits exactly
    assert PUBLISHED_WINDOW - PUBLISHED_OVERLAP == 384


@pytest.mark.parametrize("mode", ["symmetric", "reflect"])
def test_mirror_index_matches_numpy_pad(mode):
    for n in (1, 2, 5, 17):
        if mode == "reflect" and n == 1:
            continue
        a = np.arange(n)
        idx = np.arange(-70, n + 70)
        np.testing.assert_array_equal(a[mirror_index(idx, n, mode)], np.pad(a, 70, mode=mode))


# ----------------------------------------------------------------------------- stitching vs references
@pytest.mark.parametrize("shape,tile", [((250, 270), 320), ((70, 45), 240), ((600, 130), 512)])
def test_halo_mode_equals_whole_image_pass(tiny_model, torch_pred, synth_images, shape, tile):
    x = from_outlines(synth_images[shape].outlines)
    got = predict(x, torch_pred, mode="halo", tile=tile)
    assert got.shape == shape and got.dtype == np.float32
    ref = _whole(tiny_model, x)
    # the spec: within 1e-3 away from the border; the tiles line up with the whole-image
    # pass (16 px grid, flush with the padded edge), so the whole image agrees to float noise
    assert np.abs(got - ref).max() < 1e-5
    # the whole image really was tiled (several tiles along the long axis)
    assert len(halo_plan(max(shape), tile, torch_pred.context).starts) > 1 or max(shape) <= tile
    # with a border of 64 zeros (padding like bioimageio.core's) it equals that whole-image pass
    with load_predictor(tiny_model, "torch", threads=2, border=64) as pred64:
        got64 = predict(x, pred64, tile=tile)
    assert np.abs(got64 - _whole(tiny_model, x, pad=64)).max() < 1e-5
    # the two paddings differ only near the image border
    d = np.abs(got64 - got)
    assert d.max() > 1e-5
    if min(shape) > 128:
        assert d[64:-64, 64:-64].max() < 1e-3


@pytest.mark.parametrize("pad", ["symmetric", "reflect"])
def test_halo_mode_other_padding_equals_whole_image_pass(tiny_model, torch_pred, synth_images, pad):
    x = from_outlines(synth_images[(250, 270)].outlines)
    got = predict(x, torch_pred, tile=320, pad=pad)
    assert torch_pred.border_for(pad) == torch_pred.halo == DEFAULT_HALO    # mirroring needs a border to mirror into
    assert np.abs(got - _whole(tiny_model, x, pad=DEFAULT_HALO, mode=pad)).max() < 1e-5
    # and the pad mode matters at the border (so the comparison above can fail)
    assert np.abs(got - _whole(tiny_model, x, pad=DEFAULT_HALO, mode="constant")).max() > 1e-4


@pytest.mark.parametrize("shape", [(250, 270), (600, 130)])
def test_published_mode_equals_reference_sliding_window(tiny_model, torch_pred, synth_images, shape):
    x = from_outlines(synth_images[shape].outlines)
    got = predict(x, torch_pred, mode="published", batch=3)
    ref = _published_reference(tiny_model, x)
    assert got.shape == shape
    assert np.abs(got - ref).max() < 1e-5


def test_batch_size_does_not_change_the_result(torch_pred, synth_images):
    x = from_outlines(synth_images[(70, 45)].outlines)
    a = predict(x, torch_pred, tile=240, batch=1)
    b = predict(x, torch_pred, tile=240, batch=3)
    assert np.abs(a - b).max() < 1e-6


def test_predict_rejects_bad_arrays(torch_pred):
    with pytest.raises(InputError, match="expected a \\(2, H, W\\)"):
        predict(np.zeros((3, 32, 32), np.float32), torch_pred)
    with pytest.raises(InputError, match="NaN"):
        predict(np.full((2, 32, 32), np.nan, np.float32), torch_pred)
    with pytest.raises(ValueError, match="unknown mode"):
        predict(np.zeros((2, 32, 32), np.float32), torch_pred, mode="fast")


# ----------------------------------------------------------------------------- backends
@pytest.mark.parametrize("pad", ["constant", "symmetric"])
def test_every_backend_agrees_on_an_exported_package(package, synth_images, pad):
    x = from_outlines(synth_images[(250, 270)].outlines)
    out = {}
    for backend in BACKENDS:
        # border = the package's halo: the runner pads like bioimageio.core
        with load_predictor(package, backend, threads=2, pad=pad, border=DEFAULT_HALO) as pred:
            out[backend] = predict(x, pred)
    for backend, p in out.items():
        assert p.shape == x.shape[1:]
        assert np.abs(p - out["torch"]).max() < 1e-3, backend      # the spec
        # measured ~1e-7; the tiny model's outputs for zero vs mirrored border differ by ~3e-4,
        # so this also proves every backend (bioimageio.core included) padded the same way
        assert np.abs(p - out["torch"]).max() < 1e-5, backend
    assert out["torch"].std() > 0  # not a constant output


def test_checkpoint_converted_on_the_fly_agrees_with_torch(tiny_ckpt, onnx_pred, torch_pred, synth_images):
    x = from_outlines(synth_images[(70, 45)].outlines)
    ts = load_predictor(tiny_ckpt, "torchscript", threads=2)
    try:
        ref = predict(x, torch_pred)
        assert np.abs(predict(x, onnx_pred) - ref).max() < 1e-4
        assert np.abs(predict(x, ts) - ref).max() < 1e-4
    finally:
        ts.close()


def test_openvino_compiles_once_per_tile_shape_and_says_how_to_install_it(package, synth_images, tmp_path):
    import subprocess
    import sys

    with load_predictor(package, "openvino", threads=2) as ov, load_predictor(package, "onnx", threads=2) as ort:
        for size in [(250, 270), (70, 45), (250, 270)]:
            x = from_outlines(synth_images[size].outlines)
            assert np.abs(predict(x, ov) - predict(x, ort)).max() < 1e-5, size
        assert len(ov.backend._compiled) == 2          # one compiled model per padded tile shape
    code = ("import sys; sys.modules['openvino'] = None; from rosette_bmz.runner import load_predictor\n"
            "from rosette_bmz.errors import ModelError\n"
            f"try:\n    load_predictor(r'{package}', 'openvino')\nexcept ModelError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "pip install 'rosette-bmz[openvino]'" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_onnx_from_rdf_never_imports_torch(package, tmp_path, backend):
    code = f"""
import sys, numpy as np
from rosette_bmz.runner import load_predictor, predict, predict_files
from rosette_bmz.synth import generate
s = generate((100, 120), seed=1)
np.save(r"{tmp_path}/img.npy", s.outlines)
pred = load_predictor(r"{package}", "{backend}", threads=1)
p = predict(np.stack([s.outlines > 0] * 2).astype(np.float32), pred)
res = predict_files([r"{tmp_path}/img.npy"], pred, "{backend}", "outlines", r"{tmp_path}/out")
assert res[0].ok, res
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "bioimageio"))
print("IMPORTED", bad)
assert not bad, bad
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "IMPORTED []" in r.stdout


def test_missing_or_wrong_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_predictor(tmp_path / "nope.yaml", "onnx")
    (tmp_path / "rdf.yaml").write_text("type: dataset\n")
    with pytest.raises(ModelError, match="not a bioimage.io model"):
        load_predictor(tmp_path / "rdf.yaml", "onnx")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ModelError, match="unknown model file type"):
        load_predictor(tmp_path / "model.txt", "onnx")
    with pytest.raises(ModelError, match="unknown backend"):
        load_predictor(tmp_path / "model.txt", "tensorflow")
    with pytest.raises(ModelError, match="multiple of 16"):
        load_predictor(tmp_path / "model.txt", "onnx", tile=100)
    with pytest.raises(ModelError, match="unknown pad mode"):
        load_predictor(tmp_path / "model.txt", "onnx", pad="wrap")


def test_package_without_weights_of_the_format(package, tmp_path):
    import shutil

    import yaml

    pkg = tmp_path / "pkg"
    shutil.copytree(package.parent, pkg)
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text())
    del rdf["weights"]["onnx"]
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ModelError, match="no onnx weights"):
        load_predictor(pkg / "rdf.yaml", "onnx")


# ----------------------------------------------------------------------------- files
def _write_inputs(folder: Path, synth_images) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    s = synth_images[(250, 270)]
    tifffile.imwrite(folder / "a_labels.tif", s.labels.astype(np.uint16))
    return {"a_labels": s.labels}


def test_predict_files_writes_napari_ready_outputs(onnx_pred, synth_images, tmp_path):
    s = synth_images[(250, 270)]
    tifffile.imwrite(tmp_path / "cells.tif", s.labels.astype(np.uint16))
    res = predict_files([tmp_path / "cells.tif"], onnx_pred, "onnx", "labels", tmp_path / "out", overlay=True,
                        threshold=0.5)
    assert len(res) == 1 and res[0].ok, res
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["cells_overlay.png", "cells_prob.tif", "cells_rosettes.csv",
                                                     "cells_rosettes.tif", "cells_summary.json", "summary.csv"]
    prob = tifffile.imread(out / "cells_prob.tif")
    assert prob.dtype == np.float32 and prob.shape == (250, 270)
    np.testing.assert_allclose(prob, predict(from_labels(s.labels), onnx_pred), atol=1e-6)
    labels = tifffile.imread(out / "cells_rosettes.tif")
    assert labels.dtype == np.uint32 and labels.shape == (250, 270)   # napari: 32-bit int -> labels layer
    from rosette_bmz.proposals import find_proposals

    ref_labels, rows = find_proposals(prob, 0.5, 10)
    np.testing.assert_array_equal(labels, ref_labels)
    with open(out / "cells_rosettes.csv") as f:
        table = list(csv.reader(f))
    header = table[0]
    assert header[:6] == ["id", "centroid_y", "centroid_x", "area", "max_prob", "mean_prob"]
    assert {"axis-0", "axis-1"} <= set(header)                         # napari: points layer
    assert len(table) - 1 == len(rows) == res[0].n_proposals
    from PIL import Image

    with Image.open(out / "cells_overlay.png") as im:
        assert im.size == (270, 250) and im.mode == "RGB"


@pytest.mark.parametrize("kind", ["labels", "outlines", "channels"])
def test_streamed_large_image_equals_in_memory(onnx_pred, synth_images, tmp_path, kind):
    s = synth_images[(600, 130)]
    data = {"labels": s.labels.astype(np.int32), "outlines": s.outlines,
            "channels": from_labels(s.labels)}[kind]
    tifffile.imwrite(tmp_path / "img.tif", data)
    np.save(tmp_path / "img2.npy", data)
    files = [tmp_path / "img.tif", tmp_path / "img2.npy"]
    if kind != "channels":   # compressed TIFF: decoded strip by strip into a scratch file, then mapped
        tifffile.imwrite(tmp_path / "img3.tif", data, compression="zlib", rowsperstrip=48)
        tifffile.imwrite(tmp_path / "img4.tif", data, compression="zlib", tile=(64, 48))
        files += [tmp_path / "img3.tif", tmp_path / "img4.tif"]
    small = predict_files([tmp_path / "img.tif"], onnx_pred, "onnx", kind, tmp_path / "mem")
    big = predict_files(files, onnx_pred, "onnx", kind, tmp_path / "stream", stream_pixels=10_000, tile=256)
    assert small[0].ok and not small[0].streamed
    assert all(r.ok and r.streamed for r in big), big
    assert not [p for p in (tmp_path / "stream").iterdir() if p.name.startswith(".")]   # no scratch left
    ref = tifffile.imread(tmp_path / "mem" / "img_prob.tif")
    for stem in [f.stem for f in files]:
        got = tifffile.imread(tmp_path / "stream" / f"{stem}_prob.tif")
        assert np.abs(got - ref).max() < 1e-5
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "stream" / f"{stem}_rosettes.tif"),
                                      tifffile.imread(tmp_path / "mem" / "img_rosettes.tif"))


# one test per class of bad input: the error names the file, the other files still complete,
# nothing half-written for the bad one
BAD_INPUTS = {
    "ndim": (lambda: np.zeros((3, 40, 40, 5), np.uint8), "2D", "outlines"),
    "channels": (lambda: np.zeros((3, 40, 40), np.float32), "2-channel input must have shape", "channels"),
    "dtype": (lambda: np.zeros((40, 40), np.complex64), "numeric", "outlines"),
    "nan": (lambda: np.full((40, 40), np.nan, np.float32), "NaN", "outlines"),
    "empty": (lambda: np.zeros((0, 40), np.uint8), "empty", "outlines"),
    "labels_as_outlines": (lambda: np.kron(np.arange(16).reshape(4, 4), np.ones((10, 10), np.uint16)),
                           "looks like a label image", "outlines"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("stream", [False, True])
def test_bad_input_fails_alone_with_a_message_naming_it(onnx_pred, synth_images, tmp_path, case, stream):
    make, message, kind = BAD_INPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    good = synth_images[(70, 45)]
    good_data = {"outlines": good.outlines, "channels": from_outlines(good.outlines)}[kind]
    np.save(folder / "a_good.npy", good_data)
    np.save(folder / "b_bad.npy", make())
    np.save(folder / "c_good.npy", good_data)
    res = predict_files([folder], onnx_pred, "onnx", kind, tmp_path / "out", stream_pixels=1 if stream else 10**9)
    assert [r.ok for r in res] == [True, False, True], res
    assert "b_bad.npy" in res[1].error and message in res[1].error
    assert "\n" not in res[1].error
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not any(n.startswith("b_bad") or n.startswith(".") for n in names), names
    # streamed images get no rosette quantities (they need the whole image in memory)
    per_image = ["prob.tif", "rosettes.csv", "rosettes.tif"] + ([] if stream else ["summary.json"])
    assert names == sorted([f"{s}_{f}" for s in ("a_good", "c_good") for f in per_image]
                           + ([] if stream else ["summary.csv"])), names


def test_unreadable_and_missing_files(onnx_pred, synth_images, tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    np.save(tmp_path / "ok.npy", synth_images[(70, 45)].outlines)
    res = predict_files([tmp_path / "broken.tif", tmp_path / "missing.png", tmp_path / "ok.npy"], onnx_pred, "onnx",
                        "outlines", tmp_path / "out")
    by_name = {r.path.name: r for r in res}
    assert by_name["ok.npy"].ok
    assert not by_name["broken.tif"].ok and "broken.tif" in by_name["broken.tif"].error
    assert not by_name["missing.png"].ok and "missing.png" in by_name["missing.png"].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok_prob.tif", "ok_rosettes.csv",
                                                                     "ok_rosettes.tif", "ok_summary.json",
                                                                     "summary.csv"]


def test_folder_runs_sorted_and_skips_its_own_outputs(onnx_pred, synth_images, tmp_path):
    s = synth_images[(70, 45)]
    for name in ("b.npy", "a.png", "c.tif"):
        path = tmp_path / name
        if name.endswith(".npy"):
            np.save(path, s.outlines)
        elif name.endswith(".png"):
            from PIL import Image

            Image.fromarray(s.outlines * 255).save(path)
        else:
            tifffile.imwrite(path, s.outlines)
    (tmp_path / "notes.txt").write_text("not an image")
    res = predict_files([tmp_path], onnx_pred, "onnx", "outlines", tmp_path)
    assert [r.path.name for r in res] == ["a.png", "b.npy", "c.tif"] and all(r.ok for r in res)
    again = predict_files([tmp_path], onnx_pred, "onnx", "outlines", tmp_path)   # outputs are not inputs
    assert [r.path.name for r in again] == ["a.png", "b.npy", "c.tif"]


# ----------------------------------------------------------------------------- CLI
def test_cli_predict_folder_with_one_bad_file(tiny_ckpt, synth_images, tmp_path, capsys):
    from rosette_bmz.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "good.tif", synth_images[(70, 45)].labels.astype(np.uint16))
    tifffile.imwrite(folder / "bad.tif", np.zeros((2, 3, 40, 40), np.uint16))
    rc = main(["predict", str(folder), "--model", str(tiny_ckpt), "--backend", "onnx", "--input-kind", "labels",
               "--out", str(tmp_path / "out"), "--threads", "2"])
    err = capsys.readouterr()
    assert rc == 1
    assert "bad.tif" in err.err and "error:" in err.err
    assert "predicted 1/2 image(s)" in err.out and "1 failed" in err.out
    assert (tmp_path / "out" / "good_rosettes.csv").is_file()


def test_cli_missing_model_is_one_line_exit_2(tmp_path, capsys):
    from rosette_bmz.cli import main

    rc = main(["predict", str(tmp_path), "--model", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "missing.yaml" in err and len(err.splitlines()) == 1


def test_default_tile_follows_the_model_width(tiny_ckpt, package):
    from rosette_bmz.runner import DEFAULT_CONTEXT, default_tile

    assert default_tile(64) == DEFAULT_TILE == 720
    assert default_tile(16) == 1440 and default_tile(4) == 2896
    assert default_tile(64, 2 * 2**30) == 1024 and default_tile(16, 2 * 2**30) == 2048   # images in memory
    assert halo_plan(1024 + 2 * 64, default_tile(16), DEFAULT_CONTEXT).starts == (0,)   # 1024^2 demo: one pass
    for model in (tiny_ckpt, package):
        with load_predictor(model, "onnx", threads=1) as pred:
            assert pred.base_channels == 4 and pred.tile is None and pred.tile_for(2**30) == 2896
            assert pred.pad_mode == "constant"
            assert pred.halo == DEFAULT_HALO == 112 and pred.context == DEFAULT_CONTEXT


def test_activation_budget_and_border_are_checked(tiny_model):
    from rosette_bmz.runner import ACTIVATION_BUDGET, MAX_IN_MEMORY_BUDGET, in_memory_budget

    assert ACTIVATION_BUDGET <= in_memory_budget() <= MAX_IN_MEMORY_BUDGET
    with pytest.raises(ModelError, match="border"):
        load_predictor(tiny_model, "torch", border=-1)


def test_receptive_field_is_within_the_tile_context(tiny_model):
    """Why 112 px of context make tiles exact for any weights: no output moves further away."""
    import torch

    from rosette_bmz.runner import DEFAULT_CONTEXT

    x = (torch.rand(1, 2, 320, 320, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        base = tiny_model(x)
        reach = 0
        for py, px in [(160, 160), (167, 153), (152, 168), (175, 175)]:   # different 16-grid phases
            x2 = x.clone()
            x2[0, :, py, px] = 1 - x2[0, :, py, px]
            ys, xs = torch.nonzero((tiny_model(x2) - base)[0, 0] != 0, as_tuple=True)
            reach = max(reach, (ys - py).abs().max().item(), (xs - px).abs().max().item())
    assert 64 < reach < DEFAULT_CONTEXT      # more than the declared halo, less than the context


@pytest.mark.full_width
def test_halo_tiles_equal_whole_image_at_the_published_width(synth_images):
    """Recipe weights of the published base-64 layout: 2 x 2 tiles == one whole-image pass."""
    from reference import recipe_state_dict

    from rosette_bmz.checkpoint import build_model

    model = build_model(recipe_state_dict())
    x = from_outlines(synth_images[(250, 270)].outlines[:256, :256])
    with load_predictor(model, "torch", threads=2) as pred:
        assert pred.base_channels == 64 and pred.border_for("constant") == 0
        assert len(halo_plan(256, 240, pred.context).starts) == 2
        got = predict(x, pred, tile=240)                   # 256^2 -> 2 x 2 tiles of 240
    assert np.abs(got - _whole(model, x)).max() < 1e-5


def test_prefetch_imports_loads_what_proposals_need_in_a_thread():
    import subprocess
    import sys

    code = ("import sys; from rosette_bmz.runner.images import prefetch_imports; "
            "assert 'scipy.ndimage' not in sys.modules; t = prefetch_imports(quantities=True); t.join(60); "
            "assert not t.is_alive(); missing = [m for m in ('scipy.ndimage', 'skimage.morphology', 'scipy.spatial') "
            "if m not in sys.modules]; assert not missing, missing; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_tta_is_the_mean_of_the_eight_views(torch_pred, synth_images):
    from rosette_bmz.runner import DIHEDRAL

    x = from_outlines(synth_images[(250, 270)].outlines)      # not square: rotations change the shape
    views = []
    for r, flip in DIHEDRAL:
        y = np.rot90(x, r, axes=(1, 2))
        y = y[:, :, ::-1] if flip else y
        p = predict(np.ascontiguousarray(y), torch_pred)
        views.append(np.rot90(p[:, ::-1] if flip else p, -r))
    assert len({(r, f) for r, f in DIHEDRAL}) == 8
    got = predict(x, torch_pred, tta=True)
    assert got.shape == x.shape[1:] and got.dtype == np.float32
    assert np.abs(got - np.mean(views, axis=0)).max() < 1e-6
    # the network is not equivariant: the views differ, so the mean is not the plain prediction
    assert np.abs(got - predict(x, torch_pred)).max() > 1e-4


def test_predict_cli_tta_writes_the_averaged_map(tiny_ckpt, synth_images, tmp_path):
    import tifffile

    from rosette_bmz.cli import main

    outl = synth_images[(250, 270)].outlines
    tifffile.imwrite(tmp_path / "img.tif", outl.astype(np.uint8))
    for flag, out in (([], "plain"), (["--tta"], "tta")):
        assert main(["predict", str(tmp_path / "img.tif"), "--model", str(tiny_ckpt), "--backend", "torch",
                     "--out", str(tmp_path / out), "--no-quantities"] + flag) == 0
    with load_predictor(tiny_ckpt, "torch", threads=2) as pred:
        want = predict(from_outlines(outl), pred, tta=True)
    got = tifffile.imread(tmp_path / "tta" / "img_prob.tif")
    assert np.abs(got - want).max() < 1e-6
    assert np.abs(got - tifffile.imread(tmp_path / "plain" / "img_prob.tif")).max() > 1e-4


def test_predict_cli_check_writes_checked_rosettes(tmp_path, capsys):
    """``predict --check`` with the shipped package: the same probability map, the proposals kept by
    the vertex graph (k >= 5 or sure) plus the junctions it adds, one table and label image."""
    import csv

    import tifffile

    from rosette_bmz.cli import main
    from rosette_bmz.constants import CHECK_SURE, MIN_MULTIPLICITY
    from rosette_bmz.synth import generate_world

    g = generate_world(384, 5, "default")
    tifffile.imwrite(tmp_path / "img.tif", g.outlines.astype(np.uint8))
    tables = {}
    for flag, out in (([], "plain"), (["--check"], "checked")):
        assert main(["predict", str(tmp_path / "img.tif"), "--model", str(ROOT / "rdf.yaml"), "--out",
                     str(tmp_path / out)] + flag) == 0
        with open(tmp_path / out / "img_rosettes.csv", newline="") as f:
            tables[out] = list(csv.DictReader(f))
    plain, checked = tables["plain"], tables["checked"]
    assert "source" not in plain[0] and {r["source"] for r in checked} <= {"network", "vertex"}
    assert np.array_equal(tifffile.imread(tmp_path / "plain" / "img_prob.tif"),
                          tifffile.imread(tmp_path / "checked" / "img_prob.tif"))
    labels = tifffile.imread(tmp_path / "checked" / "img_rosettes.tif")
    assert sorted(np.unique(labels[labels > 0]).tolist()) == [int(r["id"]) for r in checked]
    net = [r for r in checked if r["source"] == "network"]
    assert all(int(r["k"]) >= MIN_MULTIPLICITY or float(r["max_prob"]) > CHECK_SURE for r in net)
    assert all(int(r["k"]) >= MIN_MULTIPLICITY for r in checked if r["source"] == "vertex")
    kept = {(r["centroid_y"], r["centroid_x"]) for r in plain
            if int(r["k"]) >= MIN_MULTIPLICITY or float(r["max_prob"]) > CHECK_SURE}
    assert {(r["centroid_y"], r["centroid_x"]) for r in net} == kept and len(kept) < len(plain)
    summary = (tmp_path / "checked" / "img_summary.json").read_text()
    assert f'"n_rosettes": {len(checked)}' in summary and '"rosettes_from": "checked"' in summary
    assert '"rosettes_from": "network"' in (tmp_path / "plain" / "img_summary.json").read_text()
    # the check reads the quantities' vertex graph: refused without them, in one line
    capsys.readouterr()
    rc = main(["predict", str(tmp_path / "img.tif"), "--model", str(ROOT / "rdf.yaml"), "--out",
               str(tmp_path / "x"), "--check", "--no-quantities"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "--no-quantities" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()

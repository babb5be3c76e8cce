"""Hostile inputs and faults (issue 17): real files, real processes, one line, nothing left behind.

Every case here is a row of docs/reliability.md; add the row when you add a case.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``rosette-bmz ARGS`` as its own process (the way a user runs it)."""
    return subprocess.run([sys.executable, "-m", "rosette_bmz", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def _one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, stderr is exactly one ``error: ...`` line (no traceback) holding every needle."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from rosette_bmz.synth import generate

    path = tmp_path_factory.mktemp("img") / "cells_outlines.tif"
    tifffile.imwrite(path, generate(256, seed=11, noise=0.0).outlines)
    return path


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A copy of the committed demo package to break."""
    dst = tmp_path / "pkg"
    dst.mkdir()
    shutil.copy(ROOT / "rdf.yaml", dst / "rdf.yaml")
    shutil.copytree(ROOT / "model_package", dst / "model_package")
    return dst / "rdf.yaml"


# ----------------------------------------------------------------------------- 1. checksums
def test_corrupted_onnx_weights_are_refused(package_copy, image, tmp_path):
    onnx = package_copy.parent / "model_package" / "weights.onnx"
    size = onnx.stat().st_size
    with open(onnx, "r+b") as f:          # 4 KB of garbage in the middle, same size
        f.seek(size // 2)
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert onnx.stat().st_size == size
    out = tmp_path / "out"
    r = _cli("predict", str(image), "--model", str(package_copy), "--out", str(out), cwd=tmp_path)
    _one_error_line(r, "weights.onnx", "SHA-256", "does not match")
    assert not out.exists()


@pytest.mark.parametrize("backend,fmt", [("torch", "pytorch_state_dict"), ("torchscript", "torchscript")])
def test_wrong_sha256_in_the_rdf_is_refused(package_copy, image, tmp_path, backend, fmt):
    rdf = yaml.safe_load(package_copy.read_text())
    rdf["weights"][fmt]["sha256"] = "0" * 64
    package_copy.write_text(yaml.safe_dump(rdf, sort_keys=False))
    r = _cli("predict", str(image), "--model", str(package_copy), "--backend", backend, "--out",
             str(tmp_path / "out"), cwd=tmp_path)
    _one_error_line(r, "SHA-256", "does not match")


# ----------------------------------------------------------------------------- 2. NaN / inf weights
@pytest.fixture
def nan_checkpoint(tiny_state, tmp_path) -> Path:
    import torch

    state = {k: v.clone() for k, v in tiny_state.items()}
    state["dec2.0.weight"].view(-1)[7] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_nan_weights_are_refused_by_predict(nan_checkpoint, image, tmp_path, backend):
    r = _cli("predict", str(image), "--model", str(nan_checkpoint), "--backend", backend, "--out",
             str(tmp_path / "out"), cwd=tmp_path)
    _one_error_line(r, "nan.pt", "NaN or infinite", "dec2.0.weight")
    assert not (tmp_path / "out").exists()


def test_nan_weights_are_refused_by_export(nan_checkpoint, tmp_path):
    r = _cli("export", "--checkpoint", str(nan_checkpoint), "--out", str(tmp_path / "pkg"), "--skip-test",
             cwd=tmp_path)
    _one_error_line(r, "nan.pt", "NaN or infinite", "dec2.0.weight")
    assert not (tmp_path / "pkg" / "rdf.yaml").exists()


def test_nan_output_of_a_package_stops_the_run(tmp_path):
    """Weights that pass every check but still make NaN (an old export of broken weights)."""
    import onnx
    from onnx import helper

    from rosette_bmz.errors import ModelError
    from rosette_bmz.runner import load_predictor, predict

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2, "h", "w"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])
    nan = helper.make_tensor("nan", onnx.TensorProto.FLOAT, [1], [float("nan")])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
                               helper.make_node("Mul", ["m", "nan"], ["y"])], "nan", [x], [y], [nan])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "w.onnx")
    (tmp_path / "rdf.yaml").write_text("type: model\nweights:\n  onnx:\n    source: w.onnx\n")
    with load_predictor(tmp_path / "rdf.yaml", "onnx") as pred, pytest.raises(ModelError, match="NaN"):
        predict(np.zeros((2, 64, 64), np.float32), pred)


# ----------------------------------------------------------------------------- 3. wrong shapes
@pytest.fixture
def odd_width_checkpoint(tiny_state, tmp_path) -> Path:
    """The first conv has 3 output channels: no Attention U-Net has an odd width."""
    import torch

    state = dict(tiny_state)
    state["enc1.0.weight"] = torch.zeros((3, 2, 3, 3))
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    return path


@pytest.fixture
def five_channel_checkpoint(tmp_path) -> Path:
    import torch

    from rosette_bmz.model import AttentionUNet

    torch.manual_seed(0)
    path = tmp_path / "five.pt"
    torch.save(AttentionUNet(in_channels=5, base_channels=4).state_dict(), path)
    return path


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_unbuildable_checkpoint_is_one_line(odd_width_checkpoint, image, tmp_path, backend):
    r = _cli("predict", str(image), "--model", str(odd_width_checkpoint), "--backend", backend, "--out",
             str(tmp_path / "out"), cwd=tmp_path)
    _one_error_line(r, "odd.pt", "enc1.0.weight")
    r = _cli("export", "--checkpoint", str(odd_width_checkpoint), "--out", str(tmp_path / "pkg"), "--skip-test",
             cwd=tmp_path)
    _one_error_line(r, "odd.pt", "enc1.0.weight")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_five_channel_checkpoint_is_refused_up_front(five_channel_checkpoint, image, tmp_path, backend):
    r = _cli("predict", str(image), str(image), "--model", str(five_channel_checkpoint), "--backend", backend,
             "--out", str(tmp_path / "out"), cwd=tmp_path)
    _one_error_line(r, "five.pt", "5 input channel(s)")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 4. killed export
@pytest.mark.slow
def test_killed_export_leaves_nothing_after_the_next_export(tiny_state, tmp_path):
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_state, ckpt)
    out = tmp_path / "pkg"
    out.mkdir()
    args = [sys.executable, "-m", "rosette_bmz", "export", "--checkpoint", str(ckpt), "--out", str(out),
            "--force", "--skip-test"]
    seen = []
    for _ in range(2):   # two exports killed (kill -9) while their build folder holds files
        p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not any(out.glob(f".rosette-export-*-{p.pid}-*/model_package/*")):
            if time.time() > deadline or p.poll() is not None:
                p.kill()
                pytest.fail(f"export {p.pid} wrote no build files in time (exit {p.poll()})")
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        left = list(out.glob(".rosette-export-*"))
        # each killed export leaves its own folder; the second one removed the first's on start
        assert [d.name.split("-")[-2] for d in left] == [str(p.pid)], left
        seen += left
    assert len(seen) == 2 and not (out / "rdf.yaml").exists()
    foreign = out / ".rosette-export-oldversion"   # not provably stale: kept
    foreign.mkdir()
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [".rosette-export-oldversion", "model_package", "rdf.yaml"]
    assert "rosette-export-oldversion" in r.stderr   # reported, not deleted


def _proc_ended(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")   # a zombie has ended too


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the tracing child in /proc")
def test_an_export_killed_while_tracing_leaves_no_writer_behind(tiny_state, tmp_path):
    """Kill an export while its TorchScript child runs: the orphaned child must not write.

    Stop 32's CI saw a killed export's build folder come back after the next export removed it;
    the only process that outlives an export is this child, which wrote its file itself then.
    """
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_state, ckpt)
    out = tmp_path / "pkg"
    p = subprocess.Popen([sys.executable, "-m", "rosette_bmz", "export", "--checkpoint", str(ckpt), "--out",
                          str(out), "--force", "--skip-test"], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child, deadline = None, time.time() + 300
    while child is None:
        for d in Path("/proc").iterdir():
            try:
                cmd = (d / "cmdline").read_bytes() if d.name.isdigit() else b""
            except OSError:
                continue
            if b"rosette_bmz.convert" in cmd and str(out).encode() in cmd:
                child = int(d.name)
        if child is None and (time.time() > deadline or p.poll() is not None):
            p.kill()
            pytest.fail(f"no tracing child seen (export exit {p.poll()})")
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    [build] = out.glob(".rosette-export-*")
    before = sorted(f.relative_to(build) for f in build.rglob("*"))
    while not _proc_ended(child):
        assert time.time() < deadline, "the orphaned tracing child did not end"
        time.sleep(0.05)
    assert sorted(f.relative_to(build) for f in build.rglob("*")) == before


def test_tracing_child_writes_no_file_and_its_archive_loads(tiny_state, tmp_path):
    """The TorchScript child hands its archive back on stdout and writes nothing (the test above
    shows why); the parent writes exactly those bytes."""
    import io
    import json

    import torch

    from rosette_bmz.convert import to_torchscript_reproducible

    weights = tmp_path / "w.pt"
    torch.save(tiny_state, weights)
    work = tmp_path / "cwd"
    work.mkdir()
    args = {"callable": "AttentionUNet", "kwargs": {"base_channels": 4}, "weights": str(weights),
            "path": str(work / "gone" / "x.pt"),   # where the old child wrote (creating folders)
            "shape": [1, 2, 64, 64]}
    r = subprocess.run([sys.executable, "-m", "rosette_bmz.convert", json.dumps(args)], cwd=work,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "w.pt"]
    module = torch.jit.load(io.BytesIO(r.stdout))   # the archive, nothing else on stdout
    x = torch.rand(1, 2, 64, 64)
    assert module(x).shape == (1, 1, 64, 64)
    out = to_torchscript_reproducible("AttentionUNet", {"base_channels": 4}, weights, tmp_path / "ts.pt",
                                      (1, 2, 64, 64))
    assert out.read_bytes() == r.stdout   # the parent writes the same bytes


# ----------------------------------------------------------------------------- 5. tiny images
@pytest.mark.parametrize("side", [1, 15, 31])
def test_tiny_images_are_refused(image, tmp_path, side):
    small = tmp_path / f"crop{side}.tif"
    tifffile.imwrite(small, tifffile.imread(image)[100:100 + side, 100:100 + side])
    out = tmp_path / "out"
    r = _cli("predict", str(small), "--model", str(ROOT / "rdf.yaml"), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "too small" in errors[0] and small.name in errors[0] and "32" in errors[0]
    assert not out.exists()


def test_smallest_accepted_image_runs(image, tmp_path):
    from rosette_bmz.constants import MIN_IMAGE_SIZE

    edge = tmp_path / "edge.tif"
    tifffile.imwrite(edge, tifffile.imread(image)[:MIN_IMAGE_SIZE, :MIN_IMAGE_SIZE])
    r = _cli("predict", str(edge), "--model", str(ROOT / "rdf.yaml"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "edge_prob.tif").is_file()


# ----------------------------------------------------------------------------- 6. minor
def test_a_failed_file_is_reported_once_and_others_still_run(image, tmp_path):
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, np.full((64, 64), np.nan, np.float32))
    r = _cli("predict", str(image), str(bad), "--model", str(ROOT / "rdf.yaml"), "--out", str(tmp_path / "o"),
             cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("bad.tif") == 1, r.stderr
    assert (tmp_path / "o" / f"{image.stem}_prob.tif").is_file()


def test_out_being_a_file_is_one_up_front_error(image, tmp_path):
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    r = _cli("predict", str(image), str(image), "--model", str(ROOT / "rdf.yaml"), "--out", str(target),
             cwd=tmp_path)
    _one_error_line(r, "not_a_folder", "not a folder")
    assert target.read_text() == "x"


def test_empty_training_masks_are_named(tmp_path, caplog):
    from rosette_bmz.training.data import _load_folder

    imgs, masks = tmp_path / "i", tmp_path / "m"
    imgs.mkdir()
    masks.mkdir()
    from rosette_bmz.synth import generate

    for i, empty in enumerate((False, True)):
        g = generate(256, seed=21)
        tifffile.imwrite(imgs / f"emb{i}.tif", g.outlines)
        tifffile.imwrite(masks / f"emb{i}_rosettes.tif", np.zeros_like(g.rosettes) if empty else g.rosettes)
    with caplog.at_level("WARNING"):
        _load_folder(str(imgs), str(masks), "outlines")
    assert "emb1" in caplog.text and "1 of 2 masks contain no rosette" in caplog.text

"""BioImage Model Zoo exporter: rdf content, validation, bioimageio.core test, reproducibility, variants."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from rosette_bmz.constants import DIVISOR, PACKAGE_MIN_SIZE
from rosette_bmz.demo import demo_checkpoint
from rosette_bmz.export import HALO, PACKAGE_DIR, ExportError, build_test_data, export_package, validate_rdf

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = demo_checkpoint()
#: Files computed on this CPU: compared numerically across machines. The ONNX file is one of them:
#: the exporter folds batch norm into the convolutions, and another CPU rounds that product differently.
OUTPUT_DERIVED = ("test_output.npy", "sample_output.tif", "cover.png", "weights.onnx")


def _save(state, path: Path, metadata: dict | None = None) -> Path:
    from rosette_bmz.checkpoint import build_model, save_checkpoint

    return save_checkpoint(build_model(state), path, metadata)


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_state, tmp_path_factory) -> Path:
    return _save(tiny_state, tmp_path_factory.mktemp("ckpt") / "tiny.pt", {"note": "unit-test weights"})


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory) -> Path:
    """The 2-channel package of a base-4 model, tested by bioimageio.core during export."""
    out = tmp_path_factory.mktemp("pkg")
    return export_package(tiny_ckpt, out, zip_path=out / "package.zip", run_test=True)


def _rdf(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _files(rdf: dict) -> list[dict]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "source" in node and "sha256" in node:
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(rdf)
    return found


# ----------------------------------------------------------------------------- in-graph builders
def test_in_graph_builders_equal_python_builders(rng):
    import torch

    from skimage.segmentation import find_boundaries

    from rosette_bmz.inputs import inner_outlines
    from rosette_bmz.model import labels_to_outlines, outlines_to_channels

    for _ in range(60):
        h, w = rng.integers(2, 24, 2)
        outlines = (rng.random((h, w)) < rng.uniform(0.02, 0.6)).astype(np.uint8) * 255
        expected = np.stack([find_boundaries(outlines > 0, mode="thick"), outlines > 0]).astype(np.float32)
        got = outlines_to_channels(torch.from_numpy(outlines.astype(np.float32))[None, None])[0].numpy()
        np.testing.assert_array_equal(got, expected)
        labels = rng.integers(0, 6, (h, w))
        got_lab = labels_to_outlines(torch.from_numpy(labels.astype(np.float32))[None, None])[0, 0].numpy()
        np.testing.assert_array_equal(got_lab, inner_outlines(labels).astype(np.float32))


def test_variant_models_equal_builder_plus_model_in_all_formats(tiny_state, tmp_path):
    import torch

    from rosette_bmz.convert import check_agreement, run_eager, to_onnx, to_torchscript
    from rosette_bmz.inputs import from_labels, from_outlines
    from rosette_bmz.model import AttentionUNet, LabelsAttentionUNet, OutlinesAttentionUNet
    from rosette_bmz.synth import generate

    base = AttentionUNet(base_channels=4)
    base.load_state_dict(tiny_state)
    base.eval()
    img = generate(96, seed=3)
    for cls, raw, channels in ((OutlinesAttentionUNet, img.outlines * 255, from_outlines(img.outlines)),
                               (LabelsAttentionUNet, img.labels, from_labels(img.labels))):
        model = cls(base_channels=4)
        model.load_state_dict(tiny_state, strict=True)  # same weights, no extra parameters
        model.eval()
        x = raw.astype(np.float32)[None, None]
        np.testing.assert_allclose(run_eager(model, x), run_eager(base, channels[None]), atol=1e-6, rtol=0)
        ts = to_torchscript(model, tmp_path / f"{cls.__name__}.pt", torch.zeros(1, 1, 64, 64))
        onnx = to_onnx(model, tmp_path / f"{cls.__name__}.onnx", torch.zeros(1, 1, 64, 64))
        diffs = check_agreement(model, x, torchscript=ts, onnx=onnx, tol=1e-5)  # traced at 64, run at 96
        assert set(diffs) == {"torchscript", "onnx"}
        with pytest.raises(ValueError, match="1, y, x"):
            model(torch.zeros(1, 2, 64, 64))


def test_test_data_contains_rosettes():
    data = build_test_data("channels")
    assert data.n_rosettes >= 3
    assert data.model_input.shape == (1, 2, 512, 512) and data.model_input.dtype == np.float32
    assert set(np.unique(data.model_input)) == {0.0, 1.0}
    labels = build_test_data("labels")
    assert labels.model_input.shape == (1, 1, 512, 512) and labels.model_input.max() > 100


# ----------------------------------------------------------------------------- the 2-channel package
def test_rdf_is_the_0_5_4_dialect_consumers_read(exported, tiny_ckpt):
    rdf = _rdf(exported)
    assert rdf["format_version"] == "0.5.4" and rdf["type"] == "model"
    assert isinstance(rdf["documentation"], str) and all(isinstance(c, str) for c in rdf["covers"])
    assert "dependencies" not in yaml.safe_dump(rdf)
    assert "github_user" not in exported.read_text()
    assert rdf["license"] == "MIT" and rdf["id"] and rdf["authors"]
    tags = set(rdf["tags"])
    assert {"2d", "pytorch", "unet", "attention-unet", "semantic-segmentation",
            "fluorescence-light-microscopy", "cells", "epithelium", "nematostella", "rosette"} <= tags
    cites = " ".join(str(c) for c in rdf["cite"])
    assert "10.48550/arXiv.1804.03999" in cites and "nematostella_rosette_detection" in cites

    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    assert all(a["size"] == {"min": PACKAGE_MIN_SIZE, "step": DIVISOR} for a in inp["axes"][2:])
    assert inp["axes"][1]["channel_names"] == ["thick_boundaries", "outlines"]
    assert inp["preprocessing"] == [{"id": "scale_range", "kwargs": {
        "axes": ["y", "x"], "min_percentile": 0.0, "max_percentile": 100.0}}]
    assert [a.get("halo") for a in out["axes"][2:]] == [HALO, HALO]
    assert "postprocessing" not in out  # the sigmoid is inside the network

    w = rdf["weights"]
    assert set(w) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert w["torchscript"]["parent"] == w["onnx"]["parent"] == "pytorch_state_dict"
    assert w["onnx"]["opset_version"] == 17
    arch = w["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == "AttentionUNet"
    assert arch["kwargs"] == {"in_channels": 2, "out_channels": 1, "base_channels": 4}
    pkg = exported.parent
    assert (pkg / arch["source"]).read_bytes() == (ROOT / "rosette_bmz" / "model.py").read_bytes()
    tol = rdf["config"]["bioimageio"]["reproducibility_tolerance"]
    assert tol and tol[0]["absolute_tolerance"] <= 1e-3

    import hashlib

    for f in _files(rdf):
        path = pkg / f["source"]
        assert f["source"].startswith(PACKAGE_DIR + "/") and path.is_file()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], f["source"]


def test_package_tensors_cover_and_readme(exported, tiny_ckpt):
    import tifffile
    import torch
    from PIL import Image

    from rosette_bmz.checkpoint import load_checkpoint
    from rosette_bmz.convert import run_onnx

    pkg = exported.parent / PACKAGE_DIR
    x = np.load(pkg / "test_input.npy")
    y = np.load(pkg / "test_output.npy")
    assert x.shape == (1, 2, 512, 512) and y.shape == (1, 1, 512, 512) and y.dtype == np.float32
    with torch.no_grad():
        eager = load_checkpoint(tiny_ckpt).model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, eager, atol=1e-6)
    np.testing.assert_allclose(run_onnx(pkg / "weights.onnx", x), y, atol=1e-4)
    np.testing.assert_array_equal(tifffile.imread(pkg / "sample_input.tif"), x[0])
    np.testing.assert_array_equal(tifffile.imread(pkg / "sample_output.tif"), y[0])
    with Image.open(pkg / "cover.png") as im:
        assert im.format == "PNG" and im.size == (1024, 512)
    assert (pkg / "cover.png").stat().st_size < 500_000
    readme = (pkg / "README.md").read_text()
    for needle in ("## Validation", "Not evaluated", "find_boundaries", "Limitations", "halo", "BiaPy",
                   "ilastik", "deepImageJ", "Oktay"):
        assert needle in readme, needle


def test_package_validates_from_the_zip_too(exported):
    from bioimageio.spec import load_description

    validate_rdf(exported)
    zpath = exported.parent / "package.zip"
    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
        assert "rdf.yaml" in names and f"{PACKAGE_DIR}/weights.onnx" in names
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    descr = load_description(zpath)
    assert descr.validation_summary.status in ("passed", "valid-format")


def test_reexport_is_byte_identical_and_needs_force(exported, tiny_ckpt):
    out = exported.parent
    before = {p.name: p.read_bytes() for p in (out / PACKAGE_DIR).iterdir()}
    before["rdf.yaml"] = exported.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        export_package(tiny_ckpt, out, run_test=False)
    assert (out / "rdf.yaml").read_bytes() == before["rdf.yaml"]  # untouched

    # --force replaces the package in place (in a fresh TorchScript tracer) ...
    again = export_package(tiny_ckpt, out, run_test=False, force=True)
    after = {p.name: p.read_bytes() for p in (out / PACKAGE_DIR).iterdir()}
    after["rdf.yaml"] = again.read_bytes()
    # ... with byte-identical files, and leaves no temporary folder behind
    assert sorted(after) == sorted(before)
    assert [name for name in before if before[name] != after[name]] == []
    assert sorted(p.name for p in out.iterdir()) == [PACKAGE_DIR, "package.zip", "rdf.yaml"]


def test_disagreeing_conversion_writes_nothing(tiny_ckpt, tmp_path, monkeypatch):
    import rosette_bmz.convert as convert

    real = convert.run_onnx
    monkeypatch.setattr(convert, "run_onnx", lambda path, x, threads=None: real(path, x, threads) + 1e-3)
    with pytest.raises(ExportError, match="onnx max abs diff"):
        export_package(tiny_ckpt, tmp_path / "bad", run_test=False)
    assert list((tmp_path / "bad").iterdir()) == []


def test_wrong_checkpoint_is_refused(tmp_path, capsys):
    import torch

    from rosette_bmz.checkpoint import save_checkpoint
    from rosette_bmz.cli import main
    from rosette_bmz.model import AttentionUNet

    one = save_checkpoint(AttentionUNet(in_channels=1, base_channels=4), tmp_path / "one.pt")
    with pytest.raises(ExportError, match="2-channel"):
        export_package(one, tmp_path / "out", run_test=False)
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing.pt" in err and len(err.splitlines()) == 1
    torch.save({"x": 1}, tmp_path / "junk.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "rdf.yaml").exists()


def test_cli_export_with_author_and_name(tiny_ckpt, tmp_path, capsys):
    from rosette_bmz.cli import main

    assert main(["export", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path), "--skip-test",
                 "--author", "A. Person", "--author", "B. Person", "--name", "My rosette model"]) == 0
    assert "rdf.yaml" in capsys.readouterr().out
    rdf = _rdf(tmp_path / "rdf.yaml")
    assert rdf["authors"] == [{"name": "A. Person"}, {"name": "B. Person"}] and rdf["name"] == "My rosette model"
    validate_rdf(tmp_path / "rdf.yaml")


def test_validation_section_reads_the_evaluation_report(tmp_path):
    import json

    from rosette_bmz.export.docs import validation_section as _validation_section

    ckpt = tmp_path / "weights.pt"
    assert _validation_section(ckpt).startswith("Not evaluated")
    table = "| metric | Model | Baseline |\n|---|---|---|\n| Event recall | 91.0 % | 99.0 % |"
    (tmp_path / "weights.eval.json").write_text(json.dumps({"table_markdown": table, "data": "/x/synth_val"}))
    section = _validation_section(ckpt)
    assert table in section and "synth_val" in section and "Not evaluated" not in section
    # generalisation tables beside the checkpoint: the network's, then the checked one, in that order
    checked_table = tmp_path / "weights.generalisation_checked_tta.md"
    checked_table.write_text("# t\n\ntext\n\n| set | r |\n|---|---|\n| `b` | 2 |\n")
    section = _validation_section(ckpt)
    assert "**The same sets with the package's check** (from `weights.generalisation_checked_tta.md`" in section
    assert section.endswith("| set | r |\n|---|---|\n| `b` | 2 |") and "**Other worlds**" not in section
    (tmp_path / "weights.generalisation.md").write_text("| set | r |\n|---|---|\n| `a` | 1 |\n")
    section = _validation_section(ckpt)
    assert section.index("**Other worlds**") < section.index("| `a` | 1 |") < section.index("package's check")
    assert "text" not in section                                         # only the table rows are taken
    (tmp_path / "weights.eval.json").write_text("{broken")
    assert _validation_section(ckpt).startswith("Not evaluated")


# ----------------------------------------------------------------------------- variants (bioimageio-tested)
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["outlines", "labels"])
def test_variant_packages_pass_bioimageio_test(kind, tiny_ckpt, tmp_path):
    from rosette_bmz.checkpoint import load_checkpoint
    from rosette_bmz.convert import run_eager
    from rosette_bmz.inputs import from_labels, from_outlines

    rdf_path = export_package(tiny_ckpt, tmp_path, input_kind=kind, run_test=True)
    rdf = _rdf(rdf_path)
    (inp,) = rdf["inputs"]
    assert inp["id"] == kind and inp["axes"][1]["channel_names"] == [kind]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == kind.capitalize() + "AttentionUNet"
    x = np.load(tmp_path / PACKAGE_DIR / "test_input.npy")
    y = np.load(tmp_path / PACKAGE_DIR / "test_output.npy")
    assert x.shape == (1, 1, 512, 512)
    two = (from_outlines if kind == "outlines" else from_labels)(x[0, 0].astype(np.int64))
    np.testing.assert_allclose(y, run_eager(load_checkpoint(tiny_ckpt).model, two[None]), atol=1e-6)


# ----------------------------------------------------------------------------- published layout
@pytest.mark.slow
@pytest.mark.full_width
def test_published_layout_exports_and_passes(tmp_path):
    from reference import recipe_state_dict

    ckpt = _save(recipe_state_dict(), tmp_path / "published_recipe.pth")
    rdf_path = export_package(ckpt, tmp_path / "pkg", run_test=True)
    rdf = _rdf(rdf_path)
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"] == {
        "in_channels": 2, "out_channels": 1, "base_channels": 64}
    assert (tmp_path / "pkg" / PACKAGE_DIR / "weights.onnx").stat().st_size > 100e6  # one file, no external data


# ----------------------------------------------------------------------------- the committed package
def _same_onnx(a: bytes, b: bytes) -> bool:
    """Same graph, opset and tensor names; initialisers equal to float32 rounding (rel. 1e-6)."""
    import onnx
    from onnx import numpy_helper

    ma, mb = onnx.load_from_string(a), onnx.load_from_string(b)
    wa = {t.name: numpy_helper.to_array(t) for t in ma.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in mb.graph.initializer}
    if list(ma.graph.node) != list(mb.graph.node) or list(ma.opset_import) != list(mb.opset_import) \
            or list(ma.graph.input) != list(mb.graph.input) or list(ma.graph.output) != list(mb.graph.output) \
            or wa.keys() != wb.keys():
        return False
    return all(wa[k].shape == wb[k].shape and wa[k].dtype == wb[k].dtype
               and np.allclose(wa[k], wb[k], rtol=1e-6, atol=1e-6 * float(np.abs(wa[k]).max(initial=0)))
               for k in wa)


def compare_packages(expected: Path, actual: Path) -> list[str]:
    """Differences between two exports (rdf.yaml + model_package/).

    Everything must be byte-identical, except files computed on the CPU (and their sha256 in the
    rdf), which another CPU may reproduce only to the last bits: those are compared numerically
    (outputs 1e-5; cover colours within 2 levels; ONNX graph identical, weights rel. 1e-6).
    """
    import tifffile
    from PIL import Image

    problems = []
    exp_pkg, act_pkg = expected / PACKAGE_DIR, actual / PACKAGE_DIR
    exp_names = sorted(p.name for p in exp_pkg.iterdir())
    act_names = sorted(p.name for p in act_pkg.iterdir())
    if exp_names != act_names:
        return [f"file lists differ: {exp_names} vs {act_names}"]
    numeric_ok = set()
    for name in exp_names:
        a, b = (exp_pkg / name).read_bytes(), (act_pkg / name).read_bytes()
        if a == b:
            continue
        if name in OUTPUT_DERIVED:
            if name.endswith(".npy"):
                x, y = np.load(io.BytesIO(a)), np.load(io.BytesIO(b))
                ok = x.shape == y.shape and np.allclose(x, y, atol=1e-5, rtol=0)
            elif name.endswith(".tif"):
                x, y = tifffile.imread(io.BytesIO(a)), tifffile.imread(io.BytesIO(b))
                ok = x.shape == y.shape and np.allclose(x, y, atol=1e-5, rtol=0)
            elif name.endswith(".onnx"):
                ok = _same_onnx(a, b)
            else:
                x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=int)
                y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=int)
                ok = x.shape == y.shape and np.abs(x - y).max() <= 2
            if ok:
                numeric_ok.add(name)
                continue
        problems.append(f"{PACKAGE_DIR}/{name} differs")
    exp_rdf, act_rdf = _rdf(expected / "rdf.yaml"), _rdf(actual / "rdf.yaml")
    for f in _files(exp_rdf) + _files(act_rdf):
        if Path(f["source"]).name in numeric_ok:
            f["sha256"] = "numerically equal"
    if exp_rdf != act_rdf:
        problems.append("rdf.yaml differs")
    elif not numeric_ok and (expected / "rdf.yaml").read_bytes() != (actual / "rdf.yaml").read_bytes():
        problems.append("rdf.yaml differs in formatting")
    return problems


@pytest.mark.slow
def test_committed_package_is_the_exporters_output(tmp_path):
    committed = ROOT / "rdf.yaml"
    if not committed.is_file():
        pytest.skip("no committed root package yet")
    rdf = _rdf(committed)
    if not DEMO_CHECKPOINT.is_file():
        pytest.fail(f"root rdf.yaml is committed but its checkpoint {DEMO_CHECKPOINT} is missing")
    kind = {"boundaries": "channels", "outlines": "outlines", "labels": "labels"}[rdf["inputs"][0]["id"]]
    fresh = export_package(DEMO_CHECKPOINT, tmp_path, input_kind=kind, run_test=False)
    problems = compare_packages(ROOT, fresh.parent)
    assert not problems, ("the committed package is not what the exporter writes for "
                          f"{DEMO_CHECKPOINT.relative_to(ROOT)}: {problems}; regenerate it with "
                          f"`python -m rosette_bmz.export --checkpoint {DEMO_CHECKPOINT.relative_to(ROOT)} --force`")


def test_compare_packages_detects_changes(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported.parent / PACKAGE_DIR, copy / PACKAGE_DIR)
    shutil.copy(exported, copy / "rdf.yaml")
    assert compare_packages(exported.parent, copy) == []
    y = np.load(copy / PACKAGE_DIR / "test_output.npy")
    np.save(copy / PACKAGE_DIR / "test_output.npy", y + 1e-7)  # last-bit noise: tolerated
    assert compare_packages(exported.parent, copy) == []
    np.save(copy / PACKAGE_DIR / "test_output.npy", y + 1e-3)
    assert compare_packages(exported.parent, copy) == [f"{PACKAGE_DIR}/test_output.npy differs"]
    shutil.copy(exported.parent / PACKAGE_DIR / "test_output.npy", copy / PACKAGE_DIR / "test_output.npy")
    (copy / PACKAGE_DIR / "weights.pt").write_bytes(b"x")
    assert f"{PACKAGE_DIR}/weights.pt differs" in compare_packages(exported.parent, copy)
    shutil.copy(exported.parent / PACKAGE_DIR / "weights.pt", copy / PACKAGE_DIR / "weights.pt")
    import onnx
    from onnx import numpy_helper

    model = onnx.load(copy / PACKAGE_DIR / "weights.onnx")
    w = model.graph.initializer[0]
    x = numpy_helper.to_array(w)
    w.CopyFrom(numpy_helper.from_array(np.nextafter(x, np.float32(np.inf)), w.name))  # last bit: tolerated
    onnx.save(model, copy / PACKAGE_DIR / "weights.onnx")
    assert compare_packages(exported.parent, copy) == []
    w.CopyFrom(numpy_helper.from_array(x + 1e-3 * np.abs(x).max(), w.name))
    onnx.save(model, copy / PACKAGE_DIR / "weights.onnx")
    assert compare_packages(exported.parent, copy) == [f"{PACKAGE_DIR}/weights.onnx differs"]


@pytest.mark.slow
def test_committed_halo_makes_bioimageio_core_blocking_seamless(tmp_path):
    """bioimageio.core blocks the image with the rdf's halo: the committed 112 px give the
    runner's (= whole-image) result at every block seam; the same package declaring 64 px does not."""
    if not (ROOT / "rdf.yaml").is_file():
        pytest.skip("no committed root package yet")
    from rosette_bmz.inputs import from_outlines
    from rosette_bmz.runner import load_predictor, predict
    from rosette_bmz.synth import generate

    text = (ROOT / "rdf.yaml").read_text()
    assert text.count(f"halo: {HALO}") == 2
    (tmp_path / PACKAGE_DIR).symlink_to(ROOT / PACKAGE_DIR)
    (tmp_path / "rdf.yaml").write_text(text.replace(f"halo: {HALO}", "halo: 64"))
    x = from_outlines(generate(1024, seed=7).outlines)
    inner = (slice(128, -128), slice(128, -128))   # beyond the receptive field of the border
    diff = {}
    for halo, rdf in ((HALO, ROOT / "rdf.yaml"), (64, tmp_path / "rdf.yaml")):
        with load_predictor(rdf, "bioimageio", threads=2) as bio:   # bioimageio.core's default 672 px blocks
            blocked = predict(x, bio)
        with load_predictor(rdf, "onnx", threads=2) as pred:
            assert pred.halo == halo
        with load_predictor(rdf, "onnx", threads=2, pad="symmetric", border=halo) as same_padding:
            exact = predict(x, same_padding)
        diff[halo] = float(np.abs(blocked - exact)[inner].max())
    assert diff[HALO] < 1e-3, diff    # measured 1.3e-5
    assert diff[64] > 1e-2, diff      # measured 2.5e-2: the seams the 112 px halo removes

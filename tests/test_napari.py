"""The napari plugin: manifest, reader, sample data, the review state, and the widget in a real viewer.

The first tests need no Qt. The widget tests use napari's ``make_napari_viewer`` fixture
(pytest-qt) on a virtual X display (pytest-xvfb starts Xvfb; scripts/setup_gui.sh installs it):
keys are sent as Qt key events to the canvas, and the saved files are checked.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari", reason="the napari extra is not installed (scripts/setup.sh installs it)")

from rosette_bmz.napari import review as rv  # noqa: E402
from rosette_bmz.napari._reader import get_reader  # noqa: E402
from rosette_bmz.napari._sample import sample_data  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "rosette_bmz" / "data"
DEMO = DATA / "rosette_demo.pt"


def _crop(size: int = 320, y0: int = 0, x0: int = 0):
    """A corner of the bundled sample (outlines, true rosettes) with several rosettes in it."""
    o = tifffile.imread(DATA / "sample_outlines.tif")[y0:y0 + size, x0:x0 + size]
    r = tifffile.imread(DATA / "sample_rosettes.tif")[y0:y0 + size, x0:x0 + size]
    return (o > 0).astype(np.uint8), r.astype(np.uint32)


def _fake_prediction(tmp_path: Path):
    from rosette_bmz.proposals import find_proposals, write_csv, write_tiff

    prob = np.zeros((64, 64), np.float32)
    prob[10:20, 10:20] = 0.9
    prob[40:52, 30:44] = 0.7
    labels, rows = find_proposals(prob)
    paths = [write_tiff(tmp_path / "img_prob.tif", prob), write_tiff(tmp_path / "img_rosettes.tif", labels),
             write_csv(tmp_path / "img_rosettes.csv", rows)]
    return prob, labels, rows, paths


# ----------------------------------------------------------------------------- no Qt
def test_manifest_is_discovered_with_reader_sample_and_widget():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    mf = pm.get_manifest("rosette-bmz")
    assert [w.display_name for w in mf.contributions.widgets] == ["Rosette review"]
    assert [s.key for s in mf.contributions.sample_data] == ["sample"]
    patterns = mf.contributions.readers[0].filename_patterns
    assert "*.csv" not in patterns and "*.tif" not in patterns and "*_rosettes.csv" in patterns


def test_only_the_plugin_imports_napari_or_qt():
    import ast

    pkg = DATA.parent
    gui = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt")
    bad = []
    for path in pkg.rglob("*.py"):
        if (pkg / "napari") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(pkg)}: {n}" for n in names if n.split(".")[0] in gui]
    assert not bad, bad


def test_reader_opens_predict_outputs_as_image_labels_and_points(tmp_path):
    prob, labels, rows, paths = _fake_prediction(tmp_path)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert get_reader(str(tmp_path / "other.csv")) is None
    assert get_reader(str(tmp_path / "missing_rosettes.csv")) is None
    reader = get_reader([str(p) for p in paths])
    layers = reader([str(p) for p in paths])
    kinds = [k for _, _, k in layers]
    assert kinds == ["image", "labels", "points"]
    np.testing.assert_array_equal(layers[1][0], labels)
    coords, meta, _ = layers[2]
    np.testing.assert_allclose(coords, [[r["centroid_y"], r["centroid_x"]] for r in rows], atol=0.01)
    np.testing.assert_allclose(meta["features"]["max_prob"], [0.9, 0.7], atol=1e-4)


def test_sample_data_is_the_bundled_sample():
    layers = sample_data()
    assert [(m["name"], k) for _, m, k in layers] == [("sample_labels", "labels"), ("sample_outlines", "image")]
    assert layers[1][0].shape == (1024, 1024) and set(np.unique(layers[1][0])) <= {0, 1}


def test_review_save_is_the_trainers_layout_and_all_or_nothing(tmp_path, monkeypatch):
    from rosette_bmz.training.data import match_pairs

    prob, labels, rows, _ = _fake_prediction(tmp_path)
    outlines = np.zeros_like(labels, dtype=np.uint8)
    outlines[::8] = 1
    r = rv.Review.from_rows("img_outlines", outlines, rows)
    assert r.name == "img"
    r.step(+1)
    r.decide("rejected")
    r.step(+1)
    r.decide("accepted")
    lab = labels.copy()
    lab[56:60, 2:6] = r.new_id(lab)                      # a rosette the reviewer painted
    corr = tmp_path / "corr"
    paths = r.save(corr, lab)
    saved = tifffile.imread(paths["rosettes"])
    assert set(np.unique(saved)) == {0, 2, 3}            # 1 rejected, 2 accepted, 3 added
    table = list(csv.DictReader(open(paths["review"])))
    assert [(t["id"], t["status"]) for t in table] == [("1", "rejected"), ("2", "accepted"), ("3", "added")]
    assert all(t["decided"] for t in table) and float(table[0]["score"]) == pytest.approx(0.9)
    assert match_pairs(corr, corr) == [(paths["outlines"], paths["rosettes"])]
    assert rv.is_reviewed(corr, "img_outlines.tif")

    before = {k: p.read_bytes() for k, p in paths.items()}
    r.proposals[1].set("rejected")

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError):
        r.save(corr, lab)
    assert {k: p.read_bytes() for k, p in paths.items()} == before        # the previous save is intact
    assert sorted(p.name for p in corr.iterdir()) == sorted(p.name for p in paths.values())   # no temp files
    monkeypatch.undo()
    loaded, loaded_labels = rv.load_saved_review(corr, "img")
    assert [p.status for p in loaded.proposals] == ["rejected", "accepted", "added"]
    np.testing.assert_array_equal(loaded_labels, saved)


def test_review_schedule_trains_on_every_image_and_keeps_the_last_weights(tmp_path):
    """review.yaml: no held-out image, validation only after the last epoch, best.pt = last."""
    from rosette_bmz.training.train import resolve_config

    for i in range(2):
        o, m = _crop(128, 64 * i, 192)          # 2 rosettes each
        tifffile.imwrite(tmp_path / f"im{i}_outlines.tif", o)
        tifffile.imwrite(tmp_path / f"im{i}_rosettes.tif", m)
    cfg, _ = resolve_config("review", init=str(DEMO), images=str(tmp_path), masks=str(tmp_path),
                            out=str(tmp_path / "run"), epochs=2)
    cfg.data.crop_size, cfg.data.samples_per_epoch, cfg.optim.batch_size = 64, 2, 2
    cfg.data.replay.n_images, cfg.data.replay.size = 1, 128      # replay stays on (review.yaml), small
    events = list(_drain(rv.finetune_events(cfg)))
    steps = [e for e in events[:-1] if e[0] == "step"]
    assert len(steps) == 2 and steps[-1][1][:3] == (2, 1, 1)
    result = events[-1]
    assert result.best_epoch == 2 and result.epochs_run == 2
    hist = result.history
    assert np.isnan(hist[0]["val_loss"]) and np.isfinite(hist[1]["val_loss"])
    import json

    side = json.loads((tmp_path / "run" / "best.json").read_text())
    assert side["data"]["n_train_images"] == 2 and side["epoch"] == 2


def _drain(gen):
    """Yield a generator's items, then its return value."""
    while True:
        try:
            yield next(gen)
        except StopIteration as stop:
            yield stop.value
            return


# ----------------------------------------------------------------------------- the widget, in a viewer
@pytest.fixture
def widget(make_napari_viewer, tmp_path):
    from rosette_bmz.napari._widget import RosetteReviewWidget

    viewer = make_napari_viewer(show=True)
    w = RosetteReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Rosette review")
    w.model_edit.setText(str(DEMO))
    w.backend_box.setCurrentText("torch")
    w.corrections_edit.setText(str(tmp_path / "corrections"))
    return viewer, w


def _wait(qtbot, w, timeout=60_000):
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)
    qtbot.wait(50)


def _key(qtbot, viewer, key, shift=False):
    """A real Qt key press on the canvas (what the reviewer's keyboard sends)."""
    from qtpy.QtCore import Qt

    mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{key.upper()}"), mod)


def test_widget_detects_reviews_with_keys_and_saves(widget, qtbot):
    viewer, w = widget
    outlines, truth = _crop(320)
    viewer.add_image(outlines, name="tissue_outlines")
    assert w.layer_box.currentText() == "tissue_outlines"
    w.detect_layer()
    _wait(qtbot, w)
    assert w.review is not None, w.status_label.text()
    n = len(w.review.proposals)
    assert n >= 2, w.status_label.text()
    labels_layer, points = viewer.layers["tissue rosettes"], viewer.layers["tissue proposals"]
    assert len(points.data) == n and list(points.features["status"]) == ["pending"] * n

    _key(qtbot, viewer, "n")                           # first proposal: centred, accepted
    first = w.review.focus
    assert tuple(np.round(viewer.camera.center[-2:])) == (round(first.y), round(first.x))
    _key(qtbot, viewer, "k")
    _key(qtbot, viewer, "n")                           # second: rejected
    _key(qtbot, viewer, "j")
    _key(qtbot, viewer, "n", shift=True)               # back to the first
    assert w.review.focus is first and first.status == "accepted"
    assert list(points.features["status"][:2]) == ["accepted", "rejected"]
    np.testing.assert_allclose(points.face_color[1], rv.STATUS_COLORS["rejected"])

    edited = first.id                                  # the reviewer grows the first proposal's mask
    labels_layer.paint((first.y, first.x + 6), edited)
    _key(qtbot, viewer, "w")                           # add a missed rosette, painted with the brush
    new = labels_layer.selected_label
    assert labels_layer.mode == "paint" and new > max(p.id for p in w.review.proposals)
    labels_layer.brush_size = 7
    labels_layer.paint((300, 300), new)
    qtbot.waitUntil(lambda: w.review.proposals[-1].id == new, timeout=5000)   # registered when painted
    assert w.review.proposals[-1].id == new and w.review.proposals[-1].status == "added"

    w.save_button.click()
    corr = Path(w.corrections_edit.text())
    mask = tifffile.imread(corr / "tissue_rosettes.tif")
    second = w.review.proposals[1]
    assert not (mask == second.id).any()                          # rejected: removed
    assert (mask == new).sum() > 10 and mask[300, 300] == new      # added
    assert mask[round(first.y), round(first.x) + 6] == edited      # the edit is kept
    rows = {int(r["id"]): r["status"] for r in csv.DictReader(open(corr / "tissue_review.csv"))}
    assert rows[first.id] == "accepted" and rows[second.id] == "rejected" and rows[new] == "added"
    np.testing.assert_array_equal(tifffile.imread(corr / "tissue_outlines.tif"), outlines)


def test_widget_check_and_tta_boxes_review_the_checked_proposals(widget, qtbot):
    from rosette_bmz.runner import load_predictor

    viewer, w = widget
    outlines, _ = _crop(320)
    viewer.add_image(outlines, name="tissue_outlines")
    w.check_box.setChecked(True)
    w.tta_box.setChecked(True)
    w.detect_layer()
    _wait(qtbot, w)
    assert w.review is not None, w.status_label.text()
    with load_predictor(DEMO, "torch") as pred:
        prob, labels, rows = rv.detect(outlines, "outlines", pred, check=True, tta=True)
        plain_prob, _, plain = rv.detect(outlines, "outlines", pred)
        _, _, checked = rv.detect(outlines, "outlines", pred, check=True)
    assert rows and {r["source"] for r in rows} <= {"network", "vertex"}
    assert [(p.id, round(p.y, 2)) for p in w.review.proposals] == [(r["id"], round(r["centroid_y"], 2)) for r in rows]
    np.testing.assert_array_equal(viewer.layers["tissue rosettes"].data, labels)
    shown = np.asarray(viewer.layers["tissue probability"].data)        # the 8-view mean, not the plain map
    assert np.abs(shown - prob).max() < 1e-6 and np.abs(shown - plain_prob).max() > 1e-3
    assert len(checked) != len(plain)                                   # the check changes this crop's proposals


def test_widget_folder_mode_skips_reviewed_autosaves_and_finetunes(widget, qtbot, tmp_path):
    viewer, w = widget
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (y0, x0) in enumerate([(0, 0), (320, 320), (640, 0)]):
        tifffile.imwrite(folder / f"e{i}.tif", _crop(256, y0, x0)[0])
    corr = Path(w.corrections_edit.text())
    rv.Review("e0", _crop(256)[0]).save(corr, _crop(256)[1])     # e0 is already reviewed

    preds = tmp_path / "predictions"                   # e2 was run by `rosette-bmz predict` already
    preds.mkdir()
    from rosette_bmz.proposals import find_proposals, write_csv, write_tiff

    prob = np.zeros((256, 256), np.float32)
    prob[100:120, 100:120] = 0.8
    labels, rows = find_proposals(prob)
    write_tiff(preds / "e2_rosettes.tif", labels)
    write_csv(preds / "e2_rosettes.csv", rows)
    w.predictions_edit.setText(str(preds))

    w.open_folder(str(folder))
    _wait(qtbot, w)
    assert w.folder_index == 1 and w.review.name == "e1"        # e0 skipped
    _key(qtbot, viewer, "n")
    _key(qtbot, viewer, "k")
    w.next_image()                                               # autosaves e1, opens e2
    _wait(qtbot, w)
    assert (corr / "e1_review.csv").is_file() and w.review.name == "e2"
    assert "e1" not in viewer.layers and "e1 rosettes" not in viewer.layers and "e2 rosettes" in viewer.layers
    assert "accepted" in (corr / "e1_review.csv").read_text()
    assert [(p.id, p.y, p.x) for p in w.review.proposals] == [(1, 109.5, 109.5)]   # pre-loaded, not run
    w.previous_image()                                           # e1 again: its saved review, no model run
    assert w.review.name == "e1" and w.review.counts()["accepted"] == 1

    w.train_overrides = {"data.crop_size": 64, "data.samples_per_epoch": 2, "optim.batch_size": 2,
                         "data.replay.n_images": 1, "data.replay.size": 128}
    w.epochs_spin.setValue(1)
    w.finetune()
    _wait(qtbot, w, timeout=120_000)                             # training, then detection again
    assert w.last_checkpoint is not None and w.last_checkpoint.is_file(), w.status_label.text()
    assert w.model_edit.text() == str(w.last_checkpoint)
    assert "loss" in w.loss_label.text() and w.review.name == "e1"
    assert w.progress.value() == w.progress.maximum()

    calls = []
    import rosette_bmz.export as export

    monkey = pytest.MonkeyPatch()
    monkey.setattr(export, "export_package", lambda ckpt, out, **k: calls.append((ckpt, out, k)) or out / "rdf.yaml")
    try:
        w.export_model(str(tmp_path / "pkg"), run_test=False)
        _wait(qtbot, w)
    finally:
        monkey.undo()
    assert calls and calls[0][0] == w.last_checkpoint and "exported" in w.status_label.text()

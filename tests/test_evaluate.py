"""`rosette-bmz evaluate`: data loading, the side-by-side table, the JSON report, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from rosette_bmz import evaluate as E
from rosette_bmz.cli import main
from rosette_bmz.inputs import inner_outlines


def _oracle(items):
    """A predict_fn that returns the ground truth of the image it is given (matched by the input)."""
    table = {it.outlines.tobytes(): it.rosettes for it in items}

    def fn(x):
        assert x.dtype == np.float32 and x.shape[0] == 2
        return (table[x[1].astype(np.uint8).tobytes()] > 0).astype(np.float32)
    return fn


def test_load_synth_folder(synth_dir):
    items = E.load_eval_dataset(synth_dir)
    assert [it.name for it in items] == ["synth_0000", "synth_0001"]
    for it in items:
        assert it.outlines.shape == it.rosettes.shape == (192, 192)
        assert it.labels is not None and it.meta["cell_diameter"] > 0
        assert len(it.decoys) == len(it.meta["decoys"])
        assert it.rosettes.max() == len(it.meta["rosettes"])


def test_perfect_and_empty_predictions_give_known_numbers(synth_dir):
    items = E.load_eval_dataset(synth_dir)
    n_ros = sum(len(it.meta["rosettes"]) for it in items)
    n_dec = sum(len(it.decoys) for it in items)
    rep = E.evaluate_dataset(None, items, predict_fn=_oracle(items))
    m = rep["metrics"]["model"]
    assert m["n_rosettes"] == n_ros and m["n_decoys"] == n_dec and m["n_images"] == 2
    for key in ("pixel_dice", "pixel_f1", "pixel_recall", "event_recall", "coverage_ge10_at04",
                "coverage_gt80_at05", "coverage_gt40_at05", "event_precision"):
        assert m[key] == pytest.approx(1.0), key
    assert m["completely_missed"] == 0 and m["n_decoys_hit"] == 0
    assert m["n_proposals"] == n_ros                      # one proposal per (separate) rosette
    assert m["proposals_per_image"] == pytest.approx(n_ros / 2)
    assert m["false_proposals_per_image"] == 0

    rep0 = E.evaluate_dataset(None, items, predict_fn=lambda x: np.zeros(x.shape[1:], np.float32),
                              baseline=False)
    z = rep0["metrics"]["model"]
    assert z["event_recall"] == 0 and z["completely_missed"] == 1 and z["pixel_recall"] == 0
    assert z["pixel_dice"] == 0 and z["n_proposals"] == 0 and z["event_precision"] is None
    assert rep0["metrics"]["baseline"] is None
    assert "| Event precision (proposals on a rosette) | n/a | — |" in rep0["table_markdown"]


def test_table_has_model_baseline_and_card_columns(synth_dir):
    items = E.load_eval_dataset(synth_dir)
    rep = E.evaluate_dataset(None, items, predict_fn=_oracle(items))
    table = rep["table_markdown"]
    lines = table.splitlines()
    assert lines[0] == "| Metric | Model | Baseline | Model card |"
    assert len([ln for ln in lines if ln.startswith("| ")]) == 1 + len(E.ROWS)
    assert "| Pixel-level Dice (soft, mean per image) | 1.00 |" in table
    assert "| 0.51 |" in table and "| 0.61 |" in table and "| 0.64 |" in table
    assert "88.8 % (239/269)" in table and "11.2 % (30/269)" in table
    b = rep["metrics"]["baseline"]
    # the baseline's numbers are its own (computed from the outlines), within range
    assert 0 <= b["event_recall"] <= 1 and b["n_rosettes"] == rep["metrics"]["model"]["n_rosettes"]
    assert f"{100 * b['event_recall']:.1f} % ({b['n_detected']}/{b['n_rosettes']})" in table
    assert len(rep["per_image"]) == 2 and set(rep["per_image"][0]) == {"name", "model", "baseline"}


def test_check_scores_the_proposals_kept_by_the_vertex_graph(synth_dir):
    """A detector that proposes every rosette and every decoy (4-cell junction) at p = 0.6: the checked
    column drops the decoys and keeps the rosettes."""
    items = E.load_eval_dataset(synth_dir)
    table = {}
    for it in items:
        yy, xx = np.mgrid[:it.rosettes.shape[0], :it.rosettes.shape[1]]
        p = 0.6 * (it.rosettes > 0)
        for d in it.decoys:
            p[(yy - d["y"]) ** 2 + (xx - d["x"]) ** 2 <= 9] = 0.6
        table[it.outlines.tobytes()] = p.astype(np.float32)
    rep = E.evaluate_dataset(None, items, predict_fn=lambda x: table[x[1].astype(np.uint8).tobytes()],
                             check=True)
    m, c = rep["metrics"]["model"], rep["metrics"]["checked"]
    assert rep["table_markdown"].splitlines()[0] == "| Metric | Model | Checked | Baseline | Model card |"
    assert set(rep["per_image"][0]) == {"name", "model", "checked", "baseline"} and "checked" in rep["seconds"]
    assert m["n_decoys"] > 0 and m["n_decoys_hit"] >= 0.9 * m["n_decoys"]
    assert c["n_decoys_hit"] <= 0.1 * c["n_decoys"]
    assert c["event_precision"] >= 0.8 > 0.5 > m["event_precision"]
    assert c["event_recall"] >= m["event_recall"] - 0.1
    assert "checked" not in E.evaluate_dataset(None, items, predict_fn=_oracle(items), baseline=False)["metrics"]


def test_napari_layout_labels_only_without_json(tmp_path, synth_dir):
    """<name>_labels.tif + <name>_rosettes.tif, no outlines, no JSON: outlines drawn from the labels."""
    items = E.load_eval_dataset(synth_dir)
    lab = items[0].labels
    tifffile.imwrite(tmp_path / "embryo1_labels.tif", lab)
    tifffile.imwrite(tmp_path / "embryo1_rosettes.tif", items[0].rosettes.astype(np.uint16))
    got = E.load_eval_dataset(tmp_path)
    assert len(got) == 1 and got[0].name == "embryo1" and got[0].meta == {}
    assert np.array_equal(got[0].outlines, inner_outlines(lab).astype(np.uint8))
    rep = E.evaluate_dataset(None, got, predict_fn=_oracle(got), baseline_input="labels")
    assert rep["metrics"]["model"]["n_decoys"] == 0
    assert "| Decoys hit (4-cell junctions, small cells) | n/a | n/a |" in rep["table_markdown"]


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(E.EvaluationError, match="no such directory"):
        E.load_eval_dataset(tmp_path / "nope")
    with pytest.raises(E.EvaluationError, match="no ground truth found"):
        E.load_eval_dataset(tmp_path)
    tifffile.imwrite(tmp_path / "a_rosettes.tif", np.zeros((32, 32), np.uint16))
    with pytest.raises(E.EvaluationError, match="a_rosettes.tif: no input beside it"):
        E.load_eval_dataset(tmp_path)
    tifffile.imwrite(tmp_path / "a_outlines.tif", np.zeros((32, 40), np.uint8))
    with pytest.raises(E.EvaluationError, match="differ in shape"):
        E.load_eval_dataset(tmp_path)
    tifffile.imwrite(tmp_path / "a_outlines.tif", np.zeros((32, 32), np.uint8))
    (tmp_path / "a.json").write_text('{"decoys": [{"y": 3}]}')
    with pytest.raises(E.EvaluationError, match="a.json: every decoy needs"):
        E.load_eval_dataset(tmp_path)
    tifffile.imwrite(tmp_path / "a_rosettes.tif", np.zeros((32, 32), np.float32))
    with pytest.raises(E.EvaluationError, match="integer label image"):
        E.load_eval_dataset(tmp_path)


def test_bad_outlines_are_refused_by_the_input_builder(tmp_path):
    from rosette_bmz.inputs import InputError

    lab = np.arange(32 * 32, dtype=np.int32).reshape(32, 32) % 7 + 1
    tifffile.imwrite(tmp_path / "b_outlines.tif", lab)          # a label image saved as outlines
    tifffile.imwrite(tmp_path / "b_rosettes.tif", np.zeros((32, 32), np.uint16))
    with pytest.raises(InputError, match="b_outlines.tif.*looks like a label image"):
        E.evaluate_dataset(None, tmp_path, predict_fn=lambda x: np.zeros(x.shape[1:], np.float32))


def test_report_json_is_written_atomically(tmp_path, synth_dir):
    items = E.load_eval_dataset(synth_dir)
    rep = E.evaluate_dataset(None, items, predict_fn=_oracle(items))
    path = E.write_report(rep, tmp_path / "r.json")
    back = json.loads(path.read_text())
    assert back["table_markdown"] == rep["table_markdown"]
    assert back["metrics"]["model"]["event_recall"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]          # no temporary file left
    with pytest.raises(E.EvaluationError, match="does not exist"):
        E.write_report(rep, tmp_path / "missing" / "r.json")


def test_cli_with_a_real_checkpoint(tmp_path, synth_dir, tiny_state, capsys):
    """End to end: a (tiny, untrained) checkpoint through the torch runner; the report lands
    beside the checkpoint as <stem>.eval.json, where the exporter looks for it."""
    from rosette_bmz.checkpoint import save_checkpoint
    from rosette_bmz.model import AttentionUNet

    model = AttentionUNet(base_channels=4)
    model.load_state_dict(tiny_state)
    ckpt = save_checkpoint(model, tmp_path / "tiny.pt", {"note": "test"})
    out = tmp_path / "tiny.eval.json"
    rc = main(["evaluate", "--model", str(ckpt), "--data", str(synth_dir), "--backend", "torch",
               "--mode", "halo", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| Metric | Model | Baseline | Model card |" in printed and f"wrote {out}" in printed
    rep = json.loads(out.read_text())
    assert rep["backend"] == "torch" and rep["mode"] == "halo" and rep["n_images"] == 2
    m = rep["metrics"]["model"]
    assert 0 <= m["pixel_f1"] <= 1 and 0 <= m["event_recall"] <= 1
    # the numbers equal an independent run of the same predictor through the library
    from rosette_bmz.runner import load_predictor, predict

    pred = load_predictor(str(ckpt), "torch")
    items = E.load_eval_dataset(synth_dir)
    rep2 = E.evaluate_dataset(None, items, predict_fn=lambda x: predict(x, pred, mode="halo"), baseline=False)
    assert rep2["metrics"]["model"]["pixel_tp"] == m["pixel_tp"]
    assert rep2["metrics"]["model"]["pixel_dice"] == pytest.approx(m["pixel_dice"], rel=1e-5)


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    rc = main(["evaluate", "--model", "x.pt", "--data", str(tmp_path), "--out", str(tmp_path / "no" / "r.json")])
    assert rc == 2 and "cannot write the report" in capsys.readouterr().err


def test_exactly_one_of_model_and_predict_fn(synth_dir):
    with pytest.raises(E.EvaluationError, match="exactly one"):
        E.evaluate_dataset(None, synth_dir)


def test_truth_from_labels_is_the_generators_truth(tmp_path):
    """--truth labels applies the definition to <name>_labels.tif: on a synthetic image, segmentation
    noise and tissue-free space included, the ground truth is the generator's own."""
    from rosette_bmz.synth import write_dataset

    write_dataset(tmp_path, n=2, size=256, seed=5, noise=0.6, cell_diameter=18, tissue_free=0.1, progress=False)
    files = E.load_eval_dataset(tmp_path)
    rule = E.load_eval_dataset(tmp_path, truth="labels")
    assert [it.name for it in rule] == [it.name for it in files]
    n = 0
    for a, b in zip(files, rule):
        np.testing.assert_array_equal(a.rosettes, b.rosettes)
        assert [(d["y"], d["x"]) for d in a.decoys] == [(d["y"], d["x"]) for d in b.decoys]
        n += int(a.rosettes.max())
    assert n > 0
    rep = E.evaluate_dataset(None, tmp_path, predict_fn=_oracle(rule), truth="labels", baseline=False)
    m = rep["metrics"]["model"]
    assert rep["settings"]["truth"] == "labels"
    assert m["event_recall"] == 1 and m["event_precision"] == 1 and m["n_decoys_hit"] == 0
    # a label image alone is enough
    for p in tmp_path.glob("*_outlines.tif"):
        p.unlink()
    for p in tmp_path.glob("*_rosettes.tif"):
        p.unlink()
    assert len(E.load_eval_dataset(tmp_path, truth="labels")) == 2
    with pytest.raises(E.EvaluationError, match="no ground truth"):
        E.load_eval_dataset(tmp_path)
    with pytest.raises(E.EvaluationError, match="truth must be one of"):
        E.load_eval_dataset(tmp_path, truth="guess")

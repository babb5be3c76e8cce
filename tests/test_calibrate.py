"""`rosette-bmz calibrate`: the threshold sweep, the choice, and the threshold baked into the bias."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rosette_bmz import calibrate as C
from rosette_bmz.cli import main
from rosette_bmz.evaluate import load_eval_dataset


def _graded(items):
    """0.7 on every rosette, plus one false 8x8 blob at 0.45 where there is no rosette."""
    table = {}
    for it in items:
        prob = 0.7 * (it.rosettes > 0).astype(np.float32)
        free = np.argwhere(np.lib.stride_tricks.sliding_window_view(it.rosettes, (12, 12)).max(axis=(2, 3)) == 0)
        y, x = free[len(free) // 2]
        prob[y + 2:y + 10, x + 2:x + 10] = 0.45
        table[it.outlines.tobytes()] = prob

    return lambda x: table[x[1].astype(np.uint8).tobytes()]


def test_sweep_reads_the_event_metrics_at_each_threshold(synth_dir):
    items = load_eval_dataset(synth_dir)
    sweep = {r["threshold"]: r for r in C.threshold_sweep(items, _graded(items), (0.4, 0.45, 0.5, 0.75))}
    n = sweep[0.5]["n_rosettes"]
    assert n > 0 and all(r["n_rosettes"] == n for r in sweep.values())
    assert sweep[0.4]["event_recall"] == 1.0 and sweep[0.4]["event_precision"] < 1.0   # the blob counts
    assert sweep[0.45]["event_precision"] == sweep[0.5]["event_precision"] == 1.0      # p > t: not at 0.45
    assert sweep[0.75]["event_recall"] == 0.0 and sweep[0.75]["event_f1"] is None
    rows = list(sweep.values())
    assert C.choose_threshold(rows) == (0.5, "highest event F1")          # a tie: the one nearest 0.5
    assert C.choose_threshold(rows, min_precision=1.0)[0] == 0.45           # the most recall at that precision
    t, why = C.choose_threshold([{**r, "event_precision": 0.5} for r in rows if r["event_f1"]], min_precision=0.9)
    assert "no threshold reached" in why
    with pytest.raises(Exception, match="strictly between"):
        C.threshold_sweep(items, _graded(items), (0.0, 0.5))


def test_shift_threshold_moves_the_output_exactly(tiny_state, rng):
    from rosette_bmz.checkpoint import build_model

    x = torch.from_numpy(np.stack([rng.random((1, 64, 64)) > 0.5] * 2, axis=1).astype(np.float32))
    with torch.no_grad():
        before = build_model(tiny_state).eval()(x)
        after = build_model(C.shift_threshold(tiny_state, 0.3)).eval()(x)
    t = float(np.quantile(before.numpy(), 0.5))     # a threshold inside the output's range
    with torch.no_grad():
        shifted = build_model(C.shift_threshold(tiny_state, t)).eval()(x)
    logit = torch.logit(after.double()) - torch.logit(before.double())
    assert torch.allclose(logit, torch.full_like(logit, -math.log(0.3 / 0.7)), atol=1e-4)
    far = (before - t).abs() > 1e-5
    assert far.any() and torch.equal((shifted >= 0.5)[far], (before >= t)[far])
    assert torch.equal(tiny_state["final.0.bias"], build_model(tiny_state).state_dict()["final.0.bias"])  # untouched
    with pytest.raises(Exception, match="strictly between"):
        C.shift_threshold(tiny_state, 1.0)


def test_calibrate_cli_writes_the_shifted_checkpoint(tmp_path, synth_dir, tiny_state, capsys):
    ckpt, out = tmp_path / "tiny.pt", tmp_path / "tiny_calibrated.pt"
    torch.save(tiny_state, ckpt)
    assert main(["calibrate", "--model", str(ckpt), "--data", str(synth_dir), "--out", str(out),
                 "--backend", "torch", "--mode", "halo"]) == 0
    printed = capsys.readouterr().out
    assert "(chosen)" in printed and "baked into" in printed
    report = json.loads(out.with_suffix(".json").read_text())["calibration"]
    t = report["threshold"]
    assert t in C.THRESHOLDS and len(report["sweep"]) == len(C.THRESHOLDS) and report["images"] == 2
    assert report["chosen"] == t and report["previous"] is None
    bias = torch.load(out, weights_only=True)["final.0.bias"]
    assert torch.allclose(bias, tiny_state["final.0.bias"] - math.log(t / (1 - t)), atol=1e-6)
    # calibrating calibrated weights (a run trained from them keeps the offset): the offsets add up, and the
    # sidecar's threshold counts from the uncalibrated weights, which is what a fine-tune takes off again
    again = tmp_path / "again.pt"
    assert main(["calibrate", "--model", str(out), "--data", str(synth_dir), "--out", str(again),
                 "--backend", "torch", "--mode", "halo"]) == 0
    assert "uncalibrated weights" in capsys.readouterr().out
    r2 = json.loads(again.with_suffix(".json").read_text())["calibration"]
    assert r2["previous"] == t and r2["chosen"] in C.THRESHOLDS
    assert C.logit(r2["threshold"]) == pytest.approx(C.logit(t) + C.logit(r2["chosen"]), abs=1e-5)
    assert C.calibration_threshold(again) == r2["threshold"]
    bias2 = torch.load(again, weights_only=True)["final.0.bias"]
    assert torch.allclose(bias2, tiny_state["final.0.bias"] - C.logit(r2["threshold"]), atol=1e-5)
    # errors: one line each, nothing written
    assert main(["calibrate", "--model", str(ckpt), "--data", str(synth_dir), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(tmp_path / "rdf.yaml"), "--data", str(synth_dir),
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "checkpoint" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_the_package_carries_the_calibration_to_a_fine_tune(tmp_path, tiny_state):
    """An export of a calibrated checkpoint writes the threshold into the rdf (config.rosette_bmz), so a
    fine-tune from the rdf.yaml (the napari widget's default) trains without the offset, as from the checkpoint."""
    import yaml

    from rosette_bmz.checkpoint import build_model, save_checkpoint
    from rosette_bmz.constants import RDF_CONFIG_KEY
    from rosette_bmz.export import export_package

    ckpt = save_checkpoint(build_model(C.shift_threshold(tiny_state, 0.7)), tmp_path / "cal.pt",
                           {"calibration": {"threshold": 0.7}})
    rdf = export_package(ckpt, tmp_path / "pkg", run_test=False)        # validated by bioimageio.spec
    assert yaml.safe_load(rdf.read_text())["config"][RDF_CONFIG_KEY] == {"calibration": {"threshold": 0.7}}
    assert C.calibration_threshold(rdf) == C.calibration_threshold(ckpt) == 0.7
    plain = export_package(save_checkpoint(build_model(tiny_state), tmp_path / "plain.pt"), tmp_path / "plain",
                           run_test=False)
    assert RDF_CONFIG_KEY not in yaml.safe_load(plain.read_text())["config"]
    assert C.calibration_threshold(plain) is None
    bad = tmp_path / "bad.yaml"
    for text in ("config: [1, 2", "config:\n  rosette_bmz: {calibration: {threshold: 1.5}}", "- a list"):
        bad.write_text(text)
        assert C.calibration_threshold(bad) is None

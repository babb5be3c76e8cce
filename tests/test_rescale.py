"""Cell size measured on outlines, inputs resampled to the network's cell size, and back."""

from __future__ import annotations

import numpy as np
import pytest

from rosette_bmz.constants import MODEL_CELL_DIAMETER
from rosette_bmz.errors import InputError
from rosette_bmz.inputs import from_outlines
from rosette_bmz.rescale import (cell_diameter, resample_outlines, resample_probability, resolve_cell_diameter,
                                 scale_factor)
from rosette_bmz.synth import generate


@pytest.fixture(scope="module")
def tissue():
    return {d: generate(384, seed=3, cell_diameter=d, noise=0.0, gradient=1.0, tissue_free=0.0) for d in (14, 30)}


@pytest.mark.parametrize("d", [14, 30])
def test_cell_diameter_measures_the_generators_diameter(tissue, d):
    assert cell_diameter(tissue[d].outlines) == pytest.approx(d, rel=0.08)


def test_too_few_cells_is_one_clear_error():
    lines = np.zeros((64, 64), dtype=np.uint8)
    lines[32, :] = 1
    with pytest.raises(InputError, match="cell diameter.*whole cells"):
        cell_diameter(lines, "tiny.tif")


def test_scale_factor_leaves_cells_near_the_networks_size_alone():
    assert scale_factor(MODEL_CELL_DIAMETER) == 1.0
    assert scale_factor(MODEL_CELL_DIAMETER * 1.2) == 1.0
    assert scale_factor(12) == pytest.approx(2.0)
    assert scale_factor(48) == pytest.approx(0.5)
    with pytest.raises(InputError):
        scale_factor(0)


def test_resolve_cell_diameter(tissue):
    lines = tissue[14].outlines
    assert resolve_cell_diameter(None, lines) is None
    assert resolve_cell_diameter("17.5", lines) == 17.5
    assert resolve_cell_diameter(" Auto ", lines) == pytest.approx(14, rel=0.08)
    for bad in ("big", "-3", "nan", 0):
        with pytest.raises(InputError, match="cell diameter"):
            resolve_cell_diameter(bad, lines)


@pytest.mark.parametrize("d,factor", [(14, 24 / 14), (30, 0.8)])
def test_resample_outlines_scales_the_cells_and_keeps_thin_lines(tissue, d, factor):
    lines = tissue[d].outlines > 0
    out = resample_outlines(lines, factor)
    assert out.dtype == bool and out.shape == tuple(round(s * factor) for s in lines.shape)
    assert cell_diameter(out) == pytest.approx(d * factor, rel=0.08)
    # inner outlines: each cell's border 1 px, so the line fraction scales like 1 / diameter
    assert out.mean() == pytest.approx(lines.mean() / factor, rel=0.2)


def test_resample_probability_is_bilinear_and_exact_in_shape():
    ramp = np.tile(np.linspace(0, 1, 50, dtype=np.float32), (40, 1))
    up = resample_probability(ramp, (80, 100))
    assert up.shape == (80, 100) and up.dtype == np.float32
    assert np.all(np.diff(up[0]) >= -1e-7) and up.min() >= 0 and up.max() <= 1
    back = resample_probability(up, (40, 50))
    np.testing.assert_allclose(back[:, 2:-2], ramp[:, 2:-2], atol=1e-5)


def test_predict_with_cell_diameter(tissue):
    import torch

    from rosette_bmz.model import AttentionUNet
    from rosette_bmz.runner import load_predictor, predict

    torch.manual_seed(0)
    net = AttentionUNet(2, 1, base_channels=4).eval()
    x = from_outlines(tissue[14].outlines)
    with load_predictor(net, "torch", threads=1) as p:
        plain = predict(x, p)
        same = predict(x, p, cell_diameter=MODEL_CELL_DIAMETER)      # within tolerance: not resampled
        scaled = predict(x, p, cell_diameter="auto")                # 14 px -> 24 px cells and back
        out = np.full(x.shape[-2:], -1, dtype=np.float32)
        given = predict(x, p, cell_diameter=14, out=out)
    np.testing.assert_array_equal(same, plain)
    assert scaled.shape == plain.shape and np.isfinite(scaled).all() and 0 <= scaled.min() <= scaled.max() <= 1
    assert np.abs(scaled - plain).max() > 1e-3                      # the network saw other pixels
    assert given is out and np.abs(given - scaled).max() < 0.05     # auto measured ~14 px

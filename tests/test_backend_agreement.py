"""The four backends agree on every pixel, border included, for image sizes off the 16 px grid.

Issue 12: on a 700 x 900 image the ``bioimageio`` backend differed from the others by up to
0.99 in the last columns even with ``pad="symmetric"``: it padded the image only up to a
multiple of 16 and bioimageio.core then mirrored its halo about that padded edge, so the grid
fill was mirrored twice, while the runner mirrors every padded pixel about the real image edge.
The bioimageio backend now pads the image exactly as the runner does
(:func:`rosette_bmz.backends.pad_like_runner`) and crops the result.

Runs the committed demo package (base 16) on a synthetic image; the sizes are not multiples of
16 (700 -> 704, 900 -> 912 leave a 4 / 12 px fill; 517 needs more than one block's fill).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pathlib import Path

from rosette_bmz.constants import BACKENDS, DEFAULT_HALO
from rosette_bmz.inputs import from_outlines
from rosette_bmz.runner import load_predictor, predict
from rosette_bmz.runner.sources import ArraySource
from rosette_bmz.runner.tiling import pad_like_runner

RDF = Path(__file__).resolve().parents[1] / "rdf.yaml"
SIZES = [(700, 900), (517, 1029)]
TOL = 1e-3   # the README's promise; measured: ~3.5e-5 (bioimageio.core's blocks), ~3e-6 (onnx)


@pytest.fixture(scope="module")
def images():
    from rosette_bmz.synth import generate

    # tissue up to every image edge, so the border padding matters
    outlines = generate((700, 1029), seed=7, tissue_free=0).outlines
    return {size: from_outlines(np.ascontiguousarray(outlines[:size[0], :size[1]])) for size in SIZES}


@pytest.fixture(scope="module")
def predictors():
    if not RDF.is_file():
        pytest.skip(f"{RDF} (the committed demo package) is missing")
    preds = {}
    try:
        for backend in BACKENDS:
            preds[backend] = load_predictor(RDF, backend, threads=2)
        yield preds
    finally:
        for pred in preds.values():
            pred.close()


def _check(out: dict[str, np.ndarray], ref: str, what: str) -> None:
    for backend, p in out.items():
        d = np.abs(p - out[ref])
        at = np.unravel_index(int(d.argmax()), d.shape)
        assert d.max() <= TOL, (f"{what}: {backend} vs {ref}: max |diff| {d.max():.3g} at {at}, "
                                f"{np.mean(d > TOL):.2%} of the pixels off by > {TOL}")


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_backend_agrees_on_every_pixel_with_symmetric_padding(predictors, images, size):
    x = images[size]
    out = {b: predict(x, pred, mode="halo", pad="symmetric") for b, pred in predictors.items()}
    assert predictors["bioimageio"].border_for("symmetric") == DEFAULT_HALO   # the default: the halo, mirrored
    for p in out.values():
        assert p.shape == size
    assert out["torch"].std() > 0.01                                           # not a constant output
    _check(out, "torch", f"{size}, pad=symmetric")


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("pad", ["reflect", "constant"])
def test_bioimageio_agrees_with_the_runner_on_every_pixel_with_other_padding(predictors, images, size, pad):
    """reflect (border = the halo by default) and zeros with ``border=halo``.

    With zeros and the default border 0 the runner's tiles end at the image edge (the network's
    own zero padding) while bioimageio.core always pads by its halo, so those two cannot agree
    near the border (measured 0.24-0.42); that is documented, not tested here.
    """
    x = images[size]
    out = {}
    for b in ("onnx", "bioimageio"):    # onnx = torch = torchscript: the tiles are the same
        pred = replace(predictors[b], border=DEFAULT_HALO)   # same backend session
        out[b] = predict(x, pred, mode="halo", pad=pad)
    _check(out, "onnx", f"{size}, pad={pad}, border={DEFAULT_HALO}")


@pytest.mark.parametrize("pad", ["symmetric", "reflect", "constant"])
@pytest.mark.parametrize("border", [0, 5, DEFAULT_HALO])
@pytest.mark.parametrize("shape,min_shape", [((37, 61), (0, 0)), ((37, 61), (672, 96)), ((64, 48), (0, 0))])
def test_pad_like_runner_is_the_runners_padding(rng, pad, border, shape, min_shape):
    """What the bioimageio backend hands to bioimageio.core is what halo mode's tiles read."""
    x = rng.random((2, *shape)).astype(np.float32)
    got = pad_like_runner(x, pad, border, min_shape)
    ty = max(min_shape[0], -(-(shape[0] + 2 * border) // 16) * 16)
    tx = max(min_shape[1], -(-(shape[1] + 2 * border) // 16) * 16)
    assert got.shape == (2, ty, tx)
    # the runner: one tile covering the whole padded image, real image at (border, border)
    want = np.full((2, ty, tx), np.nan, np.float32)
    ArraySource(x).fill(want, 0, 0, border, pad)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, border:border + shape[0], border:border + shape[1]], x)

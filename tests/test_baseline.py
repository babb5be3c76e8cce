"""Classical vertex-multiplicity baseline: hand-made tissues with known answers, then synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rosette_bmz import baseline as B
from rosette_bmz import metrics as M
from rosette_bmz.inputs import inner_outlines


def pinwheel(k: int, n: int = 64, cy: float = 31.7, cx: float = 32.3, hole: float = 0) -> np.ndarray:
    """k wedge cells meeting at (cy, cx); ``hole`` > 0 paints a small central cell of that radius."""
    yy, xx = np.mgrid[:n, :n]
    ang = np.arctan2(yy - cy, xx - cx) % (2 * np.pi)
    lab = (np.floor(ang / (2 * np.pi / k)).astype(np.int32) % k) + 1
    if hole:
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= hole ** 2] = k + 1
    return lab


def hexgrid(n: int = 96, d: float = 16.0) -> np.ndarray:
    """Voronoi tiling of a hexagonal lattice: every vertex is a 3-cell vertex."""
    pts = [(i * d * np.sqrt(3) / 2 + 0.3, j * d + (i % 2) * d / 2 + 0.2)
           for i in range(-2, int(n / d * 2) + 3) for j in range(-2, int(n / d) + 3)]
    pts = np.array(pts)
    yy, xx = np.mgrid[:n, :n]
    dist = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    return (np.argmin(dist, axis=-1) + 1).astype(np.int32)


def _as(kind: str, lab: np.ndarray) -> np.ndarray:
    return lab if kind == "labels" else inner_outlines(lab).astype(np.uint8)


@pytest.mark.parametrize("kind", ["labels", "outlines"])
@pytest.mark.parametrize("k", [4, 5, 6, 8])
def test_pinwheel_multiplicity(kind, k):
    res = B.detect_rosettes(_as(kind, pinwheel(k)), kind)
    assert [v["k"] for v in res.vertices] == [k]
    v = res.vertices[0]
    assert abs(v["y"] - 31.7) < 2 and abs(v["x"] - 32.3) < 2
    assert v["kind"] == "vertex"
    assert res.n_rosettes == (1 if k >= 5 else 0)
    assert (res.rosettes > 0).any() == (k >= 5)


@pytest.mark.parametrize("kind", ["labels", "outlines"])
@pytest.mark.parametrize("k,hole", [(6, 3), (6, 6), (4, 5)])
def test_extrusion_counts_the_ring_not_the_central_cell(kind, k, hole):
    """k cells closing around a small central cell: multiplicity k (the centre is not one of the k)."""
    res = B.detect_rosettes(_as(kind, pinwheel(k, hole=hole)), kind)
    ks = [v["k"] for v in res.vertices]
    assert ks == [k]
    assert res.n_rosettes == (1 if k >= 5 else 0)


@pytest.mark.parametrize("kind", ["labels", "outlines"])
def test_hexagonal_tissue_has_only_3_cell_vertices(kind):
    res = B.detect_rosettes(_as(kind, hexgrid()), kind)
    assert len(res.vertices) > 40
    assert {v["k"] for v in res.vertices} == {3}
    assert res.n_rosettes == 0 and not res.rosettes.any()


def _offset_quadrants(offset: int) -> np.ndarray:
    """Four cells; the lower vertical border is shifted by ``offset`` px: two 3-cell vertices
    ``offset`` px apart joined by a short horizontal edge (a T1 transition caught half-way)."""
    yy, xx = np.mgrid[:40, :40]
    top = np.where(xx < 20, 1, 2)
    bottom = np.where(xx < 20 + offset, 3, 4)
    return np.where(yy < 20, top, bottom).astype(np.int32)


def test_short_edge_is_merged_long_edge_is_not():
    assert [v["k"] for v in B.find_vertices(_offset_quadrants(0))] == [4]
    assert [v["k"] for v in B.find_vertices(_offset_quadrants(1))] == [4]          # 1 px edge: one vertex
    assert sorted(v["k"] for v in B.find_vertices(_offset_quadrants(4))) == [3, 3]  # 4 px > merge_distance 2.5
    assert [v["k"] for v in B.find_vertices(_offset_quadrants(4), merge_distance=5)] == [4]
    assert sorted(v["k"] for v in B.find_vertices(_offset_quadrants(12), merge_distance=5)) == [3, 3]


def test_rosette_mask_is_participating_cells_within_the_disc():
    lab = pinwheel(6, n=96, cy=47.5, cx=48.5)
    res = B.detect_rosettes(lab, "labels", mask_radius=1.0)
    mask = res.rosettes == 1
    yy, xx = np.mgrid[:96, :96]
    d_local = np.sqrt(np.median(np.bincount(lab.ravel())[1:]) / (np.sqrt(3) / 2))
    r = np.hypot(yy - res.vertices[0]["y"], xx - res.vertices[0]["x"])
    assert mask.any() and r[mask].max() <= d_local + 1e-6
    assert (r <= d_local - 1).sum() <= mask.sum()
    full = B.detect_rosettes(lab, "labels", mask_radius=None)
    assert (full.rosettes > 0).all()                           # every cell takes part, no clipping


def test_bridge_closes_a_break_in_an_outline():
    out = np.zeros((40, 40), np.uint8)
    out[10, 10:30] = out[29, 10:30] = 1
    out[10:30, 10] = out[10:30, 29] = 1
    out[18:21, 29] = 0                                          # 3 px break in the right side
    assert B.line_ends(out > 0).sum() == 2
    open_cells = B.cells_from_outlines(out, bridge=0, max_area_ratio=100)
    closed_cells = B.cells_from_outlines(out, bridge=2, max_area_ratio=100)
    assert np.unique(open_cells[open_cells > 0]).size == 1      # inside leaks to outside
    assert np.unique(closed_cells[closed_cells > 0]).size == 2  # square and surroundings
    full = np.zeros_like(out)
    full[10, 10:30] = full[29, 10:30] = full[10:30, 10] = full[10:30, 29] = 1
    assert not B.line_ends(full > 0).any()
    assert np.array_equal(B.bridge_breaks(full > 0, 2), full > 0)


def test_thin_gaps_and_tissue_free_space_are_not_cells():
    out = np.zeros((60, 60), np.uint8)
    out[:, 20] = out[:, 23] = 1          # a 2 px wide strip between two lines: a segmentation gap, not a cell
    cells = B.cells_from_outlines(out, bridge=0, max_area_ratio=100)
    assert np.unique(cells[cells > 0]).size == 2
    assert (cells > 0).all()              # the strip and the lines are filled from both sides
    # one huge region next to many small cells is tissue-free space (stays 0)
    lab = np.zeros((100, 100), np.int32)
    for i in range(10):
        lab[i * 10:(i + 1) * 10, :10] = i + 1
    cells = B.cells_from_outlines(inner_outlines(lab).astype(np.uint8), bridge=0)
    assert cells[50, 60] == 0 and np.unique(cells[:, :8]).size == 10


def test_bad_input():
    with pytest.raises(ValueError, match="2D"):
        B.detect_rosettes(np.zeros((2, 8, 8)), "labels")
    with pytest.raises(ValueError, match="outlines' or 'labels"):
        B.detect_rosettes(np.zeros((8, 8)), "channels")
    with pytest.raises(ValueError, match="integer"):
        B.detect_rosettes(np.zeros((8, 8), float), "labels")
    assert B.detect_rosettes(np.zeros((8, 8), np.uint8), "outlines").n_rosettes == 0
    assert B.detect_rosettes(np.ones((8, 8), np.uint8), "outlines").n_rosettes == 0   # no cell at all
    assert B.detect_rosettes(np.zeros((1, 1), np.int32), "labels").n_rosettes == 0


# ----------------------------------------------------------------------------- synthetic data
@pytest.fixture(scope="module")
def clean_images():
    synth = pytest.importorskip("rosette_bmz.synth")
    return [synth.generate(384, seed=s, noise=0.0) for s in range(6)]


def test_noise_free_labels_the_baseline_is_the_definition(clean_images):
    """On the clean label image the detector applies the rule itself: every rosette, every k, no decoy."""
    acc = M.MetricsAccumulator()
    n_ros = n_dec = 0
    for img in clean_images:
        res = B.detect_rosettes(img.labels, "labels")
        acc.add((res.rosettes > 0).astype(np.float32), img.rosettes, img.meta["decoys"],
                radius=M.decoy_radius(img.meta))
        n_ros += len(img.meta["rosettes"])
        n_dec += len(img.meta["decoys"])
        found = sorted((round(v["y"], 2), round(v["x"], 2), v["k"]) for v in res.vertices if v["rosette"])
        assert found == sorted((m["y"], m["x"], m["k"]) for m in img.meta["rosettes"])
        four = {(round(v["y"], 2), round(v["x"], 2)) for v in res.vertices if v["k"] == 4}
        assert all((m["y"], m["x"]) in four for m in img.meta["decoys"])
    s = acc.summary()
    assert n_ros >= 20 and n_dec >= 100
    assert s["event_recall"] == 1 and s["event_precision"] == 1 and s["n_decoys_hit"] == 0


def test_noise_free_outlines(clean_images):
    """From outlines the cells are recovered first (lines shift junctions by ~1 px): close to the rule."""
    acc = M.MetricsAccumulator()
    for img in clean_images:
        res = B.detect_rosettes(img.outlines, "outlines")
        acc.add((res.rosettes > 0).astype(np.float32), img.rosettes, img.meta["decoys"],
                radius=M.decoy_radius(img.meta))
    s = acc.summary()
    assert s["event_recall"] >= 0.9 and s["event_precision"] >= 0.9 and s["decoy_hit_rate"] <= 0.02


def test_small_cells_rule():
    """Small = area < fraction x the neighbours' median; a pair of adjacent small cells is a split cell."""
    lab = np.zeros((60, 60), np.int32)
    for i in range(3):
        for j in range(3):
            lab[i * 20:(i + 1) * 20, j * 20:(j + 1) * 20] = 1 + 3 * i + j
    split = lab.copy()
    split[20:40, 30:40] = 10                                  # centre cell 5 cut in two halves (0.5 each)
    area = np.bincount(split.ravel())
    assert sorted(B._small_cells(split, area, 0.56, isolated=False).tolist()) == [5, 10]
    assert B._small_cells(split, area, 0.56).size == 0
    one = lab.copy()
    one[26:34, 26:34] = 10                                    # a small cell inside cell 5: 64 px vs 336 px
    area = np.bincount(one.ravel())
    assert B._small_cells(one, area, 0.56).size == 0          # only 1 neighbour (< 3): a hole, not a cell in a ring
    ring = pinwheel(6, hole=5)
    assert B._small_cells(ring, np.bincount(ring.ravel()), 0.56).tolist() == [7]


def test_grow_cells_matches_skimage_expand_labels():
    """grow_cells (one EDT with indices) gives exactly skimage's expand_labels, background kept 0."""
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(0)
    for t in range(60):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        lab = rng.integers(0, 5, (h, w)) * (rng.random((h, w)) < rng.random())
        grow = float(rng.choice([0, 1, 2.5, 3, 100]))
        bg = rng.random((h, w)) < 0.1 if t % 2 else None
        ref = expand_labels(lab, distance=grow) if grow > 0 else lab.copy()
        if bg is not None:
            ref[bg] = 0
        out, dist = B.grow_cells(lab, grow, bg, return_distance=True)
        assert np.array_equal(out, ref.astype(np.int32)), (t, grow)
        if (lab > 0).any():
            assert np.allclose(dist, ndimage.distance_transform_edt(lab == 0))


def test_dilate_points_matches_binary_dilation():
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        mask = rng.random((h, w)) < rng.choice([0.001, 0.02, 0.5])   # sparse, and dense (scipy path)
        for radius in (1.5, 2, 5):
            disk = B._disk(radius)
            assert np.array_equal(B._dilate_points(mask, disk), ndimage.binary_dilation(mask, structure=disk))

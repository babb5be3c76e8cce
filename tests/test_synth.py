"""Synthetic epithelium generator: exact ground truth, determinism, noise, files and CLI."""

import json

import numpy as np
import pytest
from scipy import ndimage

from rosette_bmz.inputs import inner_outlines
from rosette_bmz.synth import SynthError, generate, load_dataset, write_dataset

SIZE = 256


@pytest.fixture(scope="module")
def clean():
    return generate(SIZE, seed=3, noise=0.0, n_rosettes=3, n_decoys=2)


@pytest.fixture(scope="module")
def noisy():
    return generate(SIZE, seed=4, noise=0.8, n_rosettes=3, n_decoys=2)


def _disc_labels(labels, y, x, r):
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = yy ** 2 + xx ** 2 <= r * r
    sub = labels[y - r:y + r + 1, x - r:x + r + 1]
    return set(np.unique(sub[disc]).tolist()) - {0}


def _ring_labels(labels, central, width=6):
    m = labels == central
    ring = ndimage.binary_dilation(m, iterations=width) & ~m
    return set(np.unique(labels[ring]).tolist()) - {0, central}


def _multiplicity(labels, item):
    """Cells meeting at the recorded centre, read from the label image only."""
    if "central_cell" in item:
        central = int(labels[item["y"], item["x"]])
        assert central == item["central_cell"] and central > 0
        return len(_ring_labels(labels, central))
    return len(_disc_labels(labels, item["y"], item["x"], max(4, round(0.3 * item["cell_diameter_local"]))))


@pytest.mark.parametrize("which", ["clean", "noisy"])
def test_rosette_multiplicity_from_labels(which, request):
    img = request.getfixturevalue(which)
    assert len(img.meta["rosettes"]) == 3
    kinds = set()
    for r in img.meta["rosettes"]:
        k = _multiplicity(img.labels, r)
        assert k == r["k"] >= 5, r
        kinds.add(r["kind"])
    assert kinds <= {"vertex", "extrusion"}


@pytest.mark.parametrize("which", ["clean", "noisy"])
def test_decoys_are_four_cell(which, request):
    img = request.getfixturevalue(which)
    assert len(img.meta["decoys"]) == 2
    for dcy in img.meta["decoys"]:
        assert dcy["k"] == 4 and dcy["kind"] in ("four_cell", "small_cell")
        assert _multiplicity(img.labels, dcy) == 4
        assert img.rosettes[dcy["y"], dcy["x"]] == 0
        y, x, r = dcy["y"], dcy["x"], int(dcy["cell_diameter_local"])
        assert not img.rosettes[max(0, y - r):y + r, max(0, x - r):x + r].any()


def test_rosette_masks(clean):
    ids = np.unique(clean.rosettes)
    assert clean.rosettes.dtype == np.uint16
    assert ids.tolist() == [0] + [r["id"] for r in clean.meta["rosettes"]]
    for r in clean.meta["rosettes"]:
        m = clean.rosettes == r["id"]
        assert m.sum() == r["area"] > 0
        assert m[r["y"], r["x"]]
        # only the recorded participating cells, within the clip disc
        assert set(np.unique(clean.clean_labels[m]).tolist()) <= set(r["cells"])
        yy, xx = np.nonzero(m)
        assert np.hypot(yy - r["y"], xx - r["x"]).max() <= r["mask_radius"] + 1e-6
        assert ndimage.label(m)[1] == 1
        # instances never touch: a 3 px dilation of one does not reach another
        grown = ndimage.binary_dilation(m, iterations=3)
        assert not (grown & (clean.rosettes > 0) & ~m).any()


def test_noise_off_outlines_equal_label_borders(clean):
    assert clean.outlines.dtype == np.uint8 and clean.labels.dtype == np.int32
    np.testing.assert_array_equal(clean.outlines, inner_outlines(clean.labels))
    np.testing.assert_array_equal(clean.labels, clean.clean_labels)


def test_noise_changes_segmentation(noisy):
    assert not np.array_equal(noisy.outlines, inner_outlines(noisy.labels))
    ev = noisy.meta["noise_events"]
    assert ev["gaps"] > 0 and ev["fragments"] > 0
    frac = noisy.outlines.mean()
    assert 0.05 < frac < 0.3


def test_deterministic_per_seed():
    a = generate(160, seed=11, noise=0.6, n_rosettes=2, n_decoys=1)
    b = generate(160, seed=11, noise=0.6, n_rosettes=2, n_decoys=1)
    c = generate(160, seed=12, noise=0.6, n_rosettes=2, n_decoys=1)
    for f in ("labels", "outlines", "rosettes"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.meta == b.meta
    assert not np.array_equal(a.labels, c.labels)


def test_mostly_hexagons():
    img = generate(320, seed=5, noise=0.0, n_rosettes=0, n_decoys=0, elongation=1.0, gradient=1.0,
                   tissue_free=0.0)
    lab = img.labels
    # neighbours per interior cell from 8-connected adjacency
    pairs = set()
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :]), (lab[:-1, :-1], lab[1:, 1:]),
                 (lab[:-1, 1:], lab[1:, :-1])):
        sel = a != b
        pairs.update(zip(np.minimum(a[sel], b[sel]).tolist(), np.maximum(a[sel], b[sel]).tolist()))
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist())
    deg = {}
    for a, b in pairs:
        deg[a] = deg.get(a, 0) + 1
        deg[b] = deg.get(b, 0) + 1
    inner = [v for c, v in deg.items() if c not in border]
    counts = np.bincount(inner)
    assert len(inner) > 80
    assert counts[6] / len(inner) > 0.4 and counts[6] == counts.max()
    assert (counts[5] + counts[6] + counts[7]) / len(inner) > 0.85


def test_cell_diameter_scales_cell_count():
    small = generate(256, seed=0, cell_diameter=16, noise=0, n_rosettes=0, n_decoys=0, gradient=1.0, tissue_free=0)
    big = generate(256, seed=0, cell_diameter=32, noise=0, n_rosettes=0, n_decoys=0, gradient=1.0, tissue_free=0)
    ratio = small.meta["n_cells"] / big.meta["n_cells"]
    assert 3.0 < ratio < 5.0


def test_rectangular_and_tissue_free():
    img = generate((192, 288), seed=2, noise=0.3, tissue_free=0.3, n_rosettes=1, n_decoys=0)
    assert img.labels.shape == img.outlines.shape == img.rosettes.shape == (192, 288)
    assert 0.15 < (img.clean_labels == 0).mean() < 0.45
    for r in img.meta["rosettes"]:
        assert _multiplicity(img.labels, r) == r["k"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=40), "too small"),
    (dict(size=(256, 50)), "too small"),
    (dict(size=256, noise=1.5), "noise"),
    (dict(size=256, cell_diameter=-3), "cell_diameter"),
    (dict(size=256, n_rosettes=-1), "n_rosettes"),
    (dict(size=256, k_range=(4, 6)), "k_range"),
    (dict(size=256, cell_diameter=8), "cell_diameter"),
    (dict(size=256, elongation=3.0), "elongation"),
    (dict(size=256, wiggle=-1), "wiggle"),
    (dict(size=256, seed=1.5), "seed"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(SynthError, match=match):
        generate(**kwargs)


def test_write_and_load_dataset(tmp_path):
    out = tmp_path / "ds"
    written = write_dataset(out, n=2, size=128, seed=7, noise=0.4, cell_diameter=20, progress=False)
    assert [p.name for p in written] == ["synth_0000.json", "synth_0001.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"synth_000{i}{s}" for i in range(2) for s in ("_labels.tif", "_outlines.tif", "_rosettes.tif", ".json"))
    items = load_dataset(out)
    assert [it[0] for it in items] == ["synth_0000", "synth_0001"]
    ref = generate(128, seed=8, noise=0.4, cell_diameter=20)
    stem, labels, outlines, rosettes, meta = items[1]
    np.testing.assert_array_equal(labels, ref.labels)
    np.testing.assert_array_equal(outlines, ref.outlines)
    np.testing.assert_array_equal(rosettes, ref.rosettes)
    assert labels.dtype == np.int32 and outlines.dtype == np.uint8 and rosettes.dtype == np.uint16
    assert meta == json.loads(json.dumps(ref.meta)) and meta["seed"] == 8


def test_write_dataset_bad_arguments(tmp_path):
    with pytest.raises(SynthError, match="n "):
        write_dataset(tmp_path / "a", n=-1, size=128)
    with pytest.raises(SynthError, match="too small"):
        write_dataset(tmp_path / "b", n=1, size=20)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(SynthError, match="no synthetic images"):
        load_dataset(tmp_path)


def test_cli_synth(tmp_path, capsys):
    from rosette_bmz.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--n", "2", "--size", "128", "--seed", "3", "--out", str(out)]) == 0
    assert len(list(out.glob("synth_*_outlines.tif"))) == 2
    assert main(["synth", "--n", "1", "--size", "30", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "too small" in err
    assert main(["synth", "--n", "-2", "--size", "128", "--out", str(tmp_path / "bad")]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_noise_keeps_tissue_and_ground_truth():
    """Same seed, different noise: same rosettes and decoys; masks differ only at jittered borders."""
    a = generate(256, seed=9, noise=0.0, n_rosettes=3, n_decoys=2)
    b = generate(256, seed=9, noise=0.9, n_rosettes=3, n_decoys=2)
    key = ("y", "x", "k", "kind")
    assert [[r[f] for f in key] for r in a.meta["rosettes"]] == [[r[f] for f in key] for r in b.meta["rosettes"]]
    assert [[r[f] for f in key] for r in a.meta["decoys"]] == [[r[f] for f in key] for r in b.meta["decoys"]]
    for r in a.meta["rosettes"]:
        ma, mb = a.rosettes == r["id"], b.rosettes == r["id"]
        assert (ma & mb).sum() / (ma | mb).sum() > 0.8
    ev = b.meta["noise_events"]
    assert ev["merged"] + ev["split"] + ev["dropped"] > 0
    # merges, splits and drops leave the protected rosette cells alone
    for r in b.meta["rosettes"]:
        for cell in r["cells"]:
            assert np.unique(b.clean_labels[b.labels == cell]).size == 1


def test_bad_seed():
    with pytest.raises(SynthError, match="seed"):
        generate(128, seed=-1)


def _junction_pixels(lab):
    a, b, c, d = lab[:-1, :-1], lab[:-1, 1:], lab[1:, :-1], lab[1:, 1:]
    return np.nonzero(((a != b) & (a != c)) | ((a != d) & (b != c)))


def test_no_accidental_rosettes_in_background():
    """Outside the planned structures no >= 5 cells meet within a 3 px disc (they would be unlabelled rosettes)."""
    img = generate(320, seed=5, noise=0.0, n_rosettes=2, n_decoys=2)  # without the T1 moves: 15 such pixels
    assert img.meta["t1_moves"] > 0
    lab = img.clean_labels
    centres = np.array([[r["y"], r["x"]] for r in img.meta["rosettes"] + img.meta["decoys"]])
    r = 3
    checked = 0
    for y, x in zip(*_junction_pixels(lab)):
        if not (r <= y < lab.shape[0] - r and r <= x < lab.shape[1] - r):
            continue
        if np.hypot(*(centres - [y, x]).T).min() < 30:
            continue
        checked += 1
        assert len(_disc_labels(lab, int(y), int(x), r)) < 5, (y, x)
    assert checked > 500


def test_rasterise_is_exact():
    """The coarse-to-fine rasteriser equals a plain nearest-seed query on every pixel, ties included."""
    from scipy.spatial import cKDTree

    from rosette_bmz.synth import _rasterise

    rng = np.random.default_rng(0)
    h, w = 151, 133
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    uy = yy + 1.5 * np.sin(xx / 9).astype(np.float32)
    ux = xx + 1.2 * np.cos(yy / 7).astype(np.float32)
    seeds = rng.uniform(-20, 170, (150, 2))
    c = np.array([uy[70, 60], ux[70, 60]], dtype=np.float64)
    ang = np.linspace(0, 2 * np.pi, 7, endpoint=False)
    seeds = np.concatenate([seeds[np.hypot(*(seeds - c).T) > 25], c + 14 * np.stack([np.sin(ang), np.cos(ang)], 1)])
    gap = np.clip(rng.normal(size=(h, w)), 0, 1.5).astype(np.float32)
    tree = cKDTree(seeds)
    pts = np.stack([uy.ravel(), ux.ravel()], -1)
    i1 = _rasterise(seeds, uy, ux, None)[0]
    np.testing.assert_array_equal(i1.ravel(), tree.query(pts, k=1)[1])
    dist, idx = tree.query(pts, k=3)

    def border(j):
        sep = np.hypot(*(seeds[idx[:, 0]] - seeds[idx[:, j]]).T)
        return (dist[:, j] ** 2 - dist[:, 0] ** 2) / (2 * sep)

    j1, j2, j3, in_gap, in_corner = _rasterise(seeds, uy, ux, gap, corner=1.3)
    np.testing.assert_array_equal(j1.ravel(), idx[:, 0])
    np.testing.assert_array_equal(in_gap.ravel(), border(1) < gap.ravel())
    np.testing.assert_array_equal(in_corner.ravel(), border(2) < 1.3)
    near = (in_gap | in_corner).ravel()
    assert near.mean() > 0.05
    np.testing.assert_array_equal(j2.ravel()[near], idx[near, 1])
    np.testing.assert_array_equal(j3.ravel()[near], idx[near, 2])
    assert len(set(i1[67:74, 57:64].ravel().tolist()) & set(range(len(seeds) - 7, len(seeds)))) == 7


def test_interrupted_write_leaves_no_partial_image(tmp_path, monkeypatch):
    import tifffile

    real = tifffile.imwrite

    def flaky(path, data, **kw):
        if "_outlines" in str(path):
            raise OSError("disk full")
        return real(path, data, **kw)

    monkeypatch.setattr(tifffile, "imwrite", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path, n=1, size=128, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["synth_0000_labels.tif"]  # no temporary file, no JSON: the image does not count
    with pytest.raises(SynthError, match="no synthetic images"):
        load_dataset(tmp_path)


def test_meta_params_reproduce_the_image(noisy):
    again = generate(**json.loads(json.dumps(noisy.meta["params"])))
    np.testing.assert_array_equal(again.labels, noisy.labels)
    np.testing.assert_array_equal(again.outlines, noisy.outlines)
    np.testing.assert_array_equal(again.rosettes, noisy.rosettes)

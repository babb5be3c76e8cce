"""Synthetic epithelium generator: exact ground truth, determinism, noise, files and CLI."""

import json

import numpy as np
import pytest
from scipy import ndimage

from rosette_bmz.baseline import LABEL_GAP_FILL
from rosette_bmz.definition import find_rosettes
from rosette_bmz.inputs import from_outlines, inner_outlines
from rosette_bmz.synth import SynthError, draw_outlines, generate, generate_world, load_dataset, write_dataset
from rosette_bmz.worlds import OTHER_WORLDS, get_world

SIZE = 256


@pytest.fixture(scope="module")
def clean():
    return generate(SIZE, seed=3, noise=0.0, n_rosettes=3, n_decoys=2)


@pytest.fixture(scope="module")
def noisy():
    return generate(SIZE, seed=4, noise=0.8, n_rosettes=3, n_decoys=2)


@pytest.fixture(scope="module")
def noisy_clean_truth():
    return generate(SIZE, seed=4, noise=0.8, n_rosettes=3, n_decoys=2, truth="clean")


@pytest.fixture(scope="module")
def chancy():
    """Small, barely relaxed cells: many rosettes arise by chance besides the planted ones."""
    return generate(320, seed=5, noise=0.0, cell_diameter=16, lloyd_iterations=2, n_rosettes=4, n_decoys=2,
                    wedge_fraction=0.5)


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
    y, x = int(round(item["y"])), int(round(item["x"]))
    if item["central"]:
        (central,) = item["central"]
        assert int(labels[y, x]) == central > 0
        return len(_ring_labels(labels, central))
    return len(_disc_labels(labels, y, x, max(4, round(0.3 * item["mask_radius"]))))


def _strip(entries):
    return [{k: v for k, v in e.items() if k not in ("planted", "style")} for e in entries]


@pytest.mark.parametrize("which", ["clean", "noisy", "chancy", "noisy_clean_truth"])
def test_ground_truth_is_the_rule_on_the_label_image(which, request):
    """One definition: meta and masks are exactly find_rosettes of the final label image with its
    gaps closed, as ``evaluate --truth labels`` reads a user's segmentation (truth="clean": of the
    clean tiling), planted or not."""
    img = request.getfixturevalue(which)
    if img.meta["truth"] == "labels":
        truth = find_rosettes(img.labels, cell_diameter=img.meta["cell_diameter"], fill_gaps=LABEL_GAP_FILL)
    else:
        truth = find_rosettes(img.clean_labels, cell_diameter=img.meta["cell_diameter"])
    np.testing.assert_array_equal(img.rosettes, truth.mask)
    ros, dec = img.meta["rosettes"], img.meta["decoys"]
    assert [(r["y"], r["x"], r["k"], r["kind"], r["area"]) for r in ros] == \
        [(r["y"], r["x"], r["k"], r["kind"], r["area"]) for r in truth.rosettes]
    assert [(d["y"], d["x"], d["kind"]) for d in dec] == [(d["y"], d["x"], d["kind"]) for d in truth.decoys]
    if img.meta["noise"] == 0 or img.meta["truth"] == "labels":   # cell ids in the numbering of ``labels``
        assert _strip(ros) == truth.rosettes and _strip(dec) == truth.decoys
    assert all(r["k"] >= 5 and r["kind"] in ("vertex", "extrusion") for r in ros)
    assert all(d["k"] == 4 and d["kind"] in ("four_cell", "small_cell") for d in dec)
    assert img.meta["n_rosettes"] == len(ros) == img.meta["n_planted_found"] + img.meta["n_chance_rosettes"]


def test_the_rule_finds_every_planted_rosette_and_labels_chance_ones(chancy):
    m = chancy.meta
    assert m["n_planted"] == 4 and m["n_planted_found"] == 4 and m["n_planted_k_differs"] == 0
    assert m["n_chance_rosettes"] >= 3          # 16 px cells, 2 Lloyd iterations: junctions arise by chance
    planted = [r for r in m["rosettes"] if r["planted"]]
    assert len(planted) == 4 and {r["style"] for r in planted} <= {"wedge", "compact"}


def test_every_point_where_five_cells_meet_is_labelled(chancy):
    """Wherever >= 5 cells come within 2 px of a pixel, a labelled rosette mask is there."""
    lab = chancy.labels
    h, w = lab.shape
    r = 2
    offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r]
    pad = np.pad(lab, r)
    st = np.sort(np.stack([pad[r + dy:r + dy + h, r + dx:r + dx + w] for dy, dx in offs]), axis=0)
    n = (st[0] > 0).astype(int) + ((st[1:] != st[:-1]) & (st[1:] > 0)).sum(0)
    points = np.argwhere(n >= 5)
    assert len(points) > 0
    near_mask = ndimage.binary_dilation(chancy.rosettes > 0, iterations=2)
    assert near_mask[points[:, 0], points[:, 1]].all()


def test_near_misses_are_close_vertex_pairs_with_five_cells_and_no_rosette(chancy):
    """A near miss: two non-rosette vertices < NEAR_MISS_DISTANCE apart, >= 5 cells together, off every mask."""
    from rosette_bmz.constants import NEAR_MISS_DISTANCE

    truth = find_rosettes(chancy.labels, cell_diameter=chancy.meta["cell_diameter"], fill_gaps=LABEL_GAP_FILL)
    near = chancy.meta["near_misses"]
    assert near == truth.near_misses and len(near) >= 3       # 16 px cells: they arise by chance
    small = [v for v in truth.vertices if v["k"] < 5]
    for n in near:
        assert n["k"] >= 5 and 0 < n["distance"] < NEAR_MISS_DISTANCE
        assert chancy.rosettes[int(round(n["y"])), int(round(n["x"]))] == 0
        # the midpoint of two real vertices that far apart
        d = sorted(np.hypot(v["y"] - n["y"], v["x"] - n["x"]) for v in small)
        assert d[1] <= n["distance"] / 2 + 0.02
    # brute force over all pairs gives the same list: none is left out
    from rosette_bmz.metrics import decoy_radius

    far = ndimage.distance_transform_edt(chancy.rosettes == 0)
    radius = decoy_radius(chancy.meta)
    pts = np.array([(v["y"], v["x"]) for v in small])
    expected = []
    for i in range(len(small)):
        for j in range(i + 1, len(small)):
            cells = (set(small[i]["cells"]) | set(small[j]["cells"])) - set(small[i]["central"]) \
                - set(small[j]["central"])
            y, x = (pts[i] + pts[j]) / 2
            if np.hypot(*(pts[i] - pts[j])) < NEAR_MISS_DISTANCE and len(cells) >= 5 \
                    and far[int(round(y)), int(round(x))] > radius + 1:
                expected.append((round(float(y), 2), round(float(x), 2)))
    assert sorted(expected) == sorted((n["y"], n["x"]) for n in near)


@pytest.mark.parametrize("which", ["clean", "noisy"])
def test_planted_rosette_multiplicity_from_labels(which, request):
    """Rosette cells are protected from merges, splits and drops: k can be read off ``labels``."""
    img = request.getfixturevalue(which)
    planted = [r for r in img.meta["rosettes"] if r["planted"]]
    assert len(planted) == 3
    for r in planted:
        assert _multiplicity(img.labels, r) == r["k"] >= 5, r


@pytest.mark.parametrize("which", ["clean", "noisy"])
def test_decoys_are_four_cell_junctions_away_from_rosettes(which, request):
    img = request.getfixturevalue(which)
    dec = img.meta["decoys"]
    assert sum(d["planted"] for d in dec) == img.meta["n_planted_decoys_found"] <= 2
    if img.meta["noise"] == 0:   # with noise, a merge next to a planted decoy can make it part of a rosette
        assert img.meta["n_planted_decoys_found"] == 2
    assert len(dec) > 5                          # chance 4-cell junctions are decoys too
    far = ndimage.distance_transform_edt(img.rosettes == 0)
    for dcy in dec:
        assert dcy["k"] == 4 and dcy["kind"] in ("four_cell", "small_cell")
        assert far[int(round(dcy["y"])), int(round(dcy["x"]))] > 0.25 * img.meta["cell_diameter"]
        if dcy["planted"] and dcy["kind"] == "four_cell":
            assert len(_disc_labels(img.labels, int(round(dcy["y"])), int(round(dcy["x"])), 4)) == 4


@pytest.mark.parametrize("which", ["clean", "chancy"])
def test_rosette_masks(which, request):
    img = request.getfixturevalue(which)
    ids = np.unique(img.rosettes)
    assert img.rosettes.dtype == np.uint16
    assert ids.tolist() == [0] + [r["id"] for r in img.meta["rosettes"]]
    for r in img.meta["rosettes"]:
        m = img.rosettes == r["id"]
        assert m.sum() == r["area"] > 0
        # only the rosette's own cells, within one local cell diameter of the vertex
        assert set(np.unique(img.labels[m]).tolist()) <= set(r["cells"] + r["central"]) | {0}
        yy, xx = np.nonzero(m)
        assert np.hypot(yy - r["y"], xx - r["x"]).max() <= r["mask_radius"] + 1e-6
        assert 0.5 * img.meta["cell_diameter"] < r["mask_radius"] < 2 * img.meta["cell_diameter"]
        y, x = int(round(r["y"])), int(round(r["x"]))
        assert m[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any()
        # instances never touch: each is its own 8-connected region
        assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1
        grown = ndimage.binary_dilation(m, structure=np.ones((3, 3)))
        assert not (grown & (img.rosettes > 0) & ~m).any()


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
    (dict(size=256, tiling="square"), "tiling"),
    (dict(size=256, outline_style="dashed"), "outline_style"),
    (dict(size=256, outline_style="inner", line_width=3), "line_width"),
    (dict(size=256, outline_style="thick", line_width=9), "line_width"),
    (dict(size=256, central_radius=(0.2, 0.5)), "central_radius"),
    (dict(size=256, wedge_fraction=1.5), "wedge_fraction"),
    (dict(size=256, tissue_free_shape="square"), "tissue_free_shape"),
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


def test_synth_help_names_every_world():
    """The CLI may not import the worlds for --help (start-up), so the names are written out: kept in step here."""
    import re

    from rosette_bmz.cli import build_parser
    from rosette_bmz.worlds import WORLDS

    synth = build_parser()._subparsers._group_actions[0].choices["synth"]
    (world,) = [a for a in synth._actions if a.dest == "world"]
    assert set(WORLDS) <= set(re.findall(r"[a-z0-9_]+", world.help)), world.help


def test_cli_synth(tmp_path, capsys):
    from rosette_bmz.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--n", "2", "--size", "128", "--seed", "3", "--out", str(out)]) == 0
    assert len(list(out.glob("synth_*_outlines.tif"))) == 2
    assert json.loads((out / "synth_0000.json").read_text())["truth"] == "labels"
    assert main(["synth", "--n", "1", "--size", "128", "--seed", "3", "--truth", "clean", "--out",
                 str(tmp_path / "clean")]) == 0
    assert json.loads((tmp_path / "clean" / "synth_0000.json").read_text())["truth"] == "clean"
    assert main(["synth", "--n", "1", "--size", "30", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "too small" in err
    assert main(["synth", "--n", "-2", "--size", "128", "--out", str(tmp_path / "bad")]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_noise_keeps_tissue_and_clean_ground_truth():
    """Same seed, different noise: the same clean tiling, hence (truth="clean") exactly the same rosettes,
    masks and decoys."""
    a = generate(256, seed=9, noise=0.0, n_rosettes=3, n_decoys=2, truth="clean")
    b = generate(256, seed=9, noise=0.9, n_rosettes=3, n_decoys=2, truth="clean")
    np.testing.assert_array_equal(a.clean_labels, b.clean_labels)
    np.testing.assert_array_equal(a.rosettes, b.rosettes)
    key = ("y", "x", "k", "kind", "planted")
    assert [[r[f] for f in key] for r in a.meta["rosettes"]] == [[r[f] for f in key] for r in b.meta["rosettes"]]
    assert [[r[f] for f in key] for r in a.meta["decoys"]] == [[r[f] for f in key] for r in b.meta["decoys"]]
    ev = b.meta["noise_events"]
    assert ev["merged"] + ev["split"] + ev["dropped"] > 0
    # merges, splits and drops leave the rosette cells alone: each is still one cell (jittered border)
    for ra, rb in zip(a.meta["rosettes"], b.meta["rosettes"]):
        for ca, cb in zip(ra["cells"] + ra["central"], rb["cells"] + rb["central"]):
            assert (b.clean_labels[b.labels == cb] == ca).mean() > 0.8


def test_truth_follows_the_segmentation_and_leaves_the_image_alone():
    """The default truth is read off the noisy labels: merges, gaps and jitter add and remove rosettes there,
    while the image itself (labels, outlines) is the same whichever truth is asked for."""
    kw = dict(seed=0, noise=0.8, cell_diameter=18)
    seg, clean = generate(512, **kw), generate(512, truth="clean", **kw)
    np.testing.assert_array_equal(seg.labels, clean.labels)
    np.testing.assert_array_equal(seg.outlines, clean.outlines)
    assert seg.meta["truth"] == "labels" and clean.meta["truth"] == "clean"
    assert not np.array_equal(seg.rosettes, clean.rosettes)
    # planted rosettes' cells are kept through the noise: nearly all are still found in the segmentation
    assert seg.meta["n_planted_found"] >= 0.8 * seg.meta["n_planted"] > 0
    with pytest.raises(SynthError, match="truth must be one of labels, clean"):
        generate(128, seed=0, truth="planted")


def test_bad_seed():
    with pytest.raises(SynthError, match="seed"):
        generate(128, seed=-1)


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


# ----------------------------------------------------------------------------- outline styles
@pytest.fixture(scope="module")
def styled():
    kw = dict(seed=6, noise=0.0, n_rosettes=3, n_decoys=0, tissue_free=0.15)
    return {style: generate(256, outline_style=style, line_width=w, **kw)
            for style, w in (("inner", None), ("watershed", None), ("thick", 3))}


def test_outline_styles_share_the_tissue_and_the_truth(styled):
    a = styled["inner"]
    for img in styled.values():
        np.testing.assert_array_equal(img.labels, a.labels)
        np.testing.assert_array_equal(img.rosettes, a.rosettes)
        assert img.outlines.dtype == np.uint8 and set(np.unique(img.outlines).tolist()) == {0, 1}
        from_outlines(img.outlines)                     # every style is a valid model input
    frac = {k: v.outlines.mean() for k, v in styled.items()}
    assert frac["watershed"] < 0.7 * frac["inner"] and frac["thick"] > 2.5 * frac["watershed"]


def test_watershed_lines_are_single_and_separate_every_cell(styled):
    img = styled["watershed"]
    lab, line = img.labels, img.outlines > 0
    comp, n = ndimage.label(~line)                      # 4-connected regions between the lines
    inside = lab[~line]
    pairs = np.unique(np.stack([comp[~line], inside], 1), axis=0)
    pairs = pairs[pairs[:, 1] > 0]
    # every region lies in one cell, and every cell keeps exactly one region
    assert np.unique(pairs[:, 0]).size == len(pairs)
    assert np.unique(pairs[:, 1]).size == len(pairs) == np.unique(lab[lab > 0]).size
    # no double lines: a 2x2 block of line pixels only where three cells meet
    from rosette_bmz.baseline import junction_mask

    block = line[:-1, :-1] & line[1:, :-1] & line[:-1, 1:] & line[1:, 1:]
    near_junction = ndimage.binary_dilation(junction_mask(lab), iterations=2)[:-1, :-1]
    assert block.any() and not (block & ~near_junction).any()
    assert not line[ndimage.binary_erosion(lab == 0, iterations=2)].any()   # tissue-free space stays empty


def test_thick_lines_have_the_asked_width():
    lab = np.zeros((40, 40), np.int32)
    lab[:, :20], lab[:, 20:] = 1, 2
    for width in (2, 3, 4, 5):
        line = draw_outlines(lab, "thick", width)
        assert line[20].sum() == width, width


def test_outline_noise_cuts_thick_lines():
    img = generate(256, seed=6, noise=1.0, outline_style="thick", line_width=4, n_rosettes=1, n_decoys=0)
    clean = draw_outlines(img.labels, "thick", 4)
    assert (clean & ~img.outlines.astype(bool)).any() and (img.outlines.astype(bool) & ~clean.astype(bool)).any()


# ----------------------------------------------------------------------------- tilings and worlds
@pytest.mark.parametrize("tiling", ["poisson", "hexjitter"])
def test_other_tilings(tiling):
    ref = generate(320, seed=8, noise=0.0, n_rosettes=3, n_decoys=1, gradient=1.0, tissue_free=0.0)
    img = generate(320, seed=8, noise=0.0, n_rosettes=3, n_decoys=1, gradient=1.0, tissue_free=0.0, tiling=tiling)
    assert 0.75 < img.meta["n_cells"] / ref.meta["n_cells"] < 1.25
    assert img.meta["n_planted"] == img.meta["n_planted_found"] == 3
    assert not np.array_equal(img.labels, ref.labels)


def test_worlds_draw_reproducible_settings_in_their_ranges():
    train = get_world("train")
    a, b = train.draw(5), train.draw(5)
    assert a == b and a != train.draw(6)
    draws = [train.draw(s) for s in range(200)]
    for kw in draws:
        d = kw["cell_diameter"]
        assert 14 <= d <= 40 and 1 <= kw["gradient"] <= 2
        assert 14 - 1e-6 <= d / np.sqrt(kw["gradient"]) and d * np.sqrt(kw["gradient"]) <= 40 + 1e-6
        assert 0 <= kw["noise"] <= 0.8 and kw["tiling"] == "lloyd"
        assert (kw["line_width"] in (2, 3)) == (kw["outline_style"] == "thick")
    assert {kw["outline_style"] for kw in draws} == {"inner", "watershed", "thick"}
    assert 0.2 < np.mean([kw["tissue_free"] > 0 for kw in draws]) < 0.6
    assert get_world("small_cells").draw(0)["cell_diameter"] == 12 and get_world("noise1").draw(3)["noise"] == 1
    assert get_world("wide_lines").draw(1)["line_width"] in (4, 5)
    assert get_world("wider_lines").draw(1)["line_width"] == 6
    assert get_world("heldout").seed_offset != train.seed_offset
    assert set(OTHER_WORLDS) >= {"small_cells", "large_cells", "wide_lines", "wider_lines", "noise1", "poisson",
                                 "hexjitter"}
    with pytest.raises(SynthError, match="unknown world 'mars'.*train"):
        get_world("mars")


def test_generate_world_records_the_world_and_repeats_from_params():
    img = generate_world(256, 2, "poisson", noise=0.2)
    assert img.meta["world"] == "poisson" and img.meta["tiling"] == "poisson" and img.meta["noise"] == 0.2
    assert img.meta["seed"] == 2 + get_world("poisson").seed_offset
    again = generate(**json.loads(json.dumps(img.meta["params"])))
    np.testing.assert_array_equal(again.outlines, img.outlines)


def test_write_dataset_of_a_world(tmp_path):
    write_dataset(tmp_path / "w", n=2, size=192, seed=4, world="heldout", progress=False)
    items = load_dataset(tmp_path / "w")
    assert [it[4]["world"] for it in items] == ["heldout", "heldout"]
    assert items[1][4]["seed"] == 5 + get_world("heldout").seed_offset
    ref = generate_world(192, 5, "heldout")
    np.testing.assert_array_equal(items[1][2], ref.outlines)
    with pytest.raises(SynthError, match="unknown world"):
        write_dataset(tmp_path / "x", n=1, size=192, world="nope", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_synth_world(tmp_path):
    from rosette_bmz.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--n", "1", "--size", "192", "--seed", "3", "--world", "hexjitter", "--out", str(out)]) == 0
    meta = json.loads((out / "synth_0000.json").read_text())
    assert meta["world"] == "hexjitter" and meta["tiling"] == "hexjitter"

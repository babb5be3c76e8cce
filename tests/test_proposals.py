"""Proposals: threshold -> 8-connected objects -> drop < min_size; statistics; napari-ready files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from rosette_bmz.proposals import CSV_COLUMNS, find_proposals, read_csv, write_csv, write_overlay, write_tiff


def _prob_map():
    rng = np.random.default_rng(0)
    prob = (rng.random((120, 90)) * 0.4).astype(np.float32)      # background below 0.5
    prob[10:14, 20:25] = 0.9                                       # 20 px blob
    prob[12, 22] = 0.99
    prob[50:53, 50:53] = 0.7                                       # 9 px: dropped at min_size 10
    prob[80:82, 10:15] = 0.6                                       # 10 px: kept
    prob[100, 60] = prob[101, 61] = prob[102, 62] = 0.8            # diagonal line: one 8-connected object
    prob[100:103, 70:73] = 0.5                                     # exactly 0.5: not above the threshold
    return prob


def test_find_proposals_against_regionprops():
    from skimage.measure import label, regionprops

    prob = _prob_map()
    labels, rows = find_proposals(prob, threshold=0.5, min_size=10)
    assert labels.dtype == np.uint32 and labels.shape == prob.shape
    assert [r["id"] for r in rows] == [1, 2]
    assert np.unique(labels).tolist() == [0, 1, 2]
    ref = [p for p in regionprops(label(prob > 0.5, connectivity=2), intensity_image=prob) if p.area >= 10]
    assert len(ref) == len(rows)
    for r, p in zip(rows, ref):
        assert r["area"] == p.area
        assert r["centroid_y"] == pytest.approx(p.centroid[0]) and r["centroid_x"] == pytest.approx(p.centroid[1])
        assert r["max_prob"] == pytest.approx(p.intensity_max) and r["mean_prob"] == pytest.approx(p.intensity_mean)
        np.testing.assert_array_equal(labels == r["id"], label(prob > 0.5, connectivity=2) == p.label)
    assert rows[0]["area"] == 20 and rows[0]["max_prob"] == pytest.approx(0.99)


def test_min_size_and_connectivity():
    prob = _prob_map()
    _, rows = find_proposals(prob, 0.5, min_size=1)
    areas = sorted(r["area"] for r in rows)
    assert areas == [3, 9, 10, 20]                 # the diagonal triple is one object (8-connected)
    _, rows = find_proposals(prob, 0.5, min_size=11)
    assert [r["area"] for r in rows] == [20]
    labels, rows = find_proposals(np.zeros((30, 30), np.float32))
    assert rows == [] and labels.max() == 0


def test_memory_mapped_output_equals_in_memory(tmp_path):
    prob = _prob_map()
    ref, ref_rows = find_proposals(prob, 0.5, 10)
    mm = tifffile.memmap(tmp_path / "lab.tif", shape=prob.shape, dtype=np.uint32)
    np.save(tmp_path / "p.npy", prob)
    got, rows = find_proposals(np.load(tmp_path / "p.npy", mmap_mode="r"), 0.5, 10, out=mm)
    mm.flush()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "lab.tif"), ref)
    assert rows == ref_rows
    with pytest.raises(ValueError, match="uint32"):
        find_proposals(prob, out=np.zeros(prob.shape, np.int64))
    with pytest.raises(ValueError, match="2D"):
        find_proposals(prob[None])


def test_files_for_napari(tmp_path):
    prob = _prob_map()
    labels, rows = find_proposals(prob)
    write_tiff(tmp_path / "l.tif", labels)
    back = tifffile.imread(tmp_path / "l.tif")
    assert back.dtype == np.uint32 and np.array_equal(back, labels)   # napari: int32/uint32 -> labels layer
    write_csv(tmp_path / "r.csv", rows)
    with open(tmp_path / "r.csv") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    # napari's built-in CSV reader: columns 'axis-0', 'axis-1' -> points layer at those coordinates
    ax = [table[0].index("axis-0"), table[0].index("axis-1")]
    pts = np.array([[float(r[i]) for i in ax] for r in table[1:]])
    np.testing.assert_allclose(pts, [[r["centroid_y"], r["centroid_x"]] for r in rows], atol=0.005)
    again = read_csv(tmp_path / "r.csv")
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert again[0]["area"] == rows[0]["area"]
    write_overlay(tmp_path / "o.png", labels, prob)
    from PIL import Image

    with Image.open(tmp_path / "o.png") as im:
        rgb = np.asarray(im)
    assert rgb.shape == (120, 90, 3)
    assert (rgb[labels > 0, 0] > rgb[labels > 0, 1]).all()           # proposals drawn in red

"""Every metric against a hand-computed answer on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from rosette_bmz import metrics as M


def test_soft_dice_hand_computed():
    prob = np.array([[1.0, 0.5], [0.0, 0.25]])
    gt = np.array([[1, 1], [0, 0]])
    # 2 * (1 + 0.5) / ((1 + 0.5 + 0.25) + 2) = 3 / 3.75
    assert M.soft_dice(prob, gt) == pytest.approx(0.8)
    assert M.soft_dice(np.zeros((2, 2)), np.zeros((2, 2), int)) is None
    assert M.soft_dice(np.zeros((2, 2)), gt) == 0.0


def test_pixel_counts_threshold_is_inclusive():
    prob = np.array([[0.9, 0.5, 0.49], [0.1, 0.6, 0.0]])
    gt = np.array([[1, 1, 1], [0, 0, 0]])
    assert M.pixel_counts(prob, gt) == (2, 1, 1)          # TP (0,0),(0,1); FP (1,1); FN (0,2)
    assert M.pixel_counts(prob, gt, threshold=0.05) == (3, 2, 0)


def _tier_image():
    """Five rosettes with known coverage, ids not contiguous (see the test for the answers)."""
    ros = np.zeros((5, 20), np.uint16)
    prob = np.zeros((5, 20), np.float32)
    ros[0, :10] = 3; prob[0, :10] = 0.45                   # 0 px >= .5, 100 % >= .4: missed, tier10
    ros[1, :10] = 7; prob[1, 0] = 0.5                      # 1 px >= .5 (10 %): detected, tier10 (boundary)
    ros[2, :10] = 9; prob[2, :8] = 0.7                     # 80 % >= .5: not > 80 %, but > 40 %
    ros[3, :10] = 42; prob[3, :9] = 0.99                   # 90 %: > 80 % and > 40 %
    ros[4, :] = 100; prob[4, 0] = 0.4                      # 1/20 = 5 % >= .4: missed, no tier
    prob[0, 15:] = 0.95                                    # predicted outside every rosette
    return prob, ros


def test_event_counts_and_tier_boundaries():
    prob, ros = _tier_image()
    ev = M.event_counts(prob, ros)
    assert ev == {"n_rosettes": 5, "detected": 3, "cov10_at04": 4, "cov80_at05": 1, "cov40_at05": 2,
                  "missed": 2}
    s = M.rosette_pixel_stats(prob, ros)
    assert s["ids"].tolist() == [3, 7, 9, 42, 100]
    assert s["area"].tolist() == [10, 10, 10, 10, 20]
    assert s["n_high"].tolist() == [0, 1, 8, 9, 0]
    assert s["n_low"].tolist() == [10, 1, 8, 9, 1]


def test_event_counts_no_rosettes():
    ev = M.event_counts(np.ones((4, 4)), np.zeros((4, 4), np.uint8))
    assert ev["n_rosettes"] == 0 and ev["detected"] == 0 and ev["missed"] == 0


def test_proposal_components_min_size_and_8_connectivity():
    prob = np.zeros((12, 12))
    prob[0:3, 0:3] = 0.9                 # 9 px: dropped (< 10)
    prob[5:7, 0:5] = 0.6                 # 10 px: kept
    prob[8:10, 8:10] = 0.7               # 4 px ...
    prob[10:12, 10:12] = 0.51            # ... + 4 px touching diagonally + 2 more = one 10 px component
    prob[11, 6:8] = 0.0
    prob[10, 7] = 0.55
    prob[9, 7] = 0.55
    lab, n = M.proposal_components(prob)
    assert n == 2
    assert lab[0:3, 0:3].max() == 0
    assert set(np.unique(lab[5:7, 0:5])) == {1}
    assert set(np.unique(lab[8:12, 7:12][prob[8:12, 7:12] >= 0.5])) == {2}
    assert np.count_nonzero(lab == 2) == 10
    assert M.proposal_components(prob, threshold=0.95)[1] == 0
    prob[5:7, 0:5] = 0.5                 # proposals compare with '>' (as `rosette-bmz predict` does)
    assert M.proposal_components(prob)[1] == 1


def test_proposal_counts_precision():
    prob = np.zeros((10, 30))
    prob[0:2, 0:5] = 1.0                 # overlaps the rosette by one pixel
    prob[0:2, 10:15] = 1.0               # overlaps nothing
    prob[5:7, 20:25] = 1.0               # fully inside the rosette
    ros = np.zeros((10, 30), np.int32)
    ros[1, 4] = 1
    ros[4:9, 18:28] = 2
    lab, n = M.proposal_components(prob)
    assert M.proposal_counts(lab, n, ros) == (3, 2)
    assert M.proposal_counts(np.zeros((2, 2), int), 0, np.zeros((2, 2), int)) == (0, 0)


def test_decoy_hits_radius_is_euclidean_and_inclusive():
    comp = np.zeros((20, 20), np.int32)
    comp[10, 10] = 1
    decoys = [{"y": 10, "x": 14},        # distance 4 = r: hit
              {"y": 13, "x": 13},        # distance sqrt(18) = 4.24 > 4: miss
              {"y": 10, "x": 10},        # on it: hit
              {"y": 0.0, "x": 19.0}]     # far, near the border: miss
    assert M.decoy_hits(comp, decoys, radius=4.0) == (2, 4)
    assert M.decoy_hits(comp, decoys, radius=4.3) == (3, 4)
    assert M.decoy_hits(comp, [], radius=4.0) == (0, 0)


def test_decoy_radius_from_meta():
    assert M.decoy_radius({"cell_diameter": 28}) == 7.0
    assert M.decoy_radius({}) == M.DEFAULT_DECOY_RADIUS
    assert M.decoy_radius(None) == M.DEFAULT_DECOY_RADIUS


def test_dataset_summary_hand_computed():
    acc = M.MetricsAccumulator()
    # image A: the tier image (5 rosettes); prob outside rosettes at row 0 cols 15..19 (5 px, one proposal)
    prob_a, ros_a = _tier_image()
    # image B: one rosette of 4 px fully predicted at 1.0, one 10 px false blob, one decoy hit, one not
    prob_b = np.zeros((8, 8), np.float32)
    ros_b = np.zeros((8, 8), np.uint8)
    ros_b[0:2, 0:2] = 1
    prob_b[0:2, 0:2] = 1.0
    prob_b[0:2, 2:5] = 1.0               # adjoins the rosette: one 10 px component (4 TP + 6 FP)
    prob_b[6:8, 3:8] = 1.0               # 10 px false proposal
    decoys_b = [{"y": 7, "x": 7}, {"y": 4, "x": 0}]
    acc.add(prob_a, ros_a, name="a")
    acc.add(prob_b, ros_b, decoys_b, radius=1.0, name="b")
    s = acc.summary()

    # image A hard counts: >= .5 inside rosettes: 1 + 8 + 9 = 18 TP; FP = 5; FN = 60 - 18 = 42
    # image B: TP 4, FP 6 + 10 = 16, FN 0
    tp, fp, fn = 22, 21, 42
    assert (s["pixel_tp"], s["pixel_fp"], s["pixel_fn"]) == (tp, fp, fn)
    assert s["pixel_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert s["pixel_recall"] == pytest.approx(tp / (tp + fn))
    assert s["pixel_precision"] == pytest.approx(tp / (tp + fp))
    # soft Dice A: inter = 10*.45 + .5 + 8*.7 + 9*.99 + .4 = 19.91; sum p = 19.91 + 5*.95 = 24.66; sum g = 60
    dice_a = 2 * 19.91 / (24.66 + 60)
    dice_b = 2 * 4 / (20 + 4)
    assert s["pixel_dice"] == pytest.approx((dice_a + dice_b) / 2, rel=1e-6)
    assert s["pixel_dice_soft_pooled"] == pytest.approx(2 * (19.91 + 4) / (24.66 + 60 + 20 + 4), rel=1e-6)
    hard_a = 2 * 18 / (2 * 18 + 5 + 42)
    hard_b = 2 * 4 / (2 * 4 + 16)
    assert s["pixel_dice_hard_mean"] == pytest.approx((hard_a + hard_b) / 2)
    # events: A 3/5 detected, B 1/1 (100 % covered -> all tiers)
    assert s["n_rosettes"] == 6 and s["n_detected"] == 4
    assert s["event_recall"] == pytest.approx(4 / 6)
    assert s["coverage_ge10_at04"] == pytest.approx(5 / 6)
    assert s["coverage_gt80_at05"] == pytest.approx(2 / 6)
    assert s["coverage_gt40_at05"] == pytest.approx(3 / 6)
    assert s["completely_missed"] == pytest.approx(2 / 6)
    # proposals: A has one (rows 2-3, 8 + 9 = 17 px; the 0.5 pixel is not > 0.5; matched) and a 5 px blob
    # (dropped); B has 2 (one matched)
    assert s["n_proposals"] == 3 and s["n_proposals_matched"] == 2
    assert s["event_precision"] == pytest.approx(2 / 3)
    assert s["proposals_per_image"] == 1.5
    assert s["false_proposals_per_image"] == 0.5
    assert (s["n_decoys"], s["n_decoys_hit"], s["decoy_hit_rate"]) == (2, 1, 0.5)
    assert [r["name"] for r in acc.per_image] == ["a", "b"]
    assert acc.per_image[1]["pixel_f1"] == pytest.approx(hard_b)


def test_empty_dataset_gives_none_not_nan():
    s = M.MetricsAccumulator().summary()
    for key in ("pixel_dice", "pixel_f1", "event_recall", "event_precision", "decoy_hit_rate",
                "proposals_per_image"):
        assert s[key] is None


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        M.event_counts(np.zeros((3, 3)), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="integer label image"):
        M.event_counts(np.zeros((3, 3)), np.zeros((3, 3), float))
    with pytest.raises(ValueError, match="2D"):
        M.image_counts(np.zeros((1, 3, 3)), np.zeros((1, 3, 3), int))

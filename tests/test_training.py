"""Training: loss, crop sampler, augmentation, the end-to-end loop (CLI), resume, fine-tuning."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import tifffile

torch = pytest.importorskip("torch")

from rosette_bmz.inputs import inner_outlines  # noqa: E402
from rosette_bmz.training.config import ConfigError, TrainConfig, load_config  # noqa: E402
from rosette_bmz.training.data import (CropSampler, Sample, TrainingDataError, build_augmentation,  # noqa: E402
                           choose_crop_kind, error_points, match_pairs, sample_crop, split_samples, widen_lines)
from rosette_bmz.training.train import load_init_state, rosette_loss, select_device  # noqa: E402


# ----------------------------------------------------------------------------- toy data
def _voronoi_labels(size: int, n_cells: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size, (n_cells, 2))
    yy, xx = np.mgrid[:size, :size]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    return (d.argmin(-1) + 1).astype(np.int32)


def _toy(size: int = 128, seed: int = 0, n_rosettes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, outlines, rosette instance labels) with disk-shaped 'rosettes' away from the border."""
    labels = _voronoi_labels(size, max(8, size * size // 400), seed)
    outlines = inner_outlines(labels).astype(np.uint8)
    rng = np.random.default_rng(seed + 100)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.uint16)
    for i in range(n_rosettes):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = i + 1
    return labels, outlines, inst


def _sample(size=128, seed=0, decoys=None) -> Sample:
    _, outlines, inst = _toy(size, seed)
    return Sample(f"toy{seed}", outlines, (inst > 0).astype(np.uint8), inst.astype(np.int32),
                  decoys=np.asarray(decoys or [], dtype=np.int64).reshape(-1, 2))


def _write_folder(tmp_path, n=3, size=96):
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir()
    mask_dir.mkdir()
    for i in range(n):
        _, outlines, inst = _toy(size, seed=i)
        tifffile.imwrite(img_dir / f"embryo_{i}.tif", outlines * 255)
        tifffile.imwrite(mask_dir / f"embryo_{i}_rosettes.tif", inst)
    return img_dir, mask_dir


def _tiny_config(tmp_path, **extra) -> str:
    text = f"""
name: tiny
out: {tmp_path / 'run'}
seed: 3
device: cpu
model: {{base_channels: 4}}
data: {{source: folder, crop_size: 64, samples_per_epoch: 4, val_tile: 64}}
augment: {{elastic_p: 0.5, dropout_p: 0.5}}
optim: {{lr: 1.0e-3, batch_size: 2, epochs: 2}}
"""
    p = tmp_path / "tiny.yaml"
    p.write_text(text)
    return str(p)


# ----------------------------------------------------------------------------- loss
def test_loss_known_values():
    prob = torch.full((2, 1, 4, 4), 0.5)
    target = torch.ones_like(prob)
    loss, bce, dice = rosette_loss(prob, target, smooth=0.0)
    assert bce.item() == pytest.approx(math.log(2), rel=1e-6)
    assert dice.item() == pytest.approx(2 * 16 / (16 + 32), rel=1e-6)          # 2*0.5N / (0.5N + N)
    assert loss.item() == pytest.approx(0.5 * math.log(2) + 0.5 * (1 - 2 / 3), rel=1e-6)
    perfect = (torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    loss, bce, dice = rosette_loss(perfect, perfect)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and dice.item() == pytest.approx(1.0)


def test_loss_matches_formula_and_weights():
    g = torch.Generator().manual_seed(1)
    prob = torch.rand(3, 1, 16, 16, generator=g) * 0.98 + 0.01
    target = (torch.rand(3, 1, 16, 16, generator=g) > 0.7).float()
    p, t = prob.double().numpy(), target.double().numpy()
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    dice = (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    loss, _, _ = rosette_loss(prob, target)
    assert loss.item() == pytest.approx(0.5 * bce + 0.5 * (1 - dice), rel=1e-5)
    only_bce, _, _ = rosette_loss(prob, target, bce_weight=1.0, dice_weight=0.0)
    assert only_bce.item() == pytest.approx(bce, rel=1e-5)
    # empty prediction on an empty mask is not penalised by the Dice term (smoothing)
    _, _, d = rosette_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert d.item() == pytest.approx(1.0)


def test_weighted_bce_is_the_weighted_pixel_mean():
    g = torch.Generator().manual_seed(2)
    prob = torch.rand(2, 1, 8, 8, generator=g) * 0.98 + 0.01
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.6).float()
    plain = rosette_loss(prob, target)
    ones = rosette_loss(prob, target, weight=torch.full_like(prob, 3.0))      # uniform weights: no change
    assert all(a.item() == pytest.approx(b.item(), rel=1e-6) for a, b in zip(plain, ones))
    w = torch.ones_like(prob)
    w[0, 0, :2] = 5.0
    p, t, wn = prob.double().numpy(), target.double().numpy(), w.double().numpy()
    px = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    _, bce, dice = rosette_loss(prob, target, weight=w)
    assert bce.item() == pytest.approx((wn * px).sum() / wn.sum(), rel=1e-5)
    assert dice.item() == pytest.approx(plain[2].item(), rel=1e-6)             # the Dice term is unweighted


def test_focus_marks_rosette_vertices_junctions_and_near_misses():
    from rosette_bmz.training.data import disc_map

    m = disc_map((20, 30), np.array([[5, 5], [19, 29], [-3, 10]]), 2.0)
    yy, xx = np.mgrid[:20, :30]
    expected = ((yy - 5) ** 2 + (xx - 5) ** 2 <= 4) | ((yy - 19) ** 2 + (xx - 29) ** 2 <= 4)
    np.testing.assert_array_equal(m, expected)                               # off-image points cost nothing
    s = _sample(96, 0, decoys=[[10, 10]])
    s.near_misses = np.array([[80, 80]])
    s.decoy_radius = 3.0
    focus = s.focus
    assert focus[10, 10] and focus[80, 80] and focus.dtype == np.uint8
    for i in range(1, int(s.instances.max()) + 1):                           # no meta: the instances' centroids
        cy, cx = np.argwhere(s.instances == i).mean(0).round().astype(int)
        assert focus[cy, cx]
    assert focus.sum() < 4 * np.pi * 9 + 40                                   # four discs of radius 3, no more


def test_sampler_weights_follow_the_crop_and_its_augmentation():
    """The BCE weights are the crop's focus, moved by the same flips / turns / warps as the mask."""
    cfg = load_config("published.yaml", {"data.crop_size": 64, "data.samples_per_epoch": 8,
                                         "data.centred_fraction": 1.0, "loss.junction_weight": 4.0})
    s = _sample(128, 3)
    s.centres = np.argwhere(s.instances > 0)[::7]
    s.decoy_radius = 1.5
    s.mask = (s.focus > 0).astype(np.uint8)           # the mask is the focus: both must move together
    s.rosette_pixels = np.flatnonzero(s.mask.ravel())
    sampler = CropSampler([s], cfg.data, cfg.augment, seed=0, junction_weight=cfg.loss.junction_weight)
    n = 0
    for xb, yb, wb in sampler.epoch(1, 4):
        assert wb.shape == yb.shape and set(np.unique(wb)) <= {1.0, 5.0}
        np.testing.assert_array_equal(wb > 1, yb > 0)
        n += int((wb > 1).sum())
    assert n > 0
    plain = CropSampler([s], cfg.data, cfg.augment.model_copy(update={"enabled": False}), seed=0,
                        junction_weight=4.0)
    x, y, kind, w = plain.crop(np.random.default_rng(0))
    np.testing.assert_array_equal(w > 1, y > 0)


# ----------------------------------------------------------------------------- config
def test_published_config_is_the_recipe():
    cfg = load_config("published.yaml")
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs) == (1e-4, 4, 100)
    assert (cfg.optim.plateau_factor, cfg.optim.plateau_patience, cfg.optim.early_stopping_patience) == (0.5, 7, 15)
    assert (cfg.loss.bce_weight, cfg.loss.dice_weight) == (0.5, 0.5)
    assert (cfg.data.val_fraction, cfg.data.crop_size, cfg.data.centred_fraction) == (0.2, 512, 0.7)
    assert cfg.data.hard_negative_fraction == 0 and cfg.model.base_channels == 64
    a = cfg.augment
    assert (a.elastic_alpha, a.elastic_sigma, tuple(a.affine_scale), a.affine_translate, a.affine_rotate) == \
        (120, 6, (0.9, 1.1), 0.1, 15)
    assert load_config("world").data.synth.world == "train"


def test_train_help_names_every_shipped_config():
    from rosette_bmz.cli import build_parser
    from rosette_bmz.training.config import CONFIG_DIR

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    (config,) = [a for a in train._actions if a.dest == "config"]
    import re

    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    named = set(re.findall(r"[A-Za-z0-9_]+", config.help))
    assert shipped and set(shipped) <= named, (shipped, config.help)
    for name in shipped:
        load_config(name)   # every shipped config validates


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 1.0e-4, batchsize: 4}\n")
    with pytest.raises(ConfigError, match="batchsize"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="crop_size"):
        load_config(None, {"data.crop_size": 100})          # not a multiple of 16
    assert all(f.description for f in TrainConfig.model_fields.values())   # a docstring per field


# ----------------------------------------------------------------------------- crops
def test_crop_kind_fractions():
    rng = np.random.default_rng(0)
    kinds = [choose_crop_kind(rng, 0.7, 0.0) for _ in range(4000)]
    assert kinds.count("centred") / 4000 == pytest.approx(0.7, abs=0.03)
    kinds = [choose_crop_kind(rng, 0.5, 0.2) for _ in range(4000)]
    assert kinds.count("hard") / 4000 == pytest.approx(0.2, abs=0.03)
    assert kinds.count("random") / 4000 == pytest.approx(0.3, abs=0.03)
    kinds = [choose_crop_kind(rng, 0.4, 0.2, 0.2) for _ in range(4000)]
    assert kinds.count("near_miss") / 4000 == pytest.approx(0.2, abs=0.03)
    assert kinds.count("random") / 4000 == pytest.approx(0.2, abs=0.03)
    kinds = [choose_crop_kind(rng, 0.3, 0.15, 0.2, 0.15) for _ in range(4000)]
    assert kinds.count("extrusion") / 4000 == pytest.approx(0.15, abs=0.03)
    assert kinds.count("centred") / 4000 == pytest.approx(0.3, abs=0.03)
    assert kinds.count("random") / 4000 == pytest.approx(0.2, abs=0.03)
    kinds = [choose_crop_kind(rng, 0.25, 0.1, 0.15, 0.1, 0.25) for _ in range(4000)]
    assert kinds.count("error") / 4000 == pytest.approx(0.25, abs=0.03)
    assert kinds.count("random") / 4000 == pytest.approx(0.15, abs=0.03)
    with pytest.raises(ConfigError, match="extrusion_fraction"):      # the shares may not exceed 1
        load_config(None, {"data.centred_fraction": 0.7, "data.extrusion_fraction": 0.4})
    with pytest.raises(ConfigError, match="error_fraction"):
        load_config(None, {"data.centred_fraction": 0.7, "data.error_fraction": 0.4})


def test_centred_crops_have_a_rosette_pixel_at_the_centre():
    s = _sample(128, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        img, msk, (cy, cx) = sample_crop(s, 48, rng, "centred")
        assert img.shape == msk.shape == (48, 48)
        assert s.mask[cy, cx] == 1
        assert msk[24, 24] == 1          # rosettes lie >= 32 px from the border: exactly centred
    # random crops land anywhere; the fraction containing rosette pixels is clearly lower
    rand_hits = np.mean([sample_crop(s, 48, rng, "random")[1][24, 24] for _ in range(400)])
    assert rand_hits < 0.2


def test_hard_negative_and_fallback_crops():
    s = _sample(128, seed=1, decoys=[(30, 90)])
    rng = np.random.default_rng(0)
    s.near_misses = np.array([[70, 40]])
    s.extrusions = np.array([[100, 60]])
    s.errors = np.array([[50, 70]])
    for kind, (cy, cx) in (("hard", (30, 90)), ("near_miss", (70, 40)), ("extrusion", (100, 60)),
                           ("error", (50, 70))):
        img, msk, centre = sample_crop(s, 32, rng, kind)
        assert centre == (cy, cx)
        assert np.array_equal(img, s.image[cy - 16:cy + 16, cx - 16:cx + 16])
    empty = Sample("empty", s.image, np.zeros_like(s.mask), np.zeros_like(s.instances))
    img, msk, _ = sample_crop(empty, 32, rng, "centred")        # no rosette: falls back to random
    assert img.shape == (32, 32) and not msk.any()
    img, msk, _ = sample_crop(empty, 32, rng, "extrusion")      # none known: random as well
    assert img.shape == (32, 32)
    small = Sample("small", s.image[:40, :50], s.mask[:40, :50], s.instances[:40, :50])
    img, msk, _ = sample_crop(small, 64, rng, "random")          # smaller than the crop: zero padded
    assert img.shape == (64, 64) and not img[40:].any() and not img[:, 50:].any()


def test_error_points_are_false_proposals_and_missed_rosettes():
    s = _sample(128, seed=0)
    ids = np.unique(s.instances[s.instances > 0])
    assert ids.size >= 2
    prob = np.zeros(s.shape, np.float32)
    prob[s.instances == ids[0]] = 0.9            # the first rosette found, the others missed
    prob[100:106, 10:16] = 0.8                   # a false proposal of 36 px, centroid (102.5, 12.5)
    prob[5:7, 5:7] = 0.8                         # 4 px: below min_size, not a proposal
    pts = error_points(prob, s, threshold=0.5, min_size=10)
    assert [tuple(p) for p in pts] == [(102, 12), *[
        tuple(np.round(np.argwhere(s.instances == i).mean(0)).astype(int)) for i in ids[1:]]]
    prob = np.where(s.mask > 0, 0.9, 0.1).astype(np.float32)          # perfect: no mistakes
    assert error_points(prob, s, 0.5, 10).shape == (0, 2)


def test_training_with_error_crops_mines_the_models_mistakes(tmp_path):
    from rosette_bmz.training.train import train

    img_dir, mask_dir = _write_folder(tmp_path, n=3, size=64)
    res = train(load_config(_tiny_config(tmp_path), {
        "data.images": str(img_dir), "data.masks": str(mask_dir), "data.val_fraction": 0.3,
        "data.centred_fraction": 0.4, "data.error_fraction": 0.5, "data.error_refresh": 2, "optim.epochs": 3,
        "out": str(tmp_path / "err")}),
        progress=False)
    mined = [r.get("mined_errors") for r in res.history]
    assert mined[1] is None and all(isinstance(m, int) and m >= 0 for m in (mined[0], mined[2]))  # epochs 1, 3
    meta = json.loads((tmp_path / "err" / "last.json").read_text())
    assert meta["metrics"][0]["mined_errors"] == mined[0]


def test_folder_images_get_hard_negatives_from_their_outlines(tmp_path):
    """A reviewer's corrections carry no generator JSON: their 4-cell junctions and near misses are
    read off the outlines by the definition, and none lies on the annotated rosettes."""
    from rosette_bmz.synth import generate
    from rosette_bmz.training.data import load_samples

    g = generate(256, seed=4, cell_diameter=18, noise=0.0)
    tifffile.imwrite(tmp_path / "a_outlines.tif", (g.outlines > 0).astype(np.uint8) * 255)
    tifffile.imwrite(tmp_path / "a_rosettes.tif", g.rosettes.astype(np.uint16))
    cfg = load_config("review.yaml", {"data.images": str(tmp_path), "data.masks": str(tmp_path)}).data
    (s,) = load_samples(cfg)
    assert len(s.decoys) >= 10 and len(s.near_misses) >= 1
    assert not s.mask[s.decoys[:, 0], s.decoys[:, 1]].any()
    # the generator's own 4-cell junctions are found: most lie within 3 px of one read off the outlines
    truth = np.array([(d["y"], d["x"]) for d in g.meta["decoys"] if d.get("kind") == "four_cell"])
    dist = np.sqrt(((truth[:, None, :] - s.decoys[None]) ** 2).sum(-1)).min(1)
    assert np.mean(dist <= 3) >= 0.8
    rng = np.random.default_rng(0)
    assert sample_crop(s, 64, rng, "hard")[2] in {tuple(p) for p in s.decoys}


def test_augmentation_is_identical_for_input_and_mask_and_keeps_binary():
    cfg = load_config("published.yaml").augment.model_copy(update=dict(
        flip_p=1.0, rotate90_p=1.0, elastic_p=1.0, affine_p=1.0, dropout_p=0.0))
    aug = build_augmentation(cfg, 96, seed=0)
    _, outlines, _ = _toy(96, seed=2)
    changed = 0
    for _ in range(10):
        out = aug(image=outlines.copy(), mask=outlines.copy())
        img, msk = out["image"], out["mask"]
        assert set(np.unique(img)) <= {0, 1}                   # nearest interpolation: still binary
        assert np.array_equal(img, msk)                        # the very same geometric transform
        changed += not np.array_equal(img, outlines)
    assert changed == 10
    # CoarseDropout blanks the input only; the annotation stays
    cfg2 = cfg.model_copy(update=dict(flip_p=0.0, rotate90_p=0.0, elastic_p=0.0, affine_p=0.0, dropout_p=1.0))
    out = build_augmentation(cfg2, 96, seed=0)(image=outlines.copy(), mask=outlines.copy())
    assert np.array_equal(out["mask"], outlines) and out["image"].sum() < outlines.sum()


def test_sampler_builds_published_channels_after_augmentation():
    from skimage.segmentation import find_boundaries

    cfg = load_config("published.yaml", {"data.crop_size": 64, "data.samples_per_epoch": 6})
    sampler = CropSampler([_sample(128, 0), _sample(128, 1)], cfg.data, cfg.augment, seed=0)
    batches = list(sampler.epoch(1, 4))
    assert [b[0].shape for b in batches] == [(4, 2, 64, 64), (2, 2, 64, 64)]
    for xb, yb, wb in batches:
        assert wb is None                                      # loss.junction_weight 0: plain BCE
        assert xb.dtype == np.float32 and set(np.unique(xb)) <= {0.0, 1.0}
        assert set(np.unique(yb)) <= {0.0, 1.0}
        for x in xb:
            assert np.array_equal(x[0], find_boundaries(x[1] > 0, mode="thick"))
    again = list(sampler.epoch(1, 4))                          # deterministic per (seed, epoch)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    other = list(sampler.epoch(2, 4))
    assert not np.array_equal(batches[0][0], other[0][0])


def test_widened_lines_keep_the_mask_and_grow_by_the_drawn_width():
    line = np.zeros((9, 9), np.uint8)
    line[:, 4] = 1
    for by in (1, 2, 3):
        assert (widen_lines(line, by).sum(1) == 1 + by).all()      # a 1 px line becomes 1 + by px wide
    assert (widen_lines(line, 3, max_fraction=3 / 9).sum(1) == 3).all()   # at most a third of the image
    assert np.array_equal(widen_lines(line, 2, max_fraction=1 / 9), line)
    cfg = load_config("published.yaml", {"data.crop_size": 64, "data.samples_per_epoch": 4,
                                         "data.centred_fraction": 1.0})
    still = cfg.augment.model_copy(update=dict(flip_p=0.0, rotate90_p=0.0, elastic_p=0.0, affine_p=0.0, dropout_p=0.0))
    samples = [_sample(128, 0), _sample(128, 1)]
    plain = list(CropSampler(samples, cfg.data, still, seed=0).epoch(1, 4))
    wide = list(CropSampler(samples, cfg.data, still.model_copy(update={"widen_p": 1.0, "widen_by": (2, 2)}),
                            seed=0).epoch(1, 4))
    for (xp, yp, _), (xw, yw, _) in zip(plain, wide):
        assert np.array_equal(yp, yw)                                # the same crops, the mask kept
        assert (xw[:, 1] >= xp[:, 1]).all() and xw[:, 1].sum() > 1.5 * xp[:, 1].sum()
    with pytest.raises(ConfigError, match="widen_by"):
        load_config("published.yaml", {"augment.widen_by": [3, 1]})


def test_split_by_image():
    samples = [_sample(32, i) for i in range(10)]
    train, val = split_samples(samples, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2
    assert not {s.name for s in train} & {s.name for s in val}
    train, val = split_samples(samples[:2], 0.2, seed=0)
    assert len(train) == 1 and len(val) == 1
    train, val = split_samples(samples[:1], 0.2, seed=0)     # one image: validate on it
    assert train == val


def test_match_pairs(tmp_path):
    img_dir, mask_dir = _write_folder(tmp_path, n=2, size=32)
    pairs = match_pairs(img_dir, mask_dir)
    assert [(i.name, m.name) for i, m in pairs] == [("embryo_0.tif", "embryo_0_rosettes.tif"),
                                                    ("embryo_1.tif", "embryo_1_rosettes.tif")]
    tifffile.imwrite(img_dir / "embryo_9.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(TrainingDataError, match="embryo_9.tif"):
        match_pairs(img_dir, mask_dir)
    # synth layout in one folder: *_outlines.tif pairs with *_rosettes.tif
    both = tmp_path / "both"
    both.mkdir()
    tifffile.imwrite(both / "s_0000_outlines.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(both / "s_0000_rosettes.tif", np.zeros((8, 8), np.uint8))
    assert [(i.name, m.name) for i, m in match_pairs(both, both)] == [("s_0000_outlines.tif",
                                                                       "s_0000_rosettes.tif")]


def test_synthetic_sources_on_the_fly_and_from_disk(tmp_path):
    from rosette_bmz.synth import write_dataset
    from rosette_bmz.training.data import load_samples

    cfg = load_config(None, {"data.source": "synth", "data.synth": {"n_images": 2, "size": 160, "seed": 7}})
    fly = load_samples(cfg.data)
    write_dataset(tmp_path / "syn", n=2, size=160, seed=7, progress=False)
    disk = load_samples(load_config(None, {"data.source": "synth_dir", "data.synth_dir": str(tmp_path / "syn")}).data)
    assert len(fly) == len(disk) == 2
    for a, b in zip(fly, disk):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
        assert set(np.unique(a.image)) <= {0, 1} and a.mask.dtype == np.uint8
        assert np.array_equal(a.decoys, b.decoys) and len(a.decoy_meta) == len(a.decoys)
        assert np.array_equal(a.extrusions, b.extrusions)
    assert sum(s.n_rosettes for s in fly) > 0
    with pytest.raises(TrainingDataError, match="synth_dir"):
        load_samples(load_config(None, {"data.source": "synth_dir"}).data)
    # the whole images are checked when loaded (their crops are not): a filled mask is refused by name
    from rosette_bmz.inputs import InputError

    tifffile.imwrite(tmp_path / "syn" / "synth_0001_outlines.tif", np.ones((160, 160), np.uint8))
    with pytest.raises(InputError, match="synth_0001.*foreground"):
        load_samples(load_config(None, {"data.source": "synth_dir", "data.synth_dir": str(tmp_path / "syn")}).data)


def test_synthetic_samples_know_their_extrusion_rosettes():
    from rosette_bmz.synth import generate
    from rosette_bmz.training.data import _synth_sample

    g = generate(256, seed=3, cell_diameter=16, noise=1.0)
    ext = [r for r in g.meta["rosettes"] if r["kind"] == "extrusion"]
    assert ext, "this image should hold extrusion rosettes"
    s = _synth_sample("g", g.outlines, g.rosettes, g.meta)
    assert len(s.extrusions) == len(ext) < len(g.meta["rosettes"])
    assert all(s.instances[y, x] > 0 for y, x in s.extrusions)     # each centre lies on its rosette's mask


def test_synthetic_source_from_a_world(tmp_path):
    """data.synth.world draws each image's settings from the randomised distribution, like `synth --world`."""
    from rosette_bmz.synth import write_dataset
    from rosette_bmz.training.data import load_samples

    cfg = load_config(None, {"data.source": "synth",
                             "data.synth": {"world": "train", "n_images": 2, "size": 192, "seed": 3}})
    fly = load_samples(cfg.data)
    write_dataset(tmp_path / "w", n=2, size=192, seed=3, world="train", progress=False)
    disk = load_samples(load_config(None, {"data.source": "synth_dir", "data.synth_dir": str(tmp_path / "w")}).data)
    assert [s.name for s in fly] == ["train_seed3", "train_seed4"]
    for a, b in zip(fly, disk):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    fixed = load_samples(load_config(None, {"data.synth": {"world": "train", "n_images": 1, "size": 192,
                                                           "seed": 3, "noise": 0.0}}).data)
    assert not np.array_equal(fixed[0].image, fly[0].image)     # noise given: replaces the drawn value
    with pytest.raises(ConfigError, match="unknown world 'mars'"):
        load_config(None, {"data.synth": {"world": "mars"}})


# ----------------------------------------------------------------------------- the loop
def test_select_device_auto_and_errors():
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ConfigError):
        select_device("tpu")


def test_tiny_training_run_through_the_cli_and_resume(tmp_path, capsys):
    from rosette_bmz.checkpoint import load_checkpoint
    from rosette_bmz.cli import main

    img_dir, mask_dir = _write_folder(tmp_path, n=3, size=96)
    cfg = _tiny_config(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--config", cfg, "--images", str(img_dir), "--masks", str(mask_dir)]) == 0
    for name in ("best.pt", "best.json", "last.pt", "last.json", "last_state.pt", "log.csv"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r["train_loss"])) and math.isfinite(float(r["val_loss"])) for r in rows)
    side = json.loads((out / "last.json").read_text())
    assert side["architecture"]["kwargs"] == {"in_channels": 2, "out_channels": 1, "base_channels": 4}
    assert side["training_config"]["data"]["crop_size"] == 64
    assert side["data"]["n_train_images"] + side["data"]["n_val_images"] == 3
    assert [m["epoch"] for m in side["metrics"]] == [1, 2]
    loaded = load_checkpoint(out / "best.pt")
    assert loaded.kwargs["base_channels"] == 4 and loaded.metadata["checkpoint"] == "best"
    last_weights = {k: v.clone() for k, v in load_checkpoint(out / "last.pt").model.state_dict().items()}

    # an existing run is not overwritten by accident
    assert main(["train", "--config", cfg, "--images", str(img_dir), "--masks", str(mask_dir)]) == 2
    assert "--resume" in capsys.readouterr().err

    # --resume continues at epoch 3 with the saved config, history kept
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3"]) == 0
    rows2 = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows2] == ["1", "2", "3"] and rows2[:2] == rows
    new_weights = load_checkpoint(out / "last.pt").model.state_dict()
    assert any(not torch.equal(last_weights[k], new_weights[k]) for k in last_weights)
    assert json.loads((out / "last.json").read_text())["epoch"] == 3


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    from rosette_bmz.training.train import train

    img_dir, mask_dir = _write_folder(tmp_path, n=2, size=64)
    base = {"data.images": str(img_dir), "data.masks": str(mask_dir), "augment.elastic_p": 0.0}
    full = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "a"), "optim.epochs": 2}),
                 progress=False)
    train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "b"), "optim.epochs": 1}),
          progress=False)
    resumed = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "b"), "optim.epochs": 2}),
                    resume=True, progress=False)
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-5)
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)


def test_bad_training_data_is_a_one_line_error(tmp_path, capsys):
    from rosette_bmz.cli import main

    img_dir, mask_dir = _write_folder(tmp_path, n=1, size=32)
    (mask_dir / "embryo_0_rosettes.tif").unlink()
    tifffile.imwrite(mask_dir / "embryo_0_rosettes.tif", np.zeros((16, 16), np.uint8))
    assert main(["train", "--config", _tiny_config(tmp_path), "--images", str(img_dir),
                 "--masks", str(mask_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "shape" in err and "embryo_0" in err
    assert main(["train", "--config", _tiny_config(tmp_path), "--images", str(img_dir)]) == 2
    assert "--masks" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fine-tuning
def test_init_from_rdf_yaml(tmp_path, tiny_state):
    from rosette_bmz.checkpoint import CheckpointError

    torch.save(tiny_state, tmp_path / "weights.pt")
    (tmp_path / "rdf.yaml").write_text("format_version: 0.5.4\ntype: model\nweights:\n  pytorch_state_dict:\n"
                                       "    source: weights.pt\n")
    state = load_init_state(tmp_path / "rdf.yaml")
    assert all(torch.equal(state[k], tiny_state[k]) for k in tiny_state)
    (tmp_path / "url.yaml").write_text("type: model\nweights: {pytorch_state_dict: {source: 'https://x/y.pt'}}\n")
    with pytest.raises(CheckpointError, match="URL"):
        load_init_state(tmp_path / "url.yaml")
    (tmp_path / "other.yaml").write_text("name: not a model\n")
    with pytest.raises(CheckpointError, match="pytorch_state_dict"):
        load_init_state(tmp_path / "other.yaml")


def test_finetune_from_checkpoint_lowers_the_loss_and_changes_the_weights(tmp_path, tiny_state):
    from rosette_bmz.checkpoint import build_model, load_checkpoint
    from rosette_bmz.cli import main
    from rosette_bmz.training.data import load_samples
    from rosette_bmz.training.train import validate

    init = tmp_path / "init.pt"
    torch.save(tiny_state, init)
    img_dir, mask_dir = _write_folder(tmp_path, n=2, size=64)
    cfg = load_config("finetune.yaml", {"data.images": str(img_dir), "data.masks": str(mask_dir),
                                        "data.crop_size": 64, "data.val_tile": 64, "device": "cpu",
                                        "data.val_fraction": 0.0, "augment.enabled": False})
    samples = load_samples(cfg.data)
    before = validate(build_model(tiny_state), samples, cfg, torch.device("cpu"))["val_loss"]

    tune = tmp_path / "tune.yaml"
    tune.write_text("data: {crop_size: 64, samples_per_epoch: 8, val_tile: 64}\n"
                    "augment: {enabled: false}\noptim: {lr: 3.0e-3, batch_size: 2, epochs: 6}\n"
                    "device: cpu\n")
    out = tmp_path / "tuned"
    assert main(["train", "--config", str(tune), "--init", str(init), "--images", str(img_dir),
                 "--masks", str(mask_dir), "--out", str(out)]) == 0
    tuned = load_checkpoint(out / "last.pt")
    assert tuned.kwargs["base_channels"] == 4                      # width taken from the weights
    assert tuned.metadata["init"] == str(init)
    changed = [k for k, v in tuned.model.state_dict().items()
               if v.dtype.is_floating_point and not torch.allclose(v, tiny_state[k])]
    assert len(changed) > len(tiny_state) // 2
    after = validate(tuned.model, samples, cfg, torch.device("cpu"))["val_loss"]
    assert after < 0.95 * before, (before, after)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


# ----------------------------------------------------------------------------- forgetting guards, precision
def test_replay_world_is_read_off_the_init_weights_sidecar(tmp_path):
    from rosette_bmz.training.config import ReplayConfig
    from rosette_bmz.training.data import replay_world

    auto = ReplayConfig(fraction=0.5)
    assert replay_world(ReplayConfig(fraction=0.5, world="noise1"), None) == "noise1"
    assert replay_world(auto, None) == "train"                        # nothing known: the training world
    w = tmp_path / "w.pt"
    assert replay_world(auto, w) == "train"                           # no sidecar
    (tmp_path / "w.json").write_text(json.dumps({"training_config": {"data": {"source": "synth",
                                                                               "synth": {"world": "poisson"}}}}))
    assert replay_world(auto, w) == "poisson"
    (tmp_path / "w.json").write_text(json.dumps({"training_config": {"data": {"source": "synth_dir",
                                                                               "synth": {"world": None}}}}))
    assert replay_world(auto, w) == "default"                         # the generator's fixed default
    (tmp_path / "w.json").write_text("{not json")
    assert replay_world(auto, w) == "train"
    with pytest.raises(ValueError, match="unknown world"):
        ReplayConfig(world="nowhere")


def test_sampler_draws_the_replay_fraction_from_replay_images():
    from rosette_bmz.training.data import replay_samples

    cfg = load_config(None, {"data.crop_size": 64, "data.replay.fraction": 0.25, "data.replay.n_images": 2,
                             "data.replay.size": 96, "data.replay.world": "default", "augment.enabled": False})
    replay = replay_samples(cfg.data.replay, None)
    assert len(replay) == 2 and all(s.name.startswith("replay_default_") and s.shape == (96, 96) for s in replay)
    assert replay_samples(cfg.data.replay.model_copy(update={"fraction": 0.0}), None) == []
    own = [_sample(96, seed=0)]
    sampler = CropSampler(own, cfg.data, cfg.augment, seed=1, replay=replay)
    picked = []
    orig = sample_crop

    def spy(sample, *a, **k):
        picked.append(sample.name)
        return orig(sample, *a, **k)

    import rosette_bmz.training.data as D
    D.sample_crop, saved = spy, D.sample_crop
    try:
        rng = np.random.default_rng(0)
        for _ in range(400):
            sampler.crop(rng)
    finally:
        D.sample_crop = saved
    frac = np.mean([n.startswith("replay_") for n in picked])
    assert 0.18 < frac < 0.32, frac


def _finetune_base(tmp_path, tiny_state, epochs: int) -> dict:
    """Config overrides: fine-tune the tiny weights (saved as init.pt) on 2 toy images, fast."""
    init = tmp_path / "init.pt"
    torch.save(tiny_state, init)
    img_dir, mask_dir = _write_folder(tmp_path, n=2, size=64)
    return {"data.images": str(img_dir), "data.masks": str(mask_dir), "augment.enabled": False,
            "optim.lr": 3e-3, "optim.epochs": epochs, "model.init": str(init)}


def _finetuned_state(tmp_path, base: dict, out: str, **changes) -> dict:
    from rosette_bmz.checkpoint import load_checkpoint
    from rosette_bmz.training.train import train

    res = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / out), **changes}), progress=False)
    return load_checkpoint(res.last).model.state_dict()


def test_l2sp_holds_weights_near_init_and_needs_init(tmp_path, tiny_state):
    from rosette_bmz.training.train import train

    base = _finetune_base(tmp_path, tiny_state, epochs=3)

    def drift(l2sp: float, out: str) -> float:
        sd = _finetuned_state(tmp_path, base, out, **{"optim.l2sp": l2sp})
        return sum(float(((sd[k] - tiny_state[k]) ** 2).sum()) for k in tiny_state if sd[k].dtype.is_floating_point
                   and "running" not in k)

    assert drift(1.0, "held") < 0.5 * drift(0.0, "free")
    with pytest.raises(ConfigError, match="model.init"):
        train(load_config(_tiny_config(tmp_path), {**base, "model.init": None, "out": str(tmp_path / "x"),
                                                   "optim.l2sp": 0.1}), progress=False)


def test_freeze_batchnorm_keeps_the_init_statistics_and_still_learns(tmp_path, tiny_state):
    base = _finetune_base(tmp_path, tiny_state, epochs=2)
    stats = [k for k in tiny_state if k.endswith(("running_mean", "running_var"))]
    assert stats
    frozen = _finetuned_state(tmp_path, base, "frozen", **{"optim.freeze_batchnorm": True})
    free = _finetuned_state(tmp_path, base, "free", **{"optim.freeze_batchnorm": False})
    assert all(torch.equal(frozen[k], tiny_state[k]) for k in stats)          # statistics untouched
    assert any(not torch.equal(free[k], tiny_state[k]) for k in stats)        # as they are without it
    weights = [k for k in tiny_state if k.endswith(".weight") and tiny_state[k].ndim == 4]
    assert any(not torch.equal(frozen[k], tiny_state[k]) for k in weights)    # the convolutions learn


def test_ema_saves_the_averaged_weights_and_resumes_from_the_raw_ones(tmp_path, tiny_state):
    from rosette_bmz.checkpoint import CheckpointError
    from rosette_bmz.training.train import train

    base = {**_finetune_base(tmp_path, tiny_state, epochs=2), "optim.ema": 0.9}
    averaged = _finetuned_state(tmp_path, base, "ema")
    raw = torch.load(tmp_path / "ema" / "last_state.pt", weights_only=True)["model"]
    plain = _finetuned_state(tmp_path, base, "plain", **{"optim.ema": 0.0})
    assert all(torch.equal(raw[k], plain[k]) for k in plain)     # the average does not change the training
    conv = [k for k in tiny_state if k.endswith(".weight") and tiny_state[k].ndim == 4]

    def dist(a, b):
        return sum(float(((a[k] - b[k]) ** 2).sum()) for k in conv)

    # the average trails the raw weights: between the init and the trained weights
    assert 0 < dist(averaged, tiny_state) < dist(raw, tiny_state) and dist(averaged, raw) > 0
    full = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "full"), "optim.epochs": 3}),
                 progress=False)
    resumed = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "ema"), "optim.epochs": 3}),
                    resume=True, progress=False)
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)
    with pytest.raises(CheckpointError, match="raw weights"):   # a run begun without it cannot switch it on
        train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "plain"), "optim.epochs": 3}),
              resume=True, progress=False)


def test_a_calibrated_init_keeps_its_threshold_through_training_and_resume(tmp_path, tiny_state):
    from rosette_bmz.calibrate import logit, shift_threshold
    from rosette_bmz.training.train import train

    base = {**_finetune_base(tmp_path, tiny_state, epochs=1), "optim.ema": 0.5, "optim.lr": 1e-12,
            "optim.freeze_batchnorm": True}
    init = tmp_path / "init.pt"   # written by _finetune_base
    calibrated = shift_threshold(tiny_state, 0.7)
    torch.save(calibrated, init)
    init.with_suffix(".json").write_text(json.dumps({"calibration": {"threshold": 0.7}}))
    out = tmp_path / "cal"
    cfg = {**base, "out": str(out)}
    train(load_config(_tiny_config(tmp_path), cfg), progress=False)
    train(load_config(_tiny_config(tmp_path), {**cfg, "optim.epochs": 2}), resume=True, progress=False)
    saved = torch.load(out / "last.pt", weights_only=True)["final.0.bias"]
    raw = torch.load(out / "last_state.pt", weights_only=True)["model"]["final.0.bias"]
    assert torch.allclose(saved, calibrated["final.0.bias"], atol=1e-5)         # saved with the offset
    assert torch.allclose(raw, calibrated["final.0.bias"] + logit(0.7), atol=1e-5)   # trained without it
    meta = json.loads((out / "last.json").read_text())
    assert meta["calibration"]["threshold"] == 0.7 and meta["epoch"] == 2


def test_bf16_training_runs_and_saves_fp32_weights(tmp_path):
    from rosette_bmz.checkpoint import load_checkpoint
    from rosette_bmz.training.train import resolve_precision, train

    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    img_dir, mask_dir = _write_folder(tmp_path, n=2, size=64)
    res = train(load_config(_tiny_config(tmp_path), {"data.images": str(img_dir), "data.masks": str(mask_dir),
                                                     "optim.precision": "bf16", "out": str(tmp_path / "bf")}),
                progress=False)
    assert all(math.isfinite(r["train_loss"]) for r in res.history)
    sd = load_checkpoint(res.last).model.state_dict()
    assert all(v.dtype == torch.float32 for v in sd.values() if v.dtype.is_floating_point)
    with pytest.raises(ConfigError, match="precision"):
        load_config(_tiny_config(tmp_path), {"optim.precision": "fp16"})


def test_cosine_schedule_warms_up_decays_to_min_lr_and_resumes(tmp_path):
    from rosette_bmz.training.train import train

    img_dir, mask_dir = _write_folder(tmp_path, n=2, size=64)
    over = {"data.images": str(img_dir), "data.masks": str(mask_dir), "augment.elastic_p": 0.0,
            "optim.schedule": "cosine", "optim.warmup_epochs": 1, "optim.min_lr": 1e-5, "optim.epochs": 3}
    full = train(load_config(_tiny_config(tmp_path), {**over, "out": str(tmp_path / "a")}), progress=False)
    # 2 steps an epoch: after the warm-up epoch the rate is lr, halfway down after epoch 2, min_lr at the end
    lrs = [r["lr"] for r in full.history]
    assert lrs == pytest.approx([1e-3, 1e-5 + (1e-3 - 1e-5) / 2, 1e-5])
    train(load_config(_tiny_config(tmp_path), {**over, "out": str(tmp_path / "b"), "optim.epochs": 2}),
          progress=False)   # decays over 2 epochs; extended to 3 by --resume, the step count comes back
    resumed = train(load_config(_tiny_config(tmp_path), {**over, "out": str(tmp_path / "b")}), resume=True,
                    progress=False)   # (from step 0 the third epoch would end the warm-up at lr again)
    assert [r["lr"] for r in resumed.history] == pytest.approx([1e-3, 1e-5, 1e-5])
    state = tmp_path / "b" / "last_state.pt"
    for old in (False, True):   # old: a state written before it recorded its schedule (read off the scheduler)
        if old:
            st = torch.load(state, weights_only=True)
            del st["schedule"]
            torch.save(st, state)
        with pytest.raises(ConfigError, match="optim.schedule cosine, the config says plateau"):
            train(load_config(_tiny_config(tmp_path), {**over, "optim.schedule": "plateau", "optim.epochs": 4,
                                                       "out": str(tmp_path / "b")}), resume=True, progress=False)
    with pytest.raises(ConfigError, match="min_lr"):
        load_config(_tiny_config(tmp_path), {"optim.schedule": "cosine", "optim.min_lr": 1.0})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config(_tiny_config(tmp_path), {"optim.schedule": "cosine", "optim.warmup_epochs": 2})
    with pytest.raises(ConfigError, match="schedule"):
        load_config(_tiny_config(tmp_path), {"optim.schedule": "linear"})


def test_a_dense_crop_of_a_valid_image_is_no_input_error():
    """The whole image is validated when it is loaded; a crop of a dense patch (small cells, thick
    lines) may hold more foreground than a whole outline image may (stop 29: a training run stopped
    on a 45 % crop centred on one of the model's mistakes)."""
    from rosette_bmz.inputs import MAX_OUTLINE_FRACTION, InputError, from_outlines
    from rosette_bmz.training.data import to_input

    crop = np.zeros((64, 64), np.uint8)
    crop[::2] = 1                                   # 50 % lines
    crop[:, ::4] = 1
    assert crop.mean() > MAX_OUTLINE_FRACTION
    with pytest.raises(InputError, match="foreground"):
        from_outlines(crop, "whole image")           # as a whole image it is refused
    x = to_input(crop, "outlines")                   # as a crop of a loaded image it is converted
    assert x.shape == (2, 64, 64) and x.dtype == np.float32
    assert np.array_equal(x[1], crop.astype(np.float32))        # the same two channels as from_outlines
    assert np.array_equal(x, from_outlines(np.pad(crop, ((0, 192), (0, 0))), "padded")[:, :64])


def test_widen_trains_a_wider_model_from_narrower_weights(tmp_path, tiny_state):
    from rosette_bmz.checkpoint import load_checkpoint
    from rosette_bmz.training.train import train

    base = _finetune_base(tmp_path, tiny_state, epochs=1)
    kept = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "kept"), "model.base_channels": 8}),
                 progress=False)
    assert load_checkpoint(kept.last).model.base_channels == 4       # without widen: the init's width
    res = train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "wide"), "model.base_channels": 8,
                                                     "model.widen": True}), progress=False)
    loaded = load_checkpoint(res.last)
    assert loaded.model.base_channels == 8
    assert "widened from base 4" in loaded.metadata["init"]
    with pytest.raises(ConfigError, match="model.widen"):
        train(load_config(_tiny_config(tmp_path), {**base, "out": str(tmp_path / "x"), "model.base_channels": 8,
                                                   "model.widen": True, "optim.l2sp": 0.1}), progress=False)

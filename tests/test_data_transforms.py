"""Augmentations (paper §4.2), the eval resize, flips, and reproducible loaders."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from fpliif.data import (
    PAPER_AUGMENT,
    FaceParsingDataset,
    build_eval_transform,
    build_train_transform,
    make_loader,
)
from fpliif.data.transforms import check_augment, degrade_image, random_texture, replace_background, resize_mask
from fpliif.labels import CELEBAMASK_HQ, IGNORE_INDEX, LAPA
from test_data_helpers import COLOURS, block_mask, decode_colours, make_folder

GEOMETRIC = {"rotation": 30.0, "shear": (0.0, 20.0), "scale": (0.5, 3.0), "crop": 0.125}


def _sample(size=64, seed=0, block=16):
    m = block_mask(size, size, 19, seed=seed, block=block)
    img = torch.from_numpy(COLOURS[m].astype(np.float32).transpose(2, 0, 1) / 255.0)
    return {"image": img, "mask": torch.from_numpy(m).long(), "name": f"s{seed}"}


def test_no_augmentation_is_a_plain_resize():
    s = _sample(64)
    out = build_train_transform(32, augment=None)(s)
    ev = build_eval_transform(32, mask_sizes=(32,))(s)
    assert torch.equal(out["mask"], ev["mask"]) and torch.allclose(out["image"], ev["image"])
    assert out["image"].shape == (3, 32, 32) and out["mask"].dtype == torch.int64
    assert torch.equal(build_train_transform(64, augment={})(s)["mask"], s["mask"])


def test_resize_mask_is_nearest():
    m = torch.from_numpy(block_mask(50, 70, 19, seed=1, block=5)).long()
    for size in (32, 128, (40, 90)):
        r = resize_mask(m, size)
        assert set(r.unique().tolist()) <= set(m.unique().tolist())
    up = resize_mask(m[:4, :4], 8)
    assert torch.equal(up, m[:4, :4].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_eval_transform_multiple_mask_sizes():
    s = _sample(64)
    out = build_eval_transform(32, mask_sizes=(32, 64))(s)
    assert out["image"].shape == (3, 32, 32)
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert out["mask"].shape == (32, 32) and torch.equal(out["masks"][32], out["mask"])
    assert torch.equal(out["masks"][64], s["mask"])
    with pytest.raises(ValueError):
        build_eval_transform(32, mask_sizes=())


def test_augmented_masks_valid_and_aligned_with_image():
    """Colour encodes the label: after the geometric warp every kept pixel must still decode to its label."""
    t = build_train_transform(64, augment=GEOMETRIC)
    torch.manual_seed(0)
    saw_ignore = 0
    for seed in range(12):
        out = t(_sample(64, seed))
        m = out["mask"]
        assert m.shape == (64, 64) and m.dtype == torch.int64
        values = set(m.unique().tolist())
        assert values <= set(range(19)) | {IGNORE_INDEX}
        saw_ignore += IGNORE_INDEX in values
        keep = m != IGNORE_INDEX
        decoded = decode_colours(out["image"].permute(1, 2, 0).numpy(), 19)
        agree = (torch.from_numpy(decoded) == m)[keep].float().mean().item()
        assert agree > 0.9, f"sample {seed}: only {agree:.3f} of the pixels kept their label"
        # away from label boundaries (where bilinear image vs nearest mask may differ) all must agree:
        # a one-pixel misalignment already breaks this
        x = m[None, None].float()
        interior = (F.max_pool2d(x, 3, 1, 1) == -F.max_pool2d(-x, 3, 1, 1))[0, 0] & keep
        wrong = (torch.from_numpy(decoded) != m)[interior].float().mean().item()
        assert wrong < 0.01, f"sample {seed}: {wrong:.4f} of the interior pixels lost their label"
        # pixels brought in from outside the image are black in the image and 255 in the mask
        if (~keep).sum() > 50:
            assert out["image"][:, ~keep].mean() < 0.1
    assert saw_ignore >= 3  # scale < 1 and rotations pull in outside pixels


def test_outside_pixels_get_ignore_not_background():
    t = build_train_transform(64, augment={"scale": (0.5, 0.5)})
    out = t(_sample(64))
    m = out["mask"]
    assert (m[:8, :8] == IGNORE_INDEX).all() and (m[-8:, -8:] == IGNORE_INDEX).all()
    assert (m[24:40, 24:40] != IGNORE_INDEX).all()


def test_shear_is_in_degrees():
    """kornia's RandomAffine takes shear in degrees (tan of the angle in the matrix), not a shear factor."""
    t = build_train_transform(64, augment={"shear": (20.0, 20.0)})
    mat = t._matrix(torch.zeros(3, 64, 64))
    assert mat[0, 0, 1].abs().item() == pytest.approx(math.tan(math.radians(20.0)), rel=1e-4)
    t = build_train_transform(64, augment={"rotation": (30.0, 30.0)})
    mat = t._matrix(torch.zeros(3, 64, 64))
    angle = math.degrees(math.atan2(abs(mat[0, 1, 0].item()), mat[0, 0, 0].item()))
    assert angle == pytest.approx(30.0, rel=1e-4)


def test_hflip_swaps_left_right_labels():
    m = torch.zeros(8, 8, dtype=torch.long)
    m[:, :4] = CELEBAMASK_HQ.index("l_eye")
    m[:, 4:6] = CELEBAMASK_HQ.index("r_brow")
    m[0, 0] = IGNORE_INDEX
    img = torch.rand(3, 8, 8)
    t = build_train_transform(8, augment={"hflip": 1.0}, label_set=CELEBAMASK_HQ)
    out = t({"image": img, "mask": m, "name": "x"})
    assert torch.equal(out["image"], img.flip(-1))
    assert (out["mask"][:, 4:] == CELEBAMASK_HQ.index("r_eye")).sum() == 31
    assert (out["mask"][:, 2:4] == CELEBAMASK_HQ.index("l_brow")).all()
    assert out["mask"][0, 7] == IGNORE_INDEX
    lut = torch.from_numpy(LAPA.flip_lut().astype(np.int64))
    t = build_train_transform(8, augment={"hflip": 1.0}, label_set=LAPA)
    out = t({"image": img, "mask": m, "name": "x"})
    assert torch.equal(out["mask"], lut[m.flip(-1)])
    with pytest.raises(ValueError, match="label_set"):
        build_train_transform(8, augment={"hflip": True})


def test_hflip_off_by_default_in_paper_preset():
    assert PAPER_AUGMENT["hflip"] is False
    t = build_train_transform(32, augment="paper")
    assert t.flip_lut is None and t.affine is not None and t.jitter is not None


def test_color_jitter_touches_only_the_image():
    s = _sample(32)
    t = build_train_transform(32, augment={"color_jitter": PAPER_AUGMENT["color_jitter"]})
    torch.manual_seed(1)
    out = t(s)
    assert torch.equal(out["mask"], s["mask"])
    assert not torch.allclose(out["image"], s["image"])
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0


def test_bad_augment_config():
    with pytest.raises(ValueError, match="unknown keys"):
        build_train_transform(32, augment={"rotate": 10})
    with pytest.raises(ValueError, match="color_jitter"):
        build_train_transform(32, augment={"color_jitter": {"gamma": 1}})
    with pytest.raises(ValueError, match="preset"):
        build_train_transform(32, augment="strong")


def test_augmentation_reproducible_from_torch_seed():
    t = build_train_transform(32, augment="paper")
    torch.manual_seed(5)
    a = t(_sample(32))
    torch.manual_seed(5)
    b = t(_sample(32))
    c = t(_sample(32))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(b["image"], c["image"])


def test_make_loader_reproducible_with_workers(tmp_path):
    make_folder(tmp_path, n=8, size=32)
    ds = FaceParsingDataset(tmp_path, "folder", "all", transform=build_train_transform(32, augment="paper"))

    def epoch(seed):
        loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=2, seed=seed)
        assert loader.num_workers == 2 and loader.persistent_workers
        return [(b["name"], b["image"], b["mask"]) for b in loader]

    a, b, c = epoch(3), epoch(3), epoch(4)
    for (na, ia, ma), (nb, ib, mb) in zip(a, b, strict=True):
        assert na == nb and torch.equal(ia, ib) and torch.equal(ma, mb)
    assert [x[0] for x in a] != [x[0] for x in c] or not torch.equal(a[0][1], c[0][1])
    assert a[0][1].shape == (4, 3, 32, 32) and a[0][2].dtype == torch.int64


def test_make_loader_defaults_and_distributed(tmp_path):
    make_folder(tmp_path, n=6, size=16)
    ds = FaceParsingDataset(tmp_path, "folder", "all", transform=build_eval_transform(16, (16,)))
    loader = make_loader(ds, batch_size=2, shuffle=False)
    assert loader.num_workers == min(2, os.cpu_count() or 1)
    loader = make_loader(ds, 2, shuffle=True, num_workers=0, distributed=True, num_replicas=2, rank=1, seed=7)
    assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.seed == 7
    assert len(loader.sampler) == 3
    loader.sampler.set_epoch(1)
    assert sum(len(b["name"]) for b in loader) == 3


def _photo(size=64, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (size // 8, size // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    return smooth


def test_degrade_image_steps():
    img = _photo()
    clean = degrade_image(img)  # every step off: the image as model_input gives it
    assert clean.shape == (3, 64, 64) and clean.dtype == np.float32
    np.testing.assert_array_equal(clean, img.transpose(2, 0, 1).astype(np.float32) / 255.0)
    small = degrade_image(img, side=0.25)  # 16 px and back: block edges soften
    assert np.abs(small - clean).mean() > 0.01 and 0.0 <= small.min() and small.max() <= 1.0
    edges = lambda x: np.square(np.diff(x, axis=-1)).mean()  # noqa: E731 (gradient energy: blur spreads edges)
    assert edges(degrade_image(img, blur=2.0)) < 0.5 * edges(clean)
    noisy = degrade_image(img, noise=0.05, rng=np.random.default_rng(1))
    assert 0.03 < float((noisy - clean).std()) < 0.07
    np.testing.assert_array_equal(noisy, degrade_image(img, noise=0.05, rng=np.random.default_rng(1)))
    low, high = (np.abs(degrade_image(img, jpeg=q) - clean).mean() for q in (10, 95))
    assert low > 2 * high > 0


def test_degrade_step_changes_the_image_only_and_is_reproducible():
    s = _sample(64)
    aug = {"degrade": {"p": 1.0, "side": [0.3, 0.6], "blur": [0.0, 1.0], "noise": [0.0, 0.02], "jpeg": [30, 90]}}
    t = build_train_transform(64, augment=aug)
    torch.manual_seed(3)
    a = t(s)
    torch.manual_seed(3)
    b = t(s)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], s["mask"])
    assert float((a["image"] - s["image"]).abs().mean()) > 0.01
    off = build_train_transform(64, augment={"degrade": {**aug["degrade"], "p": 0.0}})(s)
    assert torch.equal(off["image"], build_train_transform(64, augment=None)(s)["image"])


@pytest.mark.parametrize(
    ("degrade", "message"),
    [
        ({"jpg": 50}, "unknown keys ['jpg']"),
        ({"jpeg": [0, 90]}, "degrade.jpeg: expected values in [1, 100]"),
        ({"side": [0.5, 0.2]}, "degrade.side': min 0.5 > max 0.2"),
        ({"noise": "x"}, "degrade.noise': expected a number or a (min, max) pair"),
        ([0.5], "augment degrade: expected a mapping"),
    ],
)
def test_degrade_settings_are_checked(degrade, message):
    with pytest.raises(ValueError) as e:
        check_augment({"degrade": degrade})
    assert message in str(e.value)


def test_background_step_replaces_only_background_pixels():
    s = _sample(64, block=16)
    person = s["mask"] != 0
    assert person.any() and (~person).any()
    torch.manual_seed(5)
    out = replace_background(s["image"], s["mask"], feather=0.0)
    assert torch.equal(out[:, person], s["image"][:, person])  # the person (and ignore pixels) kept exactly
    assert float((out[:, ~person] - s["image"][:, ~person]).abs().mean()) > 0.02
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    blended = replace_background(s["image"], s["mask"], feather=1.5)  # the outline is blended, inside kept
    inner = F.max_pool2d((~person).float()[None, None], 13, 1, 6)[0, 0] == 0  # 6+ px inside: past the kernel
    assert inner.any() and torch.allclose(blended[:, inner], s["image"][:, inner], atol=1e-6)
    ignore = s["mask"].clone()
    ignore[:8] = IGNORE_INDEX
    kept = replace_background(s["image"], ignore, feather=0.0)
    assert torch.equal(kept[:, :8], s["image"][:, :8])


def test_random_texture_is_reproducible_and_varied():
    torch.manual_seed(2)
    a = [random_texture(40, 48) for _ in range(12)]
    torch.manual_seed(2)
    b = [random_texture(40, 48) for _ in range(12)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.shape == (3, 40, 48) and float(x.min()) >= 0 and float(x.max()) <= 1 for x in a)
    assert all(float(x.std()) > 0.005 for x in a)  # textures, not flat colours
    assert len({round(float(x.mean()), 3) for x in a}) == len(a)


def test_background_step_in_the_transform_keeps_the_mask_and_is_reproducible():
    s = _sample(64)
    t = build_train_transform(64, augment={"background": {"p": 1.0, "feather": [0.0, 0.0]}})
    torch.manual_seed(4)
    a = t(s)
    torch.manual_seed(4)
    assert torch.equal(a["image"], t(s)["image"]) and torch.equal(a["mask"], s["mask"])
    bg = s["mask"] == 0
    assert float((a["image"][:, bg] - s["image"][:, bg]).abs().mean()) > 0.02
    off = build_train_transform(64, augment={"background": {"p": 0.0}})(s)
    assert torch.equal(off["image"], build_train_transform(64, augment=None)(s)["image"])


@pytest.mark.parametrize(
    ("background", "message"),
    [
        ({"q": 0.5}, "unknown keys ['q']"),
        ({"p": 1.5}, "background.p': expected a probability"),
        ({"feather": [2, 1]}, "background.feather': min 2.0 > max 1.0"),
        ({"feather": [0, 20]}, "background.feather: expected px in [0, 8]"),
        ("yes", "augment background: expected a mapping"),
    ],
)
def test_background_settings_are_checked(background, message):
    with pytest.raises(ValueError) as e:
        check_augment({"background": background})
    assert message in str(e.value)

"""STN-iCNN specifics (issue 13): the crop / inverse-crop geometry, θ with scale and translation only, the three
training stages (which parameters each trains, a tiny overfit each), weights shared across stages, the output
label set, and the ``inner`` label set it is scored on. The shared architecture tests (any input size, gradients,
save/load, ONNX) run over ``stn_icnn`` from tests/test_model.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpliif.labels import CELEBAMASK_HQ, IGNORE_INDEX, INNER, remap_confusion, remap_labels
from fpliif.models import registry
from fpliif.models.checkpoint import load, save
from fpliif.models.stn_icnn import (
    LOG_FLOOR,
    PARTS,
    STAGES,
    crop,
    crop_labels,
    inverse_theta,
    part_targets,
    scale_shift_grid,
    uncrop,
)

TINY = {"coarse_size": 16, "patch_size": 9, "window": 0.3, "widths": [4, 4, 4, 4], "interlinks": 1}
C = CELEBAMASK_HQ.index


def tiny(stage: str = "end2end", seed: int = 0, **args) -> torch.nn.Module:
    torch.manual_seed(seed)
    return registry.make({"name": "stn_icnn", "args": {**TINY, "stage": stage, **args}})


def face_batch(b: int = 2, side: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 'faces' (B, 3, side, side) and CelebAMask-HQ masks: skin, two brows, two eyes, nose, lips, mouth
    as rectangles (a little shifted per image), each class its own colour plus noise."""
    g = torch.Generator().manual_seed(seed)
    rects = {  # class: (row0, row1, col0, col1) on a 32 px face; the subject's right is the image's left
        "skin": (4, 30, 4, 28),
        "r_brow": (8, 10, 6, 13),
        "l_brow": (8, 10, 19, 26),
        "r_eye": (11, 13, 7, 12),
        "l_eye": (11, 13, 20, 25),
        "nose": (13, 20, 14, 18),
        "u_lip": (22, 23, 11, 21),
        "mouth": (23, 24, 12, 20),
        "l_lip": (24, 26, 11, 21),
    }
    s = side / 32
    masks = torch.zeros(b, side, side, dtype=torch.long)
    for i in range(b):
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
        for name, (r0, r1, c0, c1) in rects.items():
            masks[i, int(r0 * s) + dy : int(r1 * s) + dy, int(c0 * s) + dx : int(c1 * s) + dx] = C(name)
    colours = torch.rand(CELEBAMASK_HQ.num_classes, 3, generator=g)
    images = colours[masks].permute(0, 3, 1, 2) + 0.05 * torch.rand(b, 3, side, side, generator=g)
    return images.clamp(0, 1), masks


# ---------------------------------------------------------------------------------------------- geometry
def test_grid_is_affine_grid_of_a_scale_translation_theta():
    theta = torch.tensor([[0.3, 0.5, -0.2, 0.4], [1.2, 0.7, 0.1, -0.6]])
    mat = torch.zeros(2, 2, 3)
    mat[:, 0, 0], mat[:, 1, 1], mat[:, 0, 2], mat[:, 1, 2] = theta[:, 0], theta[:, 1], theta[:, 2], theta[:, 3]
    expected = F.affine_grid(mat, [2, 3, 7, 11], align_corners=False)
    torch.testing.assert_close(scale_shift_grid(theta, 7, 11), expected, atol=1e-6, rtol=0)


def test_theta_has_scale_and_translation_only():
    model = tiny().eval()
    image, _ = face_batch()
    with torch.no_grad():
        theta = model.thetas(model.coarse_logits(image))
    assert theta.shape == (2, len(PARTS), 4)  # (s_x, s_y, t_x, t_y): no rotation or shear entries exist
    assert model.localizer.fc.out_features == 4 * len(PARTS)
    assert (theta[..., :2] >= 0.01).all()
    grid = scale_shift_grid(theta[:, 0], 9, 9)
    # x depends on the column only, y on the row only: no rotation or shear
    assert torch.equal(grid[..., 0], grid[:, :1, :, 0].expand_as(grid[..., 0]))
    assert torch.equal(grid[..., 1], grid[:, :, :1, 1].expand_as(grid[..., 1]))


def test_crop_then_inverse_crop_puts_a_region_back_where_it_came_from():
    image = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    p, (r0, c0) = 15, (20, 9)  # a 15 x 15 region at rows 20.., columns 9..
    # window of exactly 15 px centred on the region's centre pixel: every sample lands on a pixel centre
    theta = torch.tensor([[p / 48, p / 64, (2 * (c0 + p // 2) + 1) / 48 - 1, (2 * (r0 + p // 2) + 1) / 64 - 1]])
    patch = crop(image, theta, p)
    torch.testing.assert_close(patch, image[:, :, r0 : r0 + p, c0 : c0 + p], atol=1e-5, rtol=0)
    back = uncrop(patch, theta, 64, 48)
    torch.testing.assert_close(back[:, :, r0 : r0 + p, c0 : c0 + p], patch, atol=1e-5, rtol=0)
    outside = torch.ones(64, 48, dtype=torch.bool)
    outside[r0 : r0 + p, c0 : c0 + p] = False
    assert back[:, :, outside].abs().max() == 0


def test_round_trip_off_the_pixel_grid_is_exact_up_to_interpolation():
    """A linear ramp survives any crop (bilinear is exact on it) and comes back inside the window."""
    h, w = 40, 56
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    image = torch.stack([xs, ys, 0.3 * xs + 0.7 * ys])[None]
    theta = torch.tensor([[0.37, 0.41, -0.23, 0.17]])
    for mirrored in (False, True):
        th = theta * torch.tensor([-1.0, 1, 1, 1]) if mirrored else theta
        back = uncrop(crop(image, th, 21), th, h, w)
        # output pixels whose patch coordinate lies at least one patch pixel inside the patch
        grid = scale_shift_grid(inverse_theta(th), h, w)
        inside = (grid.abs() <= 1 - 2 / 21).all(-1)[0]
        assert inside.sum() > 50
        torch.testing.assert_close(back[0][:, inside], image[0][:, inside], atol=1e-4, rtol=0)


def test_crop_labels_are_nearest_and_ignore_outside_the_image():
    labels = torch.arange(64).view(1, 8, 8) % 19
    theta = torch.tensor([[3 / 8, 3 / 8, (2 * 1 + 1) / 8 - 1, (2 * 6 + 1) / 8 - 1]])  # 3 x 3 around (row 6, col 1)
    assert crop_labels(labels, theta, 3).tolist() == [labels[0, 5:8, 0:3].tolist()]
    edge = torch.tensor([[3 / 8, 3 / 8, (2 * 0 + 1) / 8 - 1, (2 * 7 + 1) / 8 - 1]])  # around the corner pixel
    out = crop_labels(labels, edge, 3)[0]
    assert (out[:, 0] == IGNORE_INDEX).all() and (out[2] == IGNORE_INDEX).all()
    assert out[:2, 1:].tolist() == labels[0, 6:8, 0:2].tolist()


def test_part_targets_are_centroids_with_a_fixed_window():
    _, mask = face_batch(1)
    inner = tiny().to_inner[mask]
    theta, present = part_targets(inner, 0.3)
    assert present.all()
    for i, part in enumerate(PARTS):
        ys, xs = torch.nonzero(torch.isin(inner[0], torch.tensor(part.classes)), as_tuple=True)
        cx, cy = ((xs.float() + 0.5) / 32 * 2 - 1).mean(), ((ys.float() + 0.5) / 32 * 2 - 1).mean()
        torch.testing.assert_close(theta[0, i], torch.tensor([0.3, 0.3, cx, cy]), atol=1e-5, rtol=0)
    theta, present = part_targets(torch.zeros(1, 8, 8, dtype=torch.long), 0.3)
    assert not present.any() and theta[0, :, :2].eq(0.3).all()


# ---------------------------------------------------------------------------------------------- labels
def test_output_label_sets_put_each_part_on_its_image_side():
    """The image-left brow is CelebAMask-HQ's r_brow (the subject's right) and LaPa's l_brow (image side)."""
    for classes, left_brow in (("celebamask-hq", "r_brow"), ("lapa", "l_brow"), ("inner", "r_brow")):
        model = tiny(classes=classes)
        inner = torch.zeros(1, 9, 1, 1)
        inner[0, 1] = 5.0  # internal class 1: the brow on the image's left
        out = model.to_output(inner)
        assert model.classes[int(out.argmax(1))] == left_brow
        never = [k for k, c in enumerate(model.classes) if c not in INNER.classes]
        assert len(never) == model.num_classes - 9 and (out[0, never] == LOG_FLOOR).all()  # skin, hair, ...


def test_non_inner_classes_are_never_predicted():
    model = tiny().eval()
    image, _ = face_batch()
    with torch.no_grad():
        labels = model(image, size=(20, 24)).argmax(1)
    allowed = torch.tensor([CELEBAMASK_HQ.index(c) for c in INNER.classes])
    assert torch.isin(labels, allowed).all()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"classes": ["background", "skin", "hair"]}, "classes"),
        ({"classes": "coarse"}, "classes"),
        ({"stage": "pretrain"}, "stage"),
        ({"window": 0}, "window"),
        ({"patch_size": 1}, "patch_size"),
        ({"widths": []}, "widths"),
    ],
)
def test_bad_arguments_raise(args, match):
    with pytest.raises(ValueError, match=match):
        tiny(**args)


def test_inner_label_set_and_remap_confusion():
    assert INNER.classes == ("background", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "mouth", "l_lip")
    src = np.arange(19, dtype=np.uint8)
    assert [INNER.classes[k] for k in remap_labels(src, "celebamask-hq", "inner")] == [
        c if c in INNER.classes else "background" for c in CELEBAMASK_HQ.classes
    ]
    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 19, 5000), rng.integers(0, 19, 5000)
    m19 = np.zeros((19, 19), np.int64)
    np.add.at(m19, (gt, pred), 1)
    m9 = np.zeros((9, 9), np.int64)
    np.add.at(m9, (remap_labels(gt.astype(np.uint8), "celebamask-hq", "inner"),
                   remap_labels(pred.astype(np.uint8), "celebamask-hq", "inner")), 1)  # fmt: skip
    assert np.array_equal(remap_confusion(m19, "celebamask-hq", "inner"), m9)
    for name in INNER.classes[1:]:  # an inner class's TP, FP and FN (so its F1) are unchanged
        i, j = CELEBAMASK_HQ.index(name), INNER.index(name)
        assert (m19[i, i], m19[:, i].sum(), m19[i].sum()) == (m9[j, j], m9[:, j].sum(), m9[j].sum())
    with pytest.raises(ValueError, match="matrix"):
        remap_confusion(m9, "celebamask-hq", "inner")


# ---------------------------------------------------------------------------------------------- stages
STAGE_MODULES = {
    "coarse": ("coarse",),
    "parts": ("localizer", "part_nets"),
    "end2end": ("coarse", "localizer", "part_nets"),
}


@pytest.mark.parametrize("stage", STAGES)
def test_training_loss_reaches_every_parameter_of_its_stage_only(stage):
    model = tiny(stage).train()
    image, mask = face_batch()
    loss, parts = model.training_loss(image, mask)
    assert loss.dim() == 0 and torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values())
    loss.backward()
    for name, p in model.named_parameters():
        if name.split(".")[0] in STAGE_MODULES[stage]:
            assert p.grad is not None and p.grad.abs().max() > 0, f"{stage}: {name} gets no gradient"
        else:
            assert p.grad is None, f"{stage}: {name} is not trained in this stage"
    groups = model.param_groups(1e-3)
    trained = [id(p) for g in groups for p in g["params"]]
    assert len(trained) == len(set(trained))
    assert set(trained) == {id(p) for n, p in model.named_parameters() if n.split(".")[0] in STAGE_MODULES[stage]}


def test_end2end_trains_the_pretrained_networks_slower():
    groups = tiny("end2end").param_groups(1e-3)
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-6, 1e-3])  # paper Table 1, CelebAMask-HQ


def test_parts_stage_keeps_the_coarse_network_frozen_in_eval_mode():
    model = tiny("parts").train()
    assert not model.coarse.training and model.localizer.training and model.part_nets.training
    before = model.coarse.inputs[0][1].running_mean.clone()
    model.training_loss(*face_batch())
    assert torch.equal(model.coarse.inputs[0][1].running_mean, before)


def test_parts_stage_pulls_back_a_scale_below_the_crop_clamp():
    # A scale that Adam pushes below the 0.01 clamp must still get the Smooth-L1 gradient (Eq. 12): clamping before
    # the loss froze such scales at 0.01 for good (every crop a single pixel), which sank a 1-epoch training run.
    model = tiny("parts").train()
    with torch.no_grad():
        model.localizer.fc.weight.zero_()
        model.localizer.fc.bias.view(len(PARTS), 4)[:, :2] = -0.5
    model.training_loss(*face_batch())[0].backward()
    scale_grad = model.localizer.fc.bias.grad.view(len(PARTS), 4)[:, :2]
    assert (scale_grad < 0).all()  # descending the loss raises every scale towards the target window


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_overfits_a_tiny_batch(stage):
    model = tiny(stage).train()
    image, mask = face_batch()
    opt = torch.optim.Adam([p for g in model.param_groups(1e-2) for p in g["params"]], lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss, _ = model.training_loss(image, mask)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


def test_coarse_stage_forward_is_the_coarse_prediction():
    model = tiny("coarse").eval()
    image, _ = face_batch()
    with torch.no_grad():
        up = F.interpolate(model.coarse_logits(image), size=(20, 24), mode="bilinear", align_corners=False)
        expected = model.to_output(torch.log_softmax(up, dim=1))
        torch.testing.assert_close(model(image, size=(20, 24)), expected)


def test_weights_of_one_stage_load_into_the_next(tmp_path):
    coarse = tiny("coarse", seed=1)
    path = save(coarse, tmp_path / "coarse.safetensors")
    assert load(path).stage == "coarse"
    parts = tiny("parts", seed=2)
    parts.load_state_dict(load(path).state_dict())  # what train.init_weights does
    for k, v in coarse.state_dict().items():
        assert torch.equal(parts.state_dict()[k], v), k


def test_training_loss_rejects_a_mask_of_the_wrong_shape():
    image, mask = face_batch()
    with pytest.raises(ValueError, match="mask"):
        tiny().training_loss(image, mask[0])
    with pytest.raises(ValueError, match="mask"):
        tiny().training_loss(image, mask - 1)


def test_eval_scores_on_the_inner_classes_as_remapped_label_maps():
    """``evaluate(score_as="inner")`` (``fpliif eval --score-labels inner``) equals scoring label maps remapped to
    the inner set before counting: predictions and masks through ``remap_labels``."""
    from fpliif.eval import evaluate

    model = tiny("coarse", seed=3).eval()
    image, mask = face_batch(b=3, side=32, seed=4)
    mask[0, :4] = IGNORE_INDEX
    lut = torch.from_numpy(CELEBAMASK_HQ.remap_to(INNER).astype(np.int64))

    class Remapped(torch.nn.Module):  # the model's labels remapped to the inner set, as one-hot logits
        def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
            labels = lut[model(x, size=size).argmax(1)]
            return F.one_hot(labels, INNER.num_classes).permute(0, 3, 1, 2).float()

    def loader(masks: torch.Tensor) -> list[dict]:
        return [{"image": image[i : i + 1], "masks": {32: masks[i : i + 1]}} for i in range(3)]

    args = {"sizes": (32,), "lowres": (), "progress": False}
    got = evaluate(model, loader(mask), CELEBAMASK_HQ, score_as="inner", **args)
    expected = evaluate(Remapped(), loader(lut[mask]), INNER, **args)
    assert got["label_set"] == "inner" and got["scored_from"] == "celebamask-hq"
    for key in ("mean_f1", "per_class_f1", "merged_f1", "pixel_acc"):
        assert got[key] == pytest.approx(expected[key]), key
    assert set(got["merged_f1"]) == {"eyes", "brows", "mouth", "overall"}
    full = evaluate(model, loader(mask), CELEBAMASK_HQ, **args)
    assert all(full["per_class_f1"][c] == pytest.approx(got["per_class_f1"][c]) for c in INNER.classes[1:])


def test_cli_exports_a_dense_model_as_one_onnx_graph(tmp_path, capsys):
    """``fpliif export onnx`` of a dense model: one file (no decoder graph), image -> logits at the input size,
    its crops as ONNX GridSample; the command checks onnxruntime against torch and says so."""
    pytest.importorskip("onnxruntime")
    import onnx

    from fpliif.cli import main

    weights = save(tiny(), tmp_path / "stn.safetensors")
    out = tmp_path / "stn.onnx"
    assert main(["export", "onnx", "--out", str(out), "--weights", str(weights), "--size", "32", "--dynamic"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stn.onnx", "stn.safetensors"]
    diff = float(printed.rsplit("max |logit diff| ", 1)[1])
    assert diff < 1e-4, printed
    proto = onnx.load(str(out))
    assert "GridSample" in {n.op_type for n in proto.graph.node}
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["fpliif_part"] == "dense" and props["fpliif_input_size"] == "32"
    assert main(["export", "onnx", "--out", str(out), "--weights", str(weights), "--size", "32"]) == 2  # exists
    from fpliif.infer.onnx_backend import OnnxModel

    with pytest.raises(ValueError, match="dense model's export"):  # the onnxruntime parser runs FP-LIIF exports
        OnnxModel(out)

"""Model tests.

``TestArchitecture`` is run for every architecture in :func:`fpliif.models.registry.available` (in the style of
segmentation_models_pytorch's model tests): a new model plugs in by adding a small, fast configuration to
``ARCH_CONFIGS``. The rest of the file tests FP-LIIF specifics: dense vs point decoding, the local ensemble,
the paper's parameter and MAC numbers, ablation switches, input validation, checkpoints and the registry.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F

import fpliif
import fpliif.models.fpliif as fpliif_module
from fpliif.adaptive import is_implicit
from fpliif.bench.flops import count_macs
from fpliif.labels import get_label_set
from fpliif.models import SegmentationModel, pixel_centers, registry
from fpliif.models.checkpoint import load, read_metadata, save
from fpliif.models.fpliif import ensemble_weights

# Small, fast constructor arguments per registered architecture (the full-size models are for the
# parameter/MAC tests only). Every registered architecture needs an entry here.
ARCH_CONFIGS: dict[str, dict] = {
    "fpliif": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]},
    "stn_icnn": {
        "coarse_size": 16,
        "patch_size": 9,
        "widths": [4, 4, 4, 4],
        "interlinks": 1,
        "loc_widths": [8, 16, 32, 32],  # weights > 4x the file header, as test_fp16_save_loads_as_float32 needs
    },
    "segface_mnv3": {"width_mult": 0.1, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16},
}
ARCHS = registry.available()
INNER_PARTS_ONLY = {"stn_icnn"}  # architectures that need the eight inner face-part classes in their label set

TINY = ARCH_CONFIGS["fpliif"]
PAPER_PARAMS = 2.29e6
# Table 6 of the paper: GMACs ("GFlops") for a 256 x 256 input at these output sizes.
PAPER_GMACS = {64: 27.44, 96: 32.25, 128: 39.0, 192: 58.24, 256: 85.2}


def make_model(arch: str = "fpliif", seed: int = 0, **overrides) -> SegmentationModel:
    """A seeded model of ``arch`` with its small test configuration (overrides win), in eval mode."""
    torch.manual_seed(seed)
    return registry.make({"name": arch, "args": copy.deepcopy(ARCH_CONFIGS[arch])}, **overrides).eval()


def tiny(seed: int = 0, **overrides) -> fpliif_module.FPLIIF:
    return make_model("fpliif", seed, **overrides)


def images(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def expected_params(
    width: int = 64,
    depths=(2, 6, 16),
    group_tail_conv=(False, False, True),
    norm: str = "instance",
    affine_norm: bool = False,
    unfold: bool = True,
    reduce_mlp=(256, 64),
    decoder_mlp=(256, 256, 256, 256),
    global_feature: bool = True,
    num_classes: int = 19,
    **_ignored,
) -> int:
    """Parameter count of FP-LIIF from its configuration, written out independently of the model code."""

    def conv(c_in, c_out):
        return c_in * c_out * 9 + c_out

    def linears(sizes):
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    norm_params = 2 * width if affine_norm and norm != "none" else 0
    n = conv(3, width)
    for i, (depth, tail) in enumerate(zip(depths, group_tail_conv, strict=True)):
        n += depth * 2 * (conv(width, width) + norm_params)
        n += conv(width, width) if tail else 0
        n += conv(width, width) if i < len(depths) - 1 else 0  # stride-2 downsampling conv
    rc_in = width * 9 if unfold else width
    n += linears([rc_in, *reduce_mlp])
    latent = reduce_mlp[-1] if reduce_mlp else rc_in
    n += linears([latent + (width if global_feature else 0) + 2, *decoder_mlp, num_classes])
    return n


def biases_cancelled_by_norm(model: torch.nn.Module) -> set[str]:
    """Names of conv biases directly followed by a non-affine instance/batch norm, which subtracts them out.

    Their gradient is zero by construction (e.g. FP-LIIF's resblock convs: the paper's parameter count
    includes these biases, so the model keeps them).
    """
    names = set()
    for prefix, module in model.named_modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (_, norm) in zip(children[:-1], children[1:], strict=True):
            if (
                isinstance(conv, torch.nn.Conv2d)
                and conv.bias is not None
                and isinstance(norm, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d))
                and not norm.affine
            ):
                names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names


def cancelled_by_batch_statistics(model: torch.nn.Module, name: str, x: torch.Tensor, size: tuple[int, int]) -> bool:
    """Whether parameter ``name`` only adds a per-channel constant that a later batch norm removes in training
    (batch statistics) while it does change the output in eval mode (running statistics): its training gradient
    is then zero by construction, not a broken graph (e.g. MobileNetV3's projection batch-norm biases in blocks
    whose output reaches only 1x1 conv + batch norm)."""
    base, shifted = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        shifted.get_parameter(name).add_(1.0)
        outs = [m.train(mode)(x, size=size) for mode in (False, True) for m in (base, shifted)]
    eval_same = torch.allclose(outs[0], outs[1], atol=1e-4)
    train_same = torch.allclose(outs[2], outs[3], atol=1e-4)
    return train_same and not eval_same


def test_every_registered_architecture_has_a_test_config():
    missing = sorted(set(registry.available()) - set(ARCH_CONFIGS))
    assert not missing, f"add a small configuration for {missing} to ARCH_CONFIGS in {__file__}"


# ======================================== every architecture
@pytest.mark.parametrize("arch", ARCHS)
class TestArchitecture:
    @pytest.mark.parametrize(
        ("batch", "in_hw", "size", "out_hw"),
        [
            (1, (256, 256), (200, 333), (200, 333)),  # odd, H != W, smaller than the input
            (1, (64, 96), (300, 280), (300, 280)),  # larger than the input, H != W
            (3, (128, 128), (17, 23), (17, 23)),  # much smaller
            (2, (70, 90), None, (70, 90)),  # input not a multiple of 64; default size = input size
            (1, (70, 90), 50, (50, 50)),  # int size
            (2, (8, 8), 1, (1, 1)),  # smallest input, 1 x 1 output
        ],
    )
    def test_output_shape(self, arch, batch, in_hw, size, out_hw):
        model = make_model(arch)
        out = model(images(batch, *in_hw), size=size)
        assert out.shape == (batch, model.num_classes, *out_hw)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()

    def test_batch_members_are_independent(self, arch):
        model = make_model(arch)
        x = images(2, 48, 64)
        alone = model(x[:1], size=(30, 50))
        together = model(x, size=(30, 50))
        torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=0)
        other = model(torch.cat([x[:1], torch.rand(1, 3, 48, 64)]), size=(30, 50))
        torch.testing.assert_close(other[:1], alone, atol=1e-5, rtol=0)

    def test_gradients_reach_every_parameter(self, arch):
        model = make_model(arch).train()
        x = images(2, 32, 48)
        logits = model(x, size=(20, 28))
        target = torch.randint(0, model.num_classes, (2, 20, 28), generator=torch.Generator().manual_seed(0))
        F.cross_entropy(logits, target).backward()
        cancelled = biases_cancelled_by_norm(model)
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name}: no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
            if name in cancelled:
                # a constant per-channel shift removed by the norm that follows: zero up to rounding
                assert p.grad.abs().max() < 1e-6, name
            elif p.grad.abs().max() <= 1e-7:
                assert cancelled_by_batch_statistics(model, name, x, (20, 28)), f"{name}: gradient is (almost) all zero"

    def test_seeded_construction_and_forward_are_deterministic(self, arch):
        a, b = make_model(arch, seed=0), make_model(arch, seed=0)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        x = images(2, 40, 56)
        assert torch.equal(a(x, size=(21, 33)), a(x, size=(21, 33)))
        assert torch.equal(a(x, size=(21, 33)), b(x, size=(21, 33)))
        c = make_model(arch, seed=1)
        assert not all(torch.equal(sa[k], v) for k, v in c.state_dict().items())

    def test_probabilities(self, arch):
        model = make_model(arch)
        logits = model(images(1, 32, 32))
        p = model.probabilities(logits)
        torch.testing.assert_close(p.sum(1), torch.ones(1, 32, 32))
        torch.testing.assert_close(p, torch.softmax(logits / model.temperature, dim=1))

    def test_predict_uses_inference_mode_and_restores_training_flag(self, arch):
        model = make_model(arch)
        x = images(1, 32, 40)
        for training in (True, False):
            model.train(training)
            out = model.predict(x, size=(16, 20))
            assert model.training is training
            assert out.is_inference() and not out.requires_grad
            assert out.shape == (1, model.num_classes, 16, 20)
            torch.testing.assert_close(out, make_model(arch)(x, size=(16, 20)), atol=1e-6, rtol=0)
        model.train()
        with pytest.raises(ValueError):
            model.predict(x[0])
        assert model.training, "predict did not restore the training flag after an exception"

    def test_spec_rebuilds_the_same_architecture(self, arch):
        model = make_model(arch)
        json.dumps(model.spec)  # JSON-serialisable (it goes into the weight file header)
        assert model.spec["name"] == arch
        rebuilt = registry.make(model.spec)
        assert type(rebuilt) is type(model)
        assert rebuilt.spec == model.spec
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }

    @pytest.mark.parametrize("classes", ["lapa", "helen", ["bg", "skin", "hair"]])
    def test_classes(self, arch, classes):
        if arch in INNER_PARTS_ONLY and isinstance(classes, list):
            with pytest.raises(ValueError, match="classes"):  # no inner face parts to label in this list
                make_model(arch, classes=classes)
            return
        model = make_model(arch, classes=classes)
        names = list(get_label_set(classes).classes) if isinstance(classes, str) else classes
        assert list(model.classes) == names
        assert model.num_classes == len(names)
        assert model(images(1, 32, 32), size=(9, 11)).shape == (1, len(names), 9, 11)
        assert registry.make(model.spec).num_classes == len(names)

    def test_save_load_is_bit_exact(self, arch, tmp_path):
        model = make_model(arch)
        path = save(model, tmp_path / "sub" / "model.safetensors", metadata={"dataset": "unit-test"})
        assert path == tmp_path / "sub" / "model.safetensors"
        leftovers = sorted(p.name for p in path.parent.iterdir())
        assert leftovers == ["model.safetensors"], "temporary file left over"
        loaded = load(path)
        assert type(loaded) is type(model)
        assert not loaded.training
        assert loaded.spec == model.spec
        assert json.loads(read_metadata(path)["spec"]) == model.spec
        assert read_metadata(path)["dataset"] == "unit-test"
        s0, s1 = model.state_dict(), loaded.state_dict()
        assert s0.keys() == s1.keys()
        for k in s0:
            assert s0[k].dtype == s1[k].dtype and torch.equal(s0[k], s1[k]), k
        x = images(2, 40, 48)
        assert torch.equal(model(x, size=(23, 31)), loaded(x, size=(23, 31)))

    def test_fp16_save_loads_as_float32(self, arch, tmp_path):
        model = make_model(arch)
        p32 = save(model, tmp_path / "m32.safetensors")
        p16 = save(model, tmp_path / "m16.safetensors", dtype=torch.float16)
        assert p16.stat().st_size < 0.6 * p32.stat().st_size
        loaded = load(p16)
        s0, s1 = model.state_dict(), loaded.state_dict()
        for k in s0:
            if not s0[k].is_floating_point():  # integer buffers (batch norm's num_batches_tracked) stay as they are
                assert torch.equal(s1[k], s0[k]), k
                continue
            assert s1[k].dtype == torch.float32, k
            assert (s1[k] - s0[k]).abs().max() <= 1e-3 * max(1.0, s0[k].abs().max().item()), k
        x = images(1, 32, 32)
        torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=0)

    @pytest.mark.parametrize(
        ("bad", "match"),
        [
            (lambda: torch.rand(3, 32, 32), "image"),  # 3-D
            (lambda: torch.rand(1, 1, 32, 32), "image"),  # grey
            (lambda: torch.rand(1, 4, 32, 32), "image"),  # RGBA
            (lambda: torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "image"),
            (lambda: torch.full((1, 3, 32, 32), float("nan")), "image"),
            (lambda: torch.full((1, 3, 32, 32), float("inf")), "image"),
            (lambda: torch.rand(0, 3, 32, 32), "image"),  # empty batch
            (lambda: torch.rand(1, 3, 4, 32), "image"),  # too small for the encoder
            (lambda: torch.rand(1, 3, 32, 32).numpy(), "image"),
        ],
    )
    def test_bad_image_raises(self, arch, bad, match):
        with pytest.raises(ValueError, match=match):
            make_model(arch)(bad())

    @pytest.mark.parametrize("dynamic", [False, True])
    def test_onnx_export_matches_torch(self, arch, dynamic, tmp_path):
        """What ``fpliif export onnx`` writes (:func:`export_onnx`) runs on onnxruntime as the model in torch:
        FP-LIIF's encoder + decoder pair at another output size (:class:`OnnxModel`), a dense model's one graph
        image -> logits at the input size; ``dynamic``: a batch of 2 through a graph traced with 2."""
        ort = pytest.importorskip("onnxruntime")
        from fpliif.infer.onnx_backend import OnnxModel
        from fpliif.infer.onnx_export import export_onnx

        model, x = make_model(arch), images(2 if dynamic else 1, 48, 48)
        implicit = is_implicit(model)
        size = (24, 40) if implicit else (48, 48)
        expected = model(x, size=size)
        path = export_onnx(model, tmp_path / f"{arch}.onnx", input_size=48, dynamic=dynamic)
        if implicit:
            out = OnnxModel(path)(x.numpy(), size)
        else:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            assert [i.name for i in session.get_inputs()] == ["image"], "a dense export is one image -> logits graph"
            (out,) = session.run(["logits"], {"image": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)
        assert not model.training

    @pytest.mark.parametrize("size", [0, (-1, 5), (5, 0), (2.5, 3), (1, 2, 3), "64", True])
    def test_bad_size_raises(self, arch, size):
        with pytest.raises(ValueError, match="size"):
            make_model(arch)(torch.rand(1, 3, 32, 32), size=size)


# ======================================== FP-LIIF: decoding
def test_pixel_centers():
    c = pixel_centers(2, 4)
    assert c.shape == (8, 2) and c.dtype == torch.float32
    xs, ys = [-0.75, -0.25, 0.25, 0.75], [-0.5, 0.5]
    assert c.tolist() == [[x, y] for y in ys for x in xs]  # (x, y), row-major


def test_encode_shape():
    model = tiny()
    assert model.encode(images(2, 70, 90)).shape == (2, TINY["width"], 18, 23)  # two stride-2 convs


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_instance_norm_keeps_channels_last_with_the_same_values(affine, batch):
    norm = fpliif_module.InstanceNorm2d(8, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(batch, 8, 9, 13, generator=torch.Generator().manual_seed(batch)) * 3 + 1
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = norm(x_cl)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    expected = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x), expected, atol=0, rtol=0)  # NCHW takes PyTorch's own path


def test_channels_last_encoder_gives_the_nchw_features_and_gradients():
    model = tiny()
    x = images(2, 40, 56)
    z_cl = model.encode(x)
    assert z_cl.is_contiguous(memory_format=torch.channels_last)  # the CPU default
    z_cl.square().mean().backward()
    grads_cl = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    model.encoder.channels_last_on_cpu = False
    z = model.encode(x)
    assert z.is_contiguous()
    z.square().mean().backward()
    torch.testing.assert_close(z_cl, z, atol=1e-4, rtol=1e-4)
    for g_cl, p in zip(grads_cl, model.encoder.parameters(), strict=True):
        torch.testing.assert_close(g_cl, p.grad, atol=1e-4, rtol=1e-3)
    with torch.no_grad():  # and the decoder reads either layout the same
        size = (11, 15)
        torch.testing.assert_close(model(x, size=size), tiny()(x, size=size), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("in_hw", "out_hw"), [((40, 56), (13, 17)), ((48, 32), (50, 70))])
def test_dense_equals_point_decoding(in_hw, out_hw):
    model = tiny()
    h, w = out_hw
    x = images(2, *in_hw)
    with torch.no_grad():
        dense = model(x, size=out_hw)
        z = model.encode(x)
        coords = pixel_centers(h, w).unsqueeze(0).expand(2, -1, -1)
        points = model.decode(z, coords)
        assert points.shape == (2, h * w, model.num_classes)
        torch.testing.assert_close(dense, points.view(2, h, w, -1).permute(0, 3, 1, 2), atol=1e-5, rtol=0)
        # each pixel centre decoded on its own
        for i in torch.randperm(h * w, generator=torch.Generator().manual_seed(0))[:8].tolist():
            one = model.decode(z, coords[:, i : i + 1])
            torch.testing.assert_close(one[:, 0], points[:, i], atol=1e-5, rtol=0)
            torch.testing.assert_close(one[:, 0], dense[:, :, i // w, i % w], atol=1e-5, rtol=0)


def test_chunking_does_not_change_the_result():
    model = tiny()
    x = images(2, 40, 56)
    with torch.no_grad():
        z = model.encode(x)
        coords = torch.rand(2, 50, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
        big = model.decode(z, coords, chunk_size=10**6)
        for chunk_size in (7, 49, 50):
            torch.testing.assert_close(model.decode(z, coords, chunk_size=chunk_size), big, atol=1e-5, rtol=0)
        chunked = tiny(chunk_size=7)  # same seed -> same weights
        torch.testing.assert_close(chunked(x, size=(9, 11)), model(x, size=(9, 11)), atol=1e-5, rtol=0)


def test_spatial_layout_is_not_transposed():
    """A change in the image's top-right corner changes only the top-right of the output, for H != W.

    Uses norm='none' and no global feature so that the receptive field is local.
    """
    model = tiny(norm="none", global_feature=False)
    x = images(1, 128, 192)
    y = x.clone()
    y[:, :, :4, -4:] = 1 - y[:, :, :4, -4:]
    with torch.no_grad():
        diff = (model(x, size=(64, 48)) - model(y, size=(64, 48))).abs().amax(dim=1)[0]
    assert diff[:8, -8:].max() > 1e-4  # top-right changed
    assert diff[32:].max() < 1e-6 and diff[:, :24].max() < 1e-6  # bottom half and left half unchanged


# ======================================== FP-LIIF: local ensemble
def test_ensemble_weights_function():
    g = torch.Generator().manual_seed(0)
    areas = [torch.rand(3, 50, generator=g) * 4 + 1e-9 for _ in range(4)]
    areas[1][0, :5] = 1e-9  # degenerate (query on a cell edge)
    weights = ensemble_weights(areas)
    assert len(weights) == 4
    torch.testing.assert_close(sum(weights), torch.ones(3, 50))
    total = sum(areas)
    for i, wt in enumerate(weights):
        assert ((wt >= 0) & (wt <= 1)).all()
        torch.testing.assert_close(wt, areas[3 - i] / total)  # weighted by the diagonally opposite area


@pytest.fixture
def recorded_weights(monkeypatch):
    """Records every list of ensemble weights the decoder computes."""
    calls: list[list[torch.Tensor]] = []
    original = fpliif_module.ensemble_weights

    def recorder(areas):
        weights = original(areas)
        calls.append([w.detach().clone() for w in weights])
        return weights

    monkeypatch.setattr(fpliif_module, "ensemble_weights", recorder)
    return calls


def test_ensemble_weights_in_the_decoder_sum_to_one(recorded_weights):
    model = tiny()
    z = model.encode(images(2, 40, 56))
    g = torch.Generator().manual_seed(0)
    coords = torch.rand(2, 300, 2, generator=g) * 2 - 1
    coords[:, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])  # the corners
    with torch.no_grad():
        model.decode(z, coords)
    (weights,) = recorded_weights
    assert len(weights) == 4 and weights[0].shape == (2, 300)
    torch.testing.assert_close(sum(weights), torch.ones(2, 300))
    for wt in weights:
        assert ((wt >= 0) & (wt <= 1)).all()


def test_query_at_a_latent_centre_uses_its_own_code(recorded_weights):
    model = tiny()
    z = model.encode(images(1, 40, 56))
    h, w = z.shape[-2:]
    # interior latent centres (the last row/column has no +1 neighbour; LIIF reuses the border code there)
    centres = pixel_centers(h, w).view(h, w, 2)[: h - 1, : w - 1].reshape(1, -1, 2)
    with torch.no_grad():
        ensembled = model.decode(z, centres)
    (weights,) = recorded_weights
    # shift (-x, -y) picks the query's own cell; it must get (almost) all the weight
    assert weights[0].min() > 1 - 1e-6
    model.local_ensemble = False
    with torch.no_grad():
        single = model.decode(z, centres)
    torch.testing.assert_close(ensembled, single, atol=1e-5, rtol=0)


def test_local_ensemble_off_is_different_but_valid():
    on = tiny()
    off = tiny(local_ensemble=False)
    off.load_state_dict(on.state_dict())  # same parameters: the ensemble adds none
    x = images(2, 40, 56)
    with torch.no_grad():
        a, b = on(x, size=(37, 29)), off(x, size=(37, 29))
    assert b.shape == a.shape and torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-4


# ======================================== FP-LIIF: the paper's numbers
@pytest.fixture(scope="module")
def default_model():
    torch.manual_seed(0)
    return fpliif.make("fpliif").eval()


def test_default_parameter_count(default_model):
    n = default_model.num_parameters()
    assert default_model.num_classes == 19
    assert abs(n - PAPER_PARAMS) <= 0.01 * PAPER_PARAMS, n
    assert n == expected_params() == 2_285_075


def test_macs_are_affine_in_output_pixels():
    """The decoder does the same work for every query: MACs = fixed + per_pixel * H * W, exactly."""
    model = tiny()
    m = {hw: count_macs(model, (64, 64), hw) for hw in [(16, 16), (40, 40), (13, 70)]}
    per_pixel = (m[(40, 40)] - m[(16, 16)]) // (40 * 40 - 16 * 16)
    fixed = m[(16, 16)] - per_pixel * 16 * 16
    assert per_pixel > 0 and fixed > 0
    assert m[(13, 70)] == fixed + per_pixel * 13 * 70
    assert count_macs(model, (64, 96), (16, 16)) > m[(16, 16)]  # the encoder's work grows with the input


@pytest.mark.slow
def test_default_macs_match_paper_table_6(default_model):
    """count_macs at 64 and 128 px output; the other sizes follow from the exact affine law above.

    (A 256 px output costs ~85 GMACs, several seconds on a CPU; the law makes it unnecessary to run.)
    """
    measured = {s: count_macs(default_model, (256, 256), s) for s in (64, 128)}
    per_pixel = (measured[128] - measured[64]) // (128**2 - 64**2)
    fixed = measured[64] - per_pixel * 64**2
    macs = {s: fixed + per_pixel * s**2 for s in PAPER_GMACS}
    assert macs[64] == measured[64] and macs[128] == measured[128]
    for s, paper in PAPER_GMACS.items():
        gmacs = macs[s] / 1e9
        assert gmacs == pytest.approx(paper, rel=0.03), f"output {s}: {gmacs:.2f} G vs the paper's {paper}"


# ======================================== FP-LIIF: ablations
ABLATIONS = [
    {},
    {"unfold": False},
    {"local_ensemble": False},
    {"relative_coords": False},
    {"global_feature": False},
    {"width": 12},
    {"depths": [2, 0, 1]},
    {"depths": [1, 1], "group_tail_conv": [False, True]},
    {"depths": [1, 1, 1, 1], "group_tail_conv": [True, False, False, True]},
    {"decoder_mlp": [24]},
    {"decoder_mlp": [16, 16, 16, 16]},
    {"reduce_mlp": []},
    {"norm": "batch", "affine_norm": True},
    {"norm": "none"},
    {"classes": "lapa", "num_classes": 11},
    {"classes": ["bg", "a", "b", "c", "d"], "num_classes": 5},
    {"unfold": False, "local_ensemble": False, "relative_coords": False, "global_feature": False},
]


def ablation_id(ablation: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in ablation.items()) or "base"


@pytest.mark.parametrize("ablation", ABLATIONS, ids=ablation_id)
def test_ablation_builds_and_runs(ablation):
    args = {k: v for k, v in ablation.items() if k != "num_classes"}
    model = tiny(**args)
    num_classes = ablation.get("num_classes", 19)
    assert model.num_classes == num_classes
    assert model.num_parameters() == expected_params(**{**TINY, **ablation})
    model.train()
    out = model(images(2, 40, 56), size=(23, 31))
    assert out.shape == (2, num_classes, 23, 31) and torch.isfinite(out).all()
    out.mean().backward()
    assert registry.make(model.spec).num_parameters() == model.num_parameters()


def test_unfold_switch_changes_reduce_mlp_input():
    with_unfold = fpliif.make("fpliif")
    without = fpliif.make("fpliif", unfold=False)
    assert with_unfold.reduce[0].in_features == 576
    assert without.reduce[0].in_features == 64
    assert with_unfold.num_parameters() - without.num_parameters() == (576 - 64) * 256


def test_switches_that_add_no_parameters_change_the_output():
    base = tiny()
    x = images(1, 40, 56)
    for switch in ("relative_coords", "local_ensemble"):
        other = tiny(**{switch: False})
        assert other.num_parameters() == base.num_parameters()
        other.load_state_dict(base.state_dict())
        with torch.no_grad():
            assert (other(x) - base(x)).abs().max() > 1e-4, switch


def test_explicit_class_list_matching_a_label_set_uses_it():
    model = tiny(classes=list(get_label_set("lapa").classes))
    assert model.label_set.name == "lapa"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": ["only-one"]}, "classes"),
        ({"temperature": 0}, "temperature"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"norm": "layer"}, "norm"),
        ({"depths": [1, 1]}, "group_tail_conv"),  # one tail-conv flag per group
    ],
)
def test_bad_constructor_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize(("kwargs", "match"), [({"width": 0}, "width"), ({"depths": [1, -1, 1]}, "depths")])
def test_nonpositive_width_or_negative_depth_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_unknown_label_set_raises():
    with pytest.raises(KeyError, match="lapa"):
        tiny(classes="no-such-dataset")


# ======================================== FP-LIIF: decoder input checks
@pytest.fixture(scope="module")
def latent():
    model = tiny()
    with torch.no_grad():
        return model, model.encode(images(2, 32, 40))


@pytest.mark.parametrize(
    ("coords", "match"),
    [
        (lambda: torch.tensor([[[1.0001, 0.0]]]).expand(2, -1, -1), "coords"),
        (lambda: torch.tensor([[[0.0, -1.0001]]]).expand(2, -1, -1), "coords"),
        (lambda: torch.zeros(2, 5, 3), "coords"),  # not (B, Q, 2)
        (lambda: torch.zeros(5, 2), "coords"),  # missing batch dim: not broadcast
        (lambda: torch.zeros(2, 5, 2, 1), "coords"),
        (lambda: torch.tensor([[[float("nan"), 0.0]]]).expand(2, -1, -1), "coords"),
        (lambda: torch.tensor([[[float("inf"), 0.0]]]).expand(2, -1, -1), "coords"),
        (lambda: torch.zeros(2, 5, 2, dtype=torch.long), "coords"),
        (lambda: torch.zeros(1, 5, 2), "coords"),  # batch 1 vs latent batch 2: not broadcast
        (lambda: torch.zeros(3, 5, 2), "coords"),
        (lambda: [[[0.0, 0.0]]], "coords"),
    ],
)
def test_bad_coords_raise(latent, coords, match):
    model, z = latent
    with pytest.raises(ValueError, match=match):
        model.decode(z, coords())


def test_coords_on_the_boundary_are_accepted(latent):
    model, z = latent
    coords = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [0.0, 0.0]]).expand(2, -1, -1)
    with torch.no_grad():
        out = model.decode(z, coords)
    assert out.shape == (2, 5, 19) and torch.isfinite(out).all()


def test_bad_latent_raises(latent):
    model, z = latent
    coords = torch.zeros(2, 5, 2)
    with pytest.raises(ValueError, match="z"):
        model.decode(z[0], coords)
    with pytest.raises(ValueError, match="z"):
        model.decode(z.numpy(), coords)


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_bad_decode_chunk_size_raises(latent, chunk_size):
    model, z = latent
    with pytest.raises(ValueError, match="chunk_size"):
        model.decode(z, torch.zeros(2, 5, 2), chunk_size=chunk_size)


# ======================================== checkpoints
def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load(path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_metadata(path)


def test_load_non_safetensors_file_names_the_path(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="model.pt"):
        load(path)
    text = tmp_path / "notes.safetensors"
    text.write_text("not a weight file")
    with pytest.raises(ValueError, match="notes.safetensors"):
        load(text)
    with pytest.raises((FileNotFoundError, ValueError), match="weights"):
        load(tmp_path)  # a directory


def test_load_safetensors_without_spec_names_the_path(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="plain.safetensors.*spec"):
        load(path)


def test_load_weights_not_matching_spec_names_the_path(tmp_path):
    from safetensors.torch import save_file

    model = tiny()
    spec = copy.deepcopy(model.spec)
    spec["args"]["width"] = 4
    path = tmp_path / "mismatch.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path),
        metadata={"fpliif_format": "1", "spec": json.dumps(spec)},
    )
    with pytest.raises(ValueError, match="mismatch.safetensors"):
        load(path)


def test_save_rejects_reserved_metadata_keys(tmp_path):
    with pytest.raises(ValueError, match="spec"):
        save(tiny(), tmp_path / "m.safetensors", metadata={"spec": "my notes"})


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save(tiny(), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_load_with_dtype(tmp_path, dtype):
    path = save(tiny(), tmp_path / "m.safetensors")
    loaded = load(path, dtype=dtype)
    assert {p.dtype for p in loaded.parameters()} == {dtype}


# ======================================== registry
def test_make_by_name_spec_and_overrides(tiny_spec):
    assert isinstance(fpliif.make("fpliif"), fpliif_module.FPLIIF)
    torch.manual_seed(0)
    by_spec = fpliif.make(tiny_spec)
    assert by_spec.spec["args"]["width"] == 8
    before = copy.deepcopy(tiny_spec)
    overridden = fpliif.make(tiny_spec, width=4, classes="lapa")
    assert tiny_spec == before, "make() mutated the spec it was given"
    assert overridden.spec["args"]["width"] == 4 and overridden.num_classes == 11
    assert overridden.num_parameters() == expected_params(**{**TINY, "width": 4, "num_classes": 11})
    assert fpliif.make({"name": "fpliif"}).num_parameters() == 2_285_075  # "args" is optional


def test_make_unknown_name_lists_registered_models():
    with pytest.raises(KeyError, match="no-such-model") as info:
        fpliif.make("no-such-model")
    for name in registry.available():
        assert name in str(info.value)
    with pytest.raises(KeyError, match="fpliif"):
        fpliif.make({"name": "no-such-model", "args": {}})


@pytest.mark.parametrize("spec", [{"args": {}}, 3, None, ["fpliif"]])
def test_make_bad_spec_raises(spec):
    with pytest.raises(ValueError, match="spec"):
        fpliif.make(spec)


def test_make_unknown_argument_raises():
    with pytest.raises(TypeError, match="no_such_arg"):
        fpliif.make("fpliif", no_such_arg=1)


def test_register_duplicate_name_raises():
    with pytest.raises(ValueError, match="fpliif"):
        registry.register("fpliif")(fpliif_module.FPLIIF)
    assert registry.available().count("fpliif") == 1


def test_register_new_architecture(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @registry.register("tiny-test-model")
    def build(width=8):
        return fpliif_module.FPLIIF(width=width, depths=[1, 1, 1], reduce_mlp=[8], decoder_mlp=[8])

    assert "tiny-test-model" in registry.available()
    assert registry.make("tiny-test-model", width=4).spec["args"]["width"] == 4
    assert registry.available() == sorted(registry.available())

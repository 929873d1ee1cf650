"""SegFace (segface_mnv3) and its MobileNetV3-Large backbone: published parameter and compute numbers, the
structure the paper describes, the dense output head, spec checks. The shared architecture tests (any size,
gradients, save/load, ONNX) run over it in tests/test_model.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fpliif.bench.flops import count_macs_of
from fpliif.models import registry
from fpliif.models.mobilenetv3 import LARGE, MobileNetV3Large, make_divisible
from fpliif.models.segface import SegFaceMNV3

TINY = {"width_mult": 0.1, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16}

# Published numbers. torchvision's MobileNetV3-Large, the reference layout the SegFace code uses:
# num_params 5,483,032 (https://pytorch.org/vision/stable/models/generated/torchvision.models.mobilenet_v3_large.html).
# The paper (Howard et al. 2019, Table 3): 5.4 M parameters, 219 M MAdds at 224 x 224.
TORCHVISION_PARAMS = 5_483_032
PAPER_PARAMS = 5.4e6
PAPER_MADDS_224 = 219e6
# The classifier head the extractor leaves out: pool, 1x1 conv 960 -> 1280 (no BN, bias), 1x1 conv 1280 -> 1000.
HEAD_PARAMS = 960 * 1280 + 1280 + 1280 * 1000 + 1000
HEAD_MACS = 960 * 1280 + 1280 * 1000


def expected_backbone_params(width_mult: float = 1.0) -> int:
    """MobileNetV3-Large extractor parameters from Table 1, written out independently of the model code."""

    def conv_bn(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
        return c_in // groups * c_out * k * k + 2 * c_out

    stem = make_divisible(16 * width_mult)
    n, c_in = conv_bn(3, stem, 3), stem
    for k, exp, out, se, _act, _stride in LARGE:
        exp, out = make_divisible(exp * width_mult), make_divisible(out * width_mult)
        n += conv_bn(c_in, exp, 1) if exp != c_in else 0
        n += conv_bn(exp, exp, k, groups=exp)
        sq = make_divisible(exp / 4)
        n += (exp * sq + sq + sq * exp + exp) if se else 0
        n += conv_bn(exp, out, 1)
        c_in = out
    return n + conv_bn(c_in, 6 * c_in, 1)


def expected_segface_params(dim=256, depth=2, mlp_dim=2048, down=2, classes=19, channels=(24, 40, 112, 960)) -> int:
    """SegFace decoder parameters (module docstring's layout), written out independently of the model code."""

    def linear(a: int, b: int) -> int:
        return a * b + b

    def attention(d: int) -> int:
        inner = dim // d
        return 3 * linear(dim, inner) - inner + linear(inner, dim)  # no key bias

    fusion = sum(linear(c, dim) for c in channels) + 4 * dim * dim
    block = attention(1) + 2 * attention(down) + linear(dim, mlp_dim) + linear(mlp_dim, dim) + 4 * 2 * dim
    transformer = depth * block + attention(down) + 2 * dim
    upscale = dim * (dim // 4) * 4 + dim // 4 + 2 * (dim // 4) + (dim // 4) * (dim // 8) * 4 + dim // 8
    token_mlp = 2 * linear(dim, dim) + dim * (dim // 8)  # no last bias
    return fusion + classes * dim + transformer + upscale + token_mlp


# ---------------------------------------------------------------------------------------------- backbone
def test_mobilenetv3_large_matches_the_published_parameter_count():
    backbone = MobileNetV3Large()
    n = sum(p.numel() for p in backbone.parameters())
    assert n == expected_backbone_params() == 2_971_952
    assert n + HEAD_PARAMS == TORCHVISION_PARAMS  # exactly torchvision's layout with its classifier head
    assert abs(n + HEAD_PARAMS - PAPER_PARAMS) / PAPER_PARAMS < 0.02  # the paper's rounded 5.4 M, within 2 %
    small = MobileNetV3Large(0.25)
    assert sum(p.numel() for p in small.parameters()) == expected_backbone_params(0.25)


def test_mobilenetv3_large_compute_and_feature_strides():
    backbone = MobileNetV3Large().eval()
    x = torch.rand(1, 3, 224, 224)
    feats = backbone(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 56, 56), (40, 28, 28), (112, 14, 14), (960, 7, 7)]
    assert backbone.channels == (24, 40, 112, 960)
    # conv/matmul MACs + the head vs the paper's 219 M MAdds (activations and SE products are not counted)
    macs = count_macs_of(lambda: backbone(x)) + HEAD_MACS
    assert abs(macs - PAPER_MADDS_224) / PAPER_MADDS_224 < 0.02
    odd = backbone(torch.rand(1, 3, 70, 90))  # sizes round up at every stride-2 layer
    assert [tuple(f.shape[2:]) for f in odd] == [(18, 23), (9, 12), (5, 6), (3, 3)]


def test_make_divisible_rule():
    assert [make_divisible(v) for v in (16, 4, 12, 18, 24 * 0.75, 960 / 4)] == [16, 8, 16, 24, 24, 240]
    assert make_divisible(10, 8) == 16  # 8 would lose more than 10 %
    with pytest.raises(ValueError, match="width_mult"):
        MobileNetV3Large(0)


# ---------------------------------------------------------------------------------------------- SegFace
def test_segface_default_parameter_count():
    model = SegFaceMNV3()
    n = model.num_parameters()
    assert n == expected_segface_params() + expected_backbone_params()
    # the paper's ablation (Sec. 6): backbones "ranging from 7 M to 91 M" parameters, MobileNetV3 the 7 M one
    assert abs(n - 7.0e6) < 0.5e6
    assert tuple(model.tokens.shape) == (19, 256)  # one D = 256 token per CelebAMask-HQ class
    assert model.transformer.layers[0].first and not model.transformer.layers[1].first


def test_segface_output_is_bilinear_resampling_of_its_native_logits():
    torch.manual_seed(0)
    model = registry.make({"name": "segface_mnv3", "args": TINY}).eval()
    x = torch.rand(2, 3, 40, 56)
    native = model.native_logits(x)
    assert native.shape == (2, 19, 40, 56)  # sides divisible by 4: the input size
    assert torch.equal(model(x), native)
    resized = F.interpolate(native, size=(97, 23), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(x, size=(97, 23)), resized, atol=1e-6, rtol=0)


def test_segface_positional_encoding_is_part_of_the_weights(tmp_path):
    torch.manual_seed(0)
    a = registry.make({"name": "segface_mnv3", "args": TINY})
    torch.manual_seed(1)
    b = registry.make({"name": "segface_mnv3", "args": TINY})
    assert "pe_gaussian" in a.state_dict() and not torch.equal(a.pe_gaussian, b.pe_gaussian)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 12}, "dim"),
        ({"dim": 16, "heads": 3}, "heads"),
        ({"dim": 16, "heads": 4, "attn_downsample": 8}, "attn_downsample"),
        ({"depth": 0}, "depth"),
        ({"width_mult": -1.0}, "width_mult"),
    ],
)
def test_segface_bad_constructor_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegFaceMNV3(**{**TINY, **kwargs})


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"dim": 10**9}, "dim"),
        ({"depth": True}, "depth"),
        ({"heads": 2.0}, "heads"),
        ({"width_mult": float("nan")}, "width_mult"),
        ({"width_mult": 100}, "width_mult"),
        ({"classes": ["only-one"]}, "classes"),
    ],
)
def test_segface_spec_bounds_for_untrusted_files(args, field):
    with pytest.raises(ValueError, match=rf"spec\.args\.{field}:"):
        SegFaceMNV3.check_spec_args(args, "spec.args")
    SegFaceMNV3.check_spec_args(TINY, "spec.args")  # the test config is within bounds

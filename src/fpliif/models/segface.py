"""SegFace (Narayan et al., AAAI 2025) with its low-compute MobileNetV3-Large backbone, registered as ``segface_mnv3``.

The pipeline of the paper (Sec. 3, Fig. 2): multi-scale backbone features G1..G4 (strides 4, 8, 16, 32) ->
MLP fusion (one MLP per scale to C' channels, bilinear upsampling to G1's grid, concatenation, a 1x1 conv back
to C') -> face tokens F plus a positional encoding -> the SegFace decoder, a two-way transformer with one
learnable token per class (class-token self-attention, class-token -> face-token and face-token ->
class-token cross-attention) -> the updated face tokens upscaled by transposed convs, ``U``, and each learned
class token through an MLP: ``S_i = U . MLP(T_i)`` (a dot product over U's channels at every pixel) -> logits.

What the paper fixes and we keep: the four scales, MLP fusion as described, C' = D = 256 (token embedding
dimension), one token per class (19 on CelebAMask-HQ), the three attention operations, an upscaling module of
transposed convolutions, the product with an MLP of each token; loss 0.5 CE + 0.5 Dice (a training config:
``configs/segface_mnv3.yaml``), AdamW lr 1e-4 (``docs/comparison.md`` lists what our same-budget runs change).

What the paper leaves open, and what we chose (from the authors' reference code, github.com/Kartik-3004/SegFace,
``network/models/segface_celeb.py``, and SAM's two-way transformer that it imports, Kirillov et al. 2023):

* Backbone taps: MobileNetV3-Large blocks 3, 6 and 12 and the final 1x1 conv, i.e. 24, 40, 112 and 960
  channels (:mod:`fpliif.models.mobilenetv3`). **No pretrained weights** exist here (the authors start from
  ImageNet weights): the whole model is trained from scratch, as FP-LIIF is, so published numbers are not
  expected to be reached on this project's budget.
* Input normalisation: ImageNet mean/std (what the reference code's backbones expect).
* The per-scale "MLP" is one linear layer (here a 1x1 conv: the same map per pixel); the fusion 1x1 conv has
  no bias and no norm or activation after it; upsampling is bilinear with ``align_corners=False``.
* Positional encoding of the face tokens: SAM's random Fourier features (a fixed Gaussian 2 x D/2 matrix,
  stored as a buffer so that saved weights reproduce it), at pixel centres of the stride-4 grid. The class
  tokens are their own positional encoding (SAM's ``point_embedding`` role).
* Decoder: SAM's ``TwoWayTransformer`` with depth 2, 8 heads, MLP width 2048, ReLU MLP, cross-attention
  projections halved (``attn_downsample`` 2), post-norm LayerNorms, the first layer's self-attention without
  the positional term, and a final class-token -> face-token attention + LayerNorm.
* Upscaling ``h_alpha``: ConvTranspose(D, D/4, 2, stride 2) -> LayerNorm2d -> GELU -> ConvTranspose(D/4, D/8,
  2, stride 2) -> GELU: stride 4 back to stride 1, C' = D/8 = 32 channels.
* Token MLP: one MLP shared by all tokens, 3 layers D -> D -> D -> D/8 with ReLU (SAM's hypernetwork MLP).
* Two exactly redundant bias vectors of the reference code are left out, with no change to the function: the
  attention key projections' (q.b_k is the same for all keys of a query, softmax removes it) and the token
  MLP's last layer's (U.b is the same for every class logit). Zero gradient by construction; 1,184 parameters
  (reference layout 7,035,824 -> 7,034,640).
* Class tokens initialised N(0, 1) (``nn.Embedding``'s default, as the reference code); other layers keep
  PyTorch's default initialisation; MobileNetV3 as in its module.
* Batch norm running-statistics momentum: PyTorch's 0.1, not the reference 0.01: from scratch on short
  budgets the statistics must follow weights that still move fast.

With the defaults the model has 7,034,640 parameters (the paper's ablation: backbones "ranging from 7 M to
91 M" parameters, the 7 M being this MobileNetV3 variant).

Output size: the logits come out at 4x the stride-4 grid (the input size when it is a multiple of 4). Any
other ``size=`` is a **bilinear upsampling (or downsampling) of the logits**: SegFace is a dense model, not an
implicit function like FP-LIIF, so it does not gain detail above its input resolution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..labels import resolve_label_set
from .base import SegmentationModel, check_classes_spec, check_image, check_size, pixel_centers
from .fpliif import mlp
from .mobilenetv3 import MobileNetV3Large
from .registry import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIDE = 8
"""Smallest input side: below it the stride-4 face-token grid is under 2 x 2."""


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (SAM's, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.channels, self.eps = channels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (channels,) as an int, not x.shape[1:2]: a traced size is no constant for ONNX export with dynamic axes
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections map D to ``D / downsample`` (SAM's ``Attention``)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj, self.v_proj = nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner, bias=False)  # a key bias adds q.b to all of a query's logits: no effect
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, N, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).flatten(2))


class TwoWayBlock(nn.Module):
    """Class-token self-attention, class -> face cross-attention, MLP, face -> class cross-attention (SAM)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, first: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.token_to_image = Attention(dim, heads, downsample)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.image_to_token = Attention(dim, heads, downsample)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.first = first

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:  # SAM: the first layer's self-attention replaces the tokens, without the positional term
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norms[0](tokens)
        keys = image + image_pe
        tokens = self.norms[1](tokens + self.token_to_image(tokens + token_pe, keys, image))
        tokens = self.norms[2](tokens + self.mlp(tokens))
        image = self.norms[3](image + self.image_to_token(keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` :class:`TwoWayBlock` s, then a final class -> face attention and LayerNorm on the tokens."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, downsample: int):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, downsample, first=i == 0) for i in range(depth))
        self.final_attn = Attention(dim, heads, downsample)
        self.final_norm = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, D), image (B, HW, D), image_pe (1, HW, D) -> updated (tokens, image)."""
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attn = self.final_attn(tokens + token_pe, image + image_pe, image)
        return self.final_norm(tokens + attn), image


@register("segface_mnv3")
class SegFaceMNV3(SegmentationModel):
    """SegFace with a MobileNetV3-Large backbone (module docstring: the paper's choices and ours).

    Args:
        classes: label-set name or list of class names (one learnable token per class).
        width_mult: MobileNetV3 width multiplier (1.0 = the paper's backbone; small values for tests).
        dim: token embedding dimension D = fused channels C' (256).
        depth: two-way transformer blocks (2).
        heads: attention heads (8).
        mlp_dim: hidden width of the transformer MLP (2048).
        attn_downsample: cross-attention projects D to D / attn_downsample (2).
    """

    SPEC_BOUNDS: dict[str, tuple[int, int]] = {
        "dim": (8, 4096),
        "depth": (1, 16),
        "heads": (1, 64),
        "mlp_dim": (1, 16384),
        "attn_downsample": (1, 64),
    }

    @classmethod
    def check_spec_args(cls, args: Mapping[str, Any], where: str = "args") -> None:
        """Types and :data:`SPEC_BOUNDS` of constructor arguments (untrusted weight files), before anything is
        built; ValueError naming ``{where}.<field>``."""
        for key, (lo, hi) in cls.SPEC_BOUNDS.items():
            v = args.get(key)
            if key in args and not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                raise ValueError(f"{where}.{key}: expected an integer in [{lo}, {hi}], got {v!r:.200}")
        w = args.get("width_mult")
        if "width_mult" in args and not (
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and 0 < w <= 4
        ):
            raise ValueError(f"{where}.width_mult: expected a number in (0, 4], got {w!r:.200}")
        check_classes_spec(args, where)

    def __init__(
        self,
        classes: str | Sequence[str] = "celebamask-hq",
        width_mult: float = 1.0,
        dim: int = 256,
        depth: int = 2,
        heads: int = 8,
        mlp_dim: int = 2048,
        attn_downsample: int = 2,
    ):
        super().__init__()
        self.spec = {
            "name": "segface_mnv3",
            "args": {
                "classes": classes if isinstance(classes, str) else list(classes),
                "width_mult": width_mult,
                "dim": dim,
                "depth": depth,
                "heads": heads,
                "mlp_dim": mlp_dim,
                "attn_downsample": attn_downsample,
            },
        }
        _check_dims(dim, depth, heads, mlp_dim, attn_downsample)
        self.label_set = resolve_label_set(classes)
        self.backbone = MobileNetV3Large(width_mult)
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in self.backbone.channels)
        self.fuse = nn.Conv2d(len(self.proj) * dim, dim, 1, bias=False)
        self.register_buffer("pe_gaussian", torch.randn(2, dim // 2))
        self.tokens = nn.Parameter(torch.randn(self.num_classes, dim))
        self.transformer = TwoWayTransformer(dim, depth, heads, mlp_dim, attn_downsample)
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2),
            nn.GELU(),
        )
        self.token_mlp = mlp([dim, dim, dim, dim // 8])
        self.token_mlp[-1].bias = None  # it would add the same U.b to every class logit: no effect on softmax
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def face_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Fused multi-scale features F (B, D, h, w) on the stride-4 grid (paper Sec. 3.1-3.2)."""
        feats = self.backbone((image - self.mean) / self.std)
        size = feats[0].shape[-2:]
        maps = [proj(f) for proj, f in zip(self.proj, feats, strict=True)]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return self.fuse(torch.cat(maps, dim=1))

    def positional_encoding(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """(1, h*w, D) random Fourier features of the pixel centres of an h x w grid (SAM's encoding)."""
        xy = pixel_centers(h, w, device=like.device, dtype=like.dtype) @ self.pe_gaussian.to(like.dtype)
        xy = 2 * math.pi * xy
        return torch.cat([torch.sin(xy), torch.cos(xy)], dim=-1).unsqueeze(0)

    def native_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, 4h, 4w) at the output head's own resolution (the input size for sides divisible by 4)."""
        f = self.face_tokens(image)
        b, d, h, w = f.shape
        # a copy, not a view: a view of the parameter made under no_grad still requires grad, without a grad_fn
        tokens = self.tokens.to(f.dtype).repeat(b, 1, 1)
        pe = self.positional_encoding(h, w, f)
        tokens, img = self.transformer(tokens, f.flatten(2).transpose(1, 2), pe)
        u = self.upscale(img.transpose(1, 2).reshape(b, d, h, w))
        weights = self.token_mlp(tokens)  # (B, C, D/8)
        return (weights @ u.flatten(2)).unflatten(-1, u.shape[-2:])

    def forward(self, image: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Logits (B, C, H, W) at ``size`` (default: the input size); other sizes resample the logits bilinearly."""
        check_image(image)
        h, w = check_size(size if size is not None else tuple(image.shape[-2:]))
        if min(image.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"image: spatial size {tuple(image.shape[-2:])} is too small; need at least {MIN_SIDE} px")
        logits = self.native_logits(image)
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits


def _check_dims(dim: int, depth: int, heads: int, mlp_dim: int, attn_downsample: int) -> None:
    if dim <= 0 or dim % 8:
        raise ValueError(f"dim: expected a positive multiple of 8 (the upscaled channels are dim / 8), got {dim}")
    if depth < 1 or mlp_dim < 1:
        raise ValueError(f"depth, mlp_dim: expected positive integers, got {depth}, {mlp_dim}")
    if heads < 1 or attn_downsample < 1 or dim % (heads * attn_downsample):
        raise ValueError(
            f"heads, attn_downsample: dim ({dim}) must be divisible by heads x attn_downsample, got {heads} x "
            f"{attn_downsample}"
        )

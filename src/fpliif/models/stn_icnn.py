"""STN-iCNN (Yin, Yiu, Hu, Tang 2020), registered as ``stn_icnn``: an interlinked CNN (iCNN) labels a resized face
coarsely, a spatial-transformer localisation network predicts one crop per inner part from that rough mask, an iCNN
labels each crop, and the inverse transforms paste the part predictions back into the image frame.

Pipeline (paper Sec. 2.1, Eqs. 1-6): the image is resized to ``coarse_size`` (128, Sec. 2.2/3.3) -> coarse iCNN K
(9 classes: background and the eight inner parts) -> softmax -> localisation net L -> one θ per part (6 parts:
two brows, two eyes, nose, mouth; θ = [[s_x, 0, t_x], [0, s_y, t_y]], scale and translation only, Eq. 8) ->
``patch_size`` x ``patch_size`` crops of the *input* image by grid sampling -> a part iCNN per crop -> each crop's
softmax mapped back by the inverse transform onto the requested output grid -> final logits.

What the paper fixes and we keep: iCNN with four scales, interlinking layers that concatenate the max-pooled
finer and the nearest-upsampled coarser neighbour, no downsampling inside a scale, 3x3 convs, BN + ReLU (Fig. 2,
Sec. 2.2); coarse input 128²; the localisation net of 8 conv-BN-ReLU layers with a 3x3/stride-2 average pool
after every two, then one fully connected layer (Fig. 3); θ with scale and translation only; the crop window of
127 px in CelebAMask-HQ's 512 px images (Sec. 3.3; ``window`` = 127/512 of the image side: centred on a part's
centroid it holds 99.6-100 % of that part's pixels, mean per part over 300 celebamask-mini masks, measured);
θ̂ of Eq. 14 for pre-training (part centroid, fixed window); Smooth-L1 on θ (Eq. 12-13); CE on the rough mask
(Eq. 11) and on the crops (Eq. 10); pre-training then end-to-end training (Sec. 2.5.2).

What the paper leaves open, and what we chose (evidence: the original iCNN of Zhou et al. 2015 and the authors'
code, github.com/aod321/STN-iCNN, read as reference only):

* iCNN widths 8/16/24/32 for the four scales (the original iCNN), three interlinking layers, one conv per node
  and layer; the image pyramid and the interlinks' downsampling are 3x3/stride-2 max pools (Fig. 2's blue arrows),
  upsampling is nearest; output integration from the coarsest scale to the finest (upsample, concatenate,
  conv), then conv to 2L+8 channels and a final conv to L logits (the original iCNN's head). Convs followed by BN
  have no bias (BN removes it).
* Part networks: one iCNN per part *type* (brow: 2 classes, eye: 2, nose: 2, mouth: 4 = background, upper lip,
  inner mouth, lower lip), the image-right brow and eye sharing the image-left one's network through a mirrored
  crop (s_x negated; the authors' code flips these crops). Parts are assigned by *image* side; the output label
  set's ``side`` says which ``l_``/``r_`` class that is.
* Localisation widths 16/32/64/128 (the paper says "simplified from VGG16" without widths; VGG's doubling pattern
  at a quarter of its width). The FC layer outputs the four free entries of θ per part directly (24 outputs) with
  no activation: the paper's "6 x 2 x 3 with ReLU" cannot give negative translations, and the zeroed entries of
  Eq. 8 carry nothing. Its bias starts at s = ``window``, t = 0. The predicted scale is clamped to >= 0.01 where
  it is used, so the inverse transform exists.
* Sampling: pixel-centre coordinates (``align_corners=False``), bilinear for images and probabilities, nearest
  for label crops; outside the image, crops read zeros (the paper pads the image for the same purpose) and label
  crops read "ignore". The grids are written out (θ is separable), equal to ``F.affine_grid``, and export to ONNX.
* Assembly (Eqs. 5-6 say "remap, softmax, argmax"): each part's softmax is mapped back (zero outside its window,
  so that part's background is 1 there); background = product of the parts' background probabilities, each part
  class its mapped probability (the authors' code); normalised, and the logits are their logarithms (floor 1e-8).
* Output classes: the model predicts background and the eight inner parts and writes them into its output label
  set ``classes`` (CelebAMask-HQ by default, so the standard loaders, ``fpliif train`` and ``fpliif eval`` work
  unchanged); the set must contain ``background`` and all eight inner classes by name; every other class (skin,
  hair, ...) gets the constant floor logit and is never predicted. Score against ``fpliif.labels.INNER``
  (``remap_labels`` / ``remap_confusion`` from ``celebamask-hq``): see that module.
* Input: any size of at least 8 px per side, float RGB in [0, 1] (no normalisation: BN follows the first conv);
  resized bilinearly (no antialiasing, as the authors) to ``coarse_size``; crops come from the input at its own
  resolution. ``patch_size``: the paper samples crops 1:1 (127 px windows at 512 px); at this project's 128 px
  training input the same window holds 31.75 px, so ``configs/stn_icnn*.yaml`` use ``patch_size: 31``.

Training (``stage``; :meth:`STNiCNN.training_loss`, called by ``fpliif train`` with the batch's mask in the
output label set):

* ``"coarse"``: CE of K's logits against the mask remapped to the 9 inner classes and resized (nearest) to
  ``coarse_size`` (Eq. 11). ``forward`` returns K's prediction, upsampled, so validation measures this stage.
* ``"parts"``: K frozen (no gradient, BN in eval mode); Smooth-L1 between L's θ and θ̂ from the mask (Eq. 12-14,
  parts absent from the mask skipped) plus CE of each part network on crops at θ̂ (the iCNN baseline's part
  training; the paper's STN-iCNN* row needs these networks before end-to-end training). ``forward``: the full
  pipeline (STN-iCNN*).
* ``"end2end"``: the full pipeline; CE of each part network on crops at the *predicted* θ against the mask cropped
  by the same θ, averaged over the six parts (Eq. 10); gradients reach K and L through the crops' sampling grid.
  The paper trains K and L at a lower rate here (CelebAMask-HQ: 1e-6 vs 1e-3): :meth:`STNiCNN.param_groups`,
  which ``fpliif train`` uses for its optimizer (networks a stage does not train are in no group: frozen).

The stage changes no parameter: weights of one stage load into the next (``train.init_weights``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..labels import IGNORE_INDEX, LabelSet, resolve_label_set
from .base import SegmentationModel, check_classes_spec, check_image, check_size
from .registry import register

STAGES = ("coarse", "parts", "end2end")
MIN_SIDE = 8
LOG_FLOOR = math.log(1e-8)
PRETRAINED_LR_SCALE = 1e-3
"""End-to-end learning rate of K and L relative to the part networks (paper Table 1, CelebAMask-HQ: 1e-6 / 1e-3)."""

# Internal classes (image sides: a = the image's left, b = its right) and the output names by label-set side.
INNER_CLASSES = ("background", "brow_a", "brow_b", "eye_a", "eye_b", "nose", "u_lip", "mouth", "l_lip")
SIDE_NAMES = {
    "subject": {"brow_a": "r_brow", "brow_b": "l_brow", "eye_a": "r_eye", "eye_b": "l_eye"},
    "image": {"brow_a": "l_brow", "brow_b": "r_brow", "eye_a": "l_eye", "eye_b": "r_eye"},
}


class Part(NamedTuple):
    """One crop: the network that labels it, its internal classes (after the crop's background), mirrored or not."""

    net: str
    classes: tuple[int, ...]
    mirrored: bool


PARTS = (
    Part("brow", (1,), False),
    Part("brow", (2,), True),
    Part("eye", (3,), False),
    Part("eye", (4,), True),
    Part("nose", (5,), False),
    Part("mouth", (6, 7, 8), False),
)
PART_NETS = {"brow": 2, "eye": 2, "nose": 2, "mouth": 4}  # classes per part network (background first)


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def max_down(x: torch.Tensor) -> torch.Tensor:
    """3x3 / stride-2 max pool (padding 1): side n -> ceil(n / 2)."""
    return F.max_pool2d(x, 3, stride=2, padding=1)


class ICNN(nn.Module):
    """Interlinked CNN (Zhou et al. 2015; STN-iCNN Fig. 2): four scales of an image pyramid, interlinking layers,
    output integration from coarse to fine, then conv to 2L+8 channels and to L logits at the input resolution."""

    def __init__(self, num_classes: int, widths: Sequence[int], interlinks: int):
        super().__init__()
        w = list(widths)
        n = len(w)
        self.inputs = nn.ModuleList(conv_bn_relu(3, c) for c in w)
        self.links = nn.ModuleList(
            nn.ModuleList(
                conv_bn_relu((w[i - 1] if i > 0 else 0) + w[i] + (w[i + 1] if i < n - 1 else 0), w[i]) for i in range(n)
            )
            for _ in range(interlinks)
        )
        self.integrate = nn.ModuleList(conv_bn_relu(w[i] + w[i + 1], w[i]) for i in range(n - 1))
        self.head = nn.Sequential(
            conv_bn_relu(w[0], 2 * num_classes + 8), nn.Conv2d(2 * num_classes + 8, num_classes, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(len(self.inputs) - 1):
            pyramid.append(max_down(pyramid[-1]))
        f = [conv(p) for conv, p in zip(self.inputs, pyramid, strict=True)]
        for layer in self.links:
            f = [conv(self._neighbours(f, i)) for i, conv in enumerate(layer)]
        g = f[-1]
        for i in range(len(f) - 2, -1, -1):
            g = self.integrate[i](torch.cat([f[i], _up(g, f[i])], dim=1))
        return self.head(g)

    @staticmethod
    def _neighbours(f: list[torch.Tensor], i: int) -> torch.Tensor:
        """Scale i's features with the max-pooled finer and the upsampled coarser neighbour, concatenated."""
        parts = [max_down(f[i - 1])] if i > 0 else []
        parts.append(f[i])
        if i < len(f) - 1:
            parts.append(_up(f[i + 1], f[i]))
        return torch.cat(parts, dim=1)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class Localizer(nn.Module):
    """STN localisation net (Fig. 3): 8 conv-BN-ReLU layers, a 3x3/stride-2 average pool after every two, one FC
    layer to (s_x, s_y, t_x, t_y) per part."""

    def __init__(self, in_channels: int, widths: Sequence[int], in_size: int, parts: int, window: float):
        super().__init__()
        layers: list[nn.Module] = []
        c, side = in_channels, in_size
        for w in widths:
            layers += [conv_bn_relu(c, w), conv_bn_relu(w, w), nn.AvgPool2d(3, stride=2, padding=1)]
            c, side = w, (side + 1) // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * side * side, parts * 4)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([window, window, 0.0, 0.0]).repeat(parts))
        self.parts = parts

    def forward(self, rough: torch.Tensor) -> torch.Tensor:
        """(B, parts, 4) θ entries (s_x, s_y, t_x, t_y) from the rough soft mask (B, C, in_size, in_size)."""
        return self.fc(self.features(rough).flatten(1)).view(-1, self.parts, 4)


def scale_shift_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h, w, 2) sampling grid of θ = (s_x, s_y, t_x, t_y) (B, 4) on an h x w target of pixel centres:
    ``F.affine_grid([[s_x, 0, t_x], [0, s_y, t_y]], align_corners=False)``, written out (θ is separable)."""
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    gx = theta[:, 0, None] * xs + theta[:, 2, None]  # (B, w)
    gy = theta[:, 1, None] * ys + theta[:, 3, None]  # (B, h)
    return torch.stack([gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)], dim=-1)


def clamp_scales(theta: torch.Tensor) -> torch.Tensor:
    """θ (..., 4) with its scales (s_x, s_y) clamped to >= 0.01 (a crop needs a positive, non-degenerate scale)."""
    return torch.cat([theta[..., :2].clamp_min(0.01), theta[..., 2:]], dim=-1)


def inverse_theta(theta: torch.Tensor) -> torch.Tensor:
    """θ⁻¹ of scale-translation θ (..., 4): x_t = (x_s - t) / s."""
    s, t = theta[..., :2], theta[..., 2:]
    return torch.cat([1 / s, -t / s], dim=-1)


def crop(image: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, size, size) patches of ``image`` at θ (B, 4), bilinear, zeros outside the image."""
    grid = scale_shift_grid(theta, size, size).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def uncrop(patch: torch.Tensor, theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, C, h, w): a patch cropped at θ pasted back onto an h x w image grid (zeros outside its window)."""
    grid = scale_shift_grid(inverse_theta(theta), h, w).to(patch.dtype)
    return F.grid_sample(patch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_labels(labels: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size) int64 label crops of (B, H, W) labels at θ, nearest; :data:`IGNORE_INDEX` outside."""
    shifted = (labels + 1).unsqueeze(1).float()  # 0 = outside the image after sampling with zero padding
    grid = scale_shift_grid(theta.float(), size, size)
    out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out = out.squeeze(1).round().long() - 1
    return torch.where(out < 0, torch.full_like(out, IGNORE_INDEX), out)


def part_targets(inner: torch.Tensor, window: float) -> tuple[torch.Tensor, torch.Tensor]:
    """θ̂ (B, 6, 4) of Eq. 14 (each part's centroid, a fixed ``window``) from (B, H, W) inner labels, and which
    parts are present (B, 6) bool; absent parts get θ̂ = (window, window, 0, 0)."""
    b, h, w = inner.shape
    xs = (torch.arange(w, device=inner.device, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=inner.device, dtype=torch.float32) * 2 + 1) / h - 1
    thetas, present = [], []
    for part in PARTS:
        m = torch.zeros_like(inner, dtype=torch.float32)
        for k in part.classes:
            m = m + (inner == k).float()
        n = m.sum(dim=(1, 2))
        cx = (m.sum(1) * xs).sum(1) / n.clamp_min(1)
        cy = (m.sum(2) * ys).sum(1) / n.clamp_min(1)
        s = torch.full_like(cx, window)
        thetas.append(torch.stack([s, s, cx, cy], dim=-1))
        present.append(n > 0)
    return torch.stack(thetas, dim=1), torch.stack(present, dim=1)


def mean_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over non-ignored pixels (0 with a gradient path if all are ignored)."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


@register("stn_icnn")
class STNiCNN(SegmentationModel):
    """STN-iCNN face parser of the inner face parts (see the module docstring for every choice).

    Args:
        classes: output label set (name or class list); must contain ``background`` and the eight inner classes
            ``l_brow r_brow l_eye r_eye nose u_lip mouth l_lip``; its other classes are never predicted.
        stage: ``"coarse"``, ``"parts"`` or ``"end2end"``: what :meth:`training_loss` trains (and, for
            ``"coarse"``, that ``forward`` returns the coarse prediction).
        coarse_size: side of the resized input of the coarse iCNN (paper: 128).
        patch_size: side of each part crop in pixels (paper: 127 on CelebAMask-HQ's 512 px images).
        window: crop window side as a fraction of the image side (paper: 127 / 512).
        widths: channels of the iCNN's scales, finest first (8, 16, 24, 32).
        interlinks: interlinking layers of each iCNN (3).
        loc_widths: channels of the localisation net's four conv pairs.
    """

    SPEC_BOUNDS: dict[str, tuple[int, int]] = {
        "coarse_size": (MIN_SIDE, 1024),
        "patch_size": (3, 1024),
        "interlinks": (0, 16),
    }

    @classmethod
    def check_spec_args(cls, args: Mapping[str, Any], where: str = "args") -> None:
        """Types and bounds of constructor arguments (untrusted weight files), before anything is built;
        ValueError naming ``{where}.<field>``."""

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for key, (lo, hi) in cls.SPEC_BOUNDS.items():
            if key in args and not (is_int(args[key]) and lo <= args[key] <= hi):
                raise ValueError(f"{where}.{key}: expected an integer in [{lo}, {hi}], got {args[key]!r:.200}")
        for key in ("widths", "loc_widths"):
            v = args.get(key)
            if key in args and not (
                isinstance(v, (list, tuple)) and 1 <= len(v) <= 8 and all(is_int(c) and 1 <= c <= 1024 for c in v)
            ):
                raise ValueError(f"{where}.{key}: expected a list of 1 to 8 integers in [1, 1024], got {v!r:.200}")
        w = args.get("window")
        if "window" in args and not (isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w <= 2):
            raise ValueError(f"{where}.window: expected a number in (0, 2], got {w!r:.200}")
        if "stage" in args and args["stage"] not in STAGES:
            raise ValueError(f"{where}.stage: expected one of {', '.join(STAGES)}, got {args['stage']!r:.200}")
        check_classes_spec(args, where)

    def __init__(
        self,
        classes: str | Sequence[str] = "celebamask-hq",
        stage: str = "end2end",
        coarse_size: int = 128,
        patch_size: int = 127,
        window: float = 127 / 512,
        widths: Sequence[int] = (8, 16, 24, 32),
        interlinks: int = 3,
        loc_widths: Sequence[int] = (16, 32, 64, 128),
    ):
        super().__init__()
        self.spec = {
            "name": "stn_icnn",
            "args": {
                "classes": classes if isinstance(classes, str) else list(classes),
                "stage": stage,
                "coarse_size": coarse_size,
                "patch_size": patch_size,
                "window": window,
                "widths": list(widths),
                "interlinks": interlinks,
                "loc_widths": list(loc_widths),
            },
        }
        self.check_spec_args(self.spec["args"])
        self.label_set = resolve_label_set(classes)
        self.stage = stage
        self.coarse_size = coarse_size
        self.patch_size = patch_size
        self.window = float(window)
        self.coarse = ICNN(len(INNER_CLASSES), widths, interlinks)
        self.localizer = Localizer(len(INNER_CLASSES), loc_widths, coarse_size, len(PARTS), self.window)
        self.part_nets = nn.ModuleDict({name: ICNN(k, widths, interlinks) for name, k in PART_NETS.items()})
        to_out, to_inner = output_mapping(self.label_set)
        self.register_buffer("to_out", to_out, persistent=False)  # output class -> inner class (9 = floor)
        self.register_buffer("to_inner", to_inner, persistent=False)  # label value (0..255) -> inner class
        self.register_buffer("mirror", torch.tensor([-1.0, 1.0, 1.0, 1.0]), persistent=False)

    # ------------------------------------------------------------------------------------------ stages
    def coarse_logits(self, image: torch.Tensor) -> torch.Tensor:
        """K's logits (B, 9, coarse_size, coarse_size) of the resized image (Eq. 1)."""
        side = (self.coarse_size, self.coarse_size)
        small = (
            image
            if tuple(image.shape[-2:]) == side
            else F.interpolate(image, size=side, mode="bilinear", align_corners=False)
        )
        return self.coarse(small)

    def raw_thetas(self, coarse_logits: torch.Tensor) -> torch.Tensor:
        """L's output θ (B, 6, 4) = (s_x, s_y, t_x, t_y) per part from the rough mask (Eq. 2), unclamped: what the
        Smooth-L1 of the parts stage (Eq. 12) is computed on, so a scale that strays below the clamp is pulled back."""
        return self.localizer(torch.softmax(coarse_logits, dim=1)).float()  # fp32 sampling grids under AMP

    def thetas(self, coarse_logits: torch.Tensor) -> torch.Tensor:
        """θ of :meth:`raw_thetas` with the scales clamped to >= 0.01 (what the crops are sampled at)."""
        return clamp_scales(self.raw_thetas(coarse_logits))

    def part_logits(self, image: torch.Tensor, theta: torch.Tensor) -> list[torch.Tensor]:
        """Each part network's logits on its crop (Eqs. 3-4): a list of 6 (B, 1 + k, P, P)."""
        return [
            self.part_nets[part.net](crop(image, self._crop_theta(theta[:, i], part), self.patch_size))
            for i, part in enumerate(PARTS)
        ]

    def _crop_theta(self, theta: torch.Tensor, part: Part) -> torch.Tensor:
        """θ of the crop a part network sees: mirrored (s_x negated) for the image-right brow and eye."""
        return theta * self.mirror if part.mirrored else theta

    def assemble(self, logits: list[torch.Tensor], theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Log-probabilities (B, 9, h, w) of the inner classes from the parts' logits pasted back (Eqs. 5-6)."""
        background = None
        fg: list[torch.Tensor] = []
        for i, (part, z) in enumerate(zip(PARTS, logits, strict=True)):
            mapped = uncrop(torch.softmax(z.float(), dim=1)[:, 1:], self._crop_theta(theta[:, i], part), h, w)
            bg = (1 - mapped.sum(dim=1, keepdim=True)).clamp_min(0)
            background = bg if background is None else background * bg
            fg.append(mapped)
        scores = torch.cat([background, *fg], dim=1).clamp_min(math.exp(LOG_FLOOR))
        return torch.log(scores / scores.sum(dim=1, keepdim=True))

    def to_output(self, inner_log_probs: torch.Tensor) -> torch.Tensor:
        """Inner log-probabilities (B, 9, h, w) -> logits (B, C, h, w) in the output label set."""
        floor = torch.full_like(inner_log_probs[:, :1], LOG_FLOOR)
        return torch.index_select(torch.cat([inner_log_probs, floor], dim=1), 1, self.to_out)

    def forward(self, image: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Logits (B, C, H, W) at ``size`` (default: the input size) from any input of at least 8 px per side."""
        check_image(image)
        h, w = check_size(size if size is not None else tuple(image.shape[-2:]))
        if min(image.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"image: spatial size {tuple(image.shape[-2:])} is too small; need at least {MIN_SIDE} px")
        rough = self.coarse_logits(image)
        if self.stage == "coarse":
            up = F.interpolate(rough.float(), size=(h, w), mode="bilinear", align_corners=False)
            return self.to_output(torch.log_softmax(up, dim=1))
        theta = self.thetas(rough)
        return self.to_output(self.assemble(self.part_logits(image, theta), theta, h, w))

    # ------------------------------------------------------------------------------------------ training
    def training_loss(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of this model's ``stage`` for an image batch (B, 3, H, W) in [0, 1] and its mask (B, H, W)
        int64 in the output label set (255 = ignore); returns (loss, named float parts for logging)."""
        check_image(image)
        if mask.dim() != 3 or mask.shape[0] != image.shape[0]:
            raise ValueError(f"mask: expected (B, H, W) labels for {image.shape[0]} images, got {tuple(mask.shape)}")
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > IGNORE_INDEX):
            raise ValueError(
                f"mask: labels must lie in [0, {IGNORE_INDEX}], got [{int(mask.min())}, {int(mask.max())}]"
            )
        inner = self.to_inner[mask.long()]
        if self.stage == "coarse":
            side = (self.coarse_size, self.coarse_size)
            target = F.interpolate(inner[:, None].float(), size=side, mode="nearest")[:, 0].long()
            loss = mean_ce(self.coarse_logits(image), target)
            return loss, {"coarse_ce": float(loss.detach())}
        if self.stage == "parts":
            with torch.no_grad():
                rough = self.coarse_logits(image)
            theta = self.raw_thetas(rough)  # the clamp would stop the gradient of a scale below it for good
            target, present = part_targets(inner, self.window)
            loc = F.smooth_l1_loss(theta[present], target[present]) if present.any() else theta.sum() * 0
            parts = self._parts_ce(image, inner, target, present)
            return loc + parts, {"theta_l1": float(loc.detach()), "parts_ce": float(parts.detach())}
        theta = self.thetas(self.coarse_logits(image))
        parts = self._parts_ce(image, inner, theta, None)
        return parts, {"parts_ce": float(parts.detach())}

    def _parts_ce(
        self, image: torch.Tensor, inner: torch.Tensor, theta: torch.Tensor, present: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean over the six parts of each part network's CE on its crops at θ; ``present`` (B, 6) drops crops."""
        logits = self.part_logits(image, theta)
        losses = []
        for i, (part, z) in enumerate(zip(PARTS, logits, strict=True)):
            labels = crop_labels(inner, self._crop_theta(theta[:, i], part), self.patch_size)
            local = torch.zeros(256, dtype=torch.long, device=labels.device)
            local[IGNORE_INDEX] = IGNORE_INDEX
            for j, k in enumerate(part.classes, start=1):
                local[k] = j
            labels = local[labels]
            if present is not None:
                labels = torch.where(present[:, i, None, None], labels, torch.full_like(labels, IGNORE_INDEX))
            losses.append(mean_ce(z, labels))
        return torch.stack(losses).mean()

    def frozen(self) -> list[nn.Module]:
        """Sub-networks the stage does not train (kept in eval mode by :meth:`train`)."""
        return [self.coarse] if self.stage == "parts" else []

    def train(self, mode: bool = True) -> STNiCNN:
        super().train(mode)
        for module in self.frozen():
            module.eval()
        return self

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups of the stage (``fpliif train`` uses them and freezes the networks in none):
        ``coarse`` K; ``parts`` the part networks and L; ``end2end`` all, K and L at ``lr *``
        :data:`PRETRAINED_LR_SCALE` (paper Table 1). The first group runs at ``lr``."""
        if self.stage == "coarse":
            return [{"params": list(self.coarse.parameters()), "lr": lr}]
        parts = {"params": list(self.part_nets.parameters()), "lr": lr}
        if self.stage == "parts":
            return [parts, {"params": list(self.localizer.parameters()), "lr": lr}]
        pretrained = [*self.coarse.parameters(), *self.localizer.parameters()]
        return [parts, {"params": pretrained, "lr": lr * PRETRAINED_LR_SCALE}]


def output_mapping(label_set: LabelSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(C,) output class -> inner class index (9: the floor channel) and (256,) label value -> inner class
    (non-inner classes -> background, values that are no class -> ignore), from the set's names and side."""
    names = dict(zip(INNER_CLASSES, INNER_CLASSES, strict=True))
    if label_set.side in SIDE_NAMES:
        names.update(SIDE_NAMES[label_set.side])
    wanted = [names[c] for c in INNER_CLASSES]
    missing = [n for n in wanted if n not in label_set.classes]
    if missing or label_set.side not in SIDE_NAMES:
        raise ValueError(
            f"classes: STN-iCNN labels {', '.join(wanted)} and needs them all, with l_/r_ sides defined; "
            f"label set {label_set.name!r} ({', '.join(label_set.classes)}) lacks {', '.join(missing) or 'the sides'}"
        )
    to_out = torch.full((label_set.num_classes,), len(INNER_CLASSES), dtype=torch.long)
    to_inner = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    to_inner[: label_set.num_classes] = 0
    for k, name in enumerate(wanted):
        to_out[label_set.index(name)] = k
        to_inner[label_set.index(name)] = k
    return to_out, to_inner

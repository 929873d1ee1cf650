"""Training augmentations of the paper (§4.2) and the evaluation resize, on sample dicts of torch tensors.

Why kornia: it works directly on torch tensors (no numpy/PIL round trip per sample), its random parameters are
drawn from torch's global RNG (so a seeded DataLoader, whose workers seed torch, is reproducible), and one
sampled affine matrix can be applied to the image (bilinear) and to the mask (nearest) alike. It has no
telemetry. (albumentations would also do joint image/mask transforms, but it checks for updates over the
network on import unless ``NO_ALBUMENTATIONS_UPDATE=1`` is set, and works on numpy arrays.)

Pipeline of :class:`TrainTransform` (each step configured by a key of the ``augment`` dict; a missing key, or
``augment=None``/``{}``, turns that step off; :data:`PAPER_AUGMENT` holds the paper's values):

1. Resize to ``size``² : image bicubic with antialiasing, clamped to [0, 1]; mask nearest (labels are never
   interpolated).
2. With probability ``p`` a random affine warp (``kornia.augmentation.RandomAffine`` draws the parameters and
   builds the matrix): ``rotation`` (±degrees or a (min, max) range), ``shear`` (range in **degrees**, x-axis
   shear, as kornia's ``RandomAffine`` takes it: kornia 0.9 converts the drawn angle to radians and shears by
   its tangent, like torchvision; ``(0, 20)`` means an x-shear angle between 0° and 20°, not a factor up to
   20) and ``scale`` (isotropic (min, max) zoom factor; > 1 enlarges).
3. ``crop`` (pixels if int, fraction of ``size`` if float): the warped image is conceptually placed on a
   canvas ``crop`` pixels larger on every side and a random ``size``² window is cropped back out, i.e. a
   random translation of up to ±``crop`` pixels. It is composed into the affine matrix, so there is a single
   warp. The warp uses ``kornia.geometry.transform.warp_affine``: image bilinear with zero (black) padding;
   mask nearest, computed as ``warp(mask + 1, zeros padding) - 1`` so that every pixel brought in from outside
   the image gets :data:`~fpliif.labels.IGNORE_INDEX` (255), never background.
4. ``color_jitter`` (image only): ``kornia.augmentation.ColorJitter`` with torchvision's semantics:
   ``brightness``/``contrast``/``saturation`` are factor ranges (contrast 0 = flat grey), ``hue`` is a
   fraction of the hue circle in [-0.5, 0.5] (±0.3 = ±108°); optional ``p`` (default 1).
5. ``hflip`` (default off, the paper does not list it): ``True`` = probability 0.5, or a probability. Flips
   image and mask and swaps every left/right class pair with ``LabelSet.flip_lut()``.
6. ``degrade`` (default off; ours, not the paper's): with probability ``p`` the image (never the mask) becomes
   what the parser sees of a small face in a compressed photo (:func:`degrade_image`): resampled to a side of
   ``side`` × the training size (area), blurred (Gaussian, ``blur`` = sigma in pixels of that small image),
   noised (``noise`` = standard deviation, [0, 1] scale), JPEG-encoded at a quality in ``jpeg``, and resized back
   as :func:`fpliif.infer.geometry.model_input` resizes a crop (bicubic up). Each parameter is drawn uniformly
   from its (min, max) range; a missing key leaves that step out. The labels stay those of the clean image.
0. ``background`` (default off; ours, not the paper's), applied right after the resize: with probability ``p``
   the pixels labelled background (class 0) are replaced by a generated texture (:func:`random_texture`: noise
   of several scales, stripes or blobs, in random colours, often dark, sometimes blurred), blended at the
   person's outline by a mask blurred with a Gaussian of ``feather`` px (a (min, max) range, default (0.5, 1.5)).
   CelebAMask-HQ's backgrounds are mostly smooth, and the parser labels textured backgrounds next to a head as
   hair (docs/detection.md); this shows it people in front of clutter. The labels do not change.

All randomness comes from torch's global RNG of the process (the DataLoader worker), see
:func:`fpliif.data.make_loader`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import kornia.augmentation as KA
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

from ..labels import BACKGROUND_INDEX, IGNORE_INDEX, LabelSet
from ..models.checkpoint import DEFAULT_INPUT_SIZE

PAPER_AUGMENT: dict[str, Any] = {
    "rotation": 30.0,
    "shear": (0.0, 20.0),
    "scale": (0.5, 3.0),
    "crop": 0.125,
    "p": 1.0,
    "color_jitter": {
        "brightness": (0.5, 1.5),
        "contrast": (0.0, 2.0),
        "saturation": (0.5, 1.5),
        "hue": (-0.3, 0.3),
    },
    "hflip": False,
}
"""The paper's augmentations (§4.2). ``crop`` is our choice: the paper gives no crop size."""

AUGMENT_KEYS = frozenset({*PAPER_AUGMENT, "degrade", "background"})
JITTER_KEYS = frozenset({"brightness", "contrast", "saturation", "hue", "p"})
DEGRADE_KEYS = frozenset({"p", "side", "blur", "noise", "jpeg"})
BACKGROUND_KEYS = frozenset({"p", "feather"})
DEFAULT_FEATHER = (0.5, 1.5)
_DEGRADE_BOUNDS = {"side": (0.05, 1.0), "blur": (0.0, 10.0), "noise": (0.0, 0.5), "jpeg": (1.0, 100.0)}


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_image(image: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """(3, H, W) float image to ``size`` (int or (h, w)): bicubic, antialiased, clamped to [0, 1]."""
    hw = _size2(size)
    if tuple(image.shape[-2:]) == hw:
        return image
    out = F.interpolate(image[None], size=hw, mode="bicubic", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """(H, W) integer mask to ``size``: nearest (pixel-centre aligned), labels never mixed."""
    hw = _size2(size)
    if tuple(mask.shape[-2:]) == hw:
        return mask
    out = F.interpolate(mask[None, None].float(), size=hw, mode="nearest-exact")[0, 0]
    return out.to(mask.dtype)


def _range(value: Any, name: str, symmetric: bool = False) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        lo, hi = (-abs(v), abs(v)) if symmetric else (v, v)
    else:
        try:
            if isinstance(value, (str, bytes, bool)):
                raise TypeError
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"augment {name!r}: expected a number or a (min, max) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"augment {name!r}: expected finite numbers, got {value!r}")
    if lo > hi:
        raise ValueError(f"augment {name!r}: min {lo} > max {hi}")
    return lo, hi


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"augment {name!r}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def check_augment(augment: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The ``augment`` setting as a dict (the ``"paper"`` preset resolved), every key and value checked.

    Raises ValueError naming the key; builds nothing (config validation calls it before a run starts).
    """
    if isinstance(augment, str):
        if augment != "paper":
            raise ValueError(f"augment: unknown preset {augment!r} (known: 'paper', or a dict)")
        augment = PAPER_AUGMENT
    if augment is not None and not isinstance(augment, Mapping):
        raise ValueError(f"augment: expected 'paper', a mapping of steps or null, got {augment!r}")
    augment = copy.deepcopy(dict(augment or {}))
    unknown = set(augment) - AUGMENT_KEYS
    if unknown:
        raise ValueError(f"augment: unknown keys {sorted(unknown)}; known: {sorted(AUGMENT_KEYS)}")
    _probability(augment.get("p", 1.0), "p")
    _range(augment.get("rotation") or 0.0, "rotation", symmetric=True)
    for key in ("shear", "scale"):
        if augment.get(key):
            _range(augment[key], key)
    crop = augment.get("crop") or 0
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 <= crop < math.inf:
        raise ValueError(
            f"augment 'crop': expected pixels (an integer) or a fraction of the size (a float) >= 0, got {crop!r}"
        )
    cj = augment.get("color_jitter")
    if cj:
        if not isinstance(cj, Mapping):
            raise ValueError(f"augment color_jitter: expected a mapping or null, got {cj!r}")
        unknown = set(cj) - JITTER_KEYS
        if unknown:
            raise ValueError(f"augment color_jitter: unknown keys {sorted(unknown)}; known: {sorted(JITTER_KEYS)}")
        for key in ("brightness", "contrast", "saturation"):
            _range(cj.get(key, (1.0, 1.0)), f"color_jitter.{key}")
        _range(cj.get("hue", 0.0), "color_jitter.hue", symmetric=True)
        _probability(cj.get("p", 1.0), "color_jitter.p")
    hflip = augment.get("hflip") or 0.0
    _probability(0.5 if hflip is True else hflip, "hflip")
    _check_degrade(augment.get("degrade"))
    _check_background(augment.get("background"))
    return augment


def _check_background(background: Any) -> tuple[float, tuple[float, float]] | None:
    """The ``background`` step as (p, feather range), checked; None when off."""
    if not background:
        return None
    if not isinstance(background, Mapping):
        raise ValueError(f"augment background: expected a mapping or null, got {background!r}")
    unknown = set(background) - BACKGROUND_KEYS
    if unknown:
        raise ValueError(f"augment background: unknown keys {sorted(unknown)}; known: {sorted(BACKGROUND_KEYS)}")
    p = _probability(background.get("p", 1.0), "background.p")
    feather = _range(background.get("feather", DEFAULT_FEATHER), "background.feather")
    if feather[0] < 0 or feather[1] > 8:
        raise ValueError(f"augment background.feather: expected px in [0, 8], got {background['feather']!r}")
    return p, feather


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) blurred by a Gaussian of ``sigma`` px (reflected edges); unchanged for sigma < 0.1."""
    if sigma < 0.1:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _random_colour(dark: bool) -> torch.Tensor:
    """An RGB colour (3, 1, 1) of random saturation; ``dark`` keeps its brightness under 0.35."""
    c = torch.rand(3)
    c = c.mean() + float(torch.rand(())) * (c - c.mean())
    if dark:
        c = c * (0.35 * float(torch.rand(())))
    return c.view(3, 1, 1)


def random_texture(h: int, w: int) -> torch.Tensor:
    """A (3, h, w) texture in [0, 1] drawn from torch's global RNG: value noise summed over 1-4 scales, stripes
    at a random angle and frequency, or random rectangles on noise; coloured between two random colours (one
    dark half of the time) and blurred by up to 2 px one time in three."""
    kind = int(torch.randint(0, 3, ()))
    n_oct = int(torch.randint(1, 5, ()))
    noise = torch.zeros(1, h, w)
    for _ in range(n_oct):
        cells = int(torch.randint(2, 65, ()))
        coarse = torch.rand(1, 1, cells, cells)
        noise += F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    noise = noise / n_oct
    if kind == 1:  # stripes: curtains, blinds, shelves
        theta = float(torch.rand(())) * math.pi
        freq = 2 * math.pi * (2 + 30 * float(torch.rand(()))) / max(h, w)
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        wave = torch.sin((xx * math.cos(theta) + yy * math.sin(theta)) * freq + 6.3 * float(torch.rand(())))
        noise = 0.6 * (wave[None] + 1) / 2 + 0.4 * noise
    elif kind == 2:  # rectangles: furniture, frames, lamps
        for _ in range(int(torch.randint(3, 16, ()))):
            x0, y0 = int(torch.randint(0, w, ())), int(torch.randint(0, h, ()))
            x1, y1 = x0 + int(torch.randint(4, w // 2 + 5, ())), y0 + int(torch.randint(4, h // 2 + 5, ()))
            noise[:, y0:y1, x0:x1] = float(torch.rand(()))
    noise = (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-6)
    a, b = _random_colour(dark=float(torch.rand(())) < 0.5), _random_colour(dark=False)
    texture = a + (b - a) * noise
    if float(torch.rand(())) < 1 / 3:
        texture = _gaussian_blur(texture, 2 * float(torch.rand(())))
    return texture.clamp_(0.0, 1.0)


def replace_background(image: torch.Tensor, mask: torch.Tensor, feather: float) -> torch.Tensor:
    """``image`` (3, H, W) with the pixels ``mask`` labels background replaced by :func:`random_texture`,
    blended over ``feather`` px (Gaussian sigma) at the outline; pixels labelled ignore are kept."""
    person = (mask != BACKGROUND_INDEX).to(image.dtype)[None]
    alpha = _gaussian_blur(person, feather).clamp_(0.0, 1.0)
    texture = random_texture(*image.shape[-2:]).to(image.dtype)
    return alpha * image + (1 - alpha) * texture


def _check_degrade(degrade: Any) -> dict[str, tuple[float, float]]:
    """The ``degrade`` step's ranges (key -> (min, max)), each checked against its bounds; {} when off."""
    if not degrade:
        return {}
    if not isinstance(degrade, Mapping):
        raise ValueError(f"augment degrade: expected a mapping or null, got {degrade!r}")
    unknown = set(degrade) - DEGRADE_KEYS
    if unknown:
        raise ValueError(f"augment degrade: unknown keys {sorted(unknown)}; known: {sorted(DEGRADE_KEYS)}")
    _probability(degrade.get("p", 1.0), "degrade.p")
    ranges = {}
    for key, (lo, hi) in _DEGRADE_BOUNDS.items():
        if key in degrade:
            a, b = _range(degrade[key], f"degrade.{key}")
            if a < lo or b > hi:
                raise ValueError(f"augment degrade.{key}: expected values in [{lo:g}, {hi:g}], got {degrade[key]!r}")
            ranges[key] = (a, b)
    return ranges


def degrade_image(
    image: np.ndarray,
    side: float = 1.0,
    blur: float = 0.0,
    noise: float = 0.0,
    jpeg: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same size as the parser would see it from a smaller, softer, compressed photo:
    resampled (area) to ``side`` × its size, Gaussian-blurred by ``blur`` px there, ``noise`` (std, [0, 1] scale)
    added, JPEG-encoded at quality ``jpeg`` (None: not encoded), then resized back to (H, W) as the parser resizes
    a crop (:func:`fpliif.infer.geometry.model_input`); returns (3, H, W) float32 in [0, 1]. ``rng`` draws the
    noise (default: seeded 0)."""
    import cv2

    from ..infer.geometry import model_input

    h, w = image.shape[:2]
    small = np.ascontiguousarray(image)
    sh, sw = max(1, round(h * side)), max(1, round(w * side))
    if (sh, sw) != (h, w):
        small = cv2.resize(small, (sw, sh), interpolation=cv2.INTER_AREA)
    if blur > 0:
        small = cv2.GaussianBlur(small, (0, 0), blur)
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        noisy = small.astype(np.float32) + rng.normal(0.0, 255.0 * noise, small.shape).astype(np.float32)
        small = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if jpeg is not None:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(small[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, round(jpeg)])
        if not ok:
            raise RuntimeError("degrade_image: OpenCV could not encode the JPEG")
        small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return model_input(small, (h, w))


class TrainTransform:
    """The training augmentation (see the module docstring). Picklable: it can cross to worker processes."""

    def __init__(
        self,
        size: int = DEFAULT_INPUT_SIZE,
        augment: Mapping[str, Any] | str | None = None,
        label_set: LabelSet | None = None,
    ) -> None:
        augment = check_augment(augment)
        self.size = _size2(size)
        self.augment = augment
        self.p = float(augment.get("p", 1.0))
        rot = _range(augment.get("rotation") or 0.0, "rotation", symmetric=True)
        shear = augment.get("shear")
        scale = augment.get("scale")
        self.affine: KA.RandomAffine | None = None
        if rot != (0.0, 0.0) or shear or scale:
            self.affine = KA.RandomAffine(
                degrees=rot,
                shear=_range(shear, "shear") if shear else None,
                scale=_range(scale, "scale") if scale else None,
                p=1.0,
            )
        crop = augment.get("crop") or 0
        if isinstance(crop, float):  # a fraction of the output size
            crop = round(crop * min(self.size))
        self.crop = int(crop)
        if self.crop < 0:
            raise ValueError(f"augment 'crop': must be >= 0, got {augment.get('crop')!r}")
        cj = augment.get("color_jitter")
        self.jitter: KA.ColorJitter | None = None
        if cj:
            unknown = set(cj) - JITTER_KEYS
            if unknown:
                raise ValueError(f"augment color_jitter: unknown keys {sorted(unknown)}; known: {sorted(JITTER_KEYS)}")
            self.jitter = KA.ColorJitter(
                brightness=_range(cj.get("brightness", (1.0, 1.0)), "brightness"),
                contrast=_range(cj.get("contrast", (1.0, 1.0)), "contrast"),
                saturation=_range(cj.get("saturation", (1.0, 1.0)), "saturation"),
                hue=_range(cj.get("hue", 0.0), "hue", symmetric=True),
                p=float(cj.get("p", 1.0)),
            )
        hflip = augment.get("hflip") or 0.0
        self.hflip_p = 0.5 if hflip is True else float(hflip)
        self.degrade = _check_degrade(augment.get("degrade"))
        self.degrade_p = float((augment.get("degrade") or {}).get("p", 1.0)) if self.degrade else 0.0
        self.background = _check_background(augment.get("background"))
        self.flip_lut: torch.Tensor | None = None
        if self.hflip_p > 0:
            if label_set is None:
                raise ValueError("augment 'hflip' needs the dataset's label_set to swap left/right classes")
            self.flip_lut = torch.from_numpy(label_set.flip_lut().astype("int64"))

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.size}, augment={self.augment})"

    def _matrix(self, image: torch.Tensor) -> torch.Tensor | None:
        """The (1, 3, 3) warp for this sample (affine then crop translation), or None for identity."""
        mat = None
        if self.affine is not None and (self.p >= 1.0 or float(torch.rand(())) < self.p):
            params = self.affine.forward_parameters(torch.Size((1, *image.shape)))
            mat = self.affine.compute_transformation(image[None], params, self.affine.flags)
        if self.crop > 0:
            # place on a canvas `crop` px larger per side, then take a random size x size window at (ox, oy)
            ox, oy = (torch.randint(0, 2 * self.crop + 1, (2,)) - self.crop).tolist()
            if ox or oy:
                shift = torch.eye(3, dtype=image.dtype)[None]
                shift[0, 0, 2], shift[0, 1, 2] = -ox, -oy
                mat = shift if mat is None else shift @ mat
        return mat

    def _degraded(self, image: torch.Tensor) -> torch.Tensor:
        """The ``degrade`` step: parameters drawn from torch's RNG (reproducible like the other steps)."""
        drawn = {k: lo + (hi - lo) * float(torch.rand(())) for k, (lo, hi) in self.degrade.items()}
        seed = int(torch.randint(0, 2**31 - 1, ()))
        rgb = (image.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        out = degrade_image(rgb, rng=np.random.default_rng(seed), **drawn)
        return torch.from_numpy(out).to(image.dtype)

    def __call__(self, sample: dict) -> dict:
        sample = dict(sample)
        image = resize_image(sample["image"], self.size)
        mask = resize_mask(sample["mask"], self.size).long()
        if self.background is not None and float(torch.rand(())) < self.background[0]:
            lo, hi = self.background[1]
            image = replace_background(image, mask, lo + (hi - lo) * float(torch.rand(())))
        mat = self._matrix(image)
        if mat is not None:
            h, w = image.shape[-2:]
            m = mat[:, :2, :]
            image = warp_affine(image[None], m, (h, w), mode="bilinear", padding_mode="zeros", align_corners=False)[
                0
            ].clamp_(0.0, 1.0)
            shifted = (mask + 1).to(image.dtype)[None, None]
            warped = warp_affine(shifted, m, (h, w), mode="nearest", padding_mode="zeros", align_corners=False)
            mask = warped[0, 0].round().long() - 1
            mask[mask < 0] = IGNORE_INDEX
        if self.jitter is not None:
            image = self.jitter(image[None])[0].clamp_(0.0, 1.0)
        if self.flip_lut is not None and float(torch.rand(())) < self.hflip_p:
            image = image.flip(-1)
            mask = self.flip_lut[mask.flip(-1)]
        if self.degrade and float(torch.rand(())) < self.degrade_p:
            image = self._degraded(image)
        sample["image"] = image.contiguous()
        sample["mask"] = mask.contiguous()
        return sample


class EvalTransform:
    """Resize the image to ``size`` (bicubic, antialiased, clamped) and the mask (nearest) to each of
    ``mask_sizes``. Returns ``"mask"`` at ``mask_sizes[0]`` and ``"masks"``: ``{size: mask}`` for all of them
    (e.g. ``mask_sizes=(256, 512)`` evaluates a 256² input against the 512² ground truth)."""

    def __init__(self, size: int = DEFAULT_INPUT_SIZE, mask_sizes: Sequence[int] = (DEFAULT_INPUT_SIZE,)) -> None:
        if not mask_sizes:
            raise ValueError("mask_sizes must name at least one size")
        self.size = int(size)
        self.mask_sizes = tuple(int(s) for s in mask_sizes)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, mask_sizes={self.mask_sizes})"

    def __call__(self, sample: dict) -> dict:
        sample = dict(sample)
        mask = sample["mask"]
        sample["image"] = resize_image(sample["image"], self.size).contiguous()
        masks = {s: resize_mask(mask, s).long().contiguous() for s in self.mask_sizes}
        sample["masks"] = masks
        sample["mask"] = masks[self.mask_sizes[0]]
        return sample


def build_train_transform(
    size: int = DEFAULT_INPUT_SIZE,
    augment: Mapping[str, Any] | str | None = None,
    label_set: LabelSet | None = None,
) -> TrainTransform:
    """Training transform: resize to ``size``² plus the augmentations in ``augment`` (``"paper"`` or
    :data:`PAPER_AUGMENT` for the paper's; None/{} for none). ``label_set`` is needed for ``hflip``."""
    return TrainTransform(size=size, augment=augment, label_set=label_set)


def build_eval_transform(
    size: int = DEFAULT_INPUT_SIZE, mask_sizes: Sequence[int] = (DEFAULT_INPUT_SIZE,)
) -> EvalTransform:
    """Evaluation transform: image to ``size``², masks to each of ``mask_sizes`` (:class:`EvalTransform`)."""
    return EvalTransform(size=size, mask_sizes=mask_sizes)


__all__ = [
    "PAPER_AUGMENT",
    "EvalTransform",
    "TrainTransform",
    "build_eval_transform",
    "build_train_transform",
    "degrade_image",
    "resize_image",
    "resize_mask",
]

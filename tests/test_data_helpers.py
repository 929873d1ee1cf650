"""Helpers that write tiny datasets in each official layout (imported by the other test_data_* files).

No tests here. Every image encodes its label map in colour (``COLOURS[label]``), so alignment can be checked.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from fpliif.labels import CELEBAMASK_HQ

# Well separated colours, one per label value (19 classes at most in these tests).
COLOURS = np.zeros((256, 3), dtype=np.uint8)
COLOURS[:19] = np.array(
    [[(i * 97) % 256, (i * 53 + 40) % 256, (i * 151 + 90) % 256] for i in range(19)], dtype=np.uint8
)


def mini_data_dir() -> Path:
    env = os.environ.get("FPLIIF_MINI_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared/data/celebamask-mini"


def block_mask(h: int, w: int, num_classes: int, seed: int, block: int = 8) -> np.ndarray:
    """Random labels in ``block``-sized squares (few boundaries)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, num_classes, size=(-(-h // block), -(-w // block)))
    return np.kron(small, np.ones((block, block), dtype=np.int64))[:h, :w].astype(np.uint8)


def colour_image(mask: np.ndarray) -> np.ndarray:
    return COLOURS[mask]


def decode_colours(image: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W, 3) float/uint8 image -> label of the nearest class colour."""
    img = image.astype(np.float32)
    if img.max() <= 1.0:
        img = img * 255.0
    d = ((img[:, :, None, :] - COLOURS[None, None, :num_classes].astype(np.float32)) ** 2).sum(-1)
    return d.argmin(-1)


def save_mask(path: Path, mask: np.ndarray, palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(mask.astype(np.uint8))
    if palette:
        img.putpalette(CELEBAMASK_HQ.palette())
    img.save(path)


def save_image(path: Path, rgb: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path, **kw)


def make_folder(root: Path, n: int = 6, size: int = 32, num_classes: int = 19, ext: str = ".png") -> dict:
    """images/<name>.<ext> + masks/<name>.png; returns {name: mask}."""
    masks = {}
    for i in range(n):
        name = f"face{i:03d}"
        m = block_mask(size, size, num_classes, seed=i)
        kw = {"quality": 100} if ext == ".jpg" else {}
        save_image(root / "images" / f"{name}{ext}", colour_image(m), **kw)
        save_mask(root / "masks" / f"{name}.png", m)
        masks[name] = m
    return masks


def make_lapa(root: Path, counts=(("train", 3), ("val", 2), ("test", 2)), size: int = 32) -> dict:
    masks = {}
    for split, n in counts:
        for i in range(n):
            name = f"{split}_{i}"
            m = block_mask(size, size + 8, 11, seed=zlib.crc32(name.encode()))
            save_image(root / split / "images" / f"{name}.png", colour_image(m))
            save_mask(root / split / "labels" / f"{name}.png", m, palette=False)
            (root / split / "landmarks").mkdir(parents=True, exist_ok=True)
            (root / split / "landmarks" / f"{name}.txt").write_text("106\n")
            masks[name] = m
    return masks


def make_helen(root: Path, splits=(("train", 3), ("test", 2)), size: int = 32) -> dict:
    masks = {}
    for split, n in splits:
        for i in range(n):
            name = f"{split}{i}"
            m = block_mask(size, size, 11, seed=i + 50)
            save_image(root / split / f"{name}_image.png", colour_image(m))
            save_mask(root / split / f"{name}_label.png", m, palette=False)
            masks[name] = m
    return masks


# CelebAMask-HQ: ids -> orig_idx around the split boundaries (see celebamask.split_of)
CELEBA_ORIG = {0: 162769, 1: 162770, 2: 162771, 3: 182637, 4: 182638, 2001: 5}
CELEBA_SPLIT = {0: "train", 1: "train", 2: "val", 3: "val", 4: "test", 2001: "train"}


def celeba_parts(idx: int, size: int = 32) -> dict[str, np.ndarray]:
    """Binary part masks with overlaps: skin in the middle, hair over the top, cloth over the hair's end."""
    parts = {}
    skin = np.zeros((size, size), bool)
    skin[4:28, 4:28] = True
    parts["skin"] = skin
    hair = np.zeros((size, size), bool)
    hair[0:12, :] = True  # overlaps skin rows 4..11
    parts["hair"] = hair
    cloth = np.zeros((size, size), bool)
    cloth[10:14, 0:16] = True  # overlaps hair rows 10..11 and skin
    parts["cloth"] = cloth
    nose = np.zeros((size, size), bool)
    nose[14:20, 14:18] = True
    parts["nose"] = nose
    if idx % 2 == 0:  # l_eye only on even ids: a missing part PNG is an absent part
        eye = np.zeros((size, size), bool)
        eye[15:18, 20:24] = True
        parts["l_eye"] = eye
    return parts


def celeba_expected(idx: int, size: int = 32) -> np.ndarray:
    """The merged map: class order of labels.CELEBAMASK_HQ, later classes overwrite earlier ones."""
    out = np.zeros((size, size), np.uint8)
    parts = celeba_parts(idx, size)
    for cls, name in enumerate(CELEBAMASK_HQ.classes):
        if name in parts:
            out[parts[name]] = cls
    return out


def make_celebamask(root: Path, ids=tuple(CELEBA_ORIG), image_size: int = 64, mask_size: int = 32) -> dict:
    """The official archive layout: 2x larger JPEG images, per-part 0/255 PNGs, the mapping file."""
    for idx in ids:
        exp = celeba_expected(idx, mask_size)
        big = np.kron(exp, np.ones((image_size // mask_size,) * 2, dtype=np.uint8))
        save_image(root / "CelebA-HQ-img" / f"{idx}.jpg", colour_image(big), quality=95)
        for name, m in celeba_parts(idx, mask_size).items():
            p = root / "CelebAMask-HQ-mask-anno" / str(idx // 2000) / f"{idx:05d}_{name}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((m * 255).astype(np.uint8)).save(p)
    rows = ["idx orig_idx orig_file"] + [f"{i} {CELEBA_ORIG[i]} {CELEBA_ORIG[i] + 1:06d}.jpg" for i in ids]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(rows) + "\n")
    return {str(i): celeba_expected(i, mask_size) for i in ids}

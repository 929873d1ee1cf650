"""Flip test-time augmentation (TTA), shared by :class:`~fpliif.FaceParser` (torch and onnxruntime) and
``fpliif eval``.

The model sees the crop and its horizontal mirror. Mirroring the (square or not) model input maps crop
coordinate ``(x, y)`` to ``(-x, y)`` exactly: pixel centres are symmetric about 0 (column ``c`` of a
``W``-wide grid has ``x = (2c + 1) / W - 1`` and column ``W - 1 - c`` has ``-x``). So decoding the mirrored
latent at ``(-x, y)`` *is* "mirror the input, decode the H x W grid, flip the output back", pixel for pixel,
at any output size and at the off-grid points of the photo path. The mirrored view's left/right classes
are swapped back with the label set's own pairs (:meth:`~fpliif.labels.LabelSet.flip_lut`, the table the
training ``hflip`` augmentation uses), and the two softmax probabilities are averaged.

Works on numpy arrays (the parser's backends) and torch tensors (evaluation); torch is not imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..labels import LabelSet

TINY_PROB = float(np.finfo(np.float32).tiny)
"""Probabilities are clamped to this before the log (so the result stays finite for resampling)."""


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def flip_channels(label_set: LabelSet) -> np.ndarray:
    """(C,) int64 channel order of the mirrored view: class ``k`` <- channel ``flip_lut[k]`` (l_/r_ swapped)."""
    return label_set.flip_lut()[: label_set.num_classes].astype(np.int64)


def mirror_images(batch: Any) -> Any:
    """Horizontal mirror of an image batch (..., H, W): numpy array or torch tensor."""
    if _is_torch(batch):
        return batch.flip(-1)
    return np.ascontiguousarray(np.asarray(batch)[..., ::-1])


def flip_tta_logits(
    decode: Callable[[Any, Any], Any],
    latent: Any,
    mirrored_latent: Any,
    coords: Any,
    channels: Any,
    temperature: float = 1.0,
) -> Any:
    """Flip-TTA prediction at ``coords``, as logits: ``T * log(mean(p, p_mirror))``.

    Args:
        decode: ``decode(latent, coords (..., Q, 2)) -> logits (..., Q, C)`` (the model's implicit decoder).
        latent: the crop's latent (from the encoder).
        mirrored_latent: the latent of the horizontally mirrored crop (:func:`mirror_images`).
        coords: (..., Q, 2) query coordinates (x, y) in [-1, 1] of the crop; numpy or torch.
        channels: :func:`flip_channels` of the model's label set.
        temperature: the model's softmax temperature ``T``.

    ``p`` is the softmax (at ``T``) of the crop's logits at ``coords``; ``p_mirror`` that of the mirrored
    crop at ``(-x, y)`` with its left/right classes swapped. The result replaces the model's logits anywhere
    (argmax, bilinear resampling, ``softmax(. / T)``): its softmax at ``T`` is the averaged probabilities
    (up to probabilities below float32's ``tiny``, clamped).
    """
    t = float(temperature)
    if _is_torch(coords):
        import torch

        mirrored = coords * coords.new_tensor([-1.0, 1.0])
        p = torch.softmax(decode(latent, coords).float() / t, dim=-1)
        q = torch.softmax(decode(mirrored_latent, mirrored).float() / t, dim=-1)
        idx = torch.as_tensor(np.asarray(channels), dtype=torch.long, device=q.device)
        mean = (p + q.index_select(-1, idx)) * 0.5
        return mean.clamp_min(TINY_PROB).log() * t
    from .geometry import softmax

    coords = np.asarray(coords, np.float32)
    mirrored = coords * np.array([-1.0, 1.0], np.float32)
    p = softmax(np.asarray(decode(latent, coords)), t)
    q = softmax(np.asarray(decode(mirrored_latent, mirrored)), t)
    mean = (p + q[..., np.asarray(channels)]) * np.float32(0.5)
    return np.log(np.maximum(mean, np.float32(TINY_PROB))) * np.float32(t)

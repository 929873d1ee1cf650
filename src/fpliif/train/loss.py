"""FP-LIIF loss (paper Eq. 3): cross-entropy + lambda * cross-entropy on ground-truth edge pixels (+ Dice)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..labels import IGNORE_INDEX


def label_edges(mask: torch.Tensor, kernel: int = 3, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Binary edge map (B, H, W) of a label map (B, H, W).

    A pixel is an edge pixel when its ``kernel x kernel`` neighbourhood holds more than one label
    (max-pool != min-pool over valid labels): the binarised response of an edge-detection kernel on
    the label map (paper Fig. 7). Ignored pixels are never edges and do not create edges.
    """
    valid = mask != ignore_index
    m = mask.float().unsqueeze(1)
    hi = F.max_pool2d(torch.where(valid.unsqueeze(1), m, torch.full_like(m, -1.0)), kernel, 1, kernel // 2)
    lo = -F.max_pool2d(torch.where(valid.unsqueeze(1), -m, torch.full_like(m, -1e4)), kernel, 1, kernel // 2)
    return ((hi != lo).squeeze(1)) & valid


def fpliif_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    edge: torch.Tensor,
    edge_lambda: float,
    temperature: float = 0.5,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    dice_weight: float = 0.0,
    ce_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss on N points: logits (N, C), target (N,), edge (N,) bool. Returns (loss, parts).

    ``ce_weight`` x CE + ``edge_lambda`` x edge-CE (+ ``dice_weight`` x :func:`dice_loss` when > 0). Softmax
    uses temperature tau. The edge term is the cross-entropy averaged over edge points only (zero when a batch
    has none). FP-LIIF (paper Eq. 3): ``ce_weight`` 1, no Dice; SegFace: 0.5 CE + 0.5 Dice, no edge term.
    """
    scaled = logits.float() / temperature
    per_point = F.cross_entropy(scaled, target, weight=class_weights, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    if class_weights is not None:
        w = class_weights[target.clamp(max=class_weights.numel() - 1)] * valid
        ce = per_point.sum() / w.sum().clamp_min(1e-12)
    else:
        ce = per_point.sum() / valid.sum().clamp_min(1)
    edge = edge & valid
    n_edge = edge.sum()
    edge_ce = (per_point * edge).sum() / n_edge.clamp_min(1)
    loss = ce_weight * ce + edge_lambda * edge_ce  # x 1.0 is exact: FP-LIIF's loss is unchanged bit for bit
    parts = {
        "ce": float(ce.detach()),
        "edge_ce": float(edge_ce.detach()),
        "edge_frac": float(n_edge) / max(1, int(valid.sum())),
    }
    if dice_weight:
        dice = dice_loss(scaled, target, ignore_index)
        loss = loss + dice_weight * dice
        parts["dice"] = float(dice.detach())
    return loss, parts


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Soft Dice loss over N points (logits (N, C), target (N,)): 1 - Dice per class, averaged over the classes
    present in ``target`` (a class absent from the batch has no Dice to learn). Ignored points are left out."""
    valid = target != ignore_index
    probs = logits.float().softmax(-1)[valid]
    onehot = F.one_hot(target[valid].long(), logits.shape[-1]).to(probs.dtype)
    inter = (probs * onehot).sum(0)
    denom = probs.sum(0) + onehot.sum(0)
    present = onehot.sum(0) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return (1 - dice)[present].mean()

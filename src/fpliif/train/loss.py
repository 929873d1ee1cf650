"""FP-LIIF loss (paper Eq. 3): cross-entropy + lambda * cross-entropy on ground-truth edge pixels."""

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
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss on N points: logits (N, C), target (N,), edge (N,) bool. Returns (loss, parts).

    Softmax uses temperature tau. The edge term is the cross-entropy averaged over edge points only
    (zero when a batch has none).
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
    loss = ce + edge_lambda * edge_ce
    return loss, {
        "ce": float(ce.detach()),
        "edge_ce": float(edge_ce.detach()),
        "edge_frac": float(n_edge) / max(1, int(valid.sum())),
    }

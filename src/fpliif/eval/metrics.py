"""Dataset-level confusion matrix and the paper's metrics (per-class F1 / IoU, means, merged-class F1).

Metrics are *dataset-level*: true/false positives and false negatives are summed over every pixel of
every image first, and F1 / IoU are computed once from the sums (as the paper's baselines do), not
averaged per image.

Undefined classes (the absent-class rule)
-----------------------------------------
A class that occurs neither in the ground truth nor in the prediction (TP = FP = FN = 0) has an
undefined F1 and IoU (0/0). Its value is reported as ``None`` and the class is left out of the
means; :meth:`ConfusionMatrix.compute` lists such classes under ``"absent"``. A class that is
predicted but absent from the ground truth (TP = FN = 0, FP > 0) is *not* absent: its F1 is 0 and it
counts in the means, as does a class present in the ground truth but never predicted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..labels import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "f1_iou"]


def f1_iou(tp: float, fp: float, fn: float) -> tuple[float | None, float | None]:
    """F1 and IoU in percent from pixel counts; ``(None, None)`` when TP = FP = FN = 0 (undefined)."""
    denom = tp + fp + fn
    if denom == 0:
        return None, None
    return 200.0 * tp / (2 * tp + fp + fn), 100.0 * tp / denom


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


class ConfusionMatrix:
    """Streaming ``num_classes`` x ``num_classes`` pixel confusion matrix (int64).

    ``matrix[g, p]`` counts the pixels with ground truth ``g`` predicted as ``p`` (rows = ground
    truth, columns = prediction). Pixels whose target equals ``ignore_index`` are skipped. The
    matrix lives on ``device`` (keep it on the GPU when updating from GPU tensors: no per-batch
    host transfer beyond a validity check).

    Absent-class rule: a class with TP = FP = FN = 0 has undefined F1/IoU, reported as ``None`` and
    excluded from the means (see the module docstring).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: str | torch.device = "cpu") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class index (num_classes={num_classes})")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    # --------------------------------------------------------------------------------------------- counting
    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Add a prediction / ground-truth pair of integer label maps of any (equal) shape.

        Raises ValueError on a shape mismatch, a non-integer dtype, or a value outside
        ``[0, num_classes)`` (targets may also equal ``ignore_index``; predictions at ignored pixels
        are not checked).
        """
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex():
                raise ValueError(f"{name}: expected integer class labels, got dtype {t.dtype}")
        dev = self.matrix.device
        c = self.num_classes
        pred = pred.to(device=dev, dtype=torch.int64).reshape(-1)
        target = target.to(device=dev, dtype=torch.int64).reshape(-1)
        keep = target != self.ignore_index
        bad_t = keep & ((target < 0) | (target >= c))
        bad_p = keep & ((pred < 0) | (pred >= c))
        if bool((bad_t | bad_p).any()):
            if bool(bad_t.any()):
                vals = torch.unique(target[bad_t]).tolist()[:10]
                raise ValueError(
                    f"target: label values {vals} out of range for {c} classes "
                    f"(valid: 0..{c - 1}, or {self.ignore_index} = ignore)"
                )
            vals = torch.unique(pred[bad_p]).tolist()[:10]
            raise ValueError(f"pred: label values {vals} out of range for {c} classes (valid: 0..{c - 1})")
        # ignored pixels go to an extra bin that is dropped: no boolean-mask gather, no host sync
        idx = torch.where(keep, target * c + pred, torch.full_like(target, c * c))
        counts = torch.bincount(idx, minlength=c * c + 1)[: c * c]
        self.matrix += counts.view(c, c)
        return self

    def reset(self) -> ConfusionMatrix:
        self.matrix.zero_()
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts in place (e.g. matrices of two data shards); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise ValueError(f"merge: expected a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"merge: incompatible matrices ({self.num_classes} classes / ignore {self.ignore_index} vs "
                f"{other.num_classes} / {other.ignore_index})"
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all torch.distributed ranks (in place); a no-op when not initialised."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        t = self.matrix
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if t is not self.matrix:
            self.matrix.copy_(t.to(self.matrix.device))
        return self

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    # --------------------------------------------------------------------------------------------- metrics
    def compute(
        self, exclude: Iterable[int] = (0,), merged: Mapping[str, Iterable[int]] | None = None
    ) -> dict[str, Any]:
        """Metrics from the accumulated counts, all in percent (0-100).

        Returns a dict with:

        * ``f1``, ``iou``: per-class lists (index = class), ``None`` where undefined (absent class);
        * ``mean_f1``, ``mean_iou``: means over the classes not in ``exclude`` (background, as the
          paper) and not absent; ``None`` if no class qualifies;
        * ``pixel_acc``: correctly labelled / all non-ignored pixels, background included;
        * ``absent``: indices of classes with TP = FP = FN = 0 (undefined, left out of the means);
        * ``merged_f1``, ``merged_iou`` (only if ``merged`` is given): for each group name, F1 / IoU
          of the union of its member classes: a pixel is a true positive when both its ground truth
          and its prediction lie in the group (Helen's eyes / brows / mouth / overall, Table 3);
        * ``tp``, ``fp``, ``fn`` (per-class lists of counts) and ``pixels`` (counted pixels).
        """
        c = self.num_classes
        exclude = {int(i) for i in exclude}
        for i in exclude:
            if not 0 <= i < c:
                raise ValueError(f"exclude: class index {i} out of range for {c} classes")
        m = self.matrix.detach().to("cpu").numpy().astype(np.int64)
        tp = np.diag(m)
        fp = m.sum(axis=0) - tp
        fn = m.sum(axis=1) - tp
        f1: list[float | None] = []
        iou: list[float | None] = []
        absent: list[int] = []
        for k in range(c):
            f, j = f1_iou(int(tp[k]), int(fp[k]), int(fn[k]))
            f1.append(f)
            iou.append(j)
            if f is None:
                absent.append(k)
        keep = [k for k in range(c) if k not in exclude]
        total = int(m.sum())
        out: dict[str, Any] = {
            "f1": f1,
            "iou": iou,
            "mean_f1": _mean(f1[k] for k in keep),
            "mean_iou": _mean(iou[k] for k in keep),
            "pixel_acc": 100.0 * int(tp.sum()) / total if total else None,
            "absent": absent,
            "tp": tp.tolist(),
            "fp": fp.tolist(),
            "fn": fn.tolist(),
            "pixels": total,
        }
        if merged is not None:
            out["merged_f1"], out["merged_iou"] = {}, {}
            for name, members in merged.items():
                g = sorted({int(i) for i in members})
                if not g or any(not 0 <= i < c for i in g):
                    raise ValueError(f"merged[{name!r}]: class indices {g} empty or out of range for {c} classes")
                mtp = int(m[np.ix_(g, g)].sum())
                in_gt = int(m[g, :].sum())
                in_pred = int(m[:, g].sum())
                out["merged_f1"][name], out["merged_iou"][name] = f1_iou(mtp, in_pred - mtp, in_gt - mtp)
        return out

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total})"

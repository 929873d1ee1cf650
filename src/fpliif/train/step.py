"""One training step for every registered model, shared by the trainer and ``fpliif bench --train``.

How a model is trained is chosen by the model itself (:func:`objective_of`), in this order:

* ``"model"``: it defines ``training_loss(image, mask) -> (loss, parts)`` (image (B, 3, H, W) float in [0, 1]
  on the training device, mask (B, H, W) int64 with 255 = ignore, same device; ``loss`` a scalar tensor,
  ``parts`` a dict of floats for logging). Its own objective replaces the trainer's loss settings
  (``train.edge_lambda``, ``ce_weight``, ``dice_weight`` are not used; ``class_weights`` and balanced
  query sampling are refused).
* ``"queries"``: it has ``encode``/``decode`` (an implicit decoder, FP-LIIF): logits at sampled query points
  (``train.sample_queries`` per image, uniform or ``query_sampling: balanced``), the FP-LIIF loss on them.
* ``"dense"``: any other :class:`~fpliif.models.SegmentationModel`: logits at the mask's size,
  ``model(image, size=mask.shape[-2:])``, and the same loss on every pixel.

The loss of the last two is :func:`~fpliif.train.loss.fpliif_loss`: ``ce_weight`` x CE + ``edge_lambda`` x
edge-CE + ``dice_weight`` x Dice (SegFace's 0.5 CE + 0.5 Dice: ``ce_weight: 0.5, edge_lambda: 0,
dice_weight: 0.5``). The forward runs through one :class:`TrainNet` call, so DistributedDataParallel sees a
single forward whatever the objective; AMP, gradient clipping, the grad scaler and the EMA are the same for all.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adaptive import is_implicit
from ..labels import IGNORE_INDEX
from ..models.base import pixel_centers
from .loss import fpliif_loss, label_edges

OBJECTIVES = ("model", "queries", "dense")


def objective_of(model: nn.Module) -> str:
    """How ``model`` is trained: ``"model"`` (its own ``training_loss``), ``"queries"`` (``encode``/``decode``:
    sampled query points) or ``"dense"`` (logits at the mask's size)."""
    if callable(getattr(model, "training_loss", None)):
        return "model"
    return "queries" if is_implicit(model) else "dense"


def param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the model's own ``param_groups(lr)`` where it defines one (a list of
    ``{"params": [...], "lr": ..., ...}``: e.g. STN-iCNN trains only its stage's networks, some at a lower rate;
    the first group should run at ``lr``, the rate the trainer logs), else one group of every parameter.

    Parameters the groups leave out are **frozen** (``requires_grad_(False)``): neither the optimizer nor
    DistributedDataParallel expects a gradient for them. ValueError naming ``param_groups`` for a group without
    parameters, a parameter in two groups, or one that is not the model's.
    """
    hook = getattr(model, "param_groups", None)
    if not callable(hook):
        return [{"params": list(model.parameters()), "lr": lr}]
    where = f"{type(model).__name__}.param_groups"
    groups = [dict(g) for g in hook(lr)]
    own = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    for i, g in enumerate(groups):
        params = list(g.get("params") or [])
        if not params:
            raise ValueError(f"{where}: group {i} has no parameters")
        for p in params:
            if id(p) in seen or id(p) not in own:
                raise ValueError(
                    f"{where}: group {i} holds a parameter {'twice' if id(p) in seen else 'of another module'}"
                )
            seen.add(id(p))
        g["params"] = params
    if not groups:
        raise ValueError(f"{where}: returned no groups")
    for p in model.parameters():
        if id(p) not in seen:
            p.requires_grad_(False)
    return groups


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam over :func:`param_groups` (what ``fpliif train`` and ``fpliif bench --train`` step)."""
    return torch.optim.Adam(param_groups(model, lr), lr=lr, weight_decay=weight_decay)


def sample_queries(
    mask: torch.Tensor,
    edges: torch.Tensor,
    n: int | None,
    gen: torch.Generator,
    density: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (B, Q, 2), labels (B, Q) and edge flags (B, Q) of random pixels per image.

    ``n=None`` takes the full grid (every pixel, in row-major order). ``density`` (B, H, W), positive: draw
    the ``n`` distinct pixels with probability proportional to it (see :func:`balanced_density`) instead of
    uniformly.
    """
    b, h, w = mask.shape
    centers = pixel_centers(h, w)
    if n is None or n >= h * w:
        idx = torch.arange(h * w).expand(b, -1)
    elif density is not None:
        idx = torch.multinomial(density.reshape(b, -1).double(), n, replacement=False, generator=gen)
    else:
        idx = torch.stack([torch.randperm(h * w, generator=gen)[:n] for _ in range(b)])
    coords = centers[idx]
    labels = torch.gather(mask.reshape(b, -1), 1, idx)
    flags = torch.gather(edges.reshape(b, -1), 1, idx)
    return coords, labels, flags


def balanced_density(
    mask: torch.Tensor, edges: torch.Tensor, class_weights: torch.Tensor, edge_boost: float
) -> torch.Tensor:
    """Query-sampling density (B, H, W): a pixel of class c weighs ``class_weights[c]`` (inverse square-root
    class frequency), times ``1 + edge_boost`` on label edges; ignored pixels weigh the smallest class weight
    (they are drawn rarely, and carry no loss)."""
    floor = class_weights.min()
    padded = torch.cat([class_weights, floor.reshape(1)])
    idx = torch.where(mask == IGNORE_INDEX, class_weights.numel(), mask.clamp(max=class_weights.numel() - 1))
    return padded[idx] * (1.0 + edge_boost * edges.float())


class TrainNet(nn.Module):
    """A model's training forward as one module call (what DDP wraps). ``forward(image, target)``: ``target`` is
    the query coordinates (B, Q, 2) for ``"queries"``, the output size (H, W) for ``"dense"``, the mask for
    ``"model"`` (then it returns the model's ``(loss, parts)``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective_of(model)

    def forward(self, image: torch.Tensor, target: Any) -> Any:
        if self.objective == "queries":
            return self.model.decode(self.model.encode(image), target)
        if self.objective == "dense":
            return self.model(image, size=target)
        return self.model.training_loss(image, target)


@dataclass(frozen=True)
class StepSettings:
    """A step's loss and sampling settings: the ``train.*`` keys of the same names."""

    edge_lambda: float = 10.0
    edge_kernel: int = 3
    ce_weight: float = 1.0
    dice_weight: float = 0.0
    sample_queries: int | None = 4096
    edge_boost: float = 0.0
    grad_clip: float | None = None
    channels_last: bool = False

    @classmethod
    def from_train_config(cls, t: dict[str, Any]) -> StepSettings:
        return cls(
            edge_lambda=float(t["edge_lambda"]),
            edge_kernel=int(t["edge_kernel"]),
            ce_weight=float(t["ce_weight"]),
            dice_weight=float(t["dice_weight"]),
            sample_queries=t["sample_queries"],
            edge_boost=float(t["query_sampling"].get("edge_boost", 0.0)),
            grad_clip=t["grad_clip"],
            channels_last=bool(t["channels_last"]),
        )


class TrainStep:
    """``step(batch) -> loss``: forward (under autocast), loss, backward, optimizer step, EMA update.

    ``batch``: ``{"image": (B, 3, H, W), "mask": (B, H, W) int64}`` (the mask on the CPU; edges and queries are
    computed there). ``net``: the :class:`TrainNet` of ``model``, possibly DDP-wrapped (default: a new one).
    ``class_weights`` weigh the cross-entropy; ``sampling_weights`` make query sampling balanced (see
    :func:`balanced_density`); ``query_gen`` draws the queries.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: StepSettings,
        device: torch.device,
        *,
        amp_dtype: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
        net: nn.Module | None = None,
        class_weights: torch.Tensor | None = None,
        sampling_weights: torch.Tensor | None = None,
        ema: Any = None,
        query_gen: torch.Generator | None = None,
    ):
        self.model, self.optimizer, self.settings, self.device = model, optimizer, settings, device
        self.objective = objective_of(model)
        if sampling_weights is not None and self.objective != "queries":
            raise ValueError(
                f"train.query_sampling: balanced sampling applies to models trained on sampled queries "
                f"(encode/decode); this model is trained {self.objective}"
            )
        if class_weights is not None and self.objective == "model":
            raise ValueError("train.class_weights: this model defines its own training_loss; set it to null")
        self.amp_dtype = amp_dtype
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
        self.net = net if net is not None else TrainNet(model)
        self.class_weights, self.sampling_weights, self.ema = class_weights, sampling_weights, ema
        self.query_gen = query_gen if query_gen is not None else torch.Generator()

    def __call__(self, batch: dict[str, Any]) -> float:
        image = batch["image"].to(self.device, non_blocking=True)
        if self.settings.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        loss = self._loss(image, batch["mask"])
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss; lower train.lr or disable AMP")
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), float(self.settings.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _loss(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.objective == "model":
            target = mask.to(self.device, torch.int64, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, _ = self.net(image, target)
            return loss
        edges = label_edges(mask, self.settings.edge_kernel)
        if self.objective == "queries":
            labels, flags, target = self._queries(mask, edges)
        else:
            labels, flags = (x.to(self.device, non_blocking=True) for x in (mask, edges))
            target = tuple(mask.shape[-2:])
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.net(image, target)
        if self.objective == "dense":
            logits = logits.permute(0, 2, 3, 1)  # (B, H, W, C): one row per pixel, as the labels
        return self._points_loss(logits, labels, flags)

    def _queries(self, mask: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Labels, edge flags and coordinates of the sampled query points, on the device."""
        density = None
        if self.sampling_weights is not None:
            density = balanced_density(mask, edges, self.sampling_weights, self.settings.edge_boost)
        coords, labels, flags = sample_queries(mask, edges, self.settings.sample_queries, self.query_gen, density)
        coords, labels, flags = (x.to(self.device, non_blocking=True) for x in (coords, labels, flags))
        return labels, flags, coords

    def _points_loss(self, logits: torch.Tensor, labels: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        s = self.settings
        loss, _ = fpliif_loss(
            logits.reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            flags.reshape(-1),
            s.edge_lambda,
            self.model.temperature,
            self.class_weights,
            dice_weight=s.dice_weight,
            ce_weight=s.ce_weight,
        )
        return loss


__all__ = [
    "OBJECTIVES",
    "StepSettings",
    "TrainNet",
    "TrainStep",
    "balanced_density",
    "build_optimizer",
    "objective_of",
    "param_groups",
    "sample_queries",
]

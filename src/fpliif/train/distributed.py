"""Distributed training helpers: this process's rank and device under torchrun, and the DDP options a model asks for."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class Dist:
    """Rank/world of this process; initialises torch.distributed when launched by torchrun."""

    def __init__(self, device_pref: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
        if device_pref == "cuda" and not torch.cuda.is_available():
            raise ValueError("train.device: cuda requested but CUDA is not available")
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def ddp_options(model: nn.Module) -> dict[str, Any]:
    """DistributedDataParallel options the model asks for: ``find_unused_parameters`` when its training forward
    may leave some trained parameter without a gradient (the model's ``find_unused_parameters`` attribute).
    Parameters outside its optimizer groups need none: :func:`~fpliif.train.step.param_groups` froze them."""
    return {"find_unused_parameters": bool(getattr(model, "find_unused_parameters", False))}


__all__ = ["Dist", "ddp_options"]

"""The training loop: AMP, DDP (torchrun), exact resume, atomic checkpoints, for every registered model.

Each step is :class:`fpliif.train.step.TrainStep` (the one ``fpliif bench --train`` times). The model picks how it
is trained (:func:`~fpliif.train.step.objective_of`): FP-LIIF (``encode``/``decode``) on sampled query points;
any other model densely, ``model(image, size=mask.shape[-2:])``, with the same loss on every pixel; and a model
that defines ``training_loss(self, image: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]`` (mask
(B, H, W) int64, 255 = ignore) with that objective instead of the trainer's loss (docs/training.md).

Beside it: :mod:`.distributed` (rank, device, DDP options), :mod:`.state` (RNG and EMA state a resume restores),
:mod:`.provenance` (the code version recorded in the weights).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..labels import IGNORE_INDEX
from ..models import make as make_model
from ..models.checkpoint import load_state, save_state
from ..models.checkpoint import save as save_weights
from ..precision import AMP_DTYPES, native_bf16, resolve_amp
from .config import RESUMABLE, dump_config, resume_changes
from .distributed import Dist, ddp_options
from .preflight import Checked, check_run
from .provenance import code_version
from .state import CHECKPOINT_VERSION, WeightEMA, rng_state, seed_everything, set_rng_state
from .step import StepSettings, TrainNet, TrainStep, build_optimizer

log = logging.getLogger("fpliif.train")


# ------------------------------------------------------------------------------------------- helpers
def class_weight_vector(dataset: Any, num_classes: int, max_images: int = 400) -> torch.Tensor:
    """Inverse square-root class frequency over (up to ``max_images``) training masks, mean-normalised."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    step = max(1, len(dataset) // max_images)
    for i in range(0, len(dataset), step):
        m = dataset.load(i)["mask"] if hasattr(dataset, "load") else dataset[i]["mask"]
        m = torch.as_tensor(m).flatten()
        m = m[m != IGNORE_INDEX]
        counts += torch.bincount(m.long(), minlength=num_classes)[:num_classes].double()
    freq = counts / counts.sum()
    w = 1.0 / torch.sqrt(freq.clamp_min(1e-6))
    w = w / w[counts > 0].mean()
    return w.clamp(max=10.0).float()


# ------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs one training config to completion (or resumes it)."""

    def __init__(self, cfg: dict[str, Any], resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.t = cfg["train"]
        self.out = Path(cfg["out"])
        self.progress = progress
        self.dist = Dist(self.t["device"])
        if self.t["threads"]:
            torch.set_num_threads(int(self.t["threads"]))
        self.device = self.dist.device
        checked = check_run(cfg, resume=resume, world=self.dist.world)  # before anything slow or written
        resuming = checked.resuming
        seed_everything(self.t["seed"])
        self.model = make_model(cfg["model"]).to(self.device)
        if resume and not resuming and self.dist.main:
            log.warning("--resume: %s holds no run (no last.pt); starting a new one", self.out)
        if self.t["init_weights"] and not resuming:  # matching tensors; other classes: a fresh head (fine-tuning)
            from .warmstart import init_weights

            started = init_weights(self.model, self.t["init_weights"])
            if self.dist.main:
                log.info("%s", started.summary())
        if self.t["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._build_data(checked)
        # before DDP wraps the model: parameters outside the model's param groups are frozen here
        self.optimizer = build_optimizer(self.model, self.t["lr"], self.t["weight_decay"])
        net: nn.Module = TrainNet(self.model)
        if self.dist.world > 1:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None, **ddp_options(self.model)
            )
        self.net = net
        sched = self.t["schedule"]
        milestones = sched.get("milestones", []) if sched["type"] == "multistep" else []
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=sched.get("gamma", 0.1))
        try:
            self.amp = resolve_amp(self.t["amp"], self.device)
        except ValueError as e:
            raise ValueError(f"train.{e}") from None
        self.amp_dtype = AMP_DTYPES[self.amp]
        if self.dist.main:
            log.info("precision: amp %s resolved to %s on %s", self.t["amp"], self.amp, self.device)
            if self.amp == "bf16" and not native_bf16(self.device):
                log.warning(
                    "train.amp=bf16 on %s, which has no native bf16 (AMX/AVX512-BF16): emulated, many times "
                    "slower than fp32; train.amp=auto picks fp32 here",
                    self.device,
                )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.class_weights = None
        self.sampling_weights = None
        balanced = self.t["query_sampling"]["type"] == "balanced"
        if self.t["class_weights"] or balanced:
            weights = class_weight_vector(self.train_set, self.model.num_classes)
            self.class_weights = weights.to(self.device) if self.t["class_weights"] else None
            self.sampling_weights = weights if balanced else None
        self.ema = WeightEMA(self.model, float(self.t["ema"])) if self.t["ema"] else None
        self.epoch = 0
        self.best_f1 = -1.0
        self.git_commit = code_version()
        self.query_gen = torch.Generator()
        self.step = TrainStep(
            self.model,
            self.optimizer,
            StepSettings.from_train_config(self.t),
            self.device,
            amp_dtype=self.amp_dtype,
            scaler=self.scaler,
            net=self.net,
            class_weights=self.class_weights,
            sampling_weights=self.sampling_weights,
            ema=self.ema,
            query_gen=self.query_gen,
        )
        if resuming:
            self._load_checkpoint(self.out / "last.pt")

    # ----------------------------------------------------------------------------------- setup
    def _build_data(self, checked: Checked) -> None:
        """The datasets :func:`~.preflight.check_run` listed, with their transforms; the validation subset and
        preloading as configured."""
        from .. import data as fdata

        d = self.cfg["data"]
        self.train_set = checked.train_set
        self.train_set.transform = fdata.build_train_transform(
            size=d["size"], augment=d["augment"], label_set=self.model.label_set
        )
        self.val_set = checked.val_set
        if self.val_set is not None:
            self.val_set.transform = fdata.build_eval_transform(size=d["size"], mask_sizes=(d["size"],))
            if self.t["max_val_images"] and self.t["max_val_images"] < len(self.val_set):
                # a fixed subset spread evenly over the split (several roots: every root is represented)
                n, k = len(self.val_set), int(self.t["max_val_images"])
                self.val_set = Subset(self.val_set, [i * n // k for i in range(k)])
        if d["preload"]:
            t0 = time.perf_counter()
            for ds in (self.train_set, self.val_set.dataset if isinstance(self.val_set, Subset) else self.val_set):
                if ds is not None:
                    ds.preload(d["size"], workers=min(2, os.cpu_count() or 1), progress=self.dist.main)
            if self.dist.main:
                log.info("preloaded the data at %d² in %.0f s", d["size"], time.perf_counter() - t0)

    def _train_loader(self, epoch: int) -> DataLoader:
        """A fresh loader per epoch, seeded from (seed, epoch): the epoch's order and augmentations are a
        function of the epoch alone, which makes resume exact."""
        from ..data import make_loader

        world, rank = self.dist.world, self.dist.rank
        return make_loader(
            self.train_set,
            self.t["batch_size"],
            shuffle=True,
            num_workers=int(self.cfg["data"]["workers"]),
            seed=self.t["seed"],
            epoch=epoch,
            distributed=world > 1,
            num_replicas=world,
            rank=rank,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
        )

    # ----------------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg,
            "spec": self.model.spec,
            "epoch": self.epoch,
            "best_f1": self.best_f1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "query_gen": self.query_gen.get_state(),
            "ema": None if self.ema is None else {"model": self.ema.model.state_dict(), "updates": self.ema.updates},
        }

    def _load_checkpoint(self, path: Path) -> None:
        state = load_state(path)
        if state.get("spec") != self.model.spec:
            raise ValueError(
                f"{path}: checkpoint was written for model {state.get('spec')}, config asks for {self.model.spec}"
            )
        changed = resume_changes(state.get("config") or {}, self.cfg)
        if changed:
            raise ValueError(
                f"--resume: {path} goes on with the settings it was started with, but the config changes "
                f"{'; '.join(changed)}. A resumed run may change only {', '.join(RESUMABLE)}; for other settings "
                f"start a new run from its weights (train.init_weights={path.with_suffix('.safetensors')})"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.query_gen.set_state(state["query_gen"])
        if self.ema is not None:
            if not state.get("ema"):
                raise ValueError(f"{path}: checkpoint has no EMA weights but the config sets train.ema")
            self.ema.model.load_state_dict(state["ema"]["model"])
            self.ema.updates = int(state["ema"]["updates"])
        self.epoch = int(state["epoch"])
        self.best_f1 = float(state["best_f1"])
        if self.dist.main:
            log.info("resumed %s at epoch %d (best val mean F1 %.2f)", path, self.epoch, self.best_f1)

    def _save_checkpoints(self, val_f1: float | None) -> None:
        if not self.dist.main:
            return
        state = self._state()
        save_state(state, self.out / "last.pt")
        meta = {
            "epoch": str(self.epoch),
            "config": json.dumps(self.cfg),
            "input_size": str(self.cfg["data"]["size"]),
            "git_commit": self.git_commit,
            "amp": self.amp,
            "weights": "ema" if self.ema is not None else "raw",
        }
        save_weights(self.eval_model, self.out / "last.safetensors", metadata=meta)
        if val_f1 is not None and val_f1 >= self.best_f1:
            meta["val_mean_f1"] = f"{val_f1:.4f}"
            save_weights(self.eval_model, self.out / "best.safetensors", metadata=meta)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA when ``train.ema`` is set, else the model."""
        return self.ema.model if self.ema is not None else self.model

    # ----------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        writer = None
        if self.epoch >= self.t["epochs"]:
            return {"epoch": self.epoch, "finished_before": True}
        if self.dist.main:  # the run directory is made here, once every check has passed
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_config(self.cfg))
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out / "tb"))
            except ImportError:  # tensorboard is a dependency, but keep training without it
                log.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
        last: dict[str, Any] = {}
        try:
            while self.epoch < self.t["epochs"]:
                train_stats = self._train_epoch(self.epoch)
                epoch_lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at
                self.epoch += 1
                self.scheduler.step()
                val, raw_val = None, None
                if self.val_set is not None and (
                    self.epoch % self.t["val_every"] == 0 or self.epoch == self.t["epochs"]
                ):
                    val = self._validate(self.eval_model)
                    if self.ema is not None:  # the raw weights too: the EMA's gain at no extra training
                        raw_val = self._validate(self.model)
                val_f1 = val["mean_f1"] if val else None
                if val_f1 is not None and val_f1 >= self.best_f1:
                    self.best_f1 = val_f1
                self._save_checkpoints(val_f1)
                last = {"epoch": self.epoch, **train_stats, "lr": epoch_lr}
                if val:
                    last.update(
                        {
                            "val_mean_f1": val["mean_f1"],
                            "val_mean_iou": val["mean_iou"],
                            "val_pixel_acc": val["pixel_acc"],
                            "val_per_class_f1": val["per_class_f1"],
                        }
                    )
                if raw_val:
                    last.update(
                        {"val_raw_mean_f1": raw_val["mean_f1"], "val_raw_per_class_f1": raw_val["per_class_f1"]}
                    )
                last["best_val_mean_f1"] = self.best_f1
                if self.dist.main:
                    self._log(last, writer)
                self.dist.barrier()
        finally:
            if writer is not None:
                writer.close()
        return last

    def _log(self, record: dict[str, Any], writer: Any) -> None:
        record = {"time": time.time(), **record}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "time"):
                    writer.add_scalar(k, v, record["epoch"])
            writer.flush()
        msg = f"epoch {record['epoch']}: loss {record['loss']:.4f} ({record['img_per_s']:.2f} img/s)"
        if "val_mean_f1" in record:
            msg += f", val mean F1 {record['val_mean_f1']:.2f} (best {record['best_val_mean_f1']:.2f})"
        log.info(msg)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm import tqdm

        self.net.train()
        self.query_gen.manual_seed(self.t["seed"] * 7919 + epoch * 104729 + self.dist.rank)
        loader = self._train_loader(epoch)
        steps = len(loader)
        if self.t["max_steps_per_epoch"]:
            steps = min(steps, int(self.t["max_steps_per_epoch"]))
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{self.t['epochs']}",
            disable=not (self.progress and self.dist.main),
            dynamic_ncols=True,
            leave=True,
        )
        total_loss, seen, t0 = 0.0, 0, time.perf_counter()
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            with self._warmup(epoch * steps + step):
                loss = self._train_step(batch)
            total_loss += loss * batch["image"].shape[0]
            seen += batch["image"].shape[0]
            rate = seen * self.dist.world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", img_s=f"{rate:.2f}")
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - t0
        return {
            "loss": self.dist.mean(total_loss / max(1, seen)),
            "img_per_s": seen * self.dist.world / elapsed,
            "epoch_seconds": elapsed,
        }

    @contextlib.contextmanager
    def _warmup(self, step: int) -> Iterator[None]:
        """Within it, the optimizer's rates are ``(step + 1) / warmup`` of their scheduled values while ``step`` (of
        the whole run, from 0) is inside ``train.schedule.warmup``; restored after, so the schedule and a resumed
        run see the scheduled rates (the factor depends on the step alone: exact resume holds)."""
        n = int(self.t["schedule"].get("warmup", 0))
        if step >= n:
            yield
            return
        scheduled = [g["lr"] for g in self.optimizer.param_groups]
        for g, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
            g["lr"] = lr * (step + 1) / n
        try:
            yield
        finally:
            for g, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
                g["lr"] = lr

    def _train_step(self, batch: dict[str, Any]) -> float:
        if os.environ.get("FPLIIF_TEST_SLEEP_PER_STEP"):  # test hook: slow steps so a test can kill mid-epoch
            time.sleep(float(os.environ["FPLIIF_TEST_SLEEP_PER_STEP"]))
        try:
            return self.step(batch)
        except FloatingPointError as e:
            raise FloatingPointError(f"epoch {self.epoch + 1}: {e}") from None

    @torch.no_grad()
    def _validate(self, model: nn.Module) -> dict[str, Any]:
        """Metrics of ``model`` on the validation set: each process scores every ``world``-th image from its
        rank on (no padding, unlike a DistributedSampler, so every image counts once), in order."""
        from ..data import make_loader
        from ..eval.evaluate import evaluate

        assert self.val_set is not None
        shard = Subset(self.val_set, range(self.dist.rank, len(self.val_set), self.dist.world))
        loader = make_loader(
            shard,
            self.t["val_batch_size"],
            shuffle=False,
            num_workers=int(self.cfg["data"]["workers"]),
            seed=self.t["seed"],
            epoch=self.epoch,
            pin_memory=self.device.type == "cuda",
        )
        size = self.cfg["data"]["size"]
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            result = evaluate(
                model, loader, self.model.label_set, sizes=(size,), lowres=(), device=self.device, progress=False
            )
        self.model.train()
        return result


def train(cfg: dict[str, Any], resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the last epoch's record (a resumed run that had
    already reached ``train.epochs``: ``{"epoch": its epochs, "finished_before": True}``)."""
    trainer = Trainer(cfg, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        trainer.dist.close()


__all__ = ["Trainer", "class_weight_vector", "train"]

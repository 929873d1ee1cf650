"""Training models other than FP-LIIF: the dense path (SegFace: logits at the mask size, CE + Dice on every
pixel), the model-defined ``training_loss`` hook, exact resume, and ``fpliif bench --train`` / ``--models`` over
any registered model. Tiny models on the generated 32x32 folder dataset of tests/test_train.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from fpliif.bench.training import train_throughput
from fpliif.cli import main
from fpliif.labels import IGNORE_INDEX
from fpliif.models import SegmentationModel, registry
from fpliif.models.checkpoint import load, save
from fpliif.train import fpliif_loss, label_edges, load_config
from fpliif.train.distributed import ddp_options
from fpliif.train.step import StepSettings, TrainStep, build_optimizer, objective_of, param_groups
from fpliif.train.trainer import Trainer
from test_train import (  # noqa: F401 - data_root is a fixture
    SUBPROCESS_TIMEOUT,
    data_root,
    free_port,
    metrics,
    sub_env,
    train_cmd,
    write_config,
)

SEGFACE_TINY = "{width_mult: 0.1, dim: 16, depth: 1, heads: 2, mlp_dim: 16}"
SEGFACE_LOSS = ["train.ce_weight=0.5", "train.dice_weight=0.5", "train.edge_lambda=0"]
STN_TINY = "{coarse_size: 16, patch_size: 9, window: 0.3, widths: [4, 4, 4, 4], interlinks: 1, stage: %s}"
STN_MODULES = {
    "coarse": {"coarse"},
    "parts": {"localizer", "part_nets"},
    "end2end": {"coarse", "localizer", "part_nets"},
}


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def segface_overrides() -> list[str]:
    return ["model.name=segface_mnv3", f"model.args={SEGFACE_TINY}", *SEGFACE_LOSS]


def stn_overrides(stage: str) -> list[str]:
    return ["model.name=stn_icnn", f"model.args={STN_TINY % stage}"]


def trainer(tmp_path, root, out: str, *overrides: str, epochs: int = 1) -> Trainer:
    cfg = load_config(
        write_config(tmp_path / "c.yaml", root, epochs=epochs, amp="none"), [*overrides, f"out={tmp_path / out}"]
    )
    return Trainer(cfg, progress=False)


class ObjectiveModel(SegmentationModel):
    """A 1x1-conv parser with its own ``training_loss`` (records what the trainer passes it)."""

    def __init__(self, classes: str = "celebamask-hq"):
        super().__init__()
        from fpliif.labels import resolve_label_set

        self.spec = {"name": "objective-test-model", "args": {"classes": classes}}
        self.label_set = resolve_label_set(classes)
        self.conv = torch.nn.Conv2d(3, self.num_classes, 1)
        self.calls: list[tuple[torch.dtype, tuple[int, ...], bool]] = []

    def forward(self, image: torch.Tensor, size=None) -> torch.Tensor:
        out = self.conv(image)
        return out if size is None else F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    def training_loss(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls.append((mask.dtype, tuple(mask.shape), bool((mask == IGNORE_INDEX).any())))
        loss = F.cross_entropy(self(image), mask, ignore_index=IGNORE_INDEX)
        return loss, {"ce": float(loss.detach())}


@pytest.fixture
def objective_model(monkeypatch):
    monkeypatch.setitem(registry._MODELS, "objective-test-model", ObjectiveModel)
    return ObjectiveModel


# ---------------------------------------------------------------------------------------------- the step
def test_objective_is_chosen_by_the_model(tiny_spec, objective_model):
    assert objective_of(registry.make(tiny_spec)) == "queries"
    assert objective_of(registry.make({"name": "segface_mnv3", "args": {"width_mult": 0.1, "dim": 16}})) == "dense"
    assert objective_of(objective_model()) == "model"


def test_dense_step_loss_is_the_project_loss_on_every_pixel():
    torch.manual_seed(0)
    model = registry.make({"name": "segface_mnv3", "args": {"width_mult": 0.1, "dim": 16, "depth": 1, "heads": 2}})
    image = torch.rand(2, 3, 24, 32)
    mask = torch.randint(0, 19, (2, 24, 32))
    mask[0, :3] = IGNORE_INDEX
    settings = StepSettings(edge_lambda=2.0, ce_weight=0.5, dice_weight=0.5)
    logits = model(image, size=(24, 32)).permute(0, 2, 3, 1).reshape(-1, 19)  # train mode, as the step runs it
    edges = label_edges(mask, 3).reshape(-1)
    expected, parts = fpliif_loss(logits, mask.reshape(-1), edges, 2.0, 1.0, dice_weight=0.5, ce_weight=0.5)
    assert parts["dice"] > 0 and parts["edge_ce"] > 0
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), settings, torch.device("cpu"))
    got = step({"image": image, "mask": mask})
    assert got == pytest.approx(float(expected.detach()), rel=1e-6)
    assert all(p.grad is not None for p in model.parameters())


def test_model_defined_objective_replaces_the_loss(objective_model):
    model = objective_model()
    w0 = model.conv.weight.detach().clone()
    mask = torch.randint(0, 19, (2, 8, 8))
    mask[:, 0] = IGNORE_INDEX
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), StepSettings(), torch.device("cpu"))
    loss = step({"image": torch.rand(2, 3, 8, 8), "mask": mask})
    assert model.calls == [(torch.int64, (2, 8, 8), True)]  # the mask as given, 255 = ignore kept
    assert math.isfinite(loss) and not torch.equal(model.conv.weight, w0)  # its loss was back-propagated


def test_settings_that_do_not_apply_are_refused(objective_model):
    seg = registry.make({"name": "segface_mnv3", "args": {"width_mult": 0.1, "dim": 16}})
    opt = torch.optim.SGD(seg.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="query_sampling"):
        TrainStep(seg, opt, StepSettings(), torch.device("cpu"), sampling_weights=torch.ones(19))
    with pytest.raises(ValueError, match="class_weights"):
        TrainStep(objective_model(), opt, StepSettings(), torch.device("cpu"), class_weights=torch.ones(19))
    with pytest.raises(ValueError, match="queries"):
        train_throughput({"name": "segface_mnv3", "args": {"width_mult": 0.1, "dim": 16}}, size=16, queries=64)


# ---------------------------------------------------------------------------------------------- the trainer
def test_segface_trains_one_epoch_end_to_end(tmp_path, data_root, capsys, restore_threads):  # noqa: F811
    cfg = write_config(tmp_path / "c.yaml", data_root, epochs=1, amp="none", ema=0.9)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress", *segface_overrides()]) == 0
    assert "done: epoch 1" in capsys.readouterr().out
    (row,) = metrics(out)
    assert math.isfinite(row["loss"]) and 0 <= row["val_mean_f1"] <= 100 and len(row["val_per_class_f1"]) > 0
    model = load(out / "best.safetensors")
    assert model.spec["name"] == "segface_mnv3" and model.spec["args"]["dim"] == 16
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 19, 32, 32)


def test_model_defined_objective_in_the_trainer(tmp_path, data_root, objective_model, restore_threads):  # noqa: F811
    t = trainer(tmp_path, data_root, "run", "model.name=objective-test-model", "train.max_steps_per_epoch=2")
    record = t.fit()
    assert len(t.model.calls) == 2 and all(c[:2] == (torch.int64, (2, 32, 32)) for c in t.model.calls)
    assert math.isfinite(record["loss"]) and "val_mean_f1" in record


def test_dense_resume_is_exact(tmp_path, data_root, restore_threads):  # noqa: F811
    """2 epochs straight == 1 epoch, then a new process-like Trainer resuming to 2, bit for bit (weights,
    optimizer, EMA), with augmentation and EMA on."""
    extra = [*segface_overrides(), "train.ema=0.9", "data.augment={rotation: 10, hflip: true}", "data.val_split=null"]
    straight = trainer(tmp_path, data_root, "a", *extra, epochs=2)
    straight.fit()
    trainer(tmp_path, data_root, "b", *extra, epochs=1).fit()
    cfg = load_config(
        write_config(tmp_path / "c.yaml", data_root, epochs=2, amp="none"), [*extra, f"out={tmp_path / 'b'}"]
    )
    resumed = Trainer(cfg, resume=True, progress=False)
    assert resumed.epoch == 1
    resumed.fit()
    wa, wb = load_file(tmp_path / "a" / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(v, sb[i][n]) for i in sa for n, v in sa[i].items())
    assert metrics(tmp_path / "a")[1]["loss"] == metrics(tmp_path / "b")[1]["loss"]


# ---------------------------------------------------------------------------------------------- param groups, DDP
@pytest.mark.parametrize("stage", ["coarse", "end2end"])
def test_trainer_steps_the_models_param_groups_and_freezes_the_rest(tmp_path, data_root, stage, restore_threads):  # noqa: F811
    t = trainer(tmp_path, data_root, "run", *stn_overrides(stage), "train.lr=0.01", "train.max_steps_per_epoch=1")
    lrs = [g["lr"] for g in t.optimizer.param_groups]
    assert lrs == ([0.01] if stage == "coarse" else pytest.approx([0.01, 1e-5]))  # end to end: K and L x 1e-3
    trained = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.fit()
    for name, p in t.model.named_parameters():
        in_stage = name.split(".")[0] in STN_MODULES[stage]
        assert (id(p) in trained) == p.requires_grad == in_stage, name
        assert torch.equal(p, before[name]) != in_stage or p.numel() == 0, f"{stage}: {name}"


def test_models_without_the_hook_train_every_parameter(tiny_spec):
    model = registry.make(tiny_spec)
    opt = build_optimizer(model, 0.1, weight_decay=1e-5)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-5
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in model.parameters()]


@pytest.mark.parametrize(
    "groups, match",
    [
        (lambda m, lr: [{"params": [m.conv.weight]}, {"params": [m.conv.weight]}], "twice"),
        (lambda m, lr: [{"params": [torch.nn.Parameter(torch.ones(1))]}], "another module"),
        (lambda m, lr: [{"params": []}], "no parameters"),
        (lambda m, lr: [], "no groups"),
    ],
)
def test_bad_param_groups_are_refused(objective_model, groups, match):
    model = objective_model()
    model.param_groups = lambda lr: groups(model, lr)
    with pytest.raises(ValueError, match=f"ObjectiveModel.param_groups: .*{match}"):
        param_groups(model, 0.1)


def test_ddp_searches_unused_parameters_only_when_the_model_asks(objective_model):
    model = objective_model()
    assert ddp_options(model) == {"find_unused_parameters": False}
    model.find_unused_parameters = True
    assert ddp_options(model) == {"find_unused_parameters": True}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["coarse", "parts"])
def test_torchrun_ddp_trains_a_stage_that_leaves_networks_out(tmp_path, data_root, stage):  # noqa: F811
    """2 CPU processes (gloo), 2 steps each: STN-iCNN's stages use only some networks (coarse: K; parts: L and
    the part networks, K frozen); DDP fails on the second step if it waits for gradients of the others."""
    cfg = write_config(tmp_path / "c.yaml", data_root, epochs=1, amp="none")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd = [*torchrun, *train_cmd(cfg, tmp_path / "ddp", *stn_overrides(stage))[1:]]
    # two processes (and torchrun) import torch and fpliif on the same cores: twice the single-process allowance
    r = subprocess.run(cmd, env=sub_env(), capture_output=True, text=True, timeout=2 * SUBPROCESS_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = metrics(tmp_path / "ddp")
    assert math.isfinite(row["loss"]) and load(tmp_path / "ddp" / "last.safetensors").stage == stage


# ---------------------------------------------------------------------------------------------- benches
def test_bench_train_any_model(tmp_path, capsys, restore_threads):
    spec = {"name": "segface_mnv3", "args": {"width_mult": 0.1, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16}}
    r = train_throughput(spec, size=32, batch_size=2, steps=1, warmup=0, threads=1)
    assert r["objective"] == "dense" and r["queries"] == "full" and r["img_per_s"] > 0 and math.isfinite(r["loss"])
    weights = save(registry.make(spec), tmp_path / "s.safetensors")
    args = ["bench", "--train", "--weights", str(weights), "--input-size", "32", "--batch-size", "2", "--json"]
    assert main([*args, "--steps", "1", "--warmup", "0", "--threads", "1", "--amp", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    # --queries (default full,2048) does not apply to a dense model: one row, not two
    assert [(row["objective"], row["queries"]) for row in out["train"]] == [("dense", "full")]
    assert out["model"] == "segface_mnv3"


def test_bench_models_json(capsys, restore_threads):
    base = ["bench", "--json", "--runs", "1", "--threads", "1"]
    assert main([*base, "--models", "fpliif,segface_mnv3", "--sizes", "16,24"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["models"]) == ["fpliif", "segface_mnv3"]
    for name, r in out["models"].items():
        assert set(r) == {"params", "macs", "fps"}
        assert r["params"] == registry.make(name).num_parameters()
        assert list(r["macs"]) == list(r["fps"]) == ["16", "24"]
        assert 0 < r["macs"]["16"] < r["macs"]["24"] and all(v > 0 for v in r["fps"].values())
    assert out["sizes"] == [16, 24] and out["threads"] == 1 and out["amp"] == "none"
    assert main([*base, "--models", "fpliif,segfcae_mnv3"]) == 2
    err = capsys.readouterr().err
    assert "--models" in err and "'segfcae_mnv3'" in err and "segface_mnv3" in err and "registered" in err
    assert main([*base, "--models", "fpliif", "--input-size", "64"]) == 2
    assert "--input-size" in capsys.readouterr().err

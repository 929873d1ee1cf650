"""Training: edge maps, the FP-LIIF loss, query sampling, configs, the CLI end to end, exact resume after
SIGKILL, DDP (torchrun, 2 CPU processes, gloo) and AMP / channels_last switches.

Everything runs a tiny FP-LIIF on a generated 32x32 folder dataset (10 train + 3 val images). The subprocess
tests (resume, DDP) take ~10-20 s each on a loaded 2-core machine; they run with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from fpliif.cli import main
from fpliif.errors import ConfigError
from fpliif.labels import IGNORE_INDEX
from fpliif.models.base import pixel_centers
from fpliif.train import fpliif_loss, label_edges, load_config
from fpliif.train.config import DEFAULTS
from fpliif.train.loss import dice_loss
from fpliif.train.state import WeightEMA
from fpliif.train.step import balanced_density, sample_queries
from fpliif.train.trainer import Trainer, class_weight_vector
from test_data_helpers import save_image, save_mask

TINY_ARGS = "{classes: celebamask-hq, width: 8, depths: [1, 1, 1], reduce_mlp: [16, 8], decoder_mlp: [16, 16]}"
# Stems chosen by the folder layout's hash split (fpliif.data.folder_split_of): 10 train, 3 val.
TRAIN_NAMES = [f"face{i:03d}" for i in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10)]
VAL_NAMES = ["face008", "face018", "face025"]
SUBPROCESS_TIMEOUT = 240  # seconds, per subprocess


# ------------------------------------------------------------------------------------------------ fixtures
def _shapes_mask(seed: int, size: int = 32) -> np.ndarray:
    """Background, a hair band on top, a skin disc and a mouth bar: a few boundaries, several classes."""
    rng = np.random.default_rng(seed)
    m = np.zeros((size, size), np.int64)
    y, x = np.mgrid[:size, :size]
    cy, cx = rng.integers(10, 22, 2)
    m[(y - cy) ** 2 + (x - cx) ** 2 < rng.integers(30, 80)] = 1  # skin
    m[cy - rng.integers(1, 3) : cy + 2, cx - rng.integers(3, 7) : cx + 6] = 10  # mouth
    m[: rng.integers(3, 8), :] = 13  # hair
    return m


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from fpliif.data import folder_split_of

    root = tmp_path_factory.mktemp("faces")
    for k, name in enumerate(TRAIN_NAMES + VAL_NAMES):
        m = _shapes_mask(k)
        rgb = np.stack([m * 13, (m * 7 + 40) % 256, 255 - m * 11], -1)
        rgb = np.clip(rgb + np.random.default_rng(100 + k).integers(0, 20, rgb.shape), 0, 255)
        save_image(root / "images" / f"{name}.png", rgb)
        save_mask(root / "masks" / f"{name}.png", m)
    assert [folder_split_of(n) for n in VAL_NAMES] == ["val"] * 3
    assert {folder_split_of(n) for n in TRAIN_NAMES} == {"train"}
    return root


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def write_config(path: Path, root: Path, **train: object) -> Path:
    """A small training config (the model args come from the TINY_ARGS override)."""
    cfg = {
        "data": {"root": str(root), "layout": "folder", "size": 32, "workers": 0, "augment": None},
        "train": {
            "epochs": 2,
            "batch_size": 2,
            "lr": 0.01,
            "schedule": {"type": "multistep", "milestones": [1], "gamma": 0.5},
            "sample_queries": 256,
            "val_batch_size": 2,
            "max_val_images": 3,
            "threads": 1,
            "device": "cpu",
            **train,
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_overrides() -> list[str]:
    return [f"model.args={TINY_ARGS}"]


def sub_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("FPLIIF_TEST_SLEEP_PER_STEP", None)
    env.update(extra)
    return env


def train_cmd(cfg: Path, out: Path, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    cli = [sys.executable, "-m", "fpliif.cli", "train", "--config", str(cfg), "--out", str(out), "--no-progress"]
    return [*cli, *flags, *tiny_overrides(), *overrides]


def metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ edges
def test_label_edges_two_regions_boundary_band():
    mask = torch.zeros(1, 6, 8, dtype=torch.long)
    mask[:, :, 4:] = 1  # columns 0-3 = 0, 4-7 = 1
    e3 = label_edges(mask, 3)
    expected = torch.zeros(1, 6, 8, dtype=torch.bool)
    expected[:, :, 3:5] = True  # the 1-pixel band on each side of the boundary
    assert torch.equal(e3, expected)
    e5 = label_edges(mask, 5)
    expected[:, :, 2:6] = True  # a 5x5 kernel reaches 2 pixels across
    assert torch.equal(e5, expected)
    # a uniform map has no edges; the image border is not an edge
    assert not label_edges(torch.full((2, 5, 5), 7)).any()


def test_label_edges_ignore_pixels():
    mask = torch.full((1, 7, 7), 2, dtype=torch.long)
    mask[0, 2:5, 2:5] = IGNORE_INDEX  # an ignored hole inside one region creates no edges
    assert not label_edges(mask).any()
    # two regions separated by a 2-pixel ignored band: the ignored pixels are never edges, and with a
    # 3x3 kernel no valid pixel sees the other region
    mask = torch.zeros(1, 5, 8, dtype=torch.long)
    mask[:, :, 3:5] = IGNORE_INDEX
    mask[:, :, 5:] = 1
    assert not label_edges(mask, 3).any()
    e7 = label_edges(mask, 7)  # a 7x7 kernel reaches across the band: edges on the valid pixels only
    expected = torch.zeros(1, 5, 8, dtype=torch.bool)
    expected[:, :, [2, 5]] = True
    assert torch.equal(e7, expected)
    assert not e7[mask == IGNORE_INDEX].any()


# ------------------------------------------------------------------------------------------------ loss
def _ce(row: list[float], t: int, tau: float = 0.5) -> float:
    z = [v / tau for v in row]
    return math.log(sum(math.exp(v) for v in z)) - z[t]


def test_fpliif_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -2.0, 0.5]])
    target = torch.tensor([0, 2, 2, 1])
    edge = torch.tensor([False, True, False, True])
    rows = logits.tolist()
    ces = [_ce(rows[i], int(target[i])) for i in range(4)]
    loss, parts = fpliif_loss(logits, target, edge, edge_lambda=10.0)  # tau = 0.5 by default
    exp_ce = sum(ces) / 4
    exp_edge = (ces[1] + ces[3]) / 2  # averaged over the 2 edge points only
    assert parts["ce"] == pytest.approx(exp_ce, rel=1e-6)
    assert parts["edge_ce"] == pytest.approx(exp_edge, rel=1e-6)
    assert float(loss) == pytest.approx(exp_ce + 10.0 * exp_edge, rel=1e-6)
    assert parts["edge_frac"] == pytest.approx(0.5)
    # tau really divides the logits: tau = 1 gives plain cross-entropy
    loss1, _ = fpliif_loss(logits, target, torch.zeros(4, dtype=torch.bool), 10.0, temperature=1.0)
    assert float(loss1) == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-6)


def test_fpliif_loss_no_edges_and_ignore():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, IGNORE_INDEX, 3, IGNORE_INDEX, 2])
    no_edge = torch.zeros(6, dtype=torch.bool)
    loss, parts = fpliif_loss(logits, target, no_edge, edge_lambda=40.0)
    assert parts["edge_ce"] == 0.0  # no edge points: the edge term is 0, not NaN
    keep = target != IGNORE_INDEX
    exp = F.cross_entropy(logits[keep] / 0.5, target[keep])
    assert float(loss) == pytest.approx(float(exp), rel=1e-6)
    # an ignored point flagged as an edge is still excluded from the edge term
    edge = torch.tensor([False, True, True, False, True, False])
    _, parts = fpliif_loss(logits, target, edge, edge_lambda=1.0)
    assert parts["edge_ce"] == pytest.approx(_ce(logits[1].tolist(), 1), rel=1e-6)
    assert parts["edge_frac"] == pytest.approx(1 / 4)
    # all points ignored: finite zero loss
    loss, _ = fpliif_loss(logits, torch.full((6,), IGNORE_INDEX), edge, 10.0)
    assert float(loss) == 0.0
    # gradients flow only from valid points
    lg = logits.clone().requires_grad_(True)
    fpliif_loss(lg, target, edge, 10.0)[0].backward()
    assert torch.all(lg.grad[~keep] == 0) and torch.all(lg.grad[keep].abs().sum(1) > 0)


def test_fpliif_loss_class_weights():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, IGNORE_INDEX, 1])
    edge = torch.tensor([True, False, True, True, False])
    w = torch.tensor([0.5, 2.0, 1.0])
    loss, parts = fpliif_loss(logits, target, edge, 3.0, class_weights=w)
    ces = [_ce(logits[i].tolist(), int(target[i])) for i in (0, 1, 2, 4)]
    ws = [0.5, 2.0, 1.0, 2.0]
    exp_ce = sum(c * v for c, v in zip(ces, ws, strict=True)) / sum(ws)  # weighted mean (as F.cross_entropy)
    assert parts["ce"] == pytest.approx(exp_ce, rel=1e-6)
    ref = F.cross_entropy(logits / 0.5, target, weight=w, ignore_index=IGNORE_INDEX)
    assert parts["ce"] == pytest.approx(float(ref), rel=1e-6)
    exp_edge = (0.5 * ces[0] + 1.0 * ces[2]) / 2  # weighted per point, averaged over the 2 valid edge points
    assert parts["edge_ce"] == pytest.approx(exp_edge, rel=1e-6)
    assert float(loss) == pytest.approx(exp_ce + 3.0 * exp_edge, rel=1e-6)


def test_class_weight_vector():
    class DS:
        masks = [torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, IGNORE_INDEX]])]

        def __len__(self):
            return 2

        def load(self, i):
            return {"mask": self.masks[i]}

    w = class_weight_vector(DS(), 3)
    # freq: class 0 = 6/7, class 1 = 1/7, class 2 absent; 1/sqrt(freq) normalised by the mean over present classes
    raw = torch.tensor([1 / math.sqrt(6 / 7), 1 / math.sqrt(1 / 7)])
    assert torch.allclose(w[:2], (raw / raw.mean()).float())
    assert float(w[2]) == 10.0  # absent class: clamped


# ------------------------------------------------------------------------------------------------ queries
def test_sample_queries_labels_match_pixels():
    g = torch.Generator().manual_seed(0)
    b, h, w = 3, 5, 7
    mask = torch.randint(0, 19, (b, h, w), generator=g)
    edges = torch.rand(b, h, w, generator=g) > 0.5
    coords, labels, flags = sample_queries(mask, edges, 10, torch.Generator().manual_seed(1))
    assert coords.shape == (b, 10, 2) and labels.shape == (b, 10) and flags.shape == (b, 10)
    col = torch.round(((coords[..., 0] + 1) * w - 1) / 2).long()
    row = torch.round(((coords[..., 1] + 1) * h - 1) / 2).long()
    assert torch.allclose(coords[..., 0], (2 * col + 1) / w - 1)
    assert torch.allclose(coords[..., 1], (2 * row + 1) / h - 1)
    bi = torch.arange(b)[:, None].expand(-1, 10)
    assert torch.equal(labels, mask[bi, row, col])
    assert torch.equal(flags, edges[bi, row, col])
    for i in range(b):  # distinct pixels per image, different subsets per image
        assert len(set((row[i] * w + col[i]).tolist())) == 10
    assert not torch.equal(row[0] * w + col[0], row[1] * w + col[1])
    # the generator alone decides the sample
    again = sample_queries(mask, edges, 10, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], coords)


def test_sample_queries_full_grid_row_major():
    mask = torch.arange(2 * 4 * 6).reshape(2, 4, 6)
    edges = mask % 3 == 0
    for n in (None, 24, 1000):
        coords, labels, flags = sample_queries(mask, edges, n, torch.Generator())
        assert torch.equal(coords, pixel_centers(4, 6).expand(2, -1, -1))
        assert torch.equal(labels, mask.reshape(2, -1))  # every pixel once, row-major
        assert torch.equal(flags, edges.reshape(2, -1))


# ------------------------------------------------------------------------------------------------ config
def test_config_load_and_overrides(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", tmp_path)
    cfg = load_config(
        cfg_path,
        [
            "train.epochs=3",
            "train.schedule.milestones=[5, 8]",
            "train.sample_queries=null",
            "train.lr=2.0e-3",
            "data.augment={rotation: 10, hflip: true}",
            *tiny_overrides(),
        ],
    )
    assert cfg["train"]["epochs"] == 3
    assert cfg["train"]["schedule"] == {"type": "multistep", "milestones": [5, 8], "gamma": 0.5, "warmup": 0}
    assert cfg["train"]["sample_queries"] is None
    assert cfg["train"]["lr"] == pytest.approx(2e-3)
    assert cfg["data"]["augment"] == {"rotation": 10, "hflip": True}
    assert cfg["model"] == {"name": "fpliif", "args": yaml.safe_load(TINY_ARGS)}
    assert cfg["train"]["edge_lambda"] == DEFAULTS["train"]["edge_lambda"]  # defaults fill the rest
    assert cfg["data"]["size"] == 32 and cfg["train"]["batch_size"] == 2  # from the file


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epoch=3", "epoch"),
        ("trian.epochs=3", "trian"),
        ("data.sise=64", "sise"),
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=abc", "train.epochs"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("train.amp=fp8", "train.amp"),
        ("train.sample_queries=-1", "train.sample_queries"),
        ("train.schedule.type=cosine", "train.schedule.type"),
        ("train.edge_kernel=4", "train.edge_kernel"),
        ("train.class_weights=yes", "train.class_weights"),
        ("train.lr=0", "train.lr"),
        ("train.epochs", "train.epochs"),
    ],
)
def test_config_bad_overrides(tmp_path, override, key):
    cfg_path = write_config(tmp_path / "c.yaml", tmp_path)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(cfg_path, [override])


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochz: 3}\ndata: {root: x}\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(bad)
    bad.write_text("optimiser: {lr: 1}\ndata: {root: x}\n")
    with pytest.raises(ValueError, match="optimiser"):
        load_config(bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="YAML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    no_root = tmp_path / "noroot.yaml"
    no_root.write_text("train: {epochs: 1}\n")
    with pytest.raises(ValueError, match=r"data\.root"):
        load_config(no_root)
    assert load_config(no_root, ["data.root=/x"])["data"]["root"] == "/x"


def test_cli_config_errors(tmp_path, capsys):
    no_root = tmp_path / "noroot.yaml"
    no_root.write_text("train: {epochs: 1}\n")
    assert main(["train", "--config", str(no_root), "--out", str(tmp_path / "o")]) == 2
    assert "data.root" in capsys.readouterr().err
    assert main(["train", "--config", str(no_root), "data.root=/x", "train.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["train", "--config", str(no_root), "data.root=/x", "--no-progress", "train.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err  # a late override is still read (and checked)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(no_root), "data.root=/x", "--no-progress", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ end to end
def test_cli_train_end_to_end(tmp_path, data_root, capsys, restore_threads):
    cfg = write_config(tmp_path / "c.yaml", data_root)
    out = tmp_path / "run"
    # with progress bars; key=value overrides may come before options as well as after them
    assert main(["train", "--config", str(cfg), *tiny_overrides(), "--out", str(out)]) == 0
    assert "done: epoch 2" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "last.pt", "last.safetensors", "best.safetensors", "tb"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["args"]["width"] == 8 and saved["train"]["epochs"] == 2 and saved["out"] == str(out)
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("loss", "lr", "img_per_s", "val_mean_f1", "best_val_mean_f1"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), key
    # the rate each epoch trained at: milestone 1, gamma 0.5
    assert [r["lr"] for r in rows] == [pytest.approx(0.01), pytest.approx(0.005)]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "query_gen"}
    last = load_file(out / "last.safetensors")
    for k, v in state["model"].items():
        assert torch.equal(last[k], v), k

    # a second run into the same directory refuses and overwrites nothing
    before = {p: p.read_bytes() for p in (out / "last.pt", out / "metrics.jsonl", out / "best.safetensors")}
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress", *tiny_overrides()]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "already holds a run" in err
    assert all(p.read_bytes() == b for p, b in before.items())

    # --resume on a finished run: nothing to do
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--no-progress", *tiny_overrides()]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert all(p.read_bytes() == b for p, b in before.items())


def _trainer(tmp_path, data_root, *overrides: str) -> Trainer:
    cfg = load_config(
        write_config(tmp_path / "c.yaml", data_root, epochs=1, max_steps_per_epoch=1),
        [*tiny_overrides(), "data.val_split=null", f"out={tmp_path / 'run'}", *overrides],
    )
    return Trainer(cfg, progress=False)


def test_amp_bf16_cpu_one_step(tmp_path, data_root, restore_threads):
    trainer = _trainer(tmp_path, data_root, "train.amp=bf16")
    dtypes: dict[str, list[torch.dtype]] = {"conv": [], "linear": []}
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    conv.register_forward_hook(lambda m, i, o: dtypes["conv"].append(o.dtype))
    linear.register_forward_hook(lambda m, i, o: dtypes["linear"].append(o.dtype))
    record = trainer.fit()
    # the encoder and the decoder MLP ran under bf16 autocast (one step)
    assert dtypes == {"conv": [torch.bfloat16], "linear": [torch.bfloat16]}
    assert math.isfinite(record["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights


@pytest.mark.parametrize("native", [False, True])
def test_bf16_without_native_bf16_is_warned(tmp_path, data_root, monkeypatch, caplog, native):
    import fpliif.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "native_bf16", lambda device: native)
    with caplog.at_level("WARNING", logger="fpliif.train"):
        _trainer(tmp_path, data_root, "train.amp=bf16", "data.layout=auto")  # auto: the folder layout, detected
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if native:
        assert warned == []
    else:
        assert len(warned) == 1 and "no native bf16" in warned[0] and "train.amp=auto" in warned[0]


def test_channels_last_one_step(tmp_path, data_root, restore_threads):
    trainer = _trainer(tmp_path, data_root, "train.channels_last=true")
    seen = []
    trainer.net.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    record = trainer.fit()
    assert seen == [True] and math.isfinite(record["loss"])
    convs = [p for p in trainer.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_amp_fp16_on_cpu_is_an_error(tmp_path, data_root, capsys, restore_threads):
    cfg = write_config(tmp_path / "c.yaml", data_root)
    code = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "train.amp=fp16", *tiny_overrides()])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.amp" in err and "fp16" in err and "bf16" in err


# ------------------------------------------------------------------------------------------------ exact resume
@pytest.mark.slow
def test_exact_resume_after_sigkill(tmp_path, data_root):
    """2 epochs straight == 1 epoch + SIGKILL during epoch 2 + --resume, bit for bit (weights and optimizer).

    workers=1 and augmentation on, so worker seeding and the augmentation RNG are part of what must match.
    """
    cfg = write_config(tmp_path / "c.yaml", data_root)
    # EMA, balanced query sampling and the Dice term are on, so their state and RNG use must resume exactly too
    extra = [
        "data.workers=1",
        "data.augment={rotation: 10, hflip: true}",
        "train.ema=0.9",
        "train.query_sampling={type: balanced, edge_boost: 2.0}",
        "train.dice_weight=0.5",
        "train.schedule={type: multistep, milestones: [1], gamma: 0.5, warmup: 7}",  # warmup across the kill
    ]
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    proc_a = subprocess.Popen(
        train_cmd(cfg, out_a, *extra), env=sub_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # run B sleeps 0.4 s per step (5 steps per epoch) so that it is surely killed in the middle of epoch 2
    proc_b = subprocess.Popen(
        train_cmd(cfg, out_b, *extra),
        env=sub_env(FPLIIF_TEST_SLEEP_PER_STEP="0.4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while len(metrics(out_b)) < 1:
            assert proc_b.poll() is None, "run B ended before its first epoch was logged"
            assert time.monotonic() < deadline, "run B: timed out waiting for epoch 1"
            time.sleep(0.05)
        time.sleep(1.0)  # inside epoch 2: it cannot end in less than 5 x 0.4 s
        assert proc_b.poll() is None
        os.killpg(proc_b.pid, signal.SIGKILL)  # the run and its data-loader worker
    finally:
        if proc_b.poll() is None:
            os.killpg(proc_b.pid, signal.SIGKILL)
        proc_b.wait(timeout=30)
    assert proc_b.returncode == -signal.SIGKILL
    assert len(metrics(out_b)) == 1
    assert torch.load(out_b / "last.pt", map_location="cpu", weights_only=False)["epoch"] == 1

    resumed = subprocess.run(
        train_cmd(cfg, out_b, *extra, flags=("--resume",)),
        env=sub_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed" in resumed.stderr and "done: epoch 2" in resumed.stdout
    log_a, _ = proc_a.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert proc_a.returncode == 0, log_a

    wa, wb = load_file(out_a / "last.safetensors"), load_file(out_b / "last.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"weights differ after resume: {k}"
    sa = torch.load(out_a / "last.pt", map_location="cpu", weights_only=False)
    sb = torch.load(out_b / "last.pt", map_location="cpu", weights_only=False)
    assert sa["epoch"] == sb["epoch"] == 2
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), f"optimizer state {i}.{k} differs"
    assert sa["scheduler"] == sb["scheduler"] and sa["best_f1"] == sb["best_f1"]
    assert sa["ema"]["updates"] == sb["ema"]["updates"] == 10
    for k, v in sa["ema"]["model"].items():
        assert torch.equal(v, sb["ema"]["model"][k]), f"EMA weights differ after resume: {k}"
    ma, mb = metrics(out_a), metrics(out_b)
    assert len(ma) == len(mb) == 2
    for key in ("loss", "lr", "val_mean_f1"):
        assert ma[1][key] == mb[1][key], key
    # sanity: training really happened (weights moved from the seeded init, different from epoch 1's)
    assert ma[0]["loss"] != ma[1]["loss"]


# ------------------------------------------------------------------------------------------------ DDP
@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(tmp_path, data_root, capsys):
    """torchrun --nproc_per_node=2 (gloo): only rank 0 writes; val metrics are reduced over both ranks'
    shards (3 val images: rank 0 scores 2, rank 1 scores 1) and equal a single-process `fpliif eval`."""
    # fp32: `fpliif eval` runs in fp32, and validation runs in the training precision (amp auto may pick bf16)
    cfg = write_config(tmp_path / "c.yaml", data_root, epochs=1, amp="none")
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd = [*torchrun, *train_cmd(cfg, out)[1:]]  # -m fpliif.cli train ...
    r = subprocess.run(cmd, env=sub_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = metrics(out)
    assert len(rows) == 1 and rows[0]["epoch"] == 1  # one writer
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best.safetensors", "config.yaml", "last.pt", "last.safetensors", "metrics.jsonl", "tb"]
    )
    # 10 train images / 2 ranks / batch 2 = 2 steps per rank: 8 images seen in all
    assert rows[0]["img_per_s"] == pytest.approx(8 / rows[0]["epoch_seconds"], rel=1e-6)

    args = "eval --layout folder --split val --sizes 32 --json --no-progress --workers 0".split()
    assert main([*args, "--lowres", "", "--weights", str(out / "last.safetensors"), "--data", str(data_root)]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["images"] == 3
    assert rows[0]["val_mean_f1"] == pytest.approx(single["mean_f1"], abs=1e-6)
    assert rows[0]["val_mean_iou"] == pytest.approx(single["mean_iou"], abs=1e-6)
    assert rows[0]["val_pixel_acc"] == pytest.approx(single["pixel_acc"], abs=1e-6)

    # and rank 0's shard alone would have scored differently, so the reduction is what makes them equal
    from torch.utils.data import DataLoader, Subset

    from fpliif.data import FaceParsingDataset, build_eval_transform
    from fpliif.eval import evaluate
    from fpliif.models.checkpoint import load

    ds = FaceParsingDataset(data_root, "folder", "val", transform=build_eval_transform(32, (32,)))
    model = load(out / "last.safetensors")
    shard0 = evaluate(
        model, DataLoader(Subset(ds, [0, 2]), batch_size=2), model.label_set, sizes=(32,), lowres=(), progress=False
    )
    assert abs(shard0["mean_f1"] - single["mean_f1"]) > 1e-3


# ------------------------------------------------------------------------------------------------ v2 recipe parts
def test_balanced_density_and_weighted_sampling():
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    mask[:, :2, :2] = 3  # a rare class: 4 pixels of 256
    mask[1, -1, -1] = IGNORE_INDEX
    edges = label_edges(mask)
    w = torch.ones(19)
    w[3] = 50.0
    dens = balanced_density(mask, edges, w, edge_boost=2.0)
    assert dens[0, 0, 0] == 50.0 and dens[0, 1, 1] == 50.0 * 3  # rare class inside / on an edge
    assert dens[0, 10, 10] == 1.0 and dens[0, 2, 1] == 3.0  # plain background, background edge
    assert dens[1, -1, -1] == 1.0  # ignore -> the smallest class weight, never zero
    gen = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(20):
        coords, labels, flags = sample_queries(mask, edges, 32, gen, dens)
        assert coords.shape == (2, 32, 2) and labels.shape == flags.shape == (2, 32)
        for b in range(2):  # distinct pixels, labels and edge flags read at the drawn pixels
            xy = ((coords[b] + 1) / 2 * 16 - 0.5).round().long()
            assert len({(int(x), int(y)) for x, y in xy}) == 32
            assert torch.equal(labels[b], mask[b, xy[:, 1], xy[:, 0]])
            assert torch.equal(flags[b], edges[b, xy[:, 1], xy[:, 0]])
        hits += int((labels == 3).sum())
    # uniform sampling would draw 32 * 4 / 256 = 0.5 rare points per image; the density draws nearly all 4
    assert hits / 40 > 3.0


def test_dice_loss_values():
    target = torch.tensor([0, 0, 1, 1, IGNORE_INDEX])
    perfect = torch.tensor([[20.0, 0.0], [20.0, 0.0], [0.0, 20.0], [0.0, 20.0], [0.0, 20.0]])
    assert float(dice_loss(perfect, target)) < 1e-3
    wrong = perfect[:, [1, 0]]
    assert float(dice_loss(wrong, target)) > 0.75  # (0 + 1) / (4 + 1): the smoothing term of 1
    # classes absent from the target are left out: a third class with no points changes nothing
    three = torch.cat([perfect, torch.full((5, 1), -20.0)], 1)
    assert abs(float(dice_loss(three, target)) - float(dice_loss(perfect, target))) < 1e-4
    logits = torch.randn(5, 2, requires_grad=True)
    loss, parts = fpliif_loss(logits, target, torch.zeros(5, dtype=torch.bool), 10.0, dice_weight=0.5)
    base, _ = fpliif_loss(logits, target, torch.zeros(5, dtype=torch.bool), 10.0)
    assert abs(float((loss - base).detach()) - 0.5 * parts["dice"]) < 1e-5
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_weight_ema():
    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.5)
    assert all(not p.requires_grad for p in ema.model.parameters())
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 2/11) = 2/11
    expected = start + (1 - 2 / 11) * 1.0
    assert torch.allclose(ema.model.weight, expected)
    assert not torch.equal(ema.model.weight, model.weight)


def test_amp_auto_resolves_by_cpu_capability(monkeypatch):
    from fpliif import precision

    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert precision.resolve_amp("auto", "cpu") == "none"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert precision.resolve_amp("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert precision.resolve_amp("auto", "cpu") == "bf16"
    assert precision.resolve_amp("none", "cpu") == "none"
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        precision.resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="expected one of"):
        precision.resolve_amp("fp8", "cpu")


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.ema=1.5", "train.ema"),
        ("train.ema=true", "train.ema"),
        ("train.dice_weight=-1", "train.dice_weight"),
        ("train.query_sampling={type: rare}", "train.query_sampling"),
        ("train.query_sampling={type: balanced, edge_bost: 2}", "train.query_sampling"),
        ("train.query_sampling={type: balanced, edge_boost: -1}", "edge_boost"),
        ("train.amp=fp32", "train.amp"),
        ("data.root=[]", "data.root"),
    ],
)
def test_config_v2_keys_are_checked(tmp_path, data_root, override, key):
    cfg = write_config(tmp_path / "c.yaml", data_root)
    with pytest.raises(ValueError, match=key):
        load_config(cfg, [override])


def test_warmup_raises_the_rate_linearly_then_leaves_the_schedule_alone(tmp_path, data_root, restore_threads):
    cfg = load_config(
        write_config(tmp_path / "c.yaml", data_root, epochs=2, max_steps_per_epoch=3),
        [*tiny_overrides(), "data.val_split=null", f"out={tmp_path / 'run'}"]
        + ["train.schedule={type: multistep, milestones: [1], gamma: 0.5, warmup: 4}"],
    )
    trainer = Trainer(cfg, progress=False)
    seen: list[float] = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (seen.append(trainer.optimizer.param_groups[0]["lr"]), step(*a, **k))[1]
    trainer.fit()
    # 3 steps per epoch: steps 0-3 of the run at 1/4..4/4 of the scheduled rate (0.01, then 0.005 after epoch 1)
    assert seen == pytest.approx([0.0025, 0.005, 0.0075, 0.005, 0.005, 0.005])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # the schedule's own rate, untouched
    with pytest.raises(ConfigError, match="train.schedule.warmup"):
        load_config(tmp_path / "c.yaml", ["train.schedule.warmup=-1"])


def test_trainer_with_ema_balanced_sampling_and_two_roots(tmp_path, data_root, restore_threads):
    trainer = _trainer(
        tmp_path,
        data_root,
        f"data.root=[{data_root}, {data_root}]".replace(f", {data_root}]", "]"),  # one root as a list
        "train.ema=0.9",
        "train.query_sampling={type: balanced, edge_boost: 1.0}",
        "train.class_weights=null",
    )
    assert trainer.sampling_weights is not None and trainer.class_weights is None
    record = trainer.fit()
    assert math.isfinite(record["loss"]) and trainer.ema.updates == 1
    saved = load_file(tmp_path / "run" / "last.safetensors")
    ema_state = trainer.ema.model.state_dict()
    assert all(torch.equal(saved[k], ema_state[k]) for k in saved)  # the EMA weights are what is saved
    assert any(not torch.equal(ema_state[k], v) for k, v in trainer.model.state_dict().items())

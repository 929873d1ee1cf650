"""Training-throughput benchmark (fpliif.bench.training, ``fpliif bench --train``): a tiny model, 32², 1 step."""

from __future__ import annotations

import json

import pytest
import torch

from fpliif.bench.training import train_throughput
from fpliif.cli import main
from fpliif.models import registry
from fpliif.models.checkpoint import save


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(("amp", "queries"), [("none", None), ("none", 64), ("bf16", 64)])
def test_train_throughput(tiny_spec, restore_threads, amp, queries):
    r = train_throughput(tiny_spec, size=32, batch_size=2, amp=amp, queries=queries, steps=1, warmup=0, threads=1)
    assert r["img_per_s"] > 0 and r["step_seconds"] > 0
    assert r["img_per_s"] == pytest.approx(2 / r["step_seconds"])
    assert r["amp"] == amp and r["queries"] == ("full" if queries is None else queries)
    assert r["size"] == 32 and r["batch_size"] == 2 and r["threads"] == 1 and r["device"] == "cpu"
    assert torch.isfinite(torch.tensor(r["loss"]))


def test_train_throughput_channels_last(tiny_spec, restore_threads):
    r = train_throughput(tiny_spec, size=32, batch_size=1, channels_last=True, steps=1, warmup=0, threads=1)
    assert r["channels_last"] is True and r["img_per_s"] > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amp": "fp16"}, "fp16"),
        ({"amp": "int8"}, "amp"),
        ({"queries": 0}, "queries"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 0}, "threads"),
    ],
)
def test_train_throughput_errors(tiny_spec, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_throughput(tiny_spec, size=32, **{"steps": 1, **kwargs})


def test_cli_bench_train(tiny_spec, tmp_path, capsys, restore_threads):
    weights = save(registry.make(tiny_spec), tmp_path / "tiny.safetensors")
    base = ["bench", "--train", "--weights", str(weights), "--input-size", "32", "--batch-size", "2"]
    args = [*base, "--steps", "1", "--warmup", "0", "--threads", "1"]
    assert main([*args, "--amp", "none,bf16", "--queries", "full,100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    settings = [(r["amp"], r["queries"]) for r in out["train"]]
    assert settings == [("none", "full"), ("none", 100), ("bf16", "full"), ("bf16", 100)]
    assert all(r["img_per_s"] > 0 and r["size"] == 32 and r["batch_size"] == 2 for r in out["train"])
    assert out["device"] == "cpu" and out["threads"] == 1 and out["steps"] == 1
    assert main([*args, "--amp", "none", "--queries", "full"]) == 0  # table
    text = capsys.readouterr().out
    assert "img/s" in text and "queries   full" in text
    assert main([*args, "--amp", "fp32"]) == 2
    assert "--amp" in capsys.readouterr().err
    assert main([*args, "--queries", "some"]) == 2
    assert "--queries" in capsys.readouterr().err

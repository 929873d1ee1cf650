"""Cases a user audit of ``fpliif train`` and ``fpliif calibrate`` found (session 15), each as it was reported:
settings a ``--resume`` would silently not use, ``init_weights`` read again on resume, a directory of someone else's
files taken as a run directory, model arguments only checked after an epoch, class names checked by count only,
empty lines in ``classes.txt``, keys given twice in a YAML config, ``--out ''``, and calibration offsets written
onto the wrong classes. Tiny model and data (:mod:`test_train`'s)."""

from __future__ import annotations

import shutil

import pytest
import torch

from fpliif.cli import main
from fpliif.data.layouts import read_classes_txt
from fpliif.errors import DataError
from fpliif.labels import CELEBAMASK_HQ
from fpliif.train.config import load_config, resume_changes
from test_train import data_root, metrics, restore_threads, tiny_overrides, write_config  # noqa: F401

TINY = "width: 8, depths: [1, 1, 1], reduce_mlp: [16, 8], decoder_mlp: [16, 16]"


def _train(cfg, out, *more: str) -> int:
    return main(["train", "--config", str(cfg), "--out", str(out), "--no-progress", *tiny_overrides(), *more])


def _cfg(tmp_path, data_root, **train):  # noqa: F811
    return write_config(tmp_path / "c.yaml", data_root, epochs=1, max_steps_per_epoch=1, **train)


def test_resume_refuses_settings_it_would_not_use(tmp_path, data_root, capsys, restore_threads):  # noqa: F811
    """Before: lr, weight decay and schedule changed on --resume were ignored (the saved optimizer and scheduler
    went on) while config.yaml recorded the new values."""
    cfg, out = _cfg(tmp_path, data_root), tmp_path / "run"
    assert _train(cfg, out) == 0
    saved = (out / "config.yaml").read_text()
    assert _train(cfg, out, "--resume", "train.epochs=2", "train.lr=0.5", "train.schedule.milestones=[]") == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.01 -> 0.5" in err and "train.schedule.milestones: [1] -> []" in err, err
    assert f"train.init_weights={out / 'last.safetensors'}" in err
    assert (out / "config.yaml").read_text() == saved and [r["epoch"] for r in metrics(out)] == [1]
    assert _train(cfg, out, "--resume", "train.epochs=2", "train.max_val_images=2", "data.workers=0") == 0
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    capsys.readouterr()
    assert _train(cfg, out, "--resume", "train.epochs=1") == 0
    assert (
        "nothing to do: " in (text := capsys.readouterr().out) and "already trained 2 epochs (train.epochs=1)" in text
    )


def test_resume_changes_counts_keys_a_run_predates_as_defaults():
    cfg = load_config(None, ["data.root=/x"])
    old = {k: v for k, v in cfg.items()}
    old["train"] = {k: v for k, v in cfg["train"].items() if k != "schedule"}  # saved before a key existed
    assert resume_changes(old, cfg) == []
    changed = load_config(None, ["data.root=/y", "train.epochs=9", "train.seed=3", "data.size=64"])
    assert resume_changes(cfg, changed) == ["data.size: 256 -> 64", "train.seed: 0 -> 3"]


def test_resume_does_not_read_init_weights_again(tmp_path, data_root, capsys, restore_threads):  # noqa: F811
    cfg = _cfg(tmp_path, data_root)
    assert _train(cfg, tmp_path / "a") == 0
    init = tmp_path / "init.safetensors"
    shutil.copy(tmp_path / "a" / "last.safetensors", init)
    assert _train(cfg, tmp_path / "b", f"train.init_weights={init}") == 0
    init.unlink()  # before: the resume failed with "no such file" although it reads last.pt
    assert _train(cfg, tmp_path / "b", "--resume", "train.epochs=2", f"train.init_weights={init}") == 0
    assert [r["epoch"] for r in metrics(tmp_path / "b")] == [1, 2]
    capsys.readouterr()


def test_a_folder_of_someone_elses_files_is_not_a_run_directory(tmp_path, data_root, capsys, restore_threads):  # noqa: F811
    """Before: its config.yaml and best.safetensors were replaced and its metrics.jsonl appended to."""
    cfg, mine = _cfg(tmp_path, data_root), tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text('{"mine": 1}\n')
    (mine / "notes.txt").write_text("keep")
    assert _train(cfg, mine) == 2
    assert "holds files but no run (no last.pt): metrics.jsonl, notes.txt" in capsys.readouterr().err
    assert (mine / "metrics.jsonl").read_text() == '{"mine": 1}\n' and sorted(p.name for p in mine.iterdir()) == [
        "metrics.jsonl",
        "notes.txt",
    ]
    started = tmp_path / "started"  # what a start killed before its first checkpoint leaves: run it again
    (started / "tb").mkdir(parents=True)
    (started / "config.yaml").write_text("model: {}\n")
    assert _train(cfg, started) == 0
    capsys.readouterr()


def test_out_must_name_a_folder(tmp_path, data_root, capsys):  # noqa: F811
    cfg = _cfg(tmp_path, data_root)
    assert main(["train", "--config", str(cfg), "--out", "", "--dry-run"]) == 2  # before: the config's out
    assert "--out: expected a folder name, got an empty string" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--config", str(cfg), f"out={tmp_path / 'afile'}", "--dry-run"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, text",
    [
        (f"{{{TINY}, classes: [a, a, b]}}", "model.args.classes: class names must be distinct"),
        ("{width: '8'}", "model.args.width: expected an integer"),
        ("{depths: [1, 1]}", "model.args.depths: expected one group_tail_conv flag per group of depths (2 groups"),
        ("{unfold: 3}", "model.args.unfold: expected true or false"),
    ],
)
def test_dry_run_checks_the_model_arguments_values(tmp_path, capsys, args, text):
    """Before: these passed --dry-run and failed in the run (``unfold: 3`` only after a whole epoch)."""
    cfg = _cfg(tmp_path, tmp_path)
    assert main(["train", "--config", str(cfg), "--dry-run", f"model.args={args}"]) == 2
    assert text in capsys.readouterr().err


def test_the_model_must_have_the_datas_classes_in_their_order(tmp_path, data_root, capsys, restore_threads):  # noqa: F811
    """Before: only the counts were compared, so a head learnt index 1 under the wrong name."""
    swapped = list(CELEBAMASK_HQ.classes)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    args = f"model.args={{{TINY}, classes: [{', '.join(swapped)}]}}"
    cfg = _cfg(tmp_path, data_root)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--no-progress", args]) == 2
    err = capsys.readouterr().err
    assert "model.args.classes: the model has 19 classes (background, nose, skin" in err and "same order" in err


def test_classes_txt_refuses_an_empty_line_between_names(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\n  \nhair\nface\n")
    with pytest.raises(DataError, match="line 2 is empty"):
        read_classes_txt(path)
    path.write_text("# mine\n\nbackground\nhair  # comment\n# a comment line\nface\n\n")
    assert read_classes_txt(path) == ["background", "hair", "face"]


def test_a_key_given_twice_in_a_config_is_an_error(tmp_path, capsys):
    """Before: YAML's last value won silently (a whole second ``train:`` section replaced the first)."""
    path = tmp_path / "dup.yaml"
    path.write_text("data: {root: ds}\ntrain: {epochs: 2}\ntrain: {lr: 0.1}\n")
    assert main(["train", "--config", str(path), "--dry-run"]) == 2
    assert "key 'train' given twice in one section" in capsys.readouterr().err
    path.write_text("data: {root: ds}\ntrain: {epochs: 2, epochs: 3}\n")
    with pytest.raises(ValueError, match="key 'epochs' given twice"):
        load_config(path)


def test_calibrate_refuses_a_dataset_whose_classes_differ_in_order(tmp_path, data_root, capsys):  # noqa: F811
    """Before: the offsets were fitted by the dataset's order and written onto the model's classes of that index."""
    import fpliif

    torch.manual_seed(0)
    weights = fpliif.save(
        fpliif.make({"name": "fpliif", "args": {"width": 8, "depths": [1, 1, 1]}}), tmp_path / "w.safetensors"
    )
    shutil.copytree(data_root, tmp_path / "ds")
    swapped = list(CELEBAMASK_HQ.classes)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    (tmp_path / "ds" / "classes.txt").write_text("\n".join(swapped) + "\n")
    out = tmp_path / "cal.safetensors"
    argv = ["calibrate", "--weights", str(weights), "--data", str(tmp_path / "ds"), "--layout", "folder"]
    assert main([*argv, "--split", "all", "--size", "32", "--workers", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs the same classes in the same order" in err and not out.exists()


# ---------------------------------------------------------------------------------------------- bench, export
@pytest.mark.parametrize(
    "argv, text",
    [
        (["--sizes", "100000"], "--sizes 100000 needs 10,000,000,000 decoder queries"),  # before: a MemoryError
        (["--steps", "3"], "--steps: applies to --train"),  # before: ignored
        (["--train", "--sizes", "64"], "--sizes: applies to inference benchmarks, not --train"),
        (["--train", "--runs", "2"], "--runs: applies to inference benchmarks; --train times --steps"),
        (["--weights", ""], "--weights: expected a weights file or bundled name, got an empty string"),
    ],
)
def test_bench_refuses_options_it_would_not_use(capsys, argv, text):
    assert main(["bench", *argv]) == 2
    assert text in capsys.readouterr().err


def test_bench_onnx_counts_the_onnx_files_model(tmp_path, capsys):
    """Before: the bundled model's parameters, MACs and input size were reported for any --onnx file."""
    import json

    import fpliif

    torch.manual_seed(0)
    model = fpliif.make({"name": "fpliif", "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8]}})
    weights = fpliif.save(model, tmp_path / "w.safetensors", metadata={"input_size": "32"})
    onnx = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--weights", str(weights), "--out", str(onnx), "--dynamic"]) == 0
    assert main(["bench", "--onnx", str(onnx), "--sizes", "32", "--runs", "1", "--threads", "1", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["params"] == sum(p.numel() for p in model.parameters()) and result["input_size"] == 32
    assert main(["bench", "--onnx", str(onnx), "--backend", "torch"]) == 2
    assert "--backend torch: --onnx FILE runs on onnxruntime" in capsys.readouterr().err
    assert main(["export", "onnx", "--weights", str(weights), "--out", str(tmp_path / "x.onnx"), "--opset", "99"]) == 2
    assert "--opset 99: Unsupported onnx_opset_version: 99" in capsys.readouterr().err

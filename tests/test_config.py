"""The strict training-config schema (fpliif.train.config): unknown keys at any depth and wrong types are one-line
errors naming the full key path (with the closest valid key), raised before anything is written;
``fpliif train --dry-run`` prints the resolved config. Only configs are read here: no model is trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fpliif.cli import main
from fpliif.errors import ConfigError
from fpliif.train.config import DEFAULTS, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _config(tmp_path: Path, **sections: dict) -> Path:
    cfg = {"data": {"root": str(tmp_path / "data"), "size": 32}, "train": {"epochs": 1}, **sections}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # typos at every depth: named with the full path and the closest valid key
        ("train.schedule.milestone=[3]", "milestone: unknown key; did you mean train.schedule.milestones?"),
        ("train.query_sampling.edgeboost=2", "did you mean train.query_sampling.edge_boost?"),
        ("train.query_sampling={type: balanced, edgeboost: 2}", "did you mean train.query_sampling.edge_boost?"),
        ("data.augment.rotaton=5", "data.augment.rotaton: unknown key; did you mean data.augment.rotation?"),
        ("data.augment={color_jitter: {bright: [1, 2]}}", "did you mean data.augment.color_jitter.brightness?"),
        ("model.args.foo=1", "model.args.foo: unknown key"),
        ("model.args={widht: 16}", "model.args.widht: unknown key; did you mean model.args.width?"),
        ("model.name=fpliff", "model.name: unknown model 'fpliff'; did you mean 'fpliif'?"),
        ("train.epoch=3", "did you mean train.epochs?"),
        # wrong types and ranges (issue 16)
        ("train.edge_kernel=abc", "train.edge_kernel: expected an odd integer >= 3"),
        ("train.schedule=5", "train.schedule: expected a mapping"),
        ("data.size=-8", "data.size: expected an integer >= 1"),
        ("data.augment=7", "data.augment: expected"),
        ("train.epochs=true", "train.epochs: expected an integer >= 1"),
        ("train.val_batch_size=0", "train.val_batch_size: expected an integer >= 1"),
        ("train.lr=.inf", "train.lr: expected a number > 0"),
        ("data.augment={crop: -1}", "data.augment.crop:"),
        ("data.augment={hflip: 2}", "data.augment.hflip: expected a probability"),
        ("data.augment={degrade: {jpg: [30, 90]}}", "data.augment.degrade.jpg: unknown key; did you mean"),
        ("data.augment={degrade: {side: [0.5, 1.5]}}", "data.augment.degrade.side: expected values in [0.05, 1]"),
        ("data.augment={degrade: {p: 2}}", "data.augment.degrade.p: expected a probability"),
        ("data.augment={background: {pp: 2}}", "data.augment.background.pp: unknown key; did you mean"),
        ("data.augment={background: {feather: 9}}", "data.augment.background.feather: expected px in [0, 8]"),
        ("train.schedule={gamma: 0.5}", "train.schedule.type: missing"),
        ("train.query_sampling={type: uniform, edge_boost: 1}", "train.query_sampling.edge_boost: applies to type"),
        ("data.layout=flat", "data.layout: unknown dataset layout 'flat'"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path), [override])
    assert message in str(e.value)


def test_typo_in_the_file_names_the_file_and_key(tmp_path):
    path = _config(tmp_path, model={"name": "fpliif", "args": {"classes": "celebamask-hq", "depth": [1, 1, 1]}})
    with pytest.raises(ConfigError, match=r"c\.yaml: model\.args\.depth: unknown key; did you mean") as e:
        load_config(path)
    assert str(e.value).endswith("did you mean model.args.depths?")
    path.write_text(yaml.safe_dump({"data": {"root": "x", "augment": {"rotation": 5, "shaer": 3}}}))
    with pytest.raises(ConfigError, match=r"data\.augment\.shaer: unknown key; did you mean data\.augment\.shear"):
        load_config(path)


def test_valid_values_still_accepted(tmp_path):
    cfg = load_config(
        _config(tmp_path),
        [
            "train.lr=1e-3",  # PyYAML reads this as a string: still a number
            "train.schedule={type: constant}",  # a constant schedule needs no milestones
            "train.query_sampling={type: balanced, edge_boost: 2.0}",
            "data.augment=paper",
            "data.root=[a, b]",
            "train.ema=0.999",
            "model.args={classes: lapa, width: 8}",
        ],
    )
    assert cfg["train"]["lr"] == pytest.approx(1e-3) and cfg["train"]["schedule"] == {"type": "constant"}
    assert cfg["model"]["args"] == {"classes": "lapa", "width": 8}
    assert list(cfg) == list(DEFAULTS) and list(cfg["train"]) == list(DEFAULTS["train"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_and_their_dumps_load(tmp_path, path):
    """Every config in configs/ validates, and the resolved config a run writes (config.yaml) loads back."""
    cfg = load_config(path, ["data.root=/data/x"] if yaml.safe_load(path.read_text())["data"]["root"] is None else [])
    dumped = tmp_path / "config.yaml"
    dumped.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert load_config(dumped) == cfg


def test_cli_model_args_typo_writes_nothing(tmp_path, capsys):
    """Before: a TypeError traceback from the model constructor after the run folder was created."""
    out = tmp_path / "run"
    code = main(["train", "--config", str(_config(tmp_path)), "--out", str(out), "model.args.foo=1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fpliif train: error: model.args.foo: unknown key") and "\n" not in err
    assert not out.exists()


def test_cli_milestone_typo_is_refused(tmp_path, capsys):
    """Before: accepted, and the learning rate never dropped."""
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(tmp_path)), "--out", str(out), "train.schedule.milestone=[3]"]) == 2
    assert "did you mean train.schedule.milestones?" in capsys.readouterr().err
    assert not out.exists()


def test_cli_dry_run(tmp_path, capsys):
    from test_data_helpers import make_folder

    out = tmp_path / "run"
    path = _config(tmp_path)
    make_folder(tmp_path / "data", n=9)  # face008 is val (the folder layout's hash split), the others train
    files = sorted((tmp_path / "data").rglob("*"))
    argv = ["train.epochs=7", "train.batch_size=2"]
    assert main(["train", "--config", str(path), "--dry-run", "--out", str(out), *argv]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == load_config(path, [*argv, f"out={out}"])
    assert printed["train"]["epochs"] == 7 and printed["train"]["schedule"] == DEFAULTS["train"]["schedule"]
    assert not out.exists() and sorted((tmp_path / "data").rglob("*")) == files

    assert main(["train", "--config", str(path), "--dry-run", "data.augment.rotaton=5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "fpliif train: error: data.augment.rotaton: unknown key; did you mean data.augment.rotation?"
    )

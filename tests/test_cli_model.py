"""``fpliif info`` and ``fpliif bench`` (fpliif.bench.cli) through ``fpliif.cli.main``."""

from __future__ import annotations

import json

import pytest
import torch

from fpliif import models
from fpliif.cli import main
from fpliif.models.checkpoint import save


@pytest.fixture(autouse=True)
def restore_num_threads():
    """``fpliif bench --threads N`` calls torch.set_num_threads(N); undo it after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


BENCH = ["bench", "--json", "--sizes", "32", "--input-size", "64", "--runs", "1", "--threads", "1"]


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors (bad option values)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json(capsys):
    code, out, err = run(capsys, ["info", "--json"])
    assert code == 0, err
    info = json.loads(out)
    assert isinstance(info["model"], str) and info["model"] == "fpliif"
    assert isinstance(info["params"], int) and not isinstance(info["params"], bool)
    assert abs(info["params"] - 2.29e6) <= 0.01 * 2.29e6
    assert isinstance(info["classes"], list) and len(info["classes"]) == 19
    assert all(isinstance(c, str) for c in info["classes"])
    assert info["classes"][0] == "background"
    assert info["registered_models"] == models.available()
    assert "fpliif-celebamask-mini" in info["bundled_weights"]
    assert models.make(info["spec"]).num_parameters() == info["params"]


def test_info_text(capsys):
    code, out, err = run(capsys, ["info"])
    assert code == 0, err
    assert "fpliif" in out and "classes    19:" in out


def test_info_with_weights_file(capsys, tmp_path, tiny_spec):
    model = models.make(tiny_spec, classes="lapa")
    path = save(model, tmp_path / "tiny.safetensors")
    code, out, err = run(capsys, ["info", "--json", "--weights", str(path)])
    assert code == 0, err
    info = json.loads(out)
    assert info["params"] == model.num_parameters()
    assert len(info["classes"]) == 11 and info["label_set"] == "lapa"
    assert info["weights"] == str(path)


def test_info_missing_weights_file(capsys, tmp_path):
    code, out, err = run(capsys, ["info", "--weights", str(tmp_path / "nope.safetensors")])
    assert code == 2 and out == ""
    assert "nope.safetensors" in err


def test_info_unknown_model_lists_registered(capsys):
    code, _, err = run(capsys, ["info", "--model", "no-such-model"])
    assert code == 2
    assert "no-such-model" in err and "fpliif" in err
    assert "Traceback" not in err


def test_bench_json(capsys):
    code, out, err = run(capsys, BENCH)
    assert code == 0, err
    result = json.loads(out)
    assert isinstance(result["params"], int) and abs(result["params"] - 2.29e6) <= 0.01 * 2.29e6
    assert list(result["macs"]) == ["32"] and list(result["fps"]) == ["32"]
    assert isinstance(result["macs"]["32"], int) and result["macs"]["32"] > 0
    assert isinstance(result["fps"]["32"], float) and result["fps"]["32"] > 0
    assert isinstance(result["device"], str) and result["device"]
    assert result["threads"] == 1
    assert torch.get_num_threads() == 1  # (restored by the restore_num_threads fixture)


def test_bench_text_with_weights_file(capsys, tmp_path, tiny_spec):
    path = save(models.make(tiny_spec), tmp_path / "tiny.safetensors")
    argv = ["bench", "--weights", str(path), "--sizes", "16,24", "--input-size", "32", "--runs", "1"]
    code, out, err = run(capsys, argv)
    assert code == 0, err
    assert "GMACs" in out and "FPS" in out
    assert any(line.split()[:1] == ["16"] for line in out.splitlines())
    assert any(line.split()[:1] == ["24"] for line in out.splitlines())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--sizes", "0"),
        ("--sizes", "64,-1"),
        ("--sizes", "abc"),
        ("--sizes", ""),
        ("--runs", "0"),
        ("--runs", "-3"),
        ("--threads", "0"),
    ],
)
def test_bench_bad_values(capsys, option, value):
    argv = list(BENCH)
    argv[argv.index(option) + 1] = value
    code, out, err = run(capsys, argv)
    assert code == 2
    assert out == ""
    assert option in err and "error" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-64"])
def test_bench_bad_input_size_names_the_option(capsys, value):
    argv = list(BENCH)
    argv[argv.index("--input-size") + 1] = value
    code, _, err = run(capsys, argv)
    assert code == 2
    assert "--input-size" in err


@pytest.mark.parametrize(("option", "value"), [("--runs", "x"), ("--input-size", "1.5"), ("--device", "tpu")])
def test_bench_argparse_errors(capsys, option, value):
    argv = [a for a in BENCH if a != "--json"]
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert option in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys, [])
    assert code == 2
    assert "info" in out and "bench" in out


def test_bench_photos_times_the_whole_photo_path_per_mode(capsys, tmp_path, tiny_spec):
    from fpliif.infer.cli import example_image

    torch.manual_seed(0)  # the same tiny model whatever ran before (its random labels decide the agreement)
    path = save(models.make(tiny_spec), tmp_path / "tiny.safetensors")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(example_image().read_bytes())
    argv = ["bench", "--weights", str(path), "--photos", str(folder), "--runs", "1", "--threads", "1", "--json"]
    code, out, err = run(capsys, argv)
    assert code == 0, err
    result = json.loads(out)
    assert result["decode"] == ["dense", "adaptive"]
    (row,) = result["photos"]
    assert row["photo"].endswith("a.jpg") and row["faces"] == 1 and row["size"][:2] == [512, 512]
    assert all(row["seconds"][m] > 0 and result["photos_per_s"][m] > 0 for m in ("dense", "adaptive"))
    assert row["agreement_with_dense"]["dense"] == 1.0 and 0.9 < row["agreement_with_dense"]["adaptive"] <= 1.0
    code, out, err = run(capsys, ["bench", "--weights", str(path), "--photos", str(tmp_path / "nope.jpg")])
    assert code == 2 and "nope.jpg does not exist" in err

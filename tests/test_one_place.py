"""The single helpers of issue #15: weights metadata, label-set resolver, integer validators, index PNGs,
the epoch loader and run state, and the package's import graph (no cycles)."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fpliif
from conftest import TINY_SPEC
from fpliif.labels import CELEBAMASK_HQ, COARSE, HELEN, LAPA, index_png, resolve_label_set
from fpliif.models import checkpoint
from fpliif.models.checkpoint import WeightsMetadata, input_size_of, onnx_metadata, read_metadata
from fpliif.models.pretrained import default_weights_path
from fpliif.validate import check_size, parse_int_list, positive_ints

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    meta = {"input_size": "32", "epoch": "3", "val_mean_f1": "12.5000", "config": json.dumps({"out": "x"})}
    return fpliif.save(fpliif.make(TINY_SPEC), tmp_path_factory.mktemp("w") / "tiny.safetensors", metadata=meta)


def _with_header(src: Path, dst: Path, **changes: str) -> Path:
    with safe_open(str(src), "pt") as f:
        header = {**f.metadata(), **changes}
    save_file(load_file(str(src)), str(dst), metadata=header)
    return dst


# ---------------------------------------------------------------------------------------------- metadata
def test_read_metadata_is_typed_and_frozen(tiny_file):
    meta = read_metadata(tiny_file)
    assert (meta.input_size, meta.epoch, meta.val_mean_f1) == (32, 3, 12.5)
    assert meta.label_set is CELEBAMASK_HQ and meta.temperature == 0.5  # the constructor's defaults
    assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.5, 0.5, 0.5)  # the model's own normalisation
    assert meta.model == "fpliif" and meta.spec["args"]["width"] == 8 and meta.config == {"out": "x"}
    assert meta.path == tiny_file and meta.git_commit is None
    assert meta["input_size"] == "32" and dict(meta)["fpliif_format"] == "1"  # the header, as written
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.input_size = 64
    meta.spec["args"]["width"] = 99  # a copy: the record does not change
    assert meta.spec["args"]["width"] == 8
    model = fpliif.load(tiny_file)
    assert isinstance(model.weights_metadata, WeightsMetadata) and input_size_of(model) == 32
    assert input_size_of(fpliif.make(TINY_SPEC)) == checkpoint.DEFAULT_INPUT_SIZE
    assert input_size_of(fpliif.make(TINY_SPEC), default=None) is None


def test_bundled_weights_still_read():
    path = default_weights_path()
    meta = read_metadata(None)  # None: the bundled default, as load()
    assert meta.path == path and read_metadata(path.stem).path == path
    # the typed fields agree with the file's raw string header (whichever model version is bundled)
    assert meta.input_size == int(meta["input_size"]) == meta.config["data"]["size"]
    assert meta.label_set is CELEBAMASK_HQ and meta.epoch == int(meta["epoch"]) >= 1
    assert "non-commercial" in meta.licence and meta.git_commit
    assert meta.mean is None or len(meta.mean) == 3  # older files predate recording the normalisation


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"input_size": "\u00b2"}, "input_size"),  # str.isdigit() is true for a superscript two
        ({"input_size": "4"}, "input_size"),
        ({"epoch": "five"}, "epoch"),
        ({"val_mean_f1": "nan"}, "val_mean_f1"),
        ({"mean": "[0.5, 0.5]"}, "mean"),
        ({"config": "{"}, "config"),
    ],
)
def test_bad_metadata_fields_name_the_file_and_field(tiny_file, tmp_path, changes, field):
    path = _with_header(tiny_file, tmp_path / "bad.safetensors", **changes)
    for reader in (read_metadata, fpliif.load):
        with pytest.raises(ValueError, match=field) as info:
            reader(path)
        assert str(path) in str(info.value)


def test_save_checks_metadata_and_reserves_what_it_writes(tmp_path):
    model = fpliif.make(TINY_SPEC)
    for key in checkpoint.WRITTEN_KEYS:
        with pytest.raises(ValueError, match="reserved"):
            fpliif.save(model, tmp_path / "m.safetensors", metadata={key: "x"})
    with pytest.raises(ValueError, match="input_size"):
        fpliif.save(model, tmp_path / "m.safetensors", metadata={"input_size": "big"})
    assert not (tmp_path / "m.safetensors").exists()


def test_onnx_metadata_round_trip(tiny_file):
    model = fpliif.load(tiny_file)
    props = onnx_metadata(model, input_size=64)
    meta = WeightsMetadata.from_onnx(props, "m.onnx")
    assert meta.input_size == 64  # the export's input side
    assert meta.label_set is CELEBAMASK_HQ and meta.temperature == model.temperature
    assert (meta.epoch, meta.val_mean_f1, meta.mean, meta.config) == (3, 12.5, (0.5,) * 3, {"out": "x"})
    assert meta.spec == model.spec and meta["fpliif_spec"] == props["fpliif_spec"]
    helen = {**props, "fpliif_classes": json.dumps(HELEN.classes), "fpliif_label_set": "helen"}
    assert WeightsMetadata.from_onnx(helen).label_set is HELEN  # Helen and LaPa share their classes
    with pytest.raises(ValueError, match="not an fpliif ONNX export"):
        WeightsMetadata.from_onnx({"producer": "x"}, "m.onnx")
    with pytest.raises(ValueError, match="m.onnx: metadata fpliif_input_size"):
        WeightsMetadata.from_onnx({**props, "fpliif_input_size": "0"}, "m.onnx")


def test_run_state_round_trip_and_bad_file(tmp_path):
    state = {"epoch": 2, "model": {"w": torch.arange(3)}}
    path = checkpoint.save_state(state, tmp_path / "run" / "last.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    loaded = checkpoint.load_state(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3))
    (tmp_path / "bad.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="bad.pt: cannot read checkpoint"):
        checkpoint.load_state(tmp_path / "bad.pt")


# ---------------------------------------------------------------------------------------------- labels
def test_resolve_label_set():
    assert resolve_label_set("lapa") is LAPA
    assert resolve_label_set(list(CELEBAMASK_HQ.classes)) is CELEBAMASK_HQ
    assert resolve_label_set(HELEN.classes) is LAPA and resolve_label_set(HELEN.classes, "helen") is HELEN
    assert resolve_label_set(COARSE.classes) is COARSE
    custom = resolve_label_set(["background", "face"], "mine")
    assert custom.name == "mine" and custom.classes == ("background", "face")
    for bad in (["background"], ["a", "b", "a"], []):
        with pytest.raises(ValueError, match="2 or more distinct"):
            resolve_label_set(bad)
    with pytest.raises(ValueError, match="did you mean 'lapa'"):
        resolve_label_set("lapaa")


def test_index_png_keeps_indices_and_palette():
    labels = np.random.default_rng(0).integers(0, 19, (9, 7), dtype=np.uint8)
    img = Image.open(io.BytesIO(index_png(labels, CELEBAMASK_HQ)))
    assert img.mode == "P" and np.array_equal(np.asarray(img), labels)
    assert img.getpalette()[: 3 * 19] == CELEBAMASK_HQ.palette()[: 3 * 19]
    small = index_png(labels, CELEBAMASK_HQ, optimize=True)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(small))), labels)


# ---------------------------------------------------------------------------------------------- validators
def test_positive_ints_and_parse_int_list():
    assert positive_ints([64, 128, 64, np.int64(32), 96.0], "sizes") == [64, 128, 32, 96]
    assert positive_ints([], "lowres", allow_empty=True) == []
    assert parse_int_list(" 256, 512,256 ", "--sizes") == [256, 512]
    assert parse_int_list("", "--lowres", allow_empty=True) == []
    for values in ([0], [-3], [True], [2.5], ["3"], [float("inf")]):
        with pytest.raises(ValueError, match="sizes: expected positive integers"):
            positive_ints(values, "sizes")
    with pytest.raises(ValueError, match="--sizes: expected at least one"):
        parse_int_list(" , ", "--sizes")
    with pytest.raises(ValueError, match="--sizes: expected comma-separated integers"):
        parse_int_list("64,x", "--sizes")


def test_check_size():
    assert check_size(5) == (5, 5) and check_size(np.int64(5)) == (5, 5)
    assert check_size((3, 4)) == (3, 4) and check_size((3.0, np.int32(4))) == (3, 4)
    assert check_size(torch.Size([6, 7])) == (6, 7)
    for bad in (True, 2.5, "64", (2, 2.5), (1, 2, 3), None, (0, 3)):
        with pytest.raises(ValueError, match="^out: "):
            check_size(bad, "out")


# ---------------------------------------------------------------------------------------------- loaders
def test_epoch_loader_is_a_function_of_seed_and_epoch(tmp_path):
    from fpliif.data import FaceParsingDataset, build_eval_transform, make_loader
    from test_data_helpers import make_folder

    make_folder(tmp_path, n=8, size=16)
    ds = FaceParsingDataset(tmp_path, "folder", "all", transform=build_eval_transform(16, (16,)))

    def order(seed, epoch, **kw):
        loader = make_loader(ds, 2, shuffle=True, num_workers=0, seed=seed, epoch=epoch, **kw)
        return [n for b in loader for n in b["name"]]

    assert order(1, 3) == order(1, 3) and order(1, 3) != order(1, 4)
    loader = make_loader(ds, 2, shuffle=True, num_workers=1, seed=1, epoch=3, distributed=True, num_replicas=2, rank=0)
    assert loader.sampler.epoch == 3 and not loader.persistent_workers
    assert not make_loader(ds, 2, shuffle=False, num_workers=0, pin_memory=False).pin_memory


# ---------------------------------------------------------------------------------------------- imports


@pytest.fixture(scope="module")
def import_cycles():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import import_cycles
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return import_cycles


def test_package_has_no_import_cycles_at_module_level(import_cycles):
    graph = import_cycles.import_graph()
    assert "fpliif.models.registry" in graph["fpliif.models.checkpoint"]  # the graph sees relative imports
    assert import_cycles.cycles(graph) == []
    assert import_cycles.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_package_has_no_import_cycles_inside_functions(import_cycles):
    graph = import_cycles.import_graph(lazy=True)
    pretrained = "fpliif.models.pretrained"  # imported inside a function of checkpoint only
    assert (
        pretrained in graph["fpliif.models.checkpoint"]
        and pretrained not in import_cycles.import_graph()["fpliif.models.checkpoint"]
    )
    assert graph["fpliif.models.registry"] == {"fpliif.errors"}  # the registry imports no model
    assert "fpliif.data.celebamask" not in graph["fpliif.data.layouts"]
    assert "fpliif.infer.detect" not in graph["fpliif.infer.framing"]  # the framing measurement is a script
    assert import_cycles.cycles(graph) == []


def test_import_cycles_script_fails_on_a_lazy_cycle_only_with_lazy(import_cycles, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    graph = import_cycles.import_graph(lazy=True, src=tmp_path, package="pkg")
    assert import_cycles.cycles(graph) == [["pkg.a", "pkg.b"]]
    assert import_cycles.cycles(import_cycles.import_graph(src=tmp_path, package="pkg")) == []
    assert import_cycles.main(["--src", str(tmp_path), "--package", "pkg"]) == 0
    assert import_cycles.main(["--src", str(tmp_path), "--package", "pkg", "--lazy"]) == 1
    assert "pkg.a <-> pkg.b" in capsys.readouterr().out


def test_models_package_is_the_factory_over_the_registry():
    from fpliif import models
    from fpliif.models import registry

    assert {"fpliif", "segface_mnv3", "stn_icnn"} <= set(models.available())
    assert (models.make, models.available, fpliif.make) == (registry.make, registry.available, registry.make)


def test_models_package_imports_no_torch_until_the_registry_is_asked():
    import subprocess

    code = (
        "import sys\n"
        "from fpliif.models import registry\n"
        "assert 'torch' not in sys.modules and 'fpliif.models.fpliif' not in sys.modules\n"
        "assert {'fpliif', 'segface_mnv3', 'stn_icnn'} <= set(registry.available())\n"  # the first lookup loads them
        "assert 'fpliif.models.fpliif' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)  # imports torch
    assert r.returncode == 0, r.stderr


def test_checkpoint_and_validate_import_no_torch():
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import fpliif.models.checkpoint, fpliif.validate\n"
        "assert sys.modules['torch'] is None and not [m for m in sys.modules if m.startswith('torch.')]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------- serve flags
def test_serve_flags_are_made_from_the_settings_fields():
    import argparse

    from fpliif.cli import build_parser
    from fpliif.serve.cli import add_settings_flags, flag_of, settings_from_args
    from fpliif.serve.settings import ServeSettings

    p = argparse.ArgumentParser()
    add_settings_flags(p)
    fields = dataclasses.fields(ServeSettings)
    flags = {a.dest: a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == {f.name: flag_of(f) for f in fields}  # every field has a flag, every flag is a field
    assert all(f.metadata.get("help") for f in fields)
    serve = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    assert {a.dest for a in serve._actions if a.option_strings} - set(flags) == {"help", "weights", "log_level"}

    assert settings_from_args(p.parse_args([])) == ServeSettings()  # no flags: the settings' defaults
    argv = ["--workers-threads", "3", "--keep-alive-timeout", "2.5", "--tta", "--decode", "dense", "--max-pixels", "99"]
    s = settings_from_args(p.parse_args(argv))
    assert (s.workers, s.keep_alive_timeout, s.tta, s.decode, s.max_pixels) == (3, 2.5, True, "dense", 99)
    with pytest.raises(ValueError, match=r"^--workers-threads: must be in 1\.\."):
        settings_from_args(p.parse_args(["--workers-threads", "0"]))


# ---------------------------------------------------------------------------------------------- benchmarks
def test_one_timing_loop_for_every_benchmark(monkeypatch):
    from fpliif.bench import runner

    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0, 30.0, 32.0])  # calls of 5 s (warm-up), 1 s, 3 s, 2 s
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(clock))
    calls = iter(range(10))
    t = runner.time_calls(lambda: next(calls), runs=3, warmup=1)
    assert (t.median, t.first, t.last) == (2.0, 5.0, 3)  # the median leaves the warm-up call out
    with pytest.raises(ValueError, match="runs"):
        runner.time_calls(lambda: None, runs=0)
    # inference, photo and training benchmarks time through it: no other timing loop in the package
    bench = ROOT / "src" / "fpliif" / "bench"
    assert [p.name for p in sorted(bench.glob("*.py")) if "perf_counter" in p.read_text()] == ["runner.py"]


# ---------------------------------------------------------------------------------------------- dataset options
def test_layout_auto_is_resolved_in_one_place(tmp_path):
    from fpliif.data import resolve_layout
    from fpliif.train.config import load_config
    from test_data_helpers import make_folder, make_lapa

    make_folder(tmp_path / "a", n=2)
    make_lapa(tmp_path / "b")
    assert resolve_layout(tmp_path / "a", "auto") == "folder" and resolve_layout([tmp_path / "b"], "auto") == "lapa"
    assert resolve_layout(tmp_path / "b", "folder") == "folder"  # an explicit layout is not second-guessed
    with pytest.raises(ValueError, match="different layouts"):
        resolve_layout([tmp_path / "a", tmp_path / "b"], "auto")
    with pytest.raises(ValueError, match="unknown dataset layout 'flat'"):
        resolve_layout(tmp_path / "a", "flat")
    assert load_config(None, [f"data.root={tmp_path / 'a'}", "data.layout=auto"])["data"]["layout"] == "auto"


def test_shared_cli_options_are_defined_once():
    """The options several commands take are added in one module (fpliif.cli's parent parsers); commands list
    them as ``parents``. (``serve --weights`` is its own: it also takes an .onnx file.)"""
    import ast

    shared = {"--weights", "--device", "--threads", "--workers", "--no-progress", "--quiet"}
    where: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src" / "fpliif").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args:
                flag = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
                if flag in shared:
                    where.setdefault(flag, set()).add(path.relative_to(ROOT / "src").as_posix())
    assert where == {
        "--weights": {"fpliif/cli.py", "fpliif/serve/cli.py"},
        "--device": {"fpliif/cli.py"},
        "--threads": {"fpliif/cli.py"},
        "--workers": {"fpliif/cli.py"},
        "--no-progress": {"fpliif/cli.py"},
        "--quiet": {"fpliif/infer/cli_parse.py"},  # parse's hidden old name of --no-progress
    }


def test_data_commands_share_the_dataset_options():
    import argparse

    from fpliif.cli import build_parser

    def options(*path: str) -> dict[str, argparse.Action]:
        parser = build_parser()
        for name in path:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        return {a.dest: a for a in parser._actions}

    for command in (("data", "check"), ("data", "prepare")):
        opts = options(*command)
        assert "root" not in opts and isinstance(opts["data"], argparse._AppendAction) and opts["data"].required
        assert opts["layout"].default == "auto" and opts["workers"].default is None
        assert opts["workers"].type("0") == 0 and "no_progress" in opts


def test_serve_device_flag_reaches_the_model(tiny_file):
    pytest.importorskip("fastapi")
    import argparse

    from fpliif.errors import ConfigError
    from fpliif.serve.app import create_app
    from fpliif.serve.cli import add_settings_flags, settings_from_args
    from fpliif.serve.settings import ServeSettings

    p = argparse.ArgumentParser()
    add_settings_flags(p)
    assert settings_from_args(p.parse_args([])).device == "cpu"
    assert settings_from_args(p.parse_args(["--device", "cuda"])).device == "cuda"
    with pytest.raises(ConfigError, match="device"):
        ServeSettings(device="tpu")
    assert str(next(create_app(tiny_file).state.engine.parser.backend.model.parameters()).device) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_app(tiny_file, ServeSettings(device="cuda"))


def test_info_reports_the_weights_input_size(capsys):
    from fpliif.cli import main

    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == read_metadata(None).input_size


def test_train_takes_the_dataset_flags_as_config_overrides(tmp_path, capsys):
    import yaml

    from fpliif.cli import main
    from test_data_helpers import make_folder

    for root in ("a b", "c"):  # --dry-run checks the roots as a run does: 8 train pairs (mini.yaml's batch), 1 val
        make_folder(tmp_path / root, n=9)
    argv = ["train", "--config", str(ROOT / "configs" / "mini.yaml"), "--dry-run", "--data", str(tmp_path / "a b")]
    argv += [f"out={tmp_path / 'run'}"]
    assert main([*argv, "--data", str(tmp_path / "c"), "--layout", "auto", "--workers", "0"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert (data["root"], data["layout"], data["workers"]) == ([str(tmp_path / "a b"), str(tmp_path / "c")], "auto", 0)
    assert main([*argv, "data.workers=3"]) == 0  # one --data: a single root; config keys keep working beside it
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert (data["root"], data["layout"], data["workers"]) == (str(tmp_path / "a b"), "folder", 3)

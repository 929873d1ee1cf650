"""Command-line option checking (issue 16): every numeric option of ``parse``, ``export``, ``eval``, ``serve`` and
``bench`` refuses negative, zero (where zero means nothing), non-numeric and non-finite values as a usage error
naming the option (exit code 2) before any work; output paths are checked before any work too. No model is
loaded here."""

from __future__ import annotations

import argparse

import pytest

from fpliif.cli import build_parser, main
from fpliif.serve.cli import settings_from_args
from fpliif.validate import MAX_THREADS, float_arg, int_arg

REQUIRED = {
    "parse": ["--out", "o"],
    "export": ["onnx", "--out", "m.onnx"],
    "eval": ["--data", "d", "--layout", "folder"],
    "serve": [],
    "bench": [],
}
ZERO_MEANS_SOMETHING = {
    ("parse", "--max-pixels"),  # 0: no limit
    ("parse", "--max-points"),
    ("parse", "--max-decode-size"),  # 0: never downsample the decoding
    ("parse", "--alpha"),  # a transparent overlay
    ("parse", "--feather"),  # a hard switch at the face window's edge
    ("eval", "--workers"),  # load in the main process
    ("bench", "--warmup"),
    ("serve", "--port"),  # any free port
    ("serve", "--torch-threads"),  # leave torch's setting alone
    ("serve", "--max-queue"),  # no waiting requests
}
BAD = ["-1", "abc", "nan", "inf", "1e400", "2.5e", ""]


def numeric_options() -> list[tuple[str, str, argparse.Action]]:
    """(command, flag, action) of every option whose value is converted by a ``type`` (numbers)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command in REQUIRED:
        for action in sub.choices[command]._actions:
            if action.option_strings and action.type is not None and action.type is not str and not action.choices:
                found.append((command, action.option_strings[0], action))
    return found


OPTIONS = numeric_options()


def refusal(command: str, flag: str, value: str, capsys) -> str | None:
    """The usage error ``fpliif COMMAND FLAG VALUE`` gives (argparse's, or the serve settings'), else None."""
    try:
        args = build_parser().parse_args([command, *REQUIRED[command], flag, value])
    except SystemExit as e:
        assert e.code == 2
        return capsys.readouterr().err
    if command == "serve":
        try:
            settings_from_args(args)
        except ValueError as e:
            return str(e)
    return None


def test_the_numeric_options_are_found():
    flags = {(c, f) for c, f, _ in OPTIONS}
    assert {("parse", "--threads"), ("parse", "--size"), ("eval", "--batch-size"), ("serve", "--timeout")} <= flags
    assert {("bench", "--runs"), ("bench", "--threads"), ("export", "--opset")} <= flags


@pytest.mark.parametrize("command, flag", [(c, f) for c, f, _ in OPTIONS])
def test_numeric_options_refuse_bad_values_naming_the_option(command, flag, capsys):
    bad = BAD + ([] if (command, flag) in ZERO_MEANS_SOMETHING else ["0"])
    for value in bad:
        err = refusal(command, flag, value, capsys)
        assert err is not None, f"{command} {flag} {value!r} was accepted"
        assert flag in err and "Traceback" not in err, err


@pytest.mark.parametrize("command, flag, action", OPTIONS)
def test_numeric_options_accept_their_defaults_and_documented_values(command, flag, action, capsys):
    values = [str(action.default)] if action.default is not None else []
    values += ["0"] if (command, flag) in ZERO_MEANS_SOMETHING else ["1" if flag != "--max-size" else "8"]
    if flag in ("--size", "--input-size") and command in ("export", "eval", "bench"):
        values = ["8", "1024"]  # a weight file's input_size range
    if flag == "--opset":
        values = ["17"]
    for value in values:
        assert refusal(command, flag, value, capsys) is None, (command, flag, value)


def test_threads_upper_bound_and_huge_integers_are_usage_errors(capsys):
    assert refusal("parse", "--threads", str(MAX_THREADS), capsys) is None
    for command, flag in (("parse", "--threads"), ("bench", "--threads"), ("serve", "--torch-threads")):
        err = refusal(command, flag, str(MAX_THREADS + 1), capsys)
        assert err is not None and flag in err and str(MAX_THREADS) in err
    err = refusal("serve", "--max-upload-mb", "1e300", capsys)
    assert err is None  # finite and positive: a (silly) limit, not an overflow
    assert refusal("serve", "--max-upload-mb", "inf", capsys) is not None  # was an OverflowError traceback


def test_parse_threads_minus_one_is_a_usage_error_before_any_work(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"not read")
    with pytest.raises(SystemExit) as e:
        main(["parse", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--threads", "-1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threads: expected an integer in [1, 1024], got '-1'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_types_name_their_range():
    with pytest.raises(argparse.ArgumentTypeError, match=r"an integer >= 0, got '-3'"):
        int_arg(0)("-3")
    with pytest.raises(argparse.ArgumentTypeError, match=r"a finite number in \[0, 1\], got 'nan'"):
        float_arg(0, 1)("nan")
    with pytest.raises(argparse.ArgumentTypeError, match=r"a finite number > 0, got '0'"):
        float_arg(0, low_open=True)("0")
    assert int_arg(1)(" 7 ") == 7 and int_arg(1)("1_000") == 1000 and float_arg(0, 1)("1") == 1.0


# ---------------------------------------------------------------------------------------------- output paths
@pytest.mark.parametrize("out", ["", "  ", "FILE", "FILE/sub"])
def test_parse_out_must_name_a_folder(tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "x.png").write_bytes(b"not read")
    assert main(["parse", "x.png", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "fpliif parse: error: --out" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "x.png"]  # nothing written into ./


@pytest.mark.parametrize("out", ["", "DIR", "DIR/", "FILE/r.json"])
def test_eval_out_is_checked_before_the_model_loads(tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("a file")
    monkeypatch.setattr("fpliif.eval.cli._load_model", lambda *a: pytest.fail("the model was loaded"))
    assert main(["eval", "--data", "DIR", "--layout", "folder", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "fpliif eval: error: --out" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- shared options
def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every (sub)command under ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _subcommands(child, (*path, name))


def test_shared_options_mean_the_same_in_every_command():
    """--device, --threads, --workers, --no-progress and --weights: one definition (fpliif.cli's parents), so the
    same name, default, choices and range wherever a command takes them."""
    found: dict[str, dict[str, argparse.Action]] = {}
    for path, p in _subcommands(build_parser()):
        for a in p._actions:
            if a.option_strings and a.option_strings[0] in ("--device", "--threads", "--workers", "--no-progress"):
                found.setdefault(a.option_strings[0], {})[" ".join(path)] = a
    assert {"parse", "eval", "bench", "serve"} <= set(found["--device"])
    assert {"parse", "bench"} <= set(found["--threads"])
    assert {"data check", "data prepare", "eval", "calibrate", "train"} <= set(found["--workers"])
    assert {"data check", "data prepare", "eval", "calibrate", "train", "parse"} <= set(found["--no-progress"])
    for flag, actions in found.items():
        shapes = {
            cmd: (a.dest, a.default, tuple(a.choices or ()), type(a).__name__, _accepts(a))
            for cmd, a in actions.items()
        }
        assert len(set(shapes.values())) == 1, (flag, shapes)


def _accepts(action: argparse.Action) -> tuple[bool, ...]:
    """Which of a few values the action's ``type`` accepts (its range, compared across commands)."""
    if action.type in (None, str):  # serve's flags are made with type=str
        return ()
    out = []
    for value in ("-1", "0", "1", str(MAX_THREADS), str(MAX_THREADS + 1)):
        try:
            action.type(value)
            out.append(True)
        except argparse.ArgumentTypeError:
            out.append(False)
    return tuple(out)


def test_parse_documents_no_progress_and_keeps_quiet_as_a_hidden_alias():
    parse = dict(_subcommands(build_parser()))[("parse",)]
    text = parse.format_help()
    assert "--no-progress" in text and "--quiet" not in text
    assert parse.parse_args(["--out", "o"]).no_progress is False
    assert parse.parse_args(["--out", "o", "--no-progress"]).no_progress is True
    assert parse.parse_args(["--out", "o", "--quiet"]).no_progress is True  # scripts written for the old name

"""How the command line is entered: ``python -m fpliif``, ``-m fpliif.cli`` (torchrun), and what building the
argument parser imports (no torch, kornia, cv2 or onnxruntime)."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("torch", "kornia", "cv2", "onnxruntime")


def _run(*args: str, code: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(("-c", code) if code else ()), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def _one_line_error(r: subprocess.CompletedProcess, command: str, text: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"fpliif {command}: error: {lines[0].split('error: ', 1)[-1]}"], r.stderr
    assert "Traceback" not in r.stderr and text in r.stderr


def test_python_dash_m_fpliif(tmp_path):
    r = _run("-m", "fpliif", "train", "--config", "missing.yaml", cwd=tmp_path)
    _one_line_error(r, "train", "config file not found: missing.yaml")
    r = _run("-m", "fpliif", "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("fpliif ")


def test_python_dash_m_fpliif_cli_still_works(tmp_path):
    r = _run("-m", "fpliif.cli", "train", "--config", "missing.yaml", cwd=tmp_path)
    _one_line_error(r, "train", "config file not found: missing.yaml")


def test_user_error_of_a_subcommand_is_one_line_under_dash_m():
    """``-m fpliif.cli`` ran cli.py twice (as __main__ and as fpliif.cli): a subcommand's UserError was another
    class than the one main() catches, and escaped as a traceback. The error types now live in fpliif.errors."""
    for module in ("fpliif.cli", "fpliif"):
        code = (
            "import runpy, sys\n"
            "sys.modules['uvicorn'] = None  # as if the 'serve' extra were missing: cmd_serve raises UserError\n"
            "sys.argv = ['fpliif', 'serve']\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
        )
        _one_line_error(_run(code=code), "serve", "needs the 'serve' extra (uvicorn is missing)")


def test_error_types_module_imports_nothing_of_the_package():
    code = (
        "import sys\n"
        "import fpliif.errors as e\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('fpliif'))\n"
        "assert loaded == ['fpliif', 'fpliif.errors'], loaded\n"
        "import fpliif.cli, fpliif.data, fpliif.data.io\n"
        "assert fpliif.cli.UserError is e.UserError and fpliif.data.DataError is e.DataError\n"
        "assert fpliif.data.io.DataError is e.DataError\n"
    )
    r = _run(code=code)
    assert r.returncode == 0, r.stderr


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys\n"
        "import fpliif.cli\n"
        "parser = fpliif.cli.build_parser()\n"
        "parser.format_help()\n"
        "sub = next(a for a in parser._actions if a.dest == 'command')\n"
        "for name in ('parse', 'train', 'eval', 'data', 'serve', 'export', 'info', 'bench'):\n"
        "    assert name in sub.choices, name\n"
        "    sub.choices[name].format_help()\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = _run(code=code)
    assert r.returncode == 0, r.stderr
    for args in (["--help"], ["parse", "--help"], ["train", "--help"]):
        code = (
            "import sys\n"
            "from fpliif.cli import main\n"
            "try:\n"
            f"    main({args!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not heavy, heavy\n"
        )
        r = _run(code=code)
        assert r.returncode == 0, (args, r.stderr)
        assert "usage: fpliif" in r.stdout

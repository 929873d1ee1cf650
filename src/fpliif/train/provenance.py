"""Where trained weights come from: the version of the code that trained them (written into their metadata)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    """``git describe``-style id of the training code (commit, '+dirty' with local changes), or 'unknown'."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=src.parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


__all__ = ["code_version"]

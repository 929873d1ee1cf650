"""scripts/photo_profile.py: every stage it wraps still exists in the parser, and each is charged time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "src" / "fpliif" / "assets" / "astronaut.jpg"


def test_photo_profile_charges_each_stage_of_a_real_parse():
    """Run as a user does (a subprocess: the script wraps the parser's classes for good)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "photo_profile.py"), str(ASTRONAUT), "--runs", "1", "--amp", "none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    stages = out["stages_s"]
    for name in ("image I/O", "detection", "crop + resize", "encoding", "face: decoder", "face: pixels", "face: paste"):
        assert stages.get(name, 0) > 0, (name, stages)
    assert out["points"]["face"] > 0
    assert abs(sum(out["stages_share"].values()) - 1) < 0.01

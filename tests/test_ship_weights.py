"""scripts/ship_default_weights.py: a run's weights written as the bundled model's file, fp16, with the run's
metadata kept and the provenance added (the training command, the code's commit, the licence)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import fpliif

SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
sys.path.insert(0, SCRIPTS)
try:
    import ship_default_weights
finally:
    sys.path.remove(SCRIPTS)


def test_shipped_file_keeps_the_runs_metadata_and_records_provenance(tiny_file, tmp_path):
    out = tmp_path / "shipped.safetensors"
    argv = [tiny_file, "--out", str(out), "--command", "fpliif train --config c.yaml", "--git-commit", "abc1234"]
    sys_argv, sys.argv = sys.argv, ["ship_default_weights.py", *argv]
    try:
        assert ship_default_weights.main() == 0
    finally:
        sys.argv = sys_argv
    meta = fpliif.load(str(out)).weights_metadata
    assert meta["input_size"] == "32"  # the run's own metadata
    assert meta["training_command"] == "fpliif train --config c.yaml"
    assert meta["git_commit"] == "abc1234"  # --git-commit overrides the run's "unknown"
    assert "non-commercial" in meta["licence"]
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    run, shipped = fpliif.load(tiny_file), fpliif.load(str(out))
    for (name, a), (_, b) in zip(run.state_dict().items(), shipped.state_dict().items(), strict=True):
        assert torch.allclose(a.half().float(), b, atol=0, rtol=0), name

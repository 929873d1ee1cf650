"""Shared test fixtures. Keep this small: feature-specific fixtures belong in their own test files."""

from __future__ import annotations

import copy

import pytest
import torch

# Tests use tiny models, for which one thread is fastest and robust to a busy 2-core machine
# (with 2 threads a small op can be ~80x slower when the other core is taken).
torch.set_num_threads(1)

TINY_SPEC = {
    "name": "fpliif",
    "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]},
}


@pytest.fixture
def tiny_spec() -> dict:
    """Spec of a tiny FP-LIIF (same structure as the paper's, a few thousand parameters): fast on CPU."""
    return copy.deepcopy(TINY_SPEC)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> str:
    """Path of a tiny FP-LIIF weights file (:data:`TINY_SPEC`, seed 0, ``input_size`` 32), one per test module.
    Modules that need other metadata define their own ``tiny_file``."""
    import fpliif

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY_SPEC), path, metadata={"input_size": "32"})
    return str(path)

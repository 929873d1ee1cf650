"""The bundled default weights: present, loadable, and they parse the example photo sensibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fpliif
from fpliif.pretrained import default_weights_path

EXAMPLE = Path(fpliif.__file__).parent / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def weights() -> Path:
    path = default_weights_path()
    assert path is not None, "the package must ship default weights (src/fpliif/weights/)"
    return path


def test_default_weights_are_self_describing(weights):
    meta = fpliif.read_metadata(weights)
    model = fpliif.load(weights)
    assert model.num_parameters() == 2_285_075  # the paper's architecture, not a smaller stand-in
    assert model.label_set.name == "celebamask-hq"
    for key in ("config", "epoch", "input_size", "training_command", "git_commit", "licence"):
        assert key in meta, key
    assert "non-commercial" in meta["licence"]


def test_default_model_parses_the_example_face(weights):
    from fpliif import FaceParser

    result = FaceParser.from_pretrained()(EXAMPLE)
    assert len(result.faces) == 1
    x1, y1, x2, y2 = (int(v) for v in result.faces[0].box)
    inner = result.labels[y1:y2, x1:x2]  # the detected face box: mostly skin and facial parts
    names = result.classes
    share = {n: float(np.mean(inner == i)) for i, n in enumerate(names)}
    assert share["skin"] > 0.3, share
    assert share["background"] < 0.2, share
    assert share["l_eye"] + share["r_eye"] > 0.002, share

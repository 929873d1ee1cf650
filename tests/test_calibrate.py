"""Per-class logit offsets (fpliif.eval.calibrate and `fpliif calibrate`)."""

from __future__ import annotations

import json

import pytest
import torch

import fpliif
from fpliif.eval.calibrate import OFFSETS_KEY, apply_offsets, final_linear, fit_offsets, strided
from fpliif.labels import get_label_set
from fpliif.models import pixel_centers
from test_eval import TINY, write_folder_dataset

LAPA = get_label_set("lapa")


def biased_logits(n: int = 20000, shift: float = 1.5, over: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy logits of a decent classifier whose class ``over`` got ``shift`` too much prior."""
    g = torch.Generator().manual_seed(0)
    c = LAPA.num_classes
    labels = torch.randint(0, c, (n,), generator=g)
    logits = 2.0 * torch.nn.functional.one_hot(labels, c).float() + torch.randn(n, c, generator=g)
    logits[:, over] += shift
    return logits, labels


def test_fit_offsets_undoes_a_prior_shift():
    logits, labels = biased_logits()
    result = fit_offsets(logits, labels, LAPA, grid=[x / 4 for x in range(-8, 9)])
    name = LAPA.classes[2]
    assert result.mean_f1_after > result.mean_f1_before + 1.0
    others = [v for c, v in result.offsets.items() if c != name]
    # only relative offsets matter: class 2 ends about 1.5 below the others
    assert result.offsets[name] - sum(others) / len(others) == pytest.approx(-1.5, abs=0.5)
    assert result.per_class_after[name] > result.per_class_before[name]


def test_fit_offsets_leaves_a_calibrated_model_alone():
    logits, labels = biased_logits(shift=0.0)
    result = fit_offsets(logits, labels, LAPA)
    assert all(abs(v) <= 0.25 for v in result.offsets.values())
    assert result.mean_f1_after >= result.mean_f1_before


def test_fit_offsets_checks_shapes():
    with pytest.raises(ValueError, match="pixels"):
        fit_offsets(torch.zeros(10, 3), torch.zeros(10, dtype=torch.long), LAPA)


def test_apply_offsets_shifts_every_decoded_logit_exactly():
    torch.manual_seed(0)
    model = fpliif.make({"name": "fpliif", "args": TINY}).eval()
    image = torch.rand(1, 3, 32, 32)
    coords = pixel_centers(16, 16).unsqueeze(0)
    with torch.no_grad():
        before = model.decode(model.encode(image), coords)
    offsets = {c: 0.1 * i for i, c in enumerate(model.classes)}
    meta = apply_offsets(model, offsets)
    with torch.no_grad():
        after = model.decode(model.encode(image), coords)
    expected = torch.tensor([offsets[c] for c in model.classes])
    torch.testing.assert_close(after - before, expected.expand_as(after), atol=1e-5, rtol=0)
    assert json.loads(meta[OFFSETS_KEY])[model.classes[3]] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown classes"):
        apply_offsets(model, {"tail": 1.0})


def test_final_linear_refuses_dense_models():
    model = fpliif.make({"name": "segface_mnv3", "args": {"classes": "lapa"}})
    with pytest.raises(ValueError, match="final nn.Linear"):
        final_linear(model)


def test_strided_spreads_indices():
    assert strided(10, 3) == [0, 3, 6]
    assert strided(4246, 320)[-1] == 319 * 13
    assert strided(3, 10) == [0, 1, 2]


def test_cli_calibrate_writes_new_weights_and_keeps_the_input(tmp_path, capsys):
    from fpliif.cli import main

    torch.manual_seed(0)
    src = fpliif.save(fpliif.make({"name": "fpliif", "args": TINY}), tmp_path / "tiny.safetensors")
    original = src.read_bytes()
    write_folder_dataset(tmp_path / "ds")
    out = tmp_path / "cal.safetensors"
    base = [
        "calibrate",
        "--weights",
        str(src),
        "--data",
        str(tmp_path / "ds"),
        "--layout",
        "folder",
        "--split",
        "all",
        "--images",
        "2",
        "--size",
        "32",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    assert main([*base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 2 and report["pixels"] == 2 * 32 * 32
    assert src.read_bytes() == original
    model = fpliif.load(out)
    assert json.loads(model.weights_metadata[OFFSETS_KEY]) == pytest.approx(report["offsets"])
    assert main(base) == 2  # --out exists
    assert "--overwrite" in capsys.readouterr().err
    assert main([*base[:-1], str(src), "--overwrite"]) == 2  # never over the input weights
    assert "must differ" in capsys.readouterr().err

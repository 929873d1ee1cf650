"""train.init_weights: start from a bundled name or a file, also for a model with its own classes (fine-tuning)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fpliif
from fpliif.models.checkpoint import load, read_metadata
from fpliif.train import load_config
from fpliif.train.trainer import Trainer
from fpliif.train.warmstart import class_dependent, init_weights
from test_data_helpers import save_image, save_mask

OWN_CLASSES = ["background", "face", "hair"]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    from conftest import TINY_SPEC

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY_SPEC), path)
    return path


def with_classes(spec: dict, classes) -> dict:
    spec = copy.deepcopy(spec)
    spec["args"]["classes"] = classes
    return spec


def test_other_classes_reuse_every_matching_tensor_and_start_the_head_fresh(tiny_file):
    spec = read_metadata(tiny_file).spec
    theirs = load(tiny_file).state_dict()
    torch.manual_seed(1)
    model = fpliif.make(with_classes(spec, OWN_CLASSES))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_weights(model, tiny_file)
    head = class_dependent(spec)
    assert head and set(report.skipped) == head  # the head only: the decoder's last layer
    assert all("other classes (19 in the file, 3 here)" in why for why in report.skipped.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh[k] if k in head else theirs[k]), k
    assert "re-initialised" in report.summary() and sorted(head)[0] in report.summary()
    same = fpliif.make(spec)
    assert init_weights(same, tiny_file).skipped == {}  # the same classes: everything copied
    assert all(torch.equal(v, theirs[k]) for k, v in same.state_dict().items())


def test_a_bundled_name_and_a_foreign_architecture(tiny_file):
    bundled = read_metadata(None)
    model = fpliif.make(with_classes(bundled.spec, "lapa"))
    report = init_weights(model, bundled.path.stem)  # by name, as train.init_weights=fpliif-celebamask-mini
    assert report.path == bundled.path and set(report.skipped) == class_dependent(bundled.spec)
    wider = read_metadata(tiny_file).spec
    wider["args"].update(width=12, decoder_mlp=[24, 24])
    with pytest.raises(ValueError, match="only [0-9]+ % of the model's parameters match"):
        init_weights(fpliif.make(wider), tiny_file)
    with pytest.raises(FileNotFoundError, match="no such file and no bundled weights"):
        init_weights(fpliif.make(wider), "no-such-model")


def test_a_calibrated_file_starts_training_without_its_offsets(tmp_path, tiny_file):
    """Offsets from `fpliif calibrate` fit the file's final weights: a warm start takes them out of the head."""
    from fpliif.eval.calibrate import apply_offsets, final_linear

    source = load(tiny_file)
    trained_bias = final_linear(source).bias.detach().clone()
    offsets = {c: 0.25 * (i % 3) - 0.25 for i, c in enumerate(source.classes)}
    calibrated = fpliif.save(source, tmp_path / "cal.safetensors", metadata=apply_offsets(source, offsets))
    assert not torch.allclose(final_linear(load(calibrated)).bias, trained_bias)
    same = fpliif.make(read_metadata(tiny_file).spec)
    report = init_weights(same, calibrated)
    torch.testing.assert_close(final_linear(same).bias.detach(), trained_bias, atol=1e-6, rtol=0)
    assert report.offsets_removed == {c: v for c, v in offsets.items() if v}
    assert "logit offsets of" in report.summary()
    other = fpliif.make(with_classes(read_metadata(tiny_file).spec, OWN_CLASSES))
    assert init_weights(other, calibrated).offsets_removed == {}  # a fresh head: nothing to take out
    assert init_weights(fpliif.make(read_metadata(tiny_file).spec), tiny_file).offsets_removed == {}


def test_trainer_fine_tunes_to_a_folder_dataset_with_its_own_classes_txt(tmp_path, tiny_file, caplog):
    """The docs/training.md recipe: a folder dataset with classes.txt, model.args.classes the same list."""
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(OWN_CLASSES) + "\n")
    for k in range(4):
        m = np.zeros((32, 32), np.uint8)
        m[8 + k : 26, 8:24], m[: 6 + k] = 1, 2
        save_mask(root / "masks" / f"img{k}.png", m)
        save_image(root / "images" / f"img{k}.png", np.stack([m * 100, m * 60 + 20, 200 - m * 50], -1))
    args = {**read_metadata(tiny_file).spec["args"], "classes": OWN_CLASSES}
    cfg = {
        "model": {"name": "fpliif", "args": args},
        "data": {"root": str(root), "layout": "folder", "size": 32, "workers": 0, "augment": None, "val_split": None},
        "train": {"epochs": 1, "batch_size": 2, "sample_queries": 64, "threads": 1, "device": "cpu"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    overrides = [f"train.init_weights={tiny_file}", f"out={tmp_path / 'run'}", "train.max_steps_per_epoch=1"]
    with caplog.at_level(logging.INFO, logger="fpliif"):
        trainer = Trainer(load_config(tmp_path / "c.yaml", overrides), progress=False)
    assert trainer.model.label_set.classes == tuple(OWN_CLASSES)
    assert "re-initialised" in caplog.text and "other classes (19 in the file, 3 here)" in caplog.text
    assert np.isfinite(trainer.fit()["loss"])

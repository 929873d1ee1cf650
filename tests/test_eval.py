"""evaluate(), trivial_baseline(), format_table() (in-memory datasets) and ``fpliif eval`` (tiny folder datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import fpliif
from fpliif.data.layouts import folder_split_of
from fpliif.eval import evaluate, format_table, trivial_baseline
from fpliif.eval.calibrate import final_linear
from fpliif.labels import CELEBAMASK_HQ, HELEN, IGNORE_INDEX, LAPA, remap_labels

TINY = {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]}


# ------------------------------------------------------------------------------------------- fixtures
def resize_nearest(label: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()


class LabelDataset(Dataset):
    """Images that encode their label map in the red channel (label / 255) + masks at several sizes."""

    def __init__(
        self, labels: list[torch.Tensor], mask_sizes: tuple[int, ...], ignore: list[torch.Tensor] | None = None
    ):
        self.labels, self.mask_sizes, self.ignore = labels, mask_sizes, ignore

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        lab = self.labels[i]
        image = torch.zeros(3, *lab.shape)
        image[0] = lab.float() / 255
        mask = lab.clone()
        if self.ignore is not None:
            mask[self.ignore[i]] = IGNORE_INDEX
        masks = {s: resize_nearest(mask, s) for s in self.mask_sizes}
        return {"image": image, "masks": masks, "name": f"im{i}"}


class Oracle(nn.Module):
    """Reads the label map back from the image and returns its one-hot logits, resized nearest."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, image: torch.Tensor, size) -> torch.Tensor:
        lab = (image[:, 0] * 255).round().long()
        onehot = F.one_hot(lab, self.num_classes).permute(0, 3, 1, 2).float()
        return F.interpolate(onehot, size=size, mode="nearest")


class Constant(nn.Module):
    def __init__(self, num_classes: int, k: int):
        super().__init__()
        self.num_classes, self.k = num_classes, k

    def forward(self, image: torch.Tensor, size) -> torch.Tensor:
        out = torch.zeros(image.shape[0], self.num_classes, *size)
        out[:, self.k] = 1.0
        return out


class ForwardOnly(nn.Module):
    """Hides a model's encode/decode so evaluate() falls back to model(image, size=...)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model
        self.num_classes = model.num_classes

    def forward(self, image, size):
        return self.inner(image, size=size)


def block_labels(size: int, n: int = 3) -> list[torch.Tensor]:
    """n label maps using classes 0..4 in horizontal bands / blocks (classes 5.. absent)."""
    out = []
    for i in range(n):
        lab = torch.zeros(size, size, dtype=torch.long)
        q = size // 4
        lab[q : 2 * q] = 1
        lab[2 * q : 3 * q, : size // 2] = 2
        lab[2 * q : 3 * q, size // 2 :] = 3 if i % 2 == 0 else 1
        lab[3 * q :, q : 3 * q] = 4
        out.append(lab)
    return out


def loader(ds: Dataset, batch_size: int = 2) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


# ------------------------------------------------------------------------------------------- evaluate
def test_oracle_gives_100_at_native_and_512():
    labels = block_labels(256)
    ignore = [torch.zeros(256, 256, dtype=torch.bool) for _ in labels]
    ignore[0][:10, :10] = True
    ds = LabelDataset(labels, (256, 512), ignore)
    res = evaluate(Oracle(LAPA.num_classes), loader(ds), LAPA, progress=False)
    assert list(res["rows"]) == ["256", "512", "192→256", "128→256", "96→256", "64→256"]
    assert res["primary_row"] == "256" and res["images"] == 3
    present = LAPA.classes[:5]
    for row in ("256", "512"):
        r = res["rows"][row]
        assert r["mean_f1"] == pytest.approx(100.0) and r["mean_iou"] == pytest.approx(100.0)
        assert r["pixel_acc"] == pytest.approx(100.0)
        for c in present:
            assert r["per_class_f1"][c] == pytest.approx(100.0)
        assert r["absent_classes"] == list(LAPA.classes[5:])
        assert all(r["per_class_f1"][c] is None for c in LAPA.classes[5:])
    assert res["rows"]["256"]["pixels"] == 3 * 256 * 256 - 100
    assert res["rows"]["512"]["pixels"] == 4 * res["rows"]["256"]["pixels"]
    assert res["mean_f1"] == res["rows"]["256"]["mean_f1"]
    assert res["absent_classes"] == list(LAPA.classes[5:])
    assert "merged_f1" not in res  # LaPa has no merged classes
    low = res["rows"]["64→256"]
    assert 50 < low["mean_f1"] < 100  # 4x nearest downsampling loses the thin band edges only


def constant_case(k: int):
    # 16x16: rows 0-7 class 0 (128 px, 16 of them ignored), rows 8-11 class 1 (64), rows 12-15 class 2 (64)
    lab = torch.zeros(16, 16, dtype=torch.long)
    lab[8:12] = 1
    lab[12:] = 2
    ign = torch.zeros(16, 16, dtype=torch.bool)
    ign[:4, :4] = True
    ds = LabelDataset([lab, lab], (16, 32), [ign, ign])
    return ds


def test_constant_model_matches_hand_computation():
    ds = constant_case(1)
    res = evaluate(
        Constant(LAPA.num_classes, 1), loader(ds), LAPA, sizes=(16, 32), lowres=(8,), lowres_to=16, progress=False
    )
    assert list(res["rows"]) == ["16", "32", "8→16"]
    # per image: N = 240 counted pixels; n0 = 112, n1 = 64, n2 = 64; prediction = class 1 everywhere
    f1_1 = 100 * 2 * 64 / (240 + 64)
    iou_1 = 100 * 64 / 240
    for row in res["rows"].values():
        assert row["per_class_f1"]["skin"] == pytest.approx(f1_1)
        assert row["per_class_iou"]["skin"] == pytest.approx(iou_1)
        assert row["per_class_f1"]["background"] == 0.0
        assert row["per_class_f1"]["l_brow"] == 0.0
        assert row["mean_f1"] == pytest.approx(f1_1 / 2)
        assert row["mean_iou"] == pytest.approx(iou_1 / 2)
        assert row["pixel_acc"] == pytest.approx(100 * 64 / 240)
        assert row["absent_classes"] == list(LAPA.classes[3:])
    assert res["rows"]["32"]["pixels"] == 4 * res["rows"]["16"]["pixels"] == 4 * 480


def test_trivial_baseline():
    ds = constant_case(0)
    base = trivial_baseline(loader(ds), LAPA, size=16)
    assert base["predicted_class"] == "background"
    assert base["class_pixels"]["background"] == 224 and base["class_pixels"]["skin"] == 128
    assert base["images"] == 2
    assert base["mean_f1"] == 0.0  # skin and l_brow present, never predicted
    assert base["per_class_f1"]["background"] == pytest.approx(100 * 2 * 112 / (240 + 112))
    assert base["pixel_acc"] == pytest.approx(100 * 112 / 240)
    # identical to evaluating a model that predicts background everywhere
    res = evaluate(Constant(LAPA.num_classes, 0), loader(ds), LAPA, sizes=(16,), lowres=(), progress=False)
    for key in ("mean_f1", "mean_iou", "pixel_acc", "per_class_f1", "per_class_iou", "absent_classes"):
        assert res[key] == base[key]


def test_helen_merged_f1_and_json_structure():
    labels = block_labels(32, n=2)
    for lab in labels:
        lab[:4, :4] = HELEN.index("l_eye")
        lab[:4, -4:] = HELEN.index("r_eye")
    ds = LabelDataset(labels, (32,))
    res = evaluate(
        Oracle(HELEN.num_classes), loader(ds), HELEN, sizes=(32,), lowres=(16,), lowres_to=32, progress=False
    )
    text = json.dumps(res)  # JSON-serialisable
    back = json.loads(text)
    assert set(back) >= {
        "mean_f1",
        "mean_iou",
        "pixel_acc",
        "per_class_f1",
        "per_class_iou",
        "rows",
        "merged_f1",
        "images",
        "absent_classes",
    }
    assert list(back["per_class_f1"]) == list(HELEN.classes)
    assert list(back["merged_f1"]) == list(HELEN.merged_f1)
    assert back["merged_f1"]["eyes"] == pytest.approx(100.0)
    assert back["merged_f1"]["overall"] == pytest.approx(100.0)
    assert back["merged_f1"]["brows"] == pytest.approx(100.0)
    assert back["merged_f1"]["mouth"] is None  # no lip / mouth pixel anywhere: undefined
    for row in back["rows"].values():
        assert set(row) >= {
            "mean_f1",
            "mean_iou",
            "pixel_acc",
            "per_class_f1",
            "per_class_iou",
            "absent_classes",
            "merged_f1",
        }


def test_fpliif_encode_once_matches_forward_path(monkeypatch):
    torch.manual_seed(0)
    model = fpliif.make({"name": "fpliif", "args": {"classes": "lapa", **TINY}})
    g = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, LAPA.num_classes, (16, 16), generator=g) for _ in range(3)]
    ds = LabelDataset(labels, (16, 24))
    kw = dict(sizes=(16, 24), lowres=(8,), lowres_to=16, progress=False)
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: calls.append(x.shape[0]) or encode(x))
    model.train()
    res = evaluate(model, loader(ds), LAPA, **kw)
    assert calls == [2, 1]  # once per batch, for all three rows
    assert model.training  # mode restored
    ref = evaluate(ForwardOnly(model), loader(ds), LAPA, **kw)
    assert res["rows"] == ref["rows"]


class MirrorReference(nn.Module):
    """Flip TTA by hand on the dense forward path: mean of the probabilities of the image and of its mirror
    (output flipped back, left/right channels swapped by name), returned as T * log p."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner, self.num_classes = model, model.num_classes
        names = model.label_set.classes
        lr = {c: "r_" + c[2:] if c.startswith("l_") else "l_" + c[2:] if c.startswith("r_") else c for c in names}
        self.twin = [names.index(lr[c]) if lr[c] in names else k for k, c in enumerate(names)]

    def forward(self, image, size):
        t = self.inner.temperature
        p = torch.softmax(self.inner(image, size=size) / t, dim=1)
        q = torch.softmax(self.inner(image.flip(-1), size=size) / t, dim=1).flip(-1)[:, self.twin]
        return ((p + q) / 2).clamp_min(torch.finfo(torch.float32).tiny).log() * t


def test_tta_matches_a_hand_made_mirror_reference():
    from fpliif.eval.evaluate import _Decoder

    torch.manual_seed(0)
    model = fpliif.make({"name": "fpliif", "args": {"classes": "lapa", **TINY}}).eval()
    ref_model = MirrorReference(model)
    assert [LAPA.classes[k] for k in ref_model.twin[2:6]] == ["r_brow", "l_brow", "r_eye", "l_eye"]
    image = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        for size in (12, 20):
            tta = _Decoder(model, image, LAPA, tta=True)(size)
            ref = ref_model(image, (size, size))
            assert tta.shape == (2, LAPA.num_classes, size, size)
            assert (tta - ref).abs().max() < 1e-4
            assert (tta.softmax(1) - ref.softmax(1)).abs().max() < 1e-5
            plain = _Decoder(model, image, LAPA)(size)
            assert (plain.softmax(1) - tta.softmax(1)).abs().max() > 1e-3  # TTA changes this model's output

    g = torch.Generator().manual_seed(0)
    ds = LabelDataset([torch.randint(0, LAPA.num_classes, (16, 16), generator=g) for _ in range(3)], (16,))
    kw = dict(sizes=(16,), lowres=(8,), lowres_to=16, progress=False)
    res = evaluate(model, loader(ds), LAPA, tta=True, **kw)
    assert res["tta"] is True and evaluate(model, loader(ds), LAPA, **kw)["tta"] is False
    assert res["rows"] == evaluate(ref_model, loader(ds), LAPA, **kw)["rows"]
    with pytest.raises(ValueError, match="encode/decode"):
        evaluate(ref_model, loader(ds), LAPA, tta=True, **kw)


def test_evaluate_errors():
    ds = LabelDataset(block_labels(16, n=1), (16,))
    with pytest.raises(ValueError, match="no ground-truth mask at size 32"):
        evaluate(Oracle(LAPA.num_classes), loader(ds), LAPA, sizes=(32,), lowres=(), progress=False)
    with pytest.raises(ValueError, match="19 classes"):
        evaluate(Oracle(19), loader(ds), LAPA, sizes=(16,), lowres=(), progress=False)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(Oracle(11), loader(ds), LAPA, sizes=(), lowres=(), progress=False)
    with pytest.raises(ValueError, match="no images"):
        evaluate(Oracle(11), [], LAPA, sizes=(16,), lowres=(), progress=False)


def test_predictions_in_another_label_set_are_mapped_before_counting():
    """The CelebAMask-HQ model scored on LaPa: its labels go through REMAPS, so an oracle in its own classes is
    perfect on the remapped truth (ears and glasses become skin, l_/r_ swap to the image's sides)."""
    own = []
    for lab in block_labels(16, n=2):  # classes 0..4, then moved to classes that the mapping merges or swaps
        lab = lab.clone()
        lab[lab == 2] = CELEBAMASK_HQ.index("l_brow")
        lab[lab == 3] = CELEBAMASK_HQ.index("l_ear")
        own.append(lab)
    truth = [torch.from_numpy(remap_labels(lab.numpy().astype(np.uint8), CELEBAMASK_HQ, LAPA)).long() for lab in own]

    class OwnImagesLapaMasks(LabelDataset):
        def __getitem__(self, i: int) -> dict:
            return {**super().__getitem__(i), "masks": {16: truth[i]}}

    ds = OwnImagesLapaMasks(own, (16,))
    kw = {"sizes": (16,), "lowres": (), "progress": False}
    res = evaluate(Oracle(CELEBAMASK_HQ.num_classes), loader(ds), LAPA, predicted_as=CELEBAMASK_HQ, **kw)
    assert res["label_set"] == "lapa" and res["predicted_as"] == "celebamask-hq"
    assert res["mean_f1"] == pytest.approx(100.0) and res["per_class_f1"]["r_brow"] == pytest.approx(100.0)
    assert set(res["absent_classes"]) == set(LAPA.classes) - {"background", "skin", "r_brow", "r_eye"}
    with pytest.raises(ValueError, match="19 classes"):  # unmapped, a 19-class model does not fit LaPa
        evaluate(Oracle(CELEBAMASK_HQ.num_classes), loader(ds), LAPA, **kw)
    with pytest.raises(ValueError, match="no mapping from label set 'coarse' to 'lapa'"):
        evaluate(Oracle(6), loader(ds), LAPA, predicted_as="coarse", **kw)


def test_format_table():
    ds = constant_case(1)
    res = evaluate(
        Constant(LAPA.num_classes, 1), loader(ds), LAPA, sizes=(16,), lowres=(8,), lowres_to=16, progress=False
    )
    table = format_table(res, LAPA)
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Setting", *LAPA.classes[1:], "Mean", "mIoU"]
    row16 = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row16[0] == "16"
    assert row16[1] == "42.1"  # skin F1 = 2*64/304
    assert row16[2] == "0.0" and row16[3] == "-"  # l_brow 0, r_brow undefined
    assert row16[-2] == "21.05" and row16[-1] == "13.33"
    assert lines[3].split("|")[1].strip() == "8→16"
    assert "absent classes (16): r_brow" in table
    assert "images: 2" in table
    helen = format_table(
        {"rows": {"256": {"per_class_f1": {}, "mean_f1": None, "mean_iou": None, "merged_f1": {"eyes": 91.23}}}}, HELEN
    )
    head = [c.strip() for c in helen.splitlines()[0].split("|")]
    assert "overall" in head and "91.2" in helen
    assert head.count("mouth") == 1 and "mouth (merged)" in head  # the inner-mouth class, then the group


# ------------------------------------------------------------------------------------------- CLI
def write_folder_dataset(root: Path, n: int = 4, size: int = 64, max_label: int = 4) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"f{i}.png")
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1 + i % max_label
        Image.fromarray(mask, mode="L").save(root / "masks" / f"f{i}.png")


def constant_weights(path: Path, logits: dict[str, float], metadata: dict[str, str] | None = None) -> Path:
    """Tiny FP-LIIF weights whose logits are ``logits`` (class -> value, others 0) at every pixel: the final
    layer's weights are zero and its bias holds them."""
    torch.manual_seed(0)
    model = fpliif.make({"name": "fpliif", "args": TINY})
    layer = final_linear(model)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        for cls, value in logits.items():
            layer.bias[model.classes.index(cls)] = value
    return fpliif.save(model, path, metadata=metadata)


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    torch.manual_seed(0)
    model = fpliif.make({"name": "fpliif", "args": TINY})
    return fpliif.save(model, tmp_path / "tiny.safetensors")


def eval_cli(weights: Path | None, data: Path, options: str = "", *more: str) -> int:
    """``fpliif eval`` of ``weights`` (None: the default) on ``data`` with no loader workers, then ``options``
    (split on spaces) and ``more``; returns the exit status."""
    from fpliif.cli import main

    weights_args = ["--weights", str(weights)] if weights else []
    return main(["eval", *weights_args, "--data", str(data), "--workers", "0", *options.split(), *more])


def test_cli_eval_folder_dataset_json_and_table(tmp_path, capsys):
    write_folder_dataset(tmp_path / "ds")  # f0: skin square, f1: nose square, each 1/4 of the image
    skin = constant_weights(tmp_path / "skin.safetensors", {"skin": 10.0})
    out_file = tmp_path / "out" / "res.json"
    options = "--layout folder --split all --sizes 256 --lowres 64 --batch-size 2 --limit 2 --json --out"
    rc = eval_cli(skin, tmp_path / "ds", options, str(out_file))
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(cap.out)  # nothing but JSON on stdout
    assert res == json.loads(out_file.read_text())
    assert list(res["rows"]) == ["256", "64→256"] and res["images"] == 2
    assert res["split"] == "all" and res["layout"] == "folder" and res["label_set"] == "celebamask-hq"
    row = res["rows"]["256"]  # skin predicted on all 2 x 256² pixels, right on f0's 128² square only
    assert row["pixels"] == 2 * 256 * 256
    assert row["pixel_acc"] == pytest.approx(12.5) and row["per_class_iou"]["skin"] == pytest.approx(12.5)
    assert row["per_class_f1"]["skin"] == pytest.approx(100 * 2 * 1 / (2 * 1 + 7))  # TP 1, FP 7 (in 128²)
    assert row["per_class_f1"]["nose"] == 0.0 and row["per_class_f1"]["background"] == 0.0
    assert row["mean_f1"] == pytest.approx(row["per_class_f1"]["skin"] / 2)
    assert row["absent_classes"] == list(CELEBAMASK_HQ.classes[3:])
    assert res["rows"]["64→256"] == row  # constant logits upsample to the same prediction

    val = [f"f{i}" for i in range(4) if folder_split_of(f"f{i}") == "val"]  # the default split of 'folder'
    assert val
    rc = eval_cli(skin, tmp_path / "ds", "--layout auto --sizes 32 --no-progress", "--lowres", "")
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "| Setting" in cap.out and "→" not in cap.out.split("\n\n")[1].split("F1 (%)")[0]
    assert f"images: {len(val)}" in cap.out and f"(folder, split val, {len(val)} images)" in cap.out


def test_cli_eval_maps_the_models_classes_to_the_datasets(tmp_path, capsys):
    """A 19-class model on an 11-class (LaPa) dataset is scored through REMAPS: its ears are LaPa skin."""
    write_folder_dataset(tmp_path / "ds")  # f0: a skin square, f1: a square of class 2 (LaPa's l_brow)
    ear = constant_weights(tmp_path / "ear.safetensors", {"l_ear": 10.0})
    options = "--layout folder --classes lapa --split all --sizes 256 --limit 2 --json --no-progress"
    rc = eval_cli(ear, tmp_path / "ds", options, "--lowres", "")
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "predicts celebamask-hq classes; they are mapped to the dataset's lapa classes" in cap.err
    res = json.loads(cap.out)
    assert res["label_set"] == "lapa" and res["predicted_as"] == "celebamask-hq"
    assert res["rows"]["256"]["per_class_f1"]["skin"] == pytest.approx(100 * 2 * 1 / (2 * 1 + 7))
    assert res["rows"]["256"]["per_class_f1"]["l_brow"] == 0.0


def test_cli_eval_photos_parses_each_image_at_its_own_size(tmp_path, capsys):
    """``--photos``: the parser's own labels as ground truth score 100 (nothing resized, the face pasted back at
    the image's pixels); a faceless image counts as all background and is named; remapped to LaPa likewise."""
    from fpliif import FaceParser
    from fpliif.infer.cli_files import EXAMPLE_IMAGE
    from fpliif.infer.images import load_image

    weights = constant_weights(tmp_path / "brow.safetensors", {"l_brow": 10.0}, metadata={"input_size": "64"})
    photo = np.ascontiguousarray(load_image(EXAMPLE_IMAGE)[20:330, 60:400])  # 310 x 340: not square
    truth = FaceParser.from_pretrained(weights)(photo).labels
    assert len(np.unique(truth)) > 1
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(photo).save(root / "images" / "face.png")
    Image.fromarray(truth).save(root / "masks" / "face.png")
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(root / "images" / "blank.png")
    Image.fromarray(np.zeros((90, 120), np.uint8)).save(root / "masks" / "blank.png")
    options = "--layout folder --split all --photos --json --no-progress"
    assert eval_cli(weights, root, options) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["rows"]["photo"]["mean_f1"] == pytest.approx(100.0) and res["primary_row"] == "photo"
    assert res["images"] == 2 and res["faces"] == 1 and res["no_face"] == ["blank"]
    assert res["rows"]["photo"]["pixels"] == 310 * 340 + 90 * 120  # each image scored at its own size

    lapa = remap_labels(truth, CELEBAMASK_HQ, LAPA)
    Image.fromarray(lapa).save(root / "masks" / "face.png")
    assert eval_cli(weights, root, options, "--classes", "lapa") == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["predicted_as"] == "celebamask-hq" and res["mean_f1"] == pytest.approx(100.0)
    Image.fromarray(np.roll(lapa, 25, axis=1)).save(root / "masks" / "face.png")  # a wrong truth scores lower
    assert eval_cli(weights, root, options, "--classes", "lapa") == 0
    assert json.loads(capsys.readouterr().out)["mean_f1"] < 90

    from fpliif.cli import main

    # the default --workers (loader processes): before, None reached the DataLoader and raised a TypeError
    assert main(["eval", "--weights", str(weights), "--data", str(root), *options.split()]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2
    assert eval_cli(weights, root, options, "--sizes", "256", "--compare-dense") == 2
    assert "--photos: --sizes, --compare-dense do not apply" in capsys.readouterr().err
    from fpliif.eval.photos import evaluate_photos

    parser = FaceParser.from_pretrained(weights)
    with pytest.raises(ValueError, match=r"predicts 19 classes \(celebamask-hq\) but label set 'lapa' has 11"):
        evaluate_photos(parser, [], LAPA)
    with pytest.raises(ValueError, match="no images to evaluate"):
        evaluate_photos(parser, [], CELEBAMASK_HQ)


def test_cli_eval_errors(tmp_path, tiny_weights, monkeypatch, capsys):
    from fpliif.models import pretrained

    write_folder_dataset(tmp_path / "ds")
    ds, options = tmp_path / "ds", "--layout folder --split all --no-progress"
    assert eval_cli(tiny_weights, ds, options, "--classes", "a,b,c") == 2
    err = capsys.readouterr().err
    assert "label sets differ" in err and "predicts 19 classes" in err and "has 3 (" in err
    assert "--classes or ROOT/classes.txt" not in err  # the classes were given
    monkeypatch.setattr(pretrained, "default_weights_path", lambda: None)
    assert eval_cli(None, ds, options) == 2
    assert "--weights" in capsys.readouterr().err
    assert eval_cli(tiny_weights, ds, options, "--sizes", "", "--lowres", "") == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert eval_cli(tiny_weights, tmp_path / "nope", "--layout folder") == 2
    assert f"--data: dataset folder not found: {tmp_path / 'nope'}" in capsys.readouterr().err


def test_evaluate_under_single_rank_process_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    ds = constant_case(1)
    kw = dict(sizes=(16,), lowres=(8,), lowres_to=16, progress=False)
    ref = evaluate(Constant(LAPA.num_classes, 1), loader(ds), LAPA, **kw)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        res = evaluate(Constant(LAPA.num_classes, 1), loader(ds), LAPA, **kw)
        base = trivial_baseline(loader(ds), LAPA, size=16)
    finally:
        dist.destroy_process_group()
    assert res == ref and base["images"] == 2


def test_cli_eval_tta(tmp_path, capsys):
    write_folder_dataset(tmp_path / "ds", n=2)  # f0: skin square, f1: nose square, each 1/4 of the image
    # l_eye everywhere; with flip TTA l_eye's probability is shared with its mirror twin r_eye and skin wins
    weights = constant_weights(tmp_path / "eye.safetensors", {"l_eye": 10.0, "skin": 9.9})
    options = "--layout folder --split all --input-size 32 --sizes 32 --no-progress"
    assert eval_cli(weights, tmp_path / "ds", options + " --json", "--lowres", "") == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["tta"] is False and plain["images"] == 2
    assert plain["rows"]["32"]["pixel_acc"] == 0.0 and plain["rows"]["32"]["per_class_f1"]["l_eye"] == 0.0
    assert eval_cli(weights, tmp_path / "ds", options + " --tta --json", "--lowres", "") == 0
    tta = json.loads(capsys.readouterr().out)
    assert tta["tta"] is True and tta["images"] == 2
    row = tta["rows"]["32"]
    assert row["pixel_acc"] == pytest.approx(12.5) and row["per_class_f1"]["l_eye"] is None
    assert row["per_class_f1"]["skin"] == pytest.approx(100 * 2 * 1 / (2 * 1 + 7))  # TP 1, FP 7 (in 16²)
    assert eval_cli(weights, tmp_path / "ds", options + " --tta", "--lowres", "") == 0
    assert "flip TTA" in capsys.readouterr().out


def test_cli_eval_baseline_row_and_input_size(tmp_path, capsys):
    write_folder_dataset(tmp_path / "ds")  # background: 3/4 of every mask
    weights = constant_weights(tmp_path / "bg.safetensors", {"background": 10.0})
    options = "--layout folder --split all --batch-size 2 --sizes 256 --limit 2 --baseline --input-size 64 --json"
    rc = eval_cli(weights, tmp_path / "ds", options, "--lowres", "")
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(cap.out)
    assert res["input_size"] == 64
    assert res["baseline"]["predicted_class"] == "background" and res["baseline"]["row"] == "baseline:background@256"
    row = res["rows"]["baseline:background@256"]
    assert row["pixel_acc"] == pytest.approx(75.0)
    assert row["per_class_f1"]["background"] == pytest.approx(100 * 2 * 0.75 / 1.75)
    assert row["per_class_f1"]["skin"] == row["per_class_f1"]["nose"] == row["mean_f1"] == 0.0
    assert {k: res["rows"]["256"][k] for k in row} == row  # the model predicts background everywhere too


def test_cli_eval_several_roots(tmp_path, tiny_weights, capsys):
    write_folder_dataset(tmp_path / "a")
    write_folder_dataset(tmp_path / "b")
    for p in sorted((tmp_path / "b").rglob("*.png")):  # distinct names in the second root
        p.rename(p.with_name("b_" + p.name))
    options = "--layout folder --split all --sizes 64 --batch-size 2 --json"
    counts = []
    for roots in (["a"], ["b"], ["a", "b"]):
        more = [arg for r in roots[1:] for arg in ("--data", str(tmp_path / r))]
        assert eval_cli(tiny_weights, tmp_path / roots[0], options, "--lowres", "", *more) == 0
        res = json.loads(capsys.readouterr().out)
        counts.append(res["images"])
    assert counts[2] == counts[0] + counts[1] > 0
    assert res["data"] == f"{tmp_path / 'a'}, {tmp_path / 'b'}"
    assert eval_cli(tiny_weights, tmp_path / "a", options, "--lowres", "", "--data", str(tmp_path / "nope")) == 2
    assert "nope" in capsys.readouterr().err

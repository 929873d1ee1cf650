"""Label sets for outputs: mapping tables, ``remap_labels``, ``ParseResult.mask``/``remap``, ``fpliif parse
--mask/--labels`` and the service's ``labels=``/``mask=``."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from fpliif.cli import main
from fpliif.infer import cli_parse
from fpliif.infer.parser import FaceParser
from fpliif.infer.result import Face, ParseResult
from fpliif.labels import (
    CELEBAMASK_HQ,
    COARSE,
    HELEN,
    IGNORE_INDEX,
    LABEL_SETS,
    LAPA,
    REMAPS,
    UnknownNameError,
    generic_label_set,
    get_label_set,
    remap_labels,
    remap_targets,
)
from test_parser import CODE, Oracle, synthetic_mask

C = CELEBAMASK_HQ.index
# Written out by hand (not from the tables): CelebAMask-HQ index -> expected index in the target set.
EXPECTED_LAPA = {
    "background": "background", "skin": "skin", "nose": "nose", "eye_g": "skin",
    "l_eye": "r_eye", "r_eye": "l_eye", "l_brow": "r_brow", "r_brow": "l_brow",
    "l_ear": "skin", "r_ear": "skin", "mouth": "mouth", "u_lip": "u_lip", "l_lip": "l_lip",
    "hair": "hair", "hat": "background", "ear_r": "skin", "neck_l": "background", "neck": "background",
    "cloth": "background",
}  # fmt: skip
EXPECTED_COARSE = [0, 1, 4, 1, 3, 3, 2, 2, 1, 1, 5, 5, 5, 2, 0, 1, 1, 1, 0]


# ---------------------------------------------------------------------------------------------- tables
@pytest.mark.parametrize("pair", sorted(REMAPS))
def test_every_table_maps_each_source_class_exactly_once_onto_every_target_class(pair):
    src, dst = (get_label_set(n) for n in pair)
    table = REMAPS[pair]
    assert sorted(table) == sorted(src.classes) and len(table) == src.num_classes
    assert set(table.values()) == set(dst.classes)  # every target class is reached
    assert table["background"] == "background"


def test_coarse_set_and_resolver():
    assert COARSE.classes == ("background", "skin", "hair", "eyes", "nose", "mouth")
    assert get_label_set("coarse") is COARSE and LABEL_SETS["coarse"] is COARSE
    # names shared with CelebAMask-HQ keep its colours, so custom class lists keep theirs too
    for name in ("skin", "hair", "nose", "mouth"):
        assert COARSE.colors[COARSE.index(name)] == CELEBAMASK_HQ.colors[C(name)]
    custom = generic_label_set(["background", "hair", "mouth", "l_eye"])
    assert custom.colors == tuple(CELEBAMASK_HQ.colors[C(n)] for n in custom.classes)
    assert len(set(COARSE.colors)) == COARSE.num_classes
    assert remap_targets(CELEBAMASK_HQ) == ["celebamask-hq", "lapa", "helen", "coarse", "inner"]
    assert remap_targets(LAPA) == ["lapa", "coarse"] and remap_targets(COARSE) == ["coarse"]


def test_remap_labels_gives_the_expected_indices():
    src = np.arange(19, dtype=np.uint8).reshape(1, 19)
    lapa = remap_labels(src, "celebamask-hq", "lapa")
    assert lapa.dtype == np.uint8 and lapa.shape == src.shape
    assert lapa[0].tolist() == [LAPA.index(EXPECTED_LAPA[c]) for c in CELEBAMASK_HQ.classes]
    assert remap_labels(src, CELEBAMASK_HQ, COARSE)[0].tolist() == EXPECTED_COARSE
    eleven = np.arange(11, dtype=np.int64)
    assert remap_labels(eleven, "lapa", "coarse").tolist() == [0, 1, 2, 2, 3, 3, 4, 5, 5, 5, 2]
    assert np.array_equal(remap_labels(eleven, "helen", "coarse"), remap_labels(eleven, "lapa", "coarse"))
    # identity, ignore index kept, values that are no class of the source set refused by name
    assert np.array_equal(remap_labels(src, "celebamask-hq", "celebamask-hq"), src)
    assert remap_labels(np.array([[IGNORE_INDEX, 1]], np.uint8), "celebamask-hq", "coarse").tolist() == [[255, 1]]
    odd = np.array([[IGNORE_INDEX, 19, 40, 1]], np.uint8)
    with pytest.raises(ValueError, match=r"labels: 19, 40 are no class of 'celebamask-hq' \(0..18; 255 = ignore\)"):
        remap_labels(odd, "celebamask-hq", "coarse")


def test_left_right_follow_the_image_side_in_lapa():
    """CelebAMask-HQ's l_eye is the subject's left (image right); LaPa names image sides."""
    m = np.zeros((4, 8), np.uint8)
    m[:, :4] = C("r_eye")  # image left
    m[:, 4:] = C("l_eye")  # image right
    out = remap_labels(m, "celebamask-hq", "lapa")
    assert (out[:, :4] == LAPA.index("l_eye")).all() and (out[:, 4:] == LAPA.index("r_eye")).all()
    assert LAPA.side == HELEN.side == "image" and CELEBAMASK_HQ.side == "subject"


def test_unknown_names_raise_value_errors_that_list_and_suggest():
    with pytest.raises(ValueError, match=r"unknown label set 'lapaa' \(did you mean 'lapa'\?\); known: .*coarse"):
        get_label_set("lapaa")
    with pytest.raises(KeyError) as info:  # older callers catch KeyError
        get_label_set("nope")
    assert isinstance(info.value, UnknownNameError) and str(info.value).startswith("unknown label set 'nope'")
    with pytest.raises(ValueError, match=r"no mapping from label set 'coarse' to 'lapa'; 'coarse' maps to: coarse"):
        remap_labels(np.zeros((2, 2), np.uint8), "coarse", "lapa")
    with pytest.raises(ValueError, match="'celebamask-hq'.*maps to: helen, coarse"):
        HELEN.remap_to(CELEBAMASK_HQ)
    assert np.array_equal(CELEBAMASK_HQ.remap_to(HELEN), CELEBAMASK_HQ.remap_to("lapa"))  # same classes and sides
    with pytest.raises(ValueError, match="integer"):
        remap_labels(np.zeros((2, 2), np.float32), "celebamask-hq", "lapa")
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        remap_labels(np.array([-1, 3]), "celebamask-hq", "lapa")
    with pytest.raises(ValueError, match=r"unknown class 'hiar' in label set 'celebamask-hq' \(did you mean 'hair'"):
        CELEBAMASK_HQ.index("hiar")
    with pytest.raises(KeyError):
        CELEBAMASK_HQ.index("hiar")
    with pytest.raises(ValueError, match="no class name given"):
        CELEBAMASK_HQ.indices([])
    # a custom class list named after a known set has no mapping
    fake = generic_label_set(["background", "x", "y"], name="celebamask-hq")
    with pytest.raises(ValueError, match="no mapping"):
        fake.remap_to("coarse")


# ---------------------------------------------------------------------------------------------- ParseResult
def make_result(probs: bool = True) -> ParseResult:
    labels = np.zeros((6, 10), np.uint8)
    labels[:2] = C("hair")
    labels[2:4, :5] = C("skin")
    labels[2:4, 5:] = C("l_brow")
    labels[4, :] = C("neck")
    labels[5, :3] = C("u_lip")
    labels[5, 3:6] = C("mouth")
    labels[5, 6:] = C("eye_g")
    p = None
    if probs:
        rng = np.random.default_rng(0)
        p = rng.random((19, 6, 10)).astype(np.float32)
        p[labels, np.arange(6)[:, None], np.arange(10)] += 30  # argmax = labels
        p /= p.sum(0, keepdims=True)
    face = Face(box=[0, 0, 10, 6], score=0.9, crop=[0, 0, 10, 10], region=[0, 0, 10, 6], labels=labels[:, :],
                classes=CELEBAMASK_HQ.classes)  # fmt: skip
    return ParseResult(
        labels=labels,
        faces=[face],
        classes=CELEBAMASK_HQ.classes,
        label_set=CELEBAMASK_HQ,
        image=np.zeros((6, 10, 3), np.uint8),
        probs=p,
        confidence=None if p is None else p.max(0),
    )


def test_mask_is_the_union_of_the_named_classes():
    res = make_result()
    hair = res.mask("hair")
    assert hair.dtype == bool and hair.shape == (6, 10) and hair.sum() == 20 and hair[:2].all()
    both = res.mask("hair", "skin")
    assert np.array_equal(both, (res.labels == C("hair")) | (res.labels == C("skin"))) and both.sum() == 30
    assert np.array_equal(res.mask(["hair", "skin"]), both) and np.array_equal(res.mask("skin", "hair"), both)
    assert not res.mask("hat").any()
    with pytest.raises(ValueError, match=r"'hiar'.*did you mean 'hair'.*classes: background, skin"):
        res.mask("skin", "hiar")
    with pytest.raises(ValueError, match="no class name given"):
        res.mask()


def test_remap_to_coarse_and_lapa():
    res = make_result()
    coarse = res.remap("coarse")
    assert isinstance(coarse, ParseResult) and coarse is not res
    assert coarse.classes == COARSE.classes and coarse.label_set is COARSE
    assert np.array_equal(coarse.labels, np.asarray(EXPECTED_COARSE, np.uint8)[res.labels])
    assert coarse.faces[0].classes == COARSE.classes and np.array_equal(coarse.faces[0].labels, coarse.labels)
    # masks by the new names: hair includes the brows, skin the neck and the glasses, mouth the lips
    assert coarse.mask("hair").sum() == 30 and coarse.mask("skin").sum() == 24 and coarse.mask("mouth").sum() == 6
    with pytest.raises(ValueError, match="'l_brow' in label set 'coarse'"):
        coarse.mask("l_brow")
    assert res.mask("l_brow").sum() == 10  # the original is untouched
    # probabilities summed over merged classes; confidence their max; the argmax agrees here
    assert coarse.probs.shape == (6, 6, 10) and np.allclose(coarse.probs.sum(0), 1, atol=1e-6)
    k = C("l_brow"), C("r_brow"), C("hair")
    assert np.allclose(coarse.probs[COARSE.index("hair")], res.probs[list(k)].sum(0))
    assert np.allclose(coarse.confidence, coarse.probs.max(0))
    assert np.array_equal(coarse.probs.argmax(0), coarse.labels)
    assert set(coarse.class_share()) == set(COARSE.classes)
    assert coarse.class_share()["hair"] == pytest.approx(30 / 60)
    assert coarse.overlay(0.5, legend=True).size[1] == 6
    lapa = res.remap("lapa")
    assert lapa.classes == LAPA.classes and lapa.mask("r_brow").sum() == 10 and lapa.mask("skin").sum() == 14
    assert lapa.remap("coarse").classes == COARSE.classes  # chaining works (the neck is gone by then)
    assert np.array_equal(res.remap("celebamask-hq").labels, res.labels)
    plain = make_result(probs=False).remap(COARSE)
    assert plain.probs is None and plain.confidence is None
    with pytest.raises(ValueError, match="known: celebamask-hq, coarse, helen, inner, lapa"):
        res.remap("coarser")
    with pytest.raises(ValueError, match="no mapping"):
        coarse.remap("lapa")


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def coded(tmp_path, monkeypatch):
    """A grey-coded 64x64 'aligned crop' of synthetic_mask and the CLI wired to the colour-reading Oracle."""
    truth = synthetic_mask(64)
    path = tmp_path / "face.png"
    Image.fromarray(np.repeat((truth * CODE)[..., None], 3, axis=2)).save(path)
    built = []
    monkeypatch.setattr(
        cli_parse, "build_parser_from_args", lambda args: built.append(1) or FaceParser(Oracle(), input_size=64)
    )
    return path, truth, built


def test_cli_mask_and_labels_write_the_right_files(coded, tmp_path, capsys):
    path, truth, _ = coded
    assert {C("hair"), C("skin"), C("l_eye"), C("u_lip")} <= set(np.unique(truth).tolist())
    out = tmp_path / "out"
    base = ["parse", str(path), "--out", str(out), "--aligned", "--quiet"]
    assert main([*base, "--mask", "hair,skin", "--mask", "l_eye"]) == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(out / "face_labels.png")), truth)  # the oracle is exact
    for name in ("hair", "skin", "l_eye"):
        img = Image.open(out / f"face_mask_{name}.png")
        assert img.mode == "L" and img.size == (64, 64)
        assert np.array_equal(np.asarray(img), np.where(truth == C(name), 255, 0)), name
    assert sorted(p.name for p in out.iterdir()) == [
        "face_labels.png", "face_mask_hair.png", "face_mask_l_eye.png", "face_mask_skin.png"
    ]  # fmt: skip
    # existing outputs are refused, masks included, unless --overwrite
    (out / "face_labels.png").unlink()
    assert main([*base, "--mask", "hair"]) == 1
    assert "face_mask_hair.png already exists" in capsys.readouterr().err
    # --labels coarse: index PNG, palette, overlay and masks in the coarse set
    out2 = tmp_path / "coarse"
    argv = ["parse", str(path), "--out", str(out2), "--aligned", "--quiet", "--labels", "coarse"]
    assert main([*argv, "--mask", "hair,mouth", "--overlay", "--format", "json"]) == 0, capsys.readouterr().err
    png = Image.open(out2 / "face_labels.png")
    coarse = np.asarray(EXPECTED_COARSE, np.uint8)[truth]
    assert png.mode == "P" and np.array_equal(np.asarray(png), coarse)
    assert png.getpalette()[: 3 * 6] == COARSE.palette()[: 3 * 6]
    hair = np.asarray(Image.open(out2 / "face_mask_hair.png"))
    assert np.array_equal(hair > 0, np.isin(truth, [C("hair"), C("l_brow"), C("r_brow")]))
    mouth = np.asarray(Image.open(out2 / "face_mask_mouth.png"))
    assert np.array_equal(mouth > 0, np.isin(truth, [C("u_lip"), C("mouth"), C("l_lip")])) and mouth.any()
    import json

    doc = json.loads((out2 / "face.json").read_text())
    assert set(doc["class_share"]) == set(COARSE.classes)
    assert doc["label_set"] == "coarse" and doc["classes"] == list(COARSE.classes)
    assert (out2 / "face_overlay.png").is_file()
    assert main([*argv, "--format", "npy", "--labels", "lapa", "--overwrite"]) == 0
    assert np.array_equal(np.load(out2 / "face_labels.npy"), remap_labels(truth, "celebamask-hq", "lapa"))


@pytest.mark.parametrize(
    "extra, text",
    [
        (["--mask", "hiar"], "--mask: unknown class 'hiar' in label set 'celebamask-hq' (did you mean 'hair'?)"),
        (["--mask", " , "], "--mask: expected class names"),
        (["--labels", "lapaa"], "--labels: unknown label set 'lapaa' (did you mean 'lapa'?)"),
        (["--labels", "inner2"], "--labels: unknown label set 'inner2' (did you mean 'inner'?)"),
        (["--labels", "coarse", "--mask", "l_eye"], "--mask: unknown class 'l_eye' in label set 'coarse'"),
        (["--mask", "hair", "--video"], "--mask"),
    ],
)
def test_cli_bad_names_are_usage_errors_before_any_work(coded, tmp_path, capsys, extra, text):
    path, _, built = coded
    out = tmp_path / "out"
    aligned = [] if "--video" in extra else ["--aligned"]
    assert main(["parse", str(path), "--out", str(out), *aligned, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing written
    if "--labels" in extra and "coarse" not in extra:
        assert not built  # a bad set name is caught before the model is even loaded


def test_cli_no_progress_silences_the_summary_and_quiet_is_its_old_name(coded, tmp_path, capsys):
    path, _, _ = coded
    base = ["parse", str(path), "--aligned", "--overwrite", "--out", str(tmp_path / "out")]
    assert main(base) == 0
    assert "fpliif parse: 1 image(s) parsed into" in capsys.readouterr().err
    for flag in ("--no-progress", "--quiet"):
        assert main([*base, flag]) == 0
        assert capsys.readouterr().err == "", flag


# ---------------------------------------------------------------------------------------------- service
@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi", reason="needs the 'serve' extra")
    pytest.importorskip("python_multipart", reason="needs the 'serve' extra")
    pytest.importorskip("httpx", reason="needs the 'serve' extra")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx`")
        from fastapi.testclient import TestClient

    from fpliif.serve import ServeSettings, create_app

    with TestClient(create_app(FaceParser(Oracle(), input_size=64), ServeSettings(torch_threads=0))) as c:
        yield c


def _post(client, params: str):
    truth = synthetic_mask(64)
    buf = io.BytesIO()
    Image.fromarray(np.repeat((truth * CODE)[..., None], 3, axis=2)).save(buf, format="PNG")
    files = {"file": ("f.png", buf.getvalue(), "image/png")}
    return truth, client.post(f"/v1/parse?aligned=true&{params}", files=files)


def test_service_labels_and_mask(client):
    from fpliif.serve.imaging import rle_decode

    truth, resp = _post(client, "labels=coarse")
    assert resp.status_code == 200, resp.text
    png = Image.open(io.BytesIO(resp.content))
    assert png.mode == "P" and png.getpalette()[:18] == COARSE.palette()[:18]
    assert np.array_equal(np.asarray(png), np.asarray(EXPECTED_COARSE, np.uint8)[truth])
    _, resp = _post(client, "mask=hair,skin")
    assert resp.status_code == 200 and 'filename="mask.png"' in resp.headers["content-disposition"]
    img = Image.open(io.BytesIO(resp.content))
    assert img.mode == "L" and np.array_equal(np.asarray(img), np.where(np.isin(truth, [C("hair"), C("skin")]), 255, 0))
    _, resp = _post(client, "labels=lapa&mask=r_eye,nose&format=json")
    body = resp.json()
    assert body["label_set"] == "lapa" and body["classes"] == list(LAPA.classes)
    assert body["colors"] == [list(c) for c in LAPA.colors]  # the page's legend for this label set
    lapa = remap_labels(truth, "celebamask-hq", "lapa")
    masks = body["masks"]["masks"]
    assert [m["class"] for m in masks] == ["r_eye", "nose"] and body["masks"]["size"] == [64, 64]
    for m in masks:
        assert m["index"] == LAPA.index(m["class"])
        assert np.array_equal(rle_decode(m["counts"], tuple(m["size"])), lapa == m["index"])
    assert masks[0]["counts"] != [64 * 64]  # the eye is there
    _, resp = _post(client, "labels=coarse&overlay=true")
    assert resp.status_code == 200 and Image.open(io.BytesIO(resp.content)).mode == "RGB"


@pytest.mark.parametrize(
    "params, text",
    [
        ("labels=lapaa", "labels: unknown label set 'lapaa' (did you mean 'lapa'?)"),
        ("labels=inner2", "labels: unknown label set 'inner2' (did you mean 'inner'?)"),
        ("mask=hiar", "mask: unknown class 'hiar' in label set 'celebamask-hq' (did you mean 'hair'?)"),
        ("mask=", "mask: no class name given"),
        ("labels=coarse&mask=l_eye", "'l_eye' in label set 'coarse'"),
        ("mask=hair&overlay=true", "overlay"),
    ],
)
def test_service_bad_names_are_422(client, params, text):
    _, resp = _post(client, params)
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == "invalid_parameter" and text in body["detail"], body


def test_service_openapi_lists_the_options(client):
    op = client.get("/openapi.json").json()["paths"]["/v1/parse"]["post"]
    params = {p["name"]: p for p in op["parameters"]}
    assert {"labels", "mask"} <= set(params) and "coarse" in params["labels"]["description"]
    assert "mask=hair,skin" in op["description"]

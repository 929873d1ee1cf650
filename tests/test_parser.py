"""FaceParser (fpliif.infer): inputs, detection, crop/paste-back geometry, results, and ``fpliif parse``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import fpliif
from fpliif.cli import main
from fpliif.infer.cli import example_image
from fpliif.infer.detect import HaarDetector
from fpliif.infer.framing import CONTEXT_SCALE, DEFAULT_FRAMING, Framing, lower_window
from fpliif.infer.geometry import Canvas, feather_weights, grid_coords, pixel_centers, softmax
from fpliif.infer.images import load_image
from fpliif.infer.parser import FaceParser
from fpliif.infer.tta import flip_channels
from fpliif.labels import CELEBAMASK_HQ, LAPA
from fpliif.limits import OverBudget
from fpliif.models.base import pixel_centers as torch_pixel_centers
from oracle import CODE, Oracle

TINY = {
    "name": "fpliif",
    "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]},
}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY), path, metadata={"input_size": "64"})  # small input: fast tests
    return path


@pytest.fixture(scope="module")
def parser(tiny_weights) -> FaceParser:
    p = FaceParser.from_pretrained(tiny_weights)
    assert p.input_size == 64  # read from the weights' metadata
    return p


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(example_image())


def oracle_parser(**kw) -> FaceParser:
    return FaceParser(Oracle(), **kw)


def synthetic_mask(n: int = 200) -> np.ndarray:
    """A face-like class map: skin ellipse, eyes, nose, lips, hair band."""
    m = np.zeros((n, n), np.uint8)
    c = n // 2
    cv2.ellipse(m, (c, c + n // 10), (n // 3, n * 2 // 5), 0, 0, 360, 13, -1)
    cv2.ellipse(m, (c, c + n // 6), (n // 4, n // 3), 0, 0, 360, 1, -1)
    cv2.circle(m, (c - n // 9, c + n // 10), n // 20, 4, -1)
    cv2.circle(m, (c + n // 9, c + n // 10), n // 20, 5, -1)
    cv2.rectangle(m, (c - n // 40, c + n // 8), (c + n // 40, c + n // 4), 2, -1)
    cv2.rectangle(m, (c - n // 10, c + n * 3 // 10), (c + n // 10, c + n * 3 // 10 + n // 30), 11, -1)
    return m


def boundary_band(labels: np.ndarray, r: int) -> np.ndarray:
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return cv2.dilate(labels, k) != cv2.erode(labels, k)


# ---------------------------------------------------------------------------------------------- geometry
def test_numpy_pixel_centers_match_the_model():
    assert np.allclose(pixel_centers(7, 5), torch_pixel_centers(7, 5).numpy())
    sub = grid_coords(np.arange(2, 5), np.arange(1, 3), 7, 5)
    full = pixel_centers(7, 5).reshape(7, 5, 2)[2:5, 1:3].reshape(-1, 2)
    assert np.array_equal(sub, full)


def test_framing_window_follows_measured_constants():
    x0, y0, side = DEFAULT_FRAMING.window((100, 100, 200, 200))
    assert side == round(DEFAULT_FRAMING.scale * 100)
    assert abs(x0 + side / 2 - (150 - DEFAULT_FRAMING.dx * 100)) <= 0.5
    assert abs(y0 + side / 2 - (150 - DEFAULT_FRAMING.dy * 100)) <= 0.5
    assert 1.3 < DEFAULT_FRAMING.scale < 1.8 and 0 < DEFAULT_FRAMING.dy < 0.15


def test_canvas_more_confident_face_wins():
    c = Canvas(4, 6, 3, keep_probs=True)
    a = np.zeros((4, 4, 3), np.float32)
    a[..., 1] = 0.9
    a[..., 0] = 0.1
    b = np.zeros((4, 4, 3), np.float32)
    b[..., 2] = 0.6
    b[..., 0] = 0.4
    b[:, 2:, 2] = 0.95  # more confident than face a on its right half
    b[:, 2:, 0] = 0.05
    c.paste(0, 0, a.transpose(2, 0, 1))  # the canvas takes classes first
    own = c.paste(0, 2, b.transpose(2, 0, 1))
    assert (own == 2).all()
    assert (c.labels[:, :2] == 1).all() and (c.labels[:, 2:4] == 1).all() and (c.labels[:, 4:] == 2).all()
    assert np.allclose(c.probs.sum(0), 1)
    assert np.allclose(c.confidence()[:, 4:], 0.95)


def dense_merge(height: int, width: int, pastes: list) -> tuple[np.ndarray, np.ndarray]:
    """Reference for Canvas: labels and confidence of the pastes merged with full-image float buffers."""
    labels, best = np.zeros((height, width), np.uint8), np.full((height, width), -1.0, np.float32)
    have = np.zeros((height, width), np.int8)
    for ya, xa, probs, inside, level in pastes:
        h, w = probs.shape[:2]
        conf, lab = probs.max(-1), probs.argmax(-1).astype(np.uint8)
        b, lv = best[ya : ya + h, xa : xa + w], have[ya : ya + h, xa : xa + w]
        win = ((lv < level) | ((lv == level) & (conf > b))) & inside
        b[win], lv[win] = conf[win], level
        labels[ya : ya + h, xa : xa + w][win] = lab[win]
    return labels, np.where(best < 0, 1.0, best).astype(np.float32)


def test_canvas_merges_exactly_as_full_image_buffers():
    """Overlapping pastes at three levels, across tile edges, with ties and confidences 1 ulp apart: the tiled
    uint32 keys give the labels and confidence of comparing float32 confidences in full-image buffers."""
    rng = np.random.default_rng(0)
    height, width, pastes = 300, 530, []
    for k in range(40):
        h, w = rng.integers(1, 200, 2)
        ya, xa = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        logits = rng.normal(0, 2, (h, w, 5)).astype(np.float32)
        if k % 3 == 0:  # a tie with, or 1 ulp above, the confidences already there
            logits = np.round(logits)
        probs = softmax(logits)
        if k % 5 == 0:
            probs[0, 0] = np.nextafter(probs[0, 0], 2, dtype=np.float32)
        inside = rng.random((h, w)) < 0.9 if k % 2 else np.ones((h, w), bool)
        pastes.append((int(ya), int(xa), probs, inside, int(rng.integers(0, 3))))
    canvas = Canvas(height, width, 5)
    for ya, xa, probs, inside, level in pastes:
        canvas.paste(ya, xa, probs.transpose(2, 0, 1), None if inside.all() else inside, level)
    labels, conf = dense_merge(height, width, pastes)
    assert np.array_equal(canvas.labels, labels) and np.array_equal(canvas.confidence(), conf)


def test_canvas_memory_follows_the_faces_not_the_image():
    import tracemalloc

    tracemalloc.start()
    canvas = Canvas(8000, 5000, 19)  # 40 MP
    probs = np.full((19, 300, 300), 1 / 19, np.float32)
    canvas.paste(4000, 2000, probs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the label map, the pasted probabilities and key tiles near the face: not 4-5 bytes for each of 40 MP
    assert peak < canvas.labels.nbytes + 3 * probs.nbytes, peak


# ---------------------------------------------------------------------------------------------- inputs
def test_every_input_type_gives_the_same_labels(parser, astronaut, tmp_path):
    img = cv2.resize(astronaut[40:200, 140:300], (80, 80), interpolation=cv2.INTER_AREA)  # a face crop
    path = tmp_path / "face.png"
    Image.fromarray(img).save(path)
    box = [[15, 15, 65, 65]]
    ref = parser(img, boxes=box).labels
    assert ref.shape == img.shape[:2] and ref.dtype == np.uint8
    t = torch.from_numpy(img.copy()).permute(2, 0, 1)
    for x in (path, str(path), Image.open(path), img, t, t.float() / 255, img.astype(np.float32) / 255):
        res = parser(x, boxes=box)
        agree = (res.labels == ref).mean()
        assert agree > 0.995, type(x)
    batch = parser(torch.stack([t, t]).float() / 255, boxes=[box, box])
    assert isinstance(batch, list) and len(batch) == 2
    mixed = parser([path, img, t], boxes=[box, box, box])
    assert len(mixed) == 3 and all(np.array_equal(r.labels, ref) for r in mixed)
    aligned = parser.parse_aligned([img, Image.fromarray(img), t.float() / 255], size=(48, 64))
    assert [r.labels.shape for r in aligned] == [(48, 64)] * 3
    assert np.array_equal(aligned[0].labels, aligned[1].labels)
    assert parser.parse_aligned(img).labels.shape == (80, 80)


def test_image_modes_exif_and_errors(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (40, 30, 3)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 255, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("gray.png", "rgba.png", "deep.png"):
        a = load_image(tmp_path / name)
        assert a.shape == (30, 40, 3) and a.dtype == np.uint8, name
    assert np.array_equal(load_image(tmp_path / "deep.png")[..., 0], rgb[..., 0])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_custom_detector_and_given_boxes(tiny_weights, astronaut):
    calls = []

    def detector(img):
        calls.append(img.shape)
        return [((180.0, 70.0, 270.0, 160.0), 0.7)]

    p = FaceParser.from_pretrained(tiny_weights, detector=detector)
    res = p(astronaut)
    assert calls == [(512, 512, 3)] and res.faces[0].score == 0.7
    res = p(astronaut, boxes=[((180, 70, 270, 160), 0.5), [20, 20, 60, 60]])
    assert len(calls) == 1 and [f.score for f in res.faces] == [0.5, 1.0]
    assert res.faces[0].crop == [f.crop for f in p(astronaut).faces][0]
    assert p(astronaut, boxes=[]).faces == []


def test_bad_inputs_raise_clear_errors(parser):
    with pytest.raises(ValueError, match="float images must have values in"):
        parser(np.full((20, 20, 3), 2.0, np.float32), boxes=[])
    with pytest.raises(ValueError, match="unsupported input type"):
        parser(42)
    with pytest.raises(ValueError, match="x2 > x1"):
        parser(np.zeros((20, 20, 3), np.uint8), boxes=[[5, 5, 1, 1]])


# ---------------------------------------------------------------------------------------------- detection
def test_haar_finds_the_astronaut_face(astronaut):
    dets = HaarDetector()(astronaut)
    assert len(dets) == 1
    (x1, y1, x2, y2), score = dets[0]
    assert 200 < (x1 + x2) / 2 < 250 and 90 < (y1 + y2) / 2 < 140 and 70 < x2 - x1 < 130 and score > 1


def test_astronaut_parse_stays_in_the_crop(parser, astronaut):
    res = parser(astronaut, return_probs=True)
    assert len(res.faces) == 1 and res.message is None
    x0, y0, x1, y1 = res.faces[0].crop
    assert x0 < 190 and x1 > 260 and y0 < 60 and y1 > 160  # the head with hair
    xa, ya, xb, yb = res.faces[0].region  # the (rolled) crop's pixels in the image
    assert xa <= max(x0, 0) and ya <= max(y0, 0) and xb >= min(x1, 512) and yb >= min(y1, 512)
    outside = np.ones(res.labels.shape, bool)
    outside[ya:yb, xa:xb] = False
    assert (res.labels[outside] == 0).all()
    assert res.probs.shape == (19, 512, 512) and np.allclose(res.probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(res.probs.argmax(0), res.labels)
    assert np.allclose(res.confidence, res.probs.max(0))
    share = res.class_share()
    assert set(share) == set(CELEBAMASK_HQ.classes) and abs(sum(share.values()) - 1) < 1e-6


def test_two_faces_and_no_face(parser, astronaut, caplog):
    face = astronaut[0:300, 100:330]
    canvas = np.full((400, 800, 3), 128, np.uint8)
    canvas[50:350, 50:280] = face
    canvas[80:380, 450:680] = face
    res = parser(canvas)
    assert len(res.faces) == 2
    assert sorted(round((f.box[0] + f.box[2]) / 2) // 100 for f in res.faces) == [1, 5]
    gradient = np.tile(np.linspace(0, 255, 320).astype(np.uint8)[None, :, None], (240, 1, 3))
    with caplog.at_level("WARNING", logger="fpliif.infer"):
        empty = parser(gradient)
    assert empty.faces == [] and (empty.labels == 0).all() and empty.labels.shape == (240, 320)
    assert "no face" in empty.message and "no face" in caplog.text
    assert empty.overlay(0.5, legend=True).size[1] == 240


# ---------------------------------------------------------------------------------------------- paste-back
def _placed(mask: np.ndarray, shape: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    y, x = at
    out[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
    return out


def test_paste_back_exact_without_resizing():
    mask = synthetic_mask(256)
    truth = _placed(mask, (400, 500), (90, 170))
    image = np.repeat((truth * CODE)[..., None], 3, axis=2)
    # feather=0: the seam blend mixes in the context window, a resized crop whose blended grey levels the
    # oracle reads as other classes at edges (the blend itself: tests/test_detect_align.py)
    p = oracle_parser(framing=Framing(1.0, 0.0, 0.0), input_size=256, feather=0)
    res = p(image, boxes=[[170, 90, 426, 346]])
    assert res.faces[0].crop == [170, 90, 426, 346]
    assert np.array_equal(res.labels, truth)


@pytest.mark.parametrize("side,at", [(200, (60, 90)), (420, (-80, 250)), (130, (300, 10))])
def test_paste_back_with_default_framing_resizing_and_padding(side, at):
    """A known mask in a larger canvas comes back at the same place (within 1-2 px of class edges),
    including windows reaching outside the image and crops resized up and down."""
    mask = synthetic_mask(side)
    shape = (420, 560)
    y, x = at
    truth = np.zeros(shape, np.uint8)
    ys, xs = slice(max(y, 0), min(y + side, shape[0])), slice(max(x, 0), min(x + side, shape[1]))
    truth[ys, xs] = mask[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    image = np.repeat((truth * CODE)[..., None], 3, axis=2)
    # a face box whose default-framing window is about the mask square
    w = side / DEFAULT_FRAMING.scale
    cx, cy = x + side / 2 + DEFAULT_FRAMING.dx * w, y + side / 2 + DEFAULT_FRAMING.dy * w
    res = oracle_parser()(image, boxes=[[cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2]])
    x0, y0, x1, y1 = res.faces[0].crop
    assert abs(x0 - x) <= 1 and abs(y0 - y) <= 1 and abs(x1 - x0 - side) <= 1
    wrong = res.labels != truth
    assert not (wrong & ~boundary_band(truth, 2)).any()
    assert wrong.mean() < 0.02


def test_large_crops_decoded_at_max_decode_size_agree():
    mask = synthetic_mask(600)
    image = np.repeat((_placed(mask, (700, 700), (50, 50)) * CODE)[..., None], 3, axis=2)
    box = [[150, 150, 550, 550]]
    exact = oracle_parser(max_decode_size=None)(image, boxes=box).labels
    coarse = oracle_parser(max_decode_size=256)(image, boxes=box).labels
    assert (exact == coarse).mean() > 0.98


# ---------------------------------------------------------------------------------------------- results
def test_save_png_embeds_palette_and_round_trips(parser, astronaut, tmp_path):
    res = parser(astronaut[40:200, 140:300], boxes=[[30, 30, 130, 130]])
    res.labels[:5, :5] = 13  # make sure a non-zero class is present
    path = res.save_png(tmp_path / "l.png")
    back = Image.open(path)
    assert back.mode == "P" and back.getpalette()[:57] == CELEBAMASK_HQ.palette()[:57]
    assert np.array_equal(np.asarray(back), res.labels)
    ov = res.overlay(0.5)
    assert ov.size == (160, 160)
    assert res.overlay(0.5, legend=True).size[0] > 160
    d = json.loads(res.to_json())
    assert d["size"] == [160, 160] and len(d["faces"]) == 1 and set(d["faces"][0]) >= {"box", "score", "class_share"}


# ---------------------------------------------------------------------------------------------- flip TTA
def mirror_reference(plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """Flip TTA by hand from two plain (C, H, W) probability maps: the photo's and its mirror's."""
    names = CELEBAMASK_HQ.classes
    lr = {c: "r_" + c[2:] if c.startswith("l_") else "l_" + c[2:] if c.startswith("r_") else c for c in names}
    twin = [names.index(lr[c]) if lr[c] in names else k for k, c in enumerate(names)]
    return (plain + mirrored[twin, :, ::-1]) / 2


def test_flip_channels_swap_the_left_right_twins():
    for ls in (CELEBAMASK_HQ, LAPA):
        ch = flip_channels(ls)
        assert ch.shape == (ls.num_classes,) and sorted(ch) == list(range(ls.num_classes))
        for a, b in (("l_eye", "r_eye"), ("l_brow", "r_brow")):
            assert ch[ls.index(a)] == ls.index(b) and ch[ls.index(b)] == ls.index(a)
        moved = {ls.classes[k] for k in range(ls.num_classes) if ch[k] != k}
        assert moved == {c for c in ls.classes if c[:2] in ("l_", "r_") and c != "l_lip"}  # l_lip: lower lip
    assert flip_channels(CELEBAMASK_HQ)[CELEBAMASK_HQ.index("l_ear")] == CELEBAMASK_HQ.index("r_ear")


def test_mirrored_pixel_centres_are_exact():
    """Column c of a W-wide output is the mirror of column W-1-c, bit for bit: x -> -x is the flip-back."""
    for w in (1, 7, 20, 21, 255, 512):
        x = pixel_centers(3, w).reshape(3, w, 2)
        assert np.array_equal(-x[:, ::-1, 0], x[:, :, 0]) and np.array_equal(x[:, ::-1, 1], x[:, :, 1])


@pytest.mark.parametrize("size", [(12, 20), (9, 21)])
def test_tta_aligned_matches_a_hand_made_mirror_reference(parser, size):
    """TTA == mean of the plain parse and the plain parse of the mirrored crop, flipped back, l/r swapped."""
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # model input size: no resize
    plain = parser.parse_aligned(img, size=size, return_probs=True)
    mirrored = parser.parse_aligned(np.ascontiguousarray(img[:, ::-1]), size=size, return_probs=True)
    ref = mirror_reference(plain.probs, mirrored.probs)
    tta = parser.parse_aligned(img, size=size, return_probs=True, tta=True)
    assert tta.probs.shape == (19, *size) and np.abs(tta.probs - ref).max() < 1e-5
    assert np.array_equal(tta.labels, ref.argmax(0))
    assert np.abs(tta.probs - plain.probs).max() > 1e-3  # TTA does change the output of this model


def test_tta_photo_matches_a_hand_made_mirror_reference(tiny_weights):
    # the face window's TTA (context labels renormalise the averaged probabilities over their classes instead)
    # drop_detached is not mirror-symmetric on this noise "photo"; the filter is tested on its own
    p = FaceParser.from_pretrained(tiny_weights, framing=Framing(1.0, 0.0, 0.0), context=False, drop_detached=False)
    img = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = [20, 10, 84, 74]  # a 64 px window (the model input size), off-centre
    plain = p(img, boxes=[box], return_probs=True)
    mirrored = p(
        np.ascontiguousarray(img[:, ::-1]), boxes=[[120 - box[2], box[1], 120 - box[0], box[3]]], return_probs=True
    )
    ref = mirror_reference(plain.probs, mirrored.probs)
    tta = p(img, boxes=[box], return_probs=True, tta=True)
    assert np.abs(tta.probs - ref).max() < 1e-5 and np.array_equal(tta.labels, ref.argmax(0))
    # the parser-wide default, overridden per call
    p_tta = FaceParser.from_pretrained(
        tiny_weights, framing=Framing(1.0, 0.0, 0.0), tta=True, context=False, drop_detached=False
    )
    assert "tta=True" in repr(p_tta)
    assert np.array_equal(p_tta(img, boxes=[box], return_probs=True).probs, tta.probs)
    assert np.array_equal(p_tta(img, boxes=[box], return_probs=True, tta=False).probs, plain.probs)


@pytest.mark.parametrize("max_decode_size", [None, 64])
def test_tta_of_a_mirror_equivariant_model_changes_nothing(max_decode_size):
    """The oracle reads the class off the crop, so without left/right classes it is mirror-equivariant:
    flip TTA must give back its plain output, on the exact and the resampled (max_decode_size) paths.
    A flip-back one pixel off would blend neighbouring pixels at every class edge."""
    mask = synthetic_mask(120)
    mask[np.isin(mask, (4, 5))] = 3  # eyes -> eye_g (no twin)
    truth = _placed(mask, (170, 200), (30, 47))
    image = np.repeat((truth * CODE)[..., None], 3, axis=2)
    # feather=0: as in test_paste_back_exact_without_resizing (the oracle misreads the resized context window)
    p = oracle_parser(framing=Framing(1.0, 0.0, 0.0), input_size=120, max_decode_size=max_decode_size, feather=0)
    box = [[47, 30, 167, 150]]
    plain = p(image, boxes=box, return_probs=True)
    tta = p(image, boxes=box, return_probs=True, tta=True)
    assert np.abs(tta.probs - plain.probs).max() < 1e-5 and np.array_equal(tta.labels, plain.labels)
    if max_decode_size is None:
        assert np.array_equal(tta.labels, truth)
    aligned = p.parse_aligned(image[30:150, 47:167], size=(120, 120), tta=True)
    assert np.array_equal(aligned.labels, mask)


def test_cli_parse_tta(tiny_weights, tmp_path, monkeypatch):
    from fpliif.infer import parser as parser_module

    calls = []
    real = parser_module.flip_tta_logits
    monkeypatch.setattr(parser_module, "flip_tta_logits", lambda *a: calls.append(1) or real(*a))
    img = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "crop.png")
    out = tmp_path / "out"
    argv = ["parse", str(tmp_path / "crop.png"), "--out", str(out), "--weights", str(tiny_weights), "--aligned"]
    assert main([*argv, "--size", "20", "--format", "npy", "--quiet"]) == 0 and not calls
    assert main([*argv, "--size", "20", "--format", "npy", "--tta", "--quiet", "--overwrite"]) == 0 and calls
    ref = FaceParser.from_pretrained(tiny_weights).parse_aligned(img, size=20, tta=True).labels
    assert np.array_equal(np.load(out / "crop_labels.npy"), ref)


# ---------------------------------------------------------------------------------------------- CLI
def _corrupt_folder(root: Path, astronaut: np.ndarray) -> Path:
    d = root / "photos"
    (d / "sub").mkdir(parents=True)
    face = astronaut[30:210, 130:310]
    Image.fromarray(face).save(d / "x.jpg")
    Image.fromarray(face).save(d / "x.png")
    Image.fromarray(face[::2, ::2]).save(d / "sub" / "x.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (d / "notes.txt").write_text("ignored")
    return d


def test_cli_folder_with_corrupt_file_collisions_and_overwrite(tiny_weights, astronaut, tmp_path, capsys):
    d = _corrupt_folder(tmp_path, astronaut)
    out = tmp_path / "out"
    argv = [
        "parse",
        str(d),
        "--out",
        str(out),
        "--weights",
        str(tiny_weights),
        "--aligned",
        "--size",
        "64",
        "--overlay",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "cannot read image" in err
    for rel in ("x_jpg_labels.png", "x_png_labels.png", "sub/x_labels.png", "x_jpg_overlay.png"):
        assert (out / rel).is_file(), rel
    assert Image.open(out / "sub" / "x_labels.png").size == (64, 64)
    assert not list(out.rglob("broken*"))
    # second run: everything exists -> refused, nothing replaced
    before = (out / "x_jpg_labels.png").stat().st_mtime_ns
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "--overwrite" in err
    assert (out / "x_jpg_labels.png").stat().st_mtime_ns == before
    (d / "broken.jpg").unlink()
    assert main([*argv, "--overwrite"]) == 0


def test_a_file_given_twice_is_parsed_once_under_its_own_name(tmp_path):
    from fpliif.infer.cli_files import plan_jobs

    (tmp_path / "in").mkdir()
    a = tmp_path / "in" / "a.jpg"
    a.write_bytes(b"")
    again = tmp_path / "in" / ".." / "in" / "a.jpg"
    for inputs in ([str(a), str(a)], [str(tmp_path / "in"), str(a)], [str(a), str(again)]):
        jobs, errors = plan_jobs(inputs, tmp_path / "out", video=False)
        assert not errors and [(j.path.name, j.key.as_posix()) for j in jobs] == [("a.jpg", "a")], inputs


def test_cli_json_npy_and_example(tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "parse",
            "--example",
            "--out",
            str(out),
            "--weights",
            str(tiny_weights),
            "--format",
            "json",
            "--overlay",
        ]
    )
    assert rc == 0
    d = json.loads((out / "astronaut.json").read_text())
    assert d["image"].endswith("astronaut.jpg") and d["size"] == [512, 512]
    assert len(d["faces"]) == 1 and len(d["faces"][0]["box"]) == 4 and isinstance(d["faces"][0]["score"], float)
    assert set(d["class_share"]) == set(CELEBAMASK_HQ.classes)
    assert abs(sum(d["class_share"].values()) - 1) < 1e-4
    assert (out / "astronaut_labels.png").is_file() and (out / "astronaut_overlay.png").is_file()
    rc = main(["parse", str(example_image()), "--out", str(out), "--weights", str(tiny_weights), "--format", "npy"])
    assert rc == 0
    assert np.load(out / "astronaut_labels.npy").shape == (512, 512)


def test_cli_usage_errors(tiny_weights, tmp_path, capsys):
    base = ["parse", str(example_image()), "--out", str(tmp_path), "--weights", str(tiny_weights)]
    assert main([*base, "--size", "64"]) == 2
    assert "--aligned" in capsys.readouterr().err
    assert main([*base, "--backend", "onnxruntime"]) == 2
    assert "--onnx" in capsys.readouterr().err
    assert main(["parse", str(tmp_path / "nope.jpg"), "--out", str(tmp_path), "--weights", str(tiny_weights)]) == 1
    assert "nope.jpg" in capsys.readouterr().err


def test_cli_video(tiny_weights, astronaut, tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 120))
    for i in range(6):
        frame = np.full((120, 160, 3), 90, np.uint8)
        frame[:, 10 + 4 * i : 10 + 4 * i + 100] = cv2.resize(astronaut[40:200, 150:300], (100, 120))
        w.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    w.release()
    out = tmp_path / "out"
    rc = main(
        [
            "parse",
            str(src),
            "--video",
            "--out",
            str(out),
            "--weights",
            str(tiny_weights),
            "--format",
            "json",
            "--batch-size",
            "4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (120, 160, 3)
        n += 1
    assert n == 6
    assert len(list((out / "clip_labels").glob("*.png"))) == 6
    assert len(json.loads((out / "clip.json").read_text())["frames"]) == 6


# ---------------------------------------------------------------------------------------------- real data
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celebamask-mini"


@pytest.mark.skipif(not (DATA / "images").is_dir(), reason="celebamask-mini not available")
def test_detected_window_recovers_the_celebamask_crop():
    """A CelebAMask-HQ crop shrunk into a larger photo: detection + framing find (about) the original crop."""
    files = sorted((DATA / "images").glob("*.jpg"))[::100][:6]
    ious = []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB").resize((256, 256), Image.BICUBIC))
        canvas = np.full((480, 640, 3), 100, np.uint8)
        canvas[150:406, 300:556] = img
        dets = HaarDetector()(canvas)
        if not dets:
            continue
        x0, y0, side = DEFAULT_FRAMING.window(max(dets, key=lambda d: d[1])[0])
        ix = max(0, min(x0 + side, 556) - max(x0, 300))
        iy = max(0, min(y0 + side, 406) - max(y0, 150))
        ious.append(ix * iy / (side * side + 256 * 256 - ix * iy))
    assert len(ious) >= 4 and np.median(ious) > 0.8


def test_amp_autocasts_the_torch_backend(tiny_weights, monkeypatch):
    import fpliif.precision as precision

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    fp32 = FaceParser.from_pretrained(tiny_weights, amp="none")
    bf16 = FaceParser.from_pretrained(tiny_weights, amp="bf16")
    assert fp32.backend.amp == "none" and bf16.backend.amp == "bf16"
    batch = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    assert fp32.backend.encode(batch)[0].cells.dtype == torch.float32
    assert bf16.backend.encode(batch)[0].cells.dtype == torch.bfloat16  # autocast reached the model
    a = fp32.parse_aligned(img, size=48, return_probs=True)
    b = bf16.parse_aligned(img, size=48, return_probs=True)
    assert b.probs.dtype == a.probs.dtype and np.abs(a.probs - b.probs).max() < 0.05
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    assert FaceParser.from_pretrained(tiny_weights, amp="auto").backend.amp == "none"
    assert FaceParser.from_pretrained(tiny_weights).backend.amp == "none"  # the default is auto
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert FaceParser.from_pretrained(tiny_weights, amp="auto").backend.amp == "bf16"
    assert FaceParser.from_pretrained(tiny_weights).backend.amp == "bf16"
    with pytest.raises(ValueError, match="amp"):
        FaceParser.from_pretrained(tiny_weights, amp="fp8")


# ---------------------------------------------------------------------------------------------- context window
def test_context_off_is_exactly_the_face_window_parse(parser, astronaut, monkeypatch):
    """context=False: the labels are the face crop's own parse at its pixels, and background elsewhere; with the
    context window on, the face window's labels stay the same inside its blend band and labels reach beyond it
    (labels no face reaches kept, as parse_aligned keeps them)."""
    monkeypatch.setattr(parser, "drop_detached", False)
    box, (x0, y0, side) = [200, 120, 260, 180], DEFAULT_FRAMING.window([200, 120, 260, 180])
    off = parser(astronaut, boxes=[box], context=False, decode="dense", return_probs=True)
    crop = astronaut[y0 : y0 + side, x0 : x0 + side]
    ref = parser.parse_aligned(crop, decode="dense", return_probs=True)
    assert off.faces[0].crop == [x0, y0, x0 + side, y0 + side] and off.faces[0].context is None
    assert np.array_equal(off.labels[y0 : y0 + side, x0 : x0 + side], ref.labels)
    assert np.allclose(off.probs[:, y0 : y0 + side, x0 : x0 + side], ref.probs, atol=1e-5)
    outside = np.ones(off.labels.shape, bool)
    outside[y0 : y0 + side, x0 : x0 + side] = False
    assert (off.labels[outside] == 0).all() and (off.probs[0][outside] == 1).all()
    on = parser(astronaut, boxes=[box], decode="dense")
    own = np.zeros(off.labels.shape, bool)  # the face window inside its blend band
    full = feather_weights(pixel_centers(side, side), parser.feather) == 1
    own[y0 : y0 + side, x0 : x0 + side] = full.reshape(side, side)
    assert own.sum() > 0.5 * side**2 and np.array_equal(on.labels[own], off.labels[own])
    assert (on.labels[outside] != 0).any() and on.faces[0].to_dict()["context"] == on.faces[0].context


def test_context_work_counts_against_the_budget(tiny_weights, astronaut):
    box = [200, 120, 260, 180]
    p = FaceParser.from_pretrained(tiny_weights, decode="dense", max_decode_size=None)
    win = DEFAULT_FRAMING.window(box)
    face_only = win.side**2
    p(astronaut, boxes=[box], context=False)
    assert p.points_decoded == face_only  # dense, exact: one query per pixel of the window
    wide = win.scaled(CONTEXT_SCALE)
    low = lower_window(wide)  # inside the photo; upright: it adds the rows below the context window
    below = low.side * (low.y0 + low.side - wide.y0 - wide.side)
    p.points_decoded = 0
    p(astronaut, boxes=[box])  # + the context window's pixels outside the face window and in its blend band
    band = (feather_weights(pixel_centers(win.side, win.side), p.feather) < 1).sum()
    assert 0 < band < face_only and 0 < below < face_only
    assert p.points_decoded == wide.side**2 + band + below  # + the lower window's below the context window
    tight = FaceParser.from_pretrained(tiny_weights, max_points=face_only, max_decode_size=None)
    assert tight(astronaut, boxes=[box], context=False).faces
    with pytest.raises(OverBudget, match="context windows") as info:
        tight(astronaut, boxes=[box])
    assert info.value.value == face_only + wide.side**2 + low.side**2
    with pytest.raises(ValueError, match="context: expected"):
        FaceParser.from_pretrained(tiny_weights, context=0.5)
    with pytest.raises(ValueError, match="context: expected"):
        p(astronaut, boxes=[box], context="wide")
    for bad in (-0.1, 1.5, "wide", True):
        with pytest.raises(ValueError, match="feather: expected"):
            FaceParser.from_pretrained(tiny_weights, feather=bad)


def test_cli_context_and_feather(tiny_weights, tmp_path, capsys):
    """--no-context drops the context window; --feather reaches the parser (a band of 0 and of 1 blend the two
    windows differently); a --feather that is not a number in [0, 1] is a usage error naming it."""
    labels = {}
    for name, flags in (("on", []), ("off", ["--no-context"]), ("f0", ["--feather", "0"]), ("f1", ["--feather", "1"])):
        out = tmp_path / name
        args = ["parse", "--example", "--out", str(out), "--weights", str(tiny_weights), "--format", "json"]
        assert main(args + flags) == 0
        face = json.loads((out / "astronaut.json").read_text())["faces"][0]
        assert ("context" in face) is (name != "off")
        labels[name] = np.asarray(Image.open(out / "astronaut_labels.png"))
    assert not np.array_equal(labels["f0"], labels["f1"])
    for bad in ("-0.1", "1.5", "nan", "wide"):
        with pytest.raises(SystemExit) as e:
            main(["parse", "--example", "--out", str(tmp_path / "bad"), "--feather", bad])
        assert e.value.code == 2 and "argument --feather: expected a finite number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_video_frames_are_not_extended_unless_asked(tiny_weights, astronaut, tmp_path, monkeypatch):
    """``--video``: labels are not continued past the windows by default (GrabCut per frame adds label flicker:
    docs/detection.md); ``--extend`` turns it on; images keep it on by default."""
    src = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 120))
    for _ in range(2):
        w.write(cv2.cvtColor(cv2.resize(astronaut, (160, 120)), cv2.COLOR_RGB2BGR))
    w.release()
    seen = []
    call = FaceParser.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("extend", self.extend))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(FaceParser, "__call__", spy)
    base = ["parse", str(src), "--video", "--weights", str(tiny_weights)]
    for flags, want in (([], False), (["--extend"], True), (["--no-extend"], False)):
        assert main([*base, "--out", str(tmp_path / str(len(seen))), *flags]) == 0
        assert seen[-1] is want
    assert main(["parse", "--example", "--out", str(tmp_path / "img"), "--weights", str(tiny_weights)]) == 0
    assert seen[-1] is True


def test_cli_keep_detached_and_no_extend_reach_the_parser(tiny_weights, tmp_path, monkeypatch):
    seen = []
    init = FaceParser.__init__

    def spy(self, *args, **kwargs):
        seen.append((kwargs.get("drop_detached"), kwargs.get("extend")))
        init(self, *args, **kwargs)

    monkeypatch.setattr(FaceParser, "__init__", spy)
    cases = (
        ("default", [], (True, True)),
        ("keep", ["--keep-detached"], (False, True)),
        ("no", ["--no-extend"], (True, False)),
    )
    for name, flags, want in cases:
        args = ["parse", "--example", "--out", str(tmp_path / name), "--weights", str(tiny_weights), *flags]
        assert main(args) == 0 and seen[-1] == want


def test_cli_processes_write_the_same_files_as_one_process(tiny_weights, tmp_path, capfd):
    """--processes 2: the same label files as one process (both one thread each), the same failure reported and
    counted; --processes with --video is refused before any work."""
    src = tmp_path / "in"
    src.mkdir()
    photo = Image.open(example_image()).resize((160, 160))
    for i in range(3):
        photo.rotate(8 * i).save(src / f"p{i}.png")
    (src / "broken.jpg").write_text("not an image")
    out = {}
    for n in ("1", "2"):
        out[n] = tmp_path / f"p{n}"
        args = ["parse", str(src), "--out", str(out[n]), "--weights", str(tiny_weights), "--threads", "1"]
        assert main([*args, "--keep-detached", "--processes", n]) == 1  # the broken file (the tiny model's
        # labels reach no face: --keep-detached keeps them)
        err = capfd.readouterr().err
        assert "broken.jpg" in err and "3 image(s) parsed" in err and "1 failed" in err
    for i in range(3):
        one, two = (np.asarray(Image.open(out[w] / f"p{i}_labels.png")) for w in ("1", "2"))
        assert one.any() and np.array_equal(one, two)
    assert main(["parse", str(src), "--out", str(tmp_path / "v"), "--video", "--processes", "2"]) == 2
    assert "--processes" in capfd.readouterr().err and not (tmp_path / "v").exists()

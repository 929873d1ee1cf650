"""MTCNN detection with landmarks, rolled (aligned) crops, and paste-back through the inverse rotation."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fpliif.cli import main
from fpliif.infer import framing
from fpliif.infer.cli import example_image
from fpliif.infer.detect import HaarDetector, MTCNNDetector, make_detector, roll_degrees
from fpliif.infer.framing import HAAR_FRAMING, MTCNN_FRAMING, Framing, lower_window
from fpliif.infer.geometry import Window, detached, extract_crop, feather_weights, grid_coords, visible_region
from fpliif.infer.images import load_image
from fpliif.infer.parser import FaceParser
from oracle import CODE, Oracle

MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "celebamask-mini"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
try:
    from measure_detection import non_faces
finally:
    sys.path.pop(0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(example_image())


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector()


def rotate(image: np.ndarray, degrees: float, pad: int = 0) -> np.ndarray:
    """``image`` padded by ``pad`` (edge) and rotated by ``degrees`` counter-clockwise on screen about its centre."""
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def check_face(det, box_range=None) -> None:
    """Landmarks inside the box, eyes above the nose above the mouth, left/right in image order."""
    (x1, y1, x2, y2), score, lm = det
    assert score > 0.95 and lm.shape == (5, 2)
    assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()
    eye_l, eye_r, nose, mouth_l, mouth_r = lm
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


# ---------------------------------------------------------------------------------------------- detection
def test_mtcnn_finds_the_astronaut_with_landmarks(mtcnn, astronaut):
    dets = mtcnn(astronaut)
    assert len(dets) == 1
    check_face(dets[0])
    (x1, y1, x2, y2), _, lm = dets[0]
    assert 200 < (x1 + x2) / 2 < 250 and 90 < (y1 + y2) / 2 < 140 and 70 < x2 - x1 < 130
    assert abs(roll_degrees(lm)) < 8  # nearly upright
    # the same face through the parser's API: (box, score, landmarks), passable back as boxes
    parser = FaceParser(Oracle(), input_size=64)
    ((box, score, lm2),) = parser.detect(astronaut)
    assert np.allclose(lm2, lm) and parser.framing == MTCNN_FRAMING


def test_mtcnn_finds_no_face_in_non_faces(mtcnn):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    gradient = np.tile(np.linspace(0, 255, 320).astype(np.uint8)[None, :, None], (240, 1, 3))
    chess = np.kron((np.indices((8, 8)).sum(0) % 2).astype(np.uint8) * 255, np.ones((40, 40), np.uint8))
    for image in (noise, gradient, np.repeat(chess[..., None], 3, axis=2)):
        assert mtcnn(image) == []
    for kind, (image,) in non_faces(1).items():  # noise, blurred noise, a chessboard, a synthetic landscape
        assert mtcnn(image) == [], kind


@pytest.mark.parametrize("degrees", [25, -25])
def test_rotated_face_is_found_and_its_aligned_crop_has_level_eyes(mtcnn, astronaut, degrees):
    upright = roll_degrees(mtcnn(astronaut)[0][2])
    image = rotate(astronaut, degrees, pad=64)
    dets = mtcnn(image)
    assert len(dets) == 1
    box, _, lm = dets[0]
    roll = roll_degrees(lm)
    assert abs(roll - (upright - degrees)) < 5  # counter-clockwise on screen = negative roll (y down)
    win = MTCNN_FRAMING.window(box, roll)
    crop = extract_crop(image, win)
    assert crop.shape == (win.side, win.side, 3)
    again = mtcnn(crop)
    assert len(again) == 1
    check_face(again[0])
    assert abs(roll_degrees(again[0][2])) < 4  # eyes level in the crop fed to the model


@pytest.mark.skipif(not MINI.is_dir(), reason="celebamask-mini not available")
def test_rotated_celebamask_faces_are_aligned(mtcnn):
    from PIL import Image

    files = sorted((MINI / "images").glob("*.jpg"))[:4]
    for path in files:
        img = np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR))
        for degrees in (30, -30):
            dets = mtcnn(rotate(img, degrees, pad=64))
            assert dets, f"{path.name} rotated {degrees}: no face"
            box, _, lm = max(dets, key=lambda d: d[1])
            crop = extract_crop(rotate(img, degrees, pad=64), MTCNN_FRAMING.window(box, roll_degrees(lm)))
            best = max(mtcnn(crop), key=lambda d: d[1])
            assert abs(roll_degrees(best[2])) < 6, path.name


# The 6 most turned faces of celebamask-mini (mask yaw 0.67-0.76: scripts/measure_turned_faces.py ranks them).
TURNED = (
    "3052049e8d45486299f222769833253d",
    "2ff81b0c7c9a402183435f80edf9c414",
    "afc4b8d07bad4e629dd16b810adb6d91",
    "da054dbedc5c41cab927906a3442c0e8",
    "f1230026d0954e10aaefa7118b2f91dc",
    "1c82f1d87e1941d99dfd540f43ffcfa8",
)


@pytest.mark.skipif(not MINI.is_dir(), reason="celebamask-mini not available")
def test_turned_faces_are_framed_like_their_celebamask_crops():
    """A turned head's MTCNN box leans towards its visible cheek (without the nose term the window centre lay
    0.11-0.15 window sides beside the crop's); the nose landmark brings the window back over the crop."""
    from PIL import Image

    parser = FaceParser(Oracle())
    for stem in TURNED:
        img = np.asarray(Image.open(MINI / "images" / f"{stem}.jpg").convert("RGB").resize((256, 256), Image.BILINEAR))
        (win, _), *_ = parser.windows(img)
        assert abs(win.centre[0] - 128) < 0.05 * win.side, stem


def test_missing_model_files_and_opencv_give_clear_errors(tmp_path, astronaut, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"MTCNN model files not found.*--detector haar"):
        MTCNNDetector(model_dir=tmp_path)(astronaut)
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(ImportError, match="face detection needs OpenCV: pip install"):
        MTCNNDetector()(astronaut)
    with pytest.raises(ImportError, match="face detection needs OpenCV"):
        HaarDetector()(astronaut)


def test_detector_names_framing_and_align_option(astronaut):
    assert isinstance(make_detector("haar"), HaarDetector) and isinstance(make_detector(), MTCNNDetector)
    with pytest.raises(ValueError, match="mtcnn, haar"):
        make_detector("yolo")
    assert FaceParser(Oracle(), detector="haar").framing == HAAR_FRAMING
    assert FaceParser(Oracle()).framing == MTCNN_FRAMING
    own = Framing(1.0, 0.0, 0.0)
    assert FaceParser(Oracle(), detector="haar", framing=own).framing == own
    rolled = rotate(astronaut, 20, pad=40)
    on = FaceParser(Oracle(), input_size=64)(rolled).faces[0]
    off = FaceParser(Oracle(), input_size=64, align=False)(rolled).faces[0]
    assert -25 < on.angle < -10 and len(on.landmarks) == 5 and "angle" in on.to_dict()
    assert off.angle == 0 and off.landmarks is not None and "angle" not in off.to_dict()
    haar = FaceParser(Oracle(), input_size=64, detector="haar")(astronaut).faces[0]
    assert haar.angle == 0 and haar.landmarks is None and "landmarks" not in haar.to_dict()


def test_cli_detector_options(tmp_path, capsys, monkeypatch):
    import fpliif.infer.cli_parse as cli_parse

    built = []

    def fake_build(args):
        built.append((args.detector, args.no_align, args.profile_faces))
        p = FaceParser(Oracle(), input_size=64, detector="haar" if args.detector == "haar" else None)
        p.align = not args.no_align
        return p

    monkeypatch.setattr(cli_parse, "build_parser_from_args", fake_build)
    base = ["parse", str(example_image()), "--out", str(tmp_path), "--quiet", "--overwrite"]
    assert main(base) == 0 and built[-1] == ("mtcnn", False, False)
    assert main([*base, "--detector", "haar", "--profile-faces", "--no-align"]) == 0
    assert built[-1] == ("haar", True, True)
    assert main([*base, "--profile-faces"]) == 2
    assert "--profile-faces applies to the Haar detector" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- geometry
def test_unrotated_window_matches_the_axis_aligned_geometry():
    win = Window(-7, 12, 40)
    assert tuple(win) == (-7, 12, 40) and win.region(30, 60) == visible_region(-7, 12, 40, 30, 60)
    rows, cols = np.arange(12, 30), np.arange(0, 20)
    coords, inside = win.crop_coords(rows, cols)
    assert inside.all()
    assert np.allclose(coords, grid_coords(rows - 12, cols + 7, 40, 40), atol=1e-6)
    img = np.random.default_rng(1).integers(0, 255, (60, 30, 3), dtype=np.uint8)
    # the warp (rotated path) at a vanishing angle gives the same pixels as the plain crop, padding included
    assert np.array_equal(extract_crop(img, Window(-7, 12, 40, 1e-9)), extract_crop(img, win))
    assert np.array_equal(extract_crop(img, Window(-7, 12, 40, 1e-9), "zero"), extract_crop(img, win, "zero"))


@pytest.mark.parametrize("degrees", [0, 90, -30])
def test_nose_offset_moves_the_window_along_the_rolled_x_axis(degrees):
    frame, box = Framing(1.5, 0.0, 0.1, dx_nose=-0.5), (100, 100, 200, 200)
    a = np.radians(degrees)
    along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    nose = np.array([150, 150]) + 20 * along + 7 * across  # 0.2 box widths along the face's x axis
    assert framing.nose_offset(box, nose, degrees) == pytest.approx(0.2)
    base, turned = np.array(frame.window(box, degrees).centre), np.array(frame.window(box, degrees, nose).centre)
    assert np.allclose(turned - base, 0.5 * 0.2 * 100 * along, atol=1.01)  # the centre follows the nose halfway
    assert Framing(1.5, 0.0, 0.1).window(box, degrees, nose) == frame.window(box, degrees)  # dx_nose 0: no shift


def test_rotated_window_transform_is_consistent():
    """crop pixel -> image (crop_to_image) -> crop coordinates (crop_coords) lands on the crop pixel centre."""
    win = Window(30, 20, 64, 33.0)
    m = win.crop_to_image()
    rng = np.random.default_rng(2)
    for _ in range(20):
        i, j = rng.integers(0, 64, 2)
        px, py = m @ np.array([j, i, 1.0])  # image pixel (index space) of crop pixel (row i, col j)
        cx, cy = win.centre
        c, s = np.cos(np.radians(33.0)), np.sin(np.radians(33.0))
        dx, dy = px + 0.5 - cx, py + 0.5 - cy
        u, v = (c * dx + s * dy) / 32, (-s * dx + c * dy) / 32
        assert np.allclose([u, v], [(2 * j + 1) / 64 - 1, (2 * i + 1) / 64 - 1], atol=1e-9)
    # the window's corners bound its region; the centre pixel maps to the crop centre
    xa, ya, xb, yb = win.region(1000, 1000)
    p = win.corners()
    assert xa <= p[:, 0].min() and xb >= p[:, 0].max() and ya <= p[:, 1].min() and yb >= p[:, 1].max()
    coords, inside = win.crop_coords(np.array([52]), np.array([62]))  # pixel (62, 52): centre + (0.5, 0.5)
    c, s = np.cos(np.radians(33.0)), np.sin(np.radians(33.0))
    assert inside.all() and np.allclose(coords, [[(c + s) / 64, (c - s) / 64]], atol=1e-6)
    _, inside = win.crop_coords(np.array([20]), np.array([30, 62]))  # a corner (outside), the top middle
    assert inside.tolist() == [False, True]


def synthetic_mask(n: int) -> np.ndarray:
    m = np.zeros((n, n), np.uint8)
    c = n // 2
    cv2.ellipse(m, (c, c + n // 10), (n // 3, n * 2 // 5), 0, 0, 360, 13, -1)
    cv2.ellipse(m, (c, c + n // 6), (n // 4, n // 3), 0, 0, 360, 1, -1)
    cv2.circle(m, (c - n // 6, c), n // 16, 4, -1)  # a marker on the crop's left
    cv2.rectangle(m, (c + n // 8, c + n // 4), (c + n // 4, c + n // 3), 11, -1)  # and one lower right
    return m


@pytest.mark.parametrize(
    "degrees,max_decode,band_px,decode",
    [
        (25, None, 2, "dense"),
        (-40, None, 2, "dense"),
        (25, 64, 3, "dense"),
        (0, None, 2, "dense"),
        (25, None, 2, "adaptive"),
        (-40, 64, 3, "adaptive"),
    ],
)
def test_paste_back_of_a_rotated_crop_round_trips(degrees, max_decode, band_px, decode):
    """Labels painted in a rolled face frame come back on the original pixels through the inverse rotation."""
    side, shape = 160, (300, 340)
    x0, y0 = 90, 60
    win = Window(x0, y0, side, float(degrees))
    # the image: the upright mask seen through the window, i.e. warped crop -> image
    canvas = np.zeros(shape, np.uint8)
    m = np.vstack([win.crop_to_image(), [0, 0, 1]])
    truth = cv2.warpAffine(synthetic_mask(side), m[:2], shape[::-1], flags=cv2.INTER_NEAREST, borderValue=0)
    canvas[:] = truth
    image = np.repeat((canvas * CODE)[..., None], 3, axis=2)
    # a "detection" whose box frames exactly that window (Framing(1, 0, 0)) and whose eye line has the roll
    cx, cy = win.centre
    h = side / 2
    a = np.radians(degrees)
    lm = [[cx, cy], [cx + 10 * np.cos(a), cy + 10 * np.sin(a)], [cx, cy + 5], [cx - 3, cy + 9], [cx + 3, cy + 9]]
    det = ((cx - h, cy - h, cx + h, cy + h), 0.99, lm)
    parser = FaceParser(
        Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, max_decode_size=max_decode, decode=decode
    )
    res = parser(image, boxes=[det])
    face = res.faces[0]
    assert face.crop == [x0, y0, x0 + side, y0 + side] and abs(face.angle - degrees) < 1e-3
    k = np.ones((2 * band_px + 1, 2 * band_px + 1), np.uint8)
    band = cv2.dilate(truth, k) != cv2.erode(truth, k)
    wrong = res.labels != truth
    assert not (wrong & ~band).any()
    assert wrong.mean() < 0.02
    # the marker lands where the rotation puts it: the centroid of the class-4 disc (largest component; class
    # edges read by the oracle from interpolated grey levels add stray class-4 pixels) = the rotated centre
    n, _, stats, centroids = cv2.connectedComponentsWithStats((res.labels == 4).astype(np.uint8))
    mx, my = m[:2] @ np.array([side // 2 - side // 6, side // 2, 1.0])
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert np.hypot(*(centroids[big] - [mx, my])) < 1.0
    # nothing outside the rotated window
    corners = win.corners().astype(np.float32)
    outside = np.ones(shape, np.uint8)
    cv2.fillConvexPoly(outside, np.round(corners).astype(np.int32), 0)
    assert (res.labels[cv2.erode(outside, k).astype(bool)] == 0).all()


# ---------------------------------------------------------------------------------------------- context window
def test_context_window_keeps_centre_and_roll_and_maps_back_exactly():
    """The wider window's transform: a point's crop coordinates scale by side / wide side about the same centre,
    and crop pixel -> image (crop_to_image) -> crop coordinates lands on the crop pixel centre."""
    win = Window(31, 20, 65, 33.0)
    for factor in (2.0, 1.5, 2.7):
        wide = win.scaled(factor)
        assert wide.centre == win.centre and wide.angle == win.angle and abs(wide.side - factor * 65) <= 1
        rows, cols = np.arange(0, 140, 7), np.arange(10, 120, 9)
        inner, _ = win.crop_coords(rows, cols)
        outer, inside = wide.crop_coords(rows, cols)
        assert np.allclose(outer, inner * (win.side / wide.side), atol=1e-6)
        assert np.array_equal(inside, (np.abs(outer) < 1).all(axis=1))
        m = wide.crop_to_image()
        for i, j in [(0, 0), (wide.side - 1, 3), (50, wide.side - 1), (wide.side // 2, wide.side // 2)]:
            px, py = m @ np.array([j, i, 1.0])  # image pixel index of crop pixel (row i, col j)
            c, s = np.cos(np.radians(33.0)), np.sin(np.radians(33.0))
            dx, dy = px + 0.5 - wide.centre[0], py + 0.5 - wide.centre[1]
            u, v = (c * dx + s * dy) / (wide.side / 2), (-s * dx + c * dy) / (wide.side / 2)
            assert np.allclose([u, v], [(2 * j + 1) / wide.side - 1, (2 * i + 1) / wide.side - 1], atol=1e-9)


def _context_scene(side: int, shape: tuple[int, int], degrees: float):
    """A hair-coloured photo with a hat disc and a skin disc outside a rolled face window, and its detection."""
    win = Window(110, 90, side, float(degrees))
    truth = np.full(shape, 13, np.uint8)  # hair continues past the window
    m = win.crop_to_image()
    hat = m @ np.array([side * 1.3, side * 0.5, 1.0])  # crop pixel (row side/2, col 1.3 side): right of the window
    skin = m @ np.array([side * 0.5, -side * 0.35, 1.0])  # above the window
    cv2.circle(truth, tuple(int(round(v)) for v in hat), 9, 14, -1)
    cv2.circle(truth, tuple(int(round(v)) for v in skin), 9, 1, -1)
    image = np.repeat((truth * CODE)[..., None], 3, axis=2)
    cx, cy = win.centre
    h, a = side / 2, np.radians(degrees)
    lm = [[cx, cy], [cx + 10 * np.cos(a), cy + 10 * np.sin(a)], [cx, cy + 5], [cx - 3, cy + 9], [cx + 3, cy + 9]]
    return win, truth, image, hat, ((cx - h, cy - h, cx + h, cy + h), 0.99, lm)


@pytest.mark.parametrize("degrees,decode", [(25, "dense"), (0, "dense"), (-30, "adaptive")])
def test_context_labels_continue_past_the_window_through_the_inverse_transform(degrees, decode):
    side, shape = 80, (260, 300)
    win, truth, image, hat, det = _context_scene(side, shape, degrees)
    # a scene without a face (no skin in the box): keep the labels no face reaches (drop_detached); the windows'
    # own labels only (extend=False; tests/test_extend.py continues them past the windows)
    parser = FaceParser(
        Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, decode=decode, drop_detached=False, extend=False
    )
    off = parser(image, boxes=[det], context=False)
    on = parser(image, boxes=[det], context=2.0)  # a window twice as large (default: CONTEXT_SCALE)
    wide = win.scaled(2.0)
    face = on.faces[0]
    assert off.faces[0].context is None and face.context == [70, 50, 230, 210] and face.crop == off.faces[0].crop
    inner = win.crop_coords(np.arange(shape[0]), np.arange(shape[1]))[1].reshape(shape)
    ring = wide.crop_coords(np.arange(shape[0]), np.arange(shape[1]))[1].reshape(shape) & ~inner
    assert (off.labels[~inner] == 0).all()  # without context: a straight cut at the window
    assert np.array_equal(on.labels[inner], off.labels[inner])  # the face window's labels are untouched
    k = np.ones((7, 7), np.uint8)
    band = cv2.dilate(truth, k) != cv2.erode(truth, k)  # the context crop is 2x downscaled: blurred class edges
    core = ring & ~band
    assert (on.labels[core & (truth != 1)] == truth[core & (truth != 1)]).all()  # hair continues, the hat too
    assert (truth[core] == 1).any() and (on.labels[core & (truth == 1)] == 0).all()  # skin: not a context class
    assert not (on.labels[ring] == 1).any()
    below = lower_window(wide).crop_coords(np.arange(shape[0]), np.arange(shape[1]))[1].reshape(shape) & ~ring & ~inner
    assert (on.labels[~(inner | ring | below)] == 0).all()  # nothing beyond the context windows
    assert (on.labels[below & ~band] == 13).all()  # the hair at the context window's bottom edge goes on below it
    n, _, stats, centroids = cv2.connectedComponentsWithStats((on.labels == 14).astype(np.uint8))
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert np.hypot(*(centroids[big] - hat)) < 1.5  # the hat disc comes back where it was
    xa, ya, xb, yb = face.region
    (wa, wb, wc, wd), (la, lb, lc, ld) = wide.region(shape[1], shape[0]), lower_window(wide).region(shape[1], shape[0])
    assert face.region == [min(wa, la), min(wb, lb), max(wc, lc), max(wd, ld)]  # with the lower context window
    assert np.array_equal(face.labels, on.labels[ya:yb, xa:xb])  # one face: its own labels are the result's


def test_lowered_window_moves_down_its_own_axis_and_image_points_invert_crop_coords():
    for degrees in (0.0, 30.0, -12.0):
        win = Window(40, 30, 90, degrees)
        low = win.lowered(1 / 3)
        a = np.radians(degrees)
        assert low.side == 90 and low.angle == degrees
        assert np.allclose(np.subtract(low.centre, win.centre), [-30 * np.sin(a), 30 * np.cos(a)], atol=0.71)
        coords, _ = win.crop_coords(np.array([31, 77]), np.array([45, 60, 120]))
        x, y = win.image_points(coords).T  # pixel centres: (col + 0.5, row + 0.5)
        assert np.allclose(x, np.tile([45.5, 60.5, 120.5], 2), atol=1e-4)
        assert np.allclose(y, np.repeat([31.5, 77.5], 3), atol=1e-4)


@pytest.mark.parametrize("degrees,decode,max_decode", [(0, "dense", None), (20, "dense", 48), (-25, "adaptive", None)])
def test_clothes_and_hair_continue_below_the_context_window(monkeypatch, degrees, decode, max_decode):
    """Below the context window the lower context window labels cloth (neck, background), and hair only under the
    context window's hair at its bottom edge; without it (CONTEXT_DROP = 0: the parser before it) the labels stop
    in a straight line at the context window's edge."""
    side, shape = 80, (260, 300)
    win, _, _, _, det = _context_scene(side, shape, degrees)
    u, v = (c.reshape(shape) for c in win.crop_coords(np.arange(shape[0]), np.arange(shape[1]))[0].T)
    truth = np.where(v > 1.2, 18, 13).astype(np.uint8)  # hair above, cloth from below the chin down the photo
    lock = (v > 1.2) & (np.abs(u - 0.7) < 0.2)  # long hair down over the clothes, across the context window's edge
    blob = (np.abs(v - 2.05) < 0.25) & (np.abs(u + 0.7) < 0.25)  # a dark patch on the clothes below that edge
    truth[lock | blob] = 13
    image = np.repeat((truth * CODE)[..., None], 3, axis=2)
    wide = win.scaled(1.5)
    rows, cols = np.arange(shape[0]), np.arange(shape[1])
    in_wide = wide.crop_coords(rows, cols)[1].reshape(shape)
    in_low = lower_window(wide).crop_coords(rows, cols)[1].reshape(shape)
    parser = FaceParser(
        Oracle(),
        framing=Framing(1.0, 0.0, 0.0),
        input_size=side,
        decode=decode,
        max_decode_size=max_decode,
        drop_detached=False,  # no face in the scene
        extend=False,  # the windows' own labels (tests/test_extend.py continues them)
    )
    on = parser(image, boxes=[det], context=1.5)
    monkeypatch.setattr(framing, "CONTEXT_DROP", 0.0)
    before = parser(image, boxes=[det], context=1.5)
    k = np.ones((7, 7), np.uint8)
    below = in_low & ~in_wide & ~(cv2.dilate(truth, k) != cv2.erode(truth, k))
    assert below.sum() > 0.1 * side**2 and (below & lock).sum() > 50 and (below & blob).sum() > 50
    assert (before.labels[~in_wide] == 0).all()  # before: nothing below the context window
    assert (on.labels[below & (truth == 18)] == 18).all()  # now the clothes go on
    assert (on.labels[below & lock] == 13).all()  # and the hair that reaches the context window's edge
    assert (on.labels[below & blob] == 0).all()  # hair elsewhere below it: not a class there
    assert (on.labels[~(in_wide | in_low)] == 0).all()  # nothing beyond the lower window
    assert np.array_equal(on.labels[in_wide], before.labels[in_wide])  # inside the context window: unchanged


class ByWindow(Oracle):
    """A 'model' that tells the face window from its context window: hair 0.9 / neck 0.1 everywhere on a bright
    crop (the white face window), hair 0.2 / neck 0.8 on a darker one (the context window, mostly black)."""

    def decode(self, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        hair = torch.where(z.mean(dim=(1, 2, 3)) > 0.5, 0.9, 0.2)[:, None].expand(-1, coords.shape[1])
        logits = torch.full((*coords.shape[:2], 19), -1e4)
        logits[..., 13], logits[..., 17] = hair.log(), (1 - hair).log()
        return logits


def _largest_step(p: np.ndarray, where: np.ndarray) -> float:
    """The largest difference of ``p`` between 4-neighbouring pixels that both lie ``where``."""
    dy = np.abs(np.diff(p, axis=0))[where[1:] & where[:-1]]
    dx = np.abs(np.diff(p, axis=1))[where[:, 1:] & where[:, :-1]]
    return float(max(dy.max(), dx.max()))


@pytest.mark.parametrize("degrees,decode,max_decode", [(0, "dense", None), (25, "dense", 32), (-30, "adaptive", None)])
def test_face_and_context_windows_blend_smoothly_over_the_band(degrees, decode, max_decode):
    """In the face window's outer band its probabilities fall linearly into the context window's (the weights of
    feather_weights): no jump at the window's edge; feather=0 is the hard switch."""
    side, shape = 80, (260, 300)
    win, _, _, _, det = _context_scene(side, shape, degrees)
    image = np.zeros((*shape, 3), np.uint8)  # white face window, black around it
    cv2.fillConvexPoly(image, np.round(win.corners() - 0.5).astype(np.int32), (255, 255, 255))
    coords, inner = win.crop_coords(np.arange(shape[0]), np.arange(shape[1]))
    ring = win.scaled(1.5).crop_coords(np.arange(shape[0]), np.arange(shape[1]))[1] & ~inner
    hair = {}
    for feather in (0.0, 0.15):
        parser = FaceParser(
            ByWindow(),
            framing=Framing(1.0, 0.0, 0.0),
            input_size=side,
            decode=decode,
            max_decode_size=max_decode,
            feather=feather,
            drop_detached=False,  # no face in the scene
        )
        res = parser(image, boxes=[det], context=1.5, return_probs=True)
        assert res.faces[0].crop == [110, 90, 190, 170]
        w = feather_weights(coords, feather)
        expect = np.where(inner, 0.2 + 0.7 * w, np.where(ring, 0.2, 0.0)).reshape(shape)
        assert np.abs(res.probs[13] - expect).max() < 1e-4
        assert np.array_equal(res.labels == 13, expect > 0.5)
        hair[feather] = res.probs[13]
    assert (feather_weights(coords, 0.15)[inner] < 1).mean() > 0.2  # the band: over a fifth of the window
    window = (inner | ring).reshape(shape)
    assert _largest_step(hair[0.0], window) > 0.69  # the hard switch: 0.9 -> 0.2 at the edge
    assert _largest_step(hair[0.15], window) < 0.2  # 0.7 over a 6 px band (x sqrt(2) across a rolled edge)


# ---------------------------------------------------------------------------------------------- group photo
def _clutter(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A busy background: textured noise, a chessboard patch, and many random rectangles, discs and lines."""
    h, w = shape
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    img[20:140, 40:200] = np.kron((np.indices((6, 8)).sum(0) % 2)[..., None] * 255, np.ones((20, 20, 3)))
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 90)), y + int(rng.integers(10, 90))), colour, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(5, 40)), colour, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, int(rng.integers(1, 6)))
    return img


def group_photo(n: int = 4) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """``n`` val people of celebamask-mini cut out along their masks (head, neck, clothes), at 140-200 px, one of
    them rolled by 20 degrees, side by side on clutter; and the bounding box of each face core."""
    from PIL import Image

    from fpliif.data.layouts import list_samples
    from fpliif.infer.framing import CORE_CLASSES
    from fpliif.labels import CELEBAMASK_HQ

    rng = np.random.default_rng(7)
    photo = _clutter((420, 60 + 215 * n), rng)
    cores = []
    core_ids = [CELEBAMASK_HQ.index(c) for c in CORE_CLASSES]
    for k, s in enumerate(list_samples(MINI, "folder", "val")[:n]):
        side = int(rng.integers(140, 200))
        img = np.asarray(Image.open(s.image_path).convert("RGB").resize((side, side), Image.BILINEAR))
        mask = np.asarray(Image.open(s.mask_path).resize((side, side), Image.NEAREST))
        if k == 1:  # rolled: image and mask alike
            m = cv2.getRotationMatrix2D((side / 2, side / 2), 20, 1.0)
            img = cv2.warpAffine(img, m, (side, side), borderMode=cv2.BORDER_REPLICATE)
            mask = cv2.warpAffine(mask, m, (side, side), flags=cv2.INTER_NEAREST, borderValue=0)
        x0, y0 = 30 + 215 * k + int(rng.integers(0, 20)), int(rng.integers(60, 420 - side))
        person = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        photo[y0 : y0 + side, x0 : x0 + side][person] = img[person]
        ys, xs = np.nonzero(np.isin(mask, core_ids))
        cores.append((x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
    return photo, cores


@pytest.mark.skipif(not MINI.is_dir(), reason="celebamask-mini not available")
def test_group_photo_every_face_found_and_no_false_box(mtcnn):
    photo, cores = group_photo()
    dets = mtcnn(photo)
    matched: dict[int, np.ndarray] = {}
    for (x1, y1, x2, y2), _, lm in dets:
        cx, cy, size = (x1 + x2) / 2, (y1 + y2) / 2, ((x2 - x1) + (y2 - y1)) / 2
        hits = [
            i
            for i, (a, b, c, d) in enumerate(cores)
            if a <= cx <= c and b <= cy <= d and 0.6 < size / (((c - a) + (d - b)) / 2) < 1.8
        ]
        assert len(hits) == 1 and hits[0] not in matched, f"false or double box {(x1, y1, x2, y2)}"
        matched[hits[0]] = lm
    assert set(matched) == set(range(len(cores))), f"missed faces {set(range(len(cores))) - set(matched)}"
    assert abs(roll_degrees(matched[1]) + 20) < 8  # the rolled one: 20 degrees counter-clockwise on screen


def test_detached_keeps_the_regions_that_hold_a_seed():
    labels = np.zeros((12, 14), np.uint8)
    labels[2:5, 2:5] = 1  # the face (seed inside)
    labels[5, 5] = 13  # touches it diagonally: 8-connected
    labels[6:8, 6:8] = 13
    labels[9:11, 10:13] = 18  # a blob of its own
    seeds = np.zeros(labels.shape, bool)
    seeds[3, 3] = True
    lost = detached(labels, seeds)
    assert lost.sum() == 6 and (labels[lost] == 18).all()
    assert detached(labels, np.zeros(labels.shape, bool)).sum() == (labels > 0).sum()  # no face: all detached
    assert not detached(np.zeros((4, 4), np.uint8), np.ones((4, 4), bool)).any()
    seeds[10, 11] = True  # a seed on background pixels only would not count; this one is on the blob
    assert not detached(labels, seeds).any()


def _detached_scene(skin: bool = True) -> tuple[np.ndarray, tuple]:
    """Grey-coded classes (Oracle): a skin disc in the face box (``skin``), hair around it, a hair blob on the 'wall'
    inside the context window and (``skin``) a skin blob inside the face window but outside the box, both touching
    nothing."""
    truth = np.zeros((200, 240), np.uint8)
    yy, xx = np.mgrid[:200, :240]
    truth[np.hypot(xx - 110, yy - 90) < 28] = 13
    truth[40:50, 40:52] = 13
    if skin:
        truth[np.hypot(xx - 110, yy - 90) < 18] = 1
        truth[60:66, 140:146] = 1
    image = np.repeat((truth * CODE)[..., None], 3, axis=2)
    box = (90.0, 70.0, 130.0, 110.0)
    return image, (box, 0.99)


def test_labels_that_reach_no_face_become_background():
    image, det = _detached_scene()
    keep = FaceParser(Oracle(), framing=Framing(2.0, 0.0, 0.0), input_size=80, align=False, drop_detached=False)
    drop = FaceParser(Oracle(), framing=Framing(2.0, 0.0, 0.0), input_size=80, align=False)
    kept, dropped = (
        keep(image, boxes=[det], context=2.0, return_probs=True),
        drop(image, boxes=[det], context=2.0, return_probs=True),
    )
    assert (kept.labels[40:50, 40:52] == 13).all() and (kept.labels[60:66, 140:146] == 1).all()  # both parsed
    lost = kept.labels != dropped.labels
    assert lost.sum() == 10 * 12 + 6 * 6 and (dropped.labels[lost] == 0).all()  # exactly the two blobs go
    assert (dropped.probs[0][lost] == 1).all() and (dropped.probs[1:, lost] == 0).all()
    assert (dropped.confidence[lost] == 1).all()
    np.testing.assert_array_equal(dropped.probs[:, ~lost], kept.probs[:, ~lost])
    face = dropped.faces[0]
    xa, ya, xb, yb = face.region
    np.testing.assert_array_equal(face.labels, dropped.labels[ya:yb, xa:xb])  # the face's own labels too
    np.testing.assert_array_equal(drop(image, boxes=[det], context=2.0, drop_detached=False).labels, kept.labels)
    np.testing.assert_array_equal(keep(image, boxes=[det], context=2.0, drop_detached=True).labels, dropped.labels)
    with pytest.raises(TypeError, match="drop_detached"):
        FaceParser(Oracle(), drop_detached="yes")
    with pytest.raises(TypeError, match="drop_detached"):
        drop(image, boxes=[det], drop_detached=1)


def test_a_box_without_face_parts_keeps_the_labels_that_reach_it():
    """A box where the model sees no inner face class (here only hair) seeds all its labels: the hair that reaches
    it stays (a few pixels of one class more or less must not drop a whole person); a blob apart still goes."""
    image, det = _detached_scene(skin=False)
    yy, xx = np.mgrid[:200, :240]
    parser = FaceParser(Oracle(), framing=Framing(2.0, 0.0, 0.0), input_size=80, align=False)
    kept = parser(image, boxes=[det], context=2.0, drop_detached=False).labels
    dropped = parser(image, boxes=[det], context=2.0).labels
    lost = kept != dropped
    assert (kept[np.hypot(xx - 110, yy - 90) < 20] == 13).all() and lost.sum() == 10 * 12
    assert lost[40:50, 40:52].all() and (dropped[lost] == 0).all()

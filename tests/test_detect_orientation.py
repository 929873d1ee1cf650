"""Faces turned on their side or upside down: ``AnyOrientation`` (detection on the quarter turns, mapped back
exactly, one detection kept per face) and ``FaceParser(any_orientation=True)`` (docs/detection.md, "Faces turned by
quarter turns")."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from fpliif.infer.detect import (
    AnyOrientation,
    HaarDetector,
    MTCNNDetector,
    SecondChance,
    box_overlap,
    orientations,
    photo_turn,
    quarter_turn,
    roll_degrees,
    same_faces,
    turn_detections,
    turn_points,
    upright_turn,
)
from fpliif.infer.framing import MTCNN_FRAMING
from test_detect_align import test_clothes_and_hair_continue_below_the_context_window as continued_below
from test_detect_align import (
    test_context_labels_continue_past_the_window_through_the_inverse_transform as context_round_trip,
)
from test_detect_align import test_face_and_context_windows_blend_smoothly_over_the_band as blended
from test_detect_align import test_paste_back_of_a_rotated_crop_round_trips as paste_back_round_trip
from test_detect_second_chance import (  # noqa: F401 (first_pass: a fixture)
    FRAME_FILLING,
    MINI,
    FakeMTCNN,
    first_pass,
    non_faces,
    tiny_model,
)

TURNS = (1, 2, 3)


def wrapped(degrees: float) -> float:
    """An angle in [-180, 180)."""
    return (degrees + 180) % 360 - 180


def assert_same(found, want) -> None:
    """Two lists of detections are equal: boxes, scores and landmarks to the last bit."""
    assert [(d[0], d[1]) for d in found] == [(d[0], d[1]) for d in want]
    for a, b in zip(found, want, strict=True):
        np.testing.assert_array_equal(a[2], b[2])


def turned_detection(det, k: int, width: int, height: int):
    """A detection on an image (``width`` x ``height``) as it lies on ``np.rot90(image, k)``."""
    box, score, lm = det
    corners = turn_points(np.reshape(box, (2, 2)), k, width, height)
    (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
    return (float(x1), float(y1), float(x2), float(y2)), score, turn_points(lm, k, width, height).astype(np.float32)


def test_turned_points_follow_np_rot90_and_map_back_exactly():
    rng = np.random.default_rng(0)
    h, w = 7, 11
    image = np.zeros((h, w), np.uint8)
    image[2, 9] = 1  # a marker pixel: column 9, row 2, its centre at (9.5, 2.5)
    for k in range(-1, 5):
        turned = np.rot90(image, k)
        (x, y), *_ = turn_points([[9.5, 2.5]], k, w, h)
        assert turned[int(y), int(x)] == 1 and (x % 1, y % 1) == (0.5, 0.5)
    # coordinates on a 1/64 grid: every step is exact (others round to float32 landmarks once, as any detection)
    lm = (np.round(rng.uniform(0, 7, (5, 2)) * 64) / 64).astype(np.float32)
    box = tuple(float(v) for v in np.round(rng.uniform(0, 7, 4) * 64) / 64)
    det = ((min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])), 0.97, lm)
    for k in range(4):
        th, tw = np.rot90(image, k).shape
        (back_box, score, back_lm), *_ = turn_detections([turned_detection(det, k, w, h)], k, tw, th)
        assert back_box == det[0] and score == det[1] and back_lm.dtype == np.float32
        np.testing.assert_array_equal(back_lm, lm)
    (box0, _, none), *_ = turn_detections([(det[0], 0.9, None)], 2, w, h)
    assert none is None and box0 == (w - det[0][2], h - det[0][3], w - det[0][0], h - det[0][1])


def test_a_turned_photo_gives_the_upright_detection_turned_exactly(first_pass):  # noqa: F811
    """np.rot90 is exact, so MTCNN on the turn that makes the photo upright sees the upright photo: its detection,
    mapped back, is the upright detection turned (to the last bit), landmarks in the person's order, roll + k 90."""
    mtcnn, astronaut = first_pass
    h, w = astronaut.shape[:2]
    upright = mtcnn(astronaut)
    assert len(upright) == 1
    turns = AnyOrientation(mtcnn)
    assert turns.framing is MTCNN_FRAMING
    for k in TURNS:
        found = turns(np.ascontiguousarray(np.rot90(astronaut, k)))
        assert len(found) == 1
        box, score, lm = found[0]
        want_box, want_score, want_lm = turned_detection(upright[0], k, w, h)
        assert box == want_box and score == want_score
        np.testing.assert_array_equal(lm, want_lm)
        # np.rot90 turns counter-clockwise on screen: the roll (clockwise positive) goes down by 90 per turn
        assert abs(wrapped(roll_degrees(lm) - roll_degrees(upright[0][2]) + 90 * k)) < 1e-6
    assert_same(turns(astronaut), upright)  # the upright photo: its own detection, unchanged


def test_same_faces_groups_one_face_across_turns_never_within_one():
    a, b = (10.0, 10.0, 50.0, 50.0), (30.0, 10.0, 70.0, 50.0)  # overlap by half: the same face across turns
    far = (200.0, 10.0, 240.0, 50.0)
    per_turn = [[(a, 0.99, None), (b, 0.97, None)], [], [(b, 0.98, None), (far, 0.96, None)], []]
    groups = same_faces(per_turn)
    # turn 0's two boxes stay two faces (the detector kept both); turn 2's b joins the face it is most alike, though
    # it overlaps the better-scoring a too; groups and their detections best score first
    assert [[(k, i) for k, i, _ in g] for g in groups] == [[(0, 0)], [(2, 0), (0, 1)], [(2, 1)]]
    four = [[(a, 0.9 - k / 10, None)] for k in range(4)]  # one face found on every turn
    assert [[(k, i) for k, i, _ in g] for g in same_faces(four)] == [[(0, 0), (1, 0), (2, 0), (3, 0)]]
    assert same_faces([[], [], [], []]) == []


def face_landmarks(cx: float, cy: float, roll: float) -> np.ndarray:
    """Landmarks (LANDMARKS order) of a face centred at (cx, cy) with this roll (degrees, clockwise on screen)."""
    a = np.radians(roll)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    upright = np.array([[-8, -6], [8, -6], [0, 2], [-6, 9], [6, 9]], np.float64)
    return (upright @ rot.T + [cx, cy]).astype(np.float32)


def test_one_detection_is_kept_per_face_in_turn_order():
    """Per face: one detection per orientation, the one made on the turn that stands it upright (else the best
    score); orientations that disagree are weighed by ``evidence``; a face the photo's own turn missed needs evidence;
    the kept detections in the order of their turn and index (an upright photo: the detector's own order)."""
    up, down, side = face_landmarks(30, 30, 2), face_landmarks(30, 30, 178), face_landmarks(120, 30, 88)
    a, a2 = ((10.0, 10.0, 50.0, 50.0), 0.97, up), ((12.0, 8.0, 52.0, 48.0), 0.99, up)
    b = ((100.0, 10.0, 140.0, 50.0), 0.98, side)
    flipped = ((11.0, 11.0, 49.0, 49.0), 0.995, down)
    per_turn = [[a, b], [], [flipped], [a2]]
    assert [upright_turn(lm) for lm in (up, down, side)] == [0, 2, 1]
    weighed = []

    def evidence(image, det):
        weighed.append(det[1])
        return {0.97: 0.1, 0.995: 0.04, 0.98: 0.0}[det[1]]

    turns = AnyOrientation(FakeMTCNN(), evidence)
    turns.turned = lambda image: per_turn
    image = np.zeros((60, 160, 3), np.uint8)
    # face a: turns 0, 2, 3; orientation 0 (turn 0 stands it upright: a, not the better-scoring a2) against 2
    assert [d[1] for d in turns(image)] == [0.97, 0.98]  # b: found on turn 0 with no rival, kept unweighed
    assert sorted(weighed) == [0.97, 0.995]
    per_turn[0] = [a]  # b found only on a turn (3: it stands at 90 degrees there) and not a face to the parser
    per_turn[3] = [a2, b]
    weighed.clear()
    assert [d[1] for d in turns(image)] == [0.97] and 0.98 in weighed
    plain = AnyOrientation(FakeMTCNN())  # no evidence: the best score of the orientations, nothing dropped
    plain.turned = lambda image: per_turn
    assert [d[1] for d in plain(image)] == [0.995, 0.98]
    assert orientations([(3, 0, a2), (2, 0, flipped), (0, 0, a)]) == [(0, 0, a), (2, 0, flipped)]


def test_faces_upright_on_the_photos_upright_turn_need_no_evidence():
    """A turned photo (a wrong EXIF orientation): the turn that stands most faces upright (photo_turn) is trusted like
    the photo itself, so its faces are kept unchecked, as they would be upright; a face found only on another turn
    still needs evidence (the Solvay photo turned: 2 of its 29 small grey faces fail the check)."""
    faces = [((40.0 * j, 0.0, 40.0 * j + 30, 30.0), 0.99, face_landmarks(40 * j + 15, 15, -90)) for j in range(3)]
    clutter = ((300.0, 300.0, 330.0, 330.0), 0.97, face_landmarks(315, 315, 90))
    per_turn = [[], [clutter], [], faces]
    assert [upright_turn(d[2]) for d in faces] == [3, 3, 3] and upright_turn(clutter[2]) == 1
    assert photo_turn(per_turn) == 3 and photo_turn([[], [], [], []]) == 0
    upright = ((0.0, 0.0, 30.0, 30.0), 0.95, face_landmarks(15, 15, 0))
    assert photo_turn([[upright], [], [], [faces[1]]]) == 0  # one face upright on each: a tie, the photo as it is
    assert photo_turn([[upright], [clutter], [], faces]) == 3
    assert photo_turn([[], [clutter], [], [faces[1]]]) == 3  # a tie of turns 1 and 3: the larger score
    weighed = []

    def no_face(image, det):
        weighed.append(det)
        return 0.0

    turns = AnyOrientation(FakeMTCNN(), no_face)
    turns.turned = lambda image: per_turn
    assert [d[0] for d in turns(np.zeros((400, 400, 3), np.uint8))] == [d[0] for d in faces]
    assert weighed == [clutter]


def test_bad_arguments_are_named(first_pass):  # noqa: F811
    with pytest.raises(TypeError, match="detector"):
        AnyOrientation(HaarDetector())
    with pytest.raises(TypeError, match="evidence"):
        AnyOrientation(first_pass[0], evidence="parse")

    def no_landmarks(image):
        return [((10.0, 10.0, 40.0, 40.0), 0.99)]

    with pytest.raises(ValueError, match="landmarks"):
        AnyOrientation(no_landmarks)(np.zeros((60, 60, 3), np.uint8))


def test_the_turns_get_the_framed_look_only_where_no_turn_found_a_face(first_pass, monkeypatch):  # noqa: F811
    mtcnn, astronaut = first_pass
    runs = []
    cascade = mtcnn._detect

    def spy(image, *args, margin=0.0):
        runs.append(margin)
        return cascade(image, *args, margin=margin)

    monkeypatch.setattr(mtcnn, "_detect", spy)
    AnyOrientation(mtcnn)(astronaut)
    assert runs == [0.0] * 4  # found: no framed look on any turn
    runs.clear()
    AnyOrientation(mtcnn)(np.full((90, 120, 3), 127, np.uint8))
    assert runs == [0.0, mtcnn.frame_margin, 0.0, 0.0, 0.0] + [mtcnn.frame_margin] * 3


@pytest.mark.skipif(not MINI.is_dir(), reason="celebamask-mini not available")
@pytest.mark.parametrize("k", (1, 2))
def test_a_turned_face_filling_the_frame_is_found_upright(k):
    from PIL import Image

    img = np.asarray(Image.open(MINI / "images" / f"{FRAME_FILLING}.jpg").convert("RGB"))
    (box, _, lm), *_ = MTCNNDetector()(img)
    turned = np.ascontiguousarray(np.rot90(img, k))
    found = AnyOrientation(MTCNNDetector())(turned)
    assert len(found) == 1 and upright_turn(found[0][2]) == -k % 4  # np.rot90(turned, -k) stands it upright
    assert box_overlap(found[0][0], turned_detection((box, 1.0, lm), k, *img.shape[1::-1])[0]) > 0.99


def test_no_face_in_non_faces(first_pass):  # noqa: F811
    turns = AnyOrientation(first_pass[0])
    for kind, images in non_faces(n=2).items():
        assert all(turns(image) == [] for image in images), kind


@pytest.mark.parametrize(
    "degrees,max_decode,band_px,decode",
    [(90, None, 2, "dense"), (180, 64, 3, "dense"), (-90, None, 2, "adaptive"), (-135, 64, 3, "adaptive")],
)
def test_paste_back_round_trips_at_quarter_turns(degrees, max_decode, band_px, decode):
    """tests/test_detect_align.py's oracle round trip (labels painted in a rolled frame come back on the photo's
    pixels) with the crop turned by 90, 180, -90 and -135 degrees."""
    paste_back_round_trip(degrees, max_decode, band_px, decode)


@pytest.mark.parametrize(
    "degrees,decode,max_decode", [(180, "dense", None), (90, "dense", 48), (-90, "adaptive", None)]
)
def test_context_lower_and_blended_windows_at_quarter_turns(monkeypatch, degrees, decode, max_decode):
    """The context window, the lower context window (down the face, up the photo at 180) and the feathered band of
    tests/test_detect_align.py on faces turned by quarter turns."""
    context_round_trip(degrees, decode)
    continued_below(monkeypatch, degrees, decode, max_decode)
    blended(degrees, decode, max_decode)


# ---------------------------------------------------------------------------------------------- the parser
def test_parser_option_is_off_by_default_and_checked():
    from fpliif import FaceParser

    plain = FaceParser(tiny_model(), detector=FakeMTCNN())
    assert plain.any_orientation is False and plain._detector() is plain.detector
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="any_orientation"):
            FaceParser(tiny_model(), any_orientation=bad)
    with pytest.raises(ValueError, match="any_orientation"):
        FaceParser(tiny_model(), detector="haar", any_orientation=True)
    with pytest.raises(ValueError, match="any_orientation"):
        plain = FaceParser(tiny_model(), detector="haar")
        plain.any_orientation = True


def test_parser_combines_quarter_turns_with_second_chances():
    from fpliif import FaceParser

    both = FaceParser(tiny_model(), detector=FakeMTCNN(), second_chance=True, any_orientation=True)
    det = both._detector()
    assert isinstance(det, AnyOrientation) and isinstance(det.detector, SecondChance)
    assert det.detector.detector is both.detector and both._detector() is det  # made once
    only = FaceParser(tiny_model(), detector=FakeMTCNN(), any_orientation=True)
    assert isinstance(only._detector(), AnyOrientation) and only._detector().detector is only.detector


def test_without_align_a_turned_face_is_cropped_by_its_quarter_turn():
    from fpliif import FaceParser

    assert [quarter_turn(a) for a in (3.0, -3.0, 44.0, 50.0, 181.0, -179.0, -100.0)] == [
        0.0,
        0.0,
        0.0,
        90.0,
        180.0,
        -180.0,
        -90.0,
    ]
    assert str(quarter_turn(-3.0)) == "0.0"
    image = np.zeros((120, 120, 3), np.uint8)
    box, score, lm = FakeMTCNN.found
    upside_down = turn_detections([(box, score, lm)], 2, 120, 120)
    for align, orient, want in ((True, True, None), (False, True, 180.0), (False, False, 0.0), (True, False, None)):
        parser = FaceParser(tiny_model(), align=align, any_orientation=orient)
        (win, _), *_ = parser.windows(image, boxes=upside_down)
        assert win.angle == (roll_degrees(upside_down[0][2]) if want is None else want)


# ---------------------------------------------------------------------------------------------- the bundled model
@pytest.fixture(scope="module")
def bundled():
    from fpliif import FaceParser

    return FaceParser.from_pretrained(threads=1, amp="none")


def face_box_agreement(turned_back: np.ndarray, upright: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return float((turned_back[y1:y2, x1:x2] == upright[y1:y2, x1:x2]).mean())


@pytest.mark.parametrize("k", TURNS)
def test_a_turned_face_is_found_turned_upright_and_parsed_as_upright(bundled, first_pass, k):  # noqa: F811
    """The astronaut turned by 90, 180 and 270 degrees: found once, with its roll turned by as much, and parsed so that
    its labels, turned back, are the upright parse's on >= 90 % of the face box (without the option it is missed)."""
    _, astronaut = first_pass
    upright = bundled(astronaut, context=False, extend=False)
    turned = np.ascontiguousarray(np.rot90(astronaut, k))
    bundled.any_orientation = True
    try:
        result = bundled(turned, context=False, extend=False)
    finally:
        bundled.any_orientation = False
    assert len(result.faces) == 1
    face = result.faces[0]
    want = upright.faces[0].angle - 90 * k
    assert abs(wrapped(face.angle - want)) < 3
    back = np.rot90(result.labels, -k)
    assert face_box_agreement(back, upright.labels, upright.faces[0].box) >= 0.9
    assert upright.faces[0].box == pytest.approx(
        turned_detection((face.box, 1.0, face.landmarks), -k, *turned.shape[1::-1])[0], abs=1e-6
    )


def test_option_off_keeps_todays_detections(bundled, first_pass):  # noqa: F811
    mtcnn, astronaut = first_pass
    assert_same(bundled.detect(astronaut), mtcnn(astronaut))
    for k in TURNS:
        assert bundled.detect(np.ascontiguousarray(np.rot90(astronaut, k))) == []  # today: the turned face is missed
    on = AnyOrientation(MTCNNDetector())
    assert len(on(np.ascontiguousarray(np.rot90(astronaut, 1)))) == 1
    assert box_overlap(on(astronaut)[0][0], mtcnn(astronaut)[0][0]) == 1.0


# ---------------------------------------------------------------------------------------------- CLI and service
def test_cli_any_orientation_reaches_the_parser_and_needs_mtcnn(tmp_path, monkeypatch, capsys):
    from fpliif.cli import build_parser, main
    from fpliif.infer import cli_parse

    assert main(["parse", "--example", "--out", str(tmp_path), "--detector", "haar", "--any-orientation"]) == 2
    assert "--any-orientation" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr("fpliif.infer.parser.FaceParser.from_pretrained", lambda weights, **kw: seen.update(kw))
    for flags in ([], ["--any-orientation"], ["--any-orientation", "--second-chance"]):
        args = build_parser().parse_args(["parse", "--example", "--out", str(tmp_path), *flags])
        cli_parse.build_parser_from_args(args)
        assert seen["any_orientation"] is ("--any-orientation" in flags)
        assert seen["second_chance"] is ("--second-chance" in flags)


def test_service_setting_reaches_the_parser(tmp_path):
    pytest.importorskip("fastapi", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")
    from fastapi.testclient import TestClient

    import fpliif
    from conftest import TINY_SPEC
    from fpliif import FaceParser
    from fpliif.errors import ConfigError
    from fpliif.serve import ServeSettings, create_app
    from fpliif.serve.cli import add_settings_flags, settings_from_args

    weights = tmp_path / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY_SPEC), weights)
    fresh = FaceParser.from_pretrained(weights)
    with TestClient(create_app(fresh, ServeSettings(torch_threads=0))):
        assert fresh.any_orientation is False
    with TestClient(create_app(fresh, ServeSettings(any_orientation=True, second_chance=True, torch_threads=0))):
        assert fresh.any_orientation is True and fresh.second_chance is True
    p = argparse.ArgumentParser()
    add_settings_flags(p)
    assert settings_from_args(p.parse_args(["--any-orientation"])).any_orientation is True
    assert settings_from_args(p.parse_args([])).any_orientation is False
    with pytest.raises(ConfigError, match="any_orientation"):
        ServeSettings(any_orientation=True, detector="haar")

"""Labels continued past the windows' edge (fpliif.infer.extend) on synthetic photos."""

from __future__ import annotations

import numpy as np
import pytest

from fpliif.infer.extend import extend_labels, window_mask
from fpliif.infer.geometry import Window

CLOTH, HAIR = 3, 2
S = 72


def scene(angle: float = 0.0) -> tuple[np.ndarray, np.ndarray, Window]:
    """A grey backdrop with a red 'shirt' (columns 20-51, rows 30 down) going on past the bottom of a window
    (rows 8-47 of columns 16-55), a dark 'hair' blob inside it away from its edge (and dark above the window), a
    red patch apart from the shirt below the window; labels only inside the window."""
    rng = np.random.default_rng(0)
    img = np.full((S, S, 3), (150, 150, 160), np.float64)
    img[30:, 20:52] = (200, 40, 40)
    img[10:20, 28:44] = (30, 20, 10)
    img[0:7, 28:44] = (30, 20, 10)  # the same dark outside the window, next to its background: not hair's
    img[56:66, 2:12] = (200, 40, 40)  # a red patch beside the shirt, not touching it
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((S, S), np.uint8)
    truth[30:, 20:52] = CLOTH
    truth[10:20, 28:44] = HAIR
    win = Window(16, 8, 40, angle)
    labels = np.where(window_mask((S, S), [win]), truth, 0).astype(np.uint8)
    return img, labels, win


def test_window_mask_is_the_windows_pixels():
    win = Window(10, 12, 30, 20.0)
    rows, cols = np.arange(S), np.arange(S)
    want = win.crop_coords(rows, cols)[1].reshape(S, S) | Window(40, 0, 20).crop_coords(rows, cols)[1].reshape(S, S)
    assert np.array_equal(window_mask((S, S), [win, Window(40, 0, 20)]), want)


@pytest.mark.parametrize("angle", [0.0, 10.0])
def test_cloth_goes_on_past_the_edge_and_stops_at_the_backdrop(angle):
    img, labels, win = scene(angle)
    out = extend_labels(img, labels, [win], [CLOTH, HAIR], reach=0.5)
    inside = window_mask((S, S), [win])
    assert np.array_equal(out[inside], labels[inside])  # the windows' own labels are untouched
    below = ~inside & (np.arange(S)[:, None] >= 50) & (np.arange(S)[:, None] < 64)
    shirt = np.zeros((S, S), bool)
    shirt[:, 22:50] = True
    assert (out[below & shirt] == CLOTH).mean() > 0.9  # the shirt goes on below the window
    cols = np.broadcast_to(np.arange(S)[None, :], (S, S))
    backdrop = ~inside & ((cols < 18) | (cols > 53))
    assert (out[backdrop] == 0).mean() > 0.99  # and not into the backdrop beside it
    assert (out[56:66, 2:12] == 0).all()  # nor into a patch of its colour that it does not reach
    assert np.array_equal(out == HAIR, labels == HAIR)  # hair does not reach the edge: not continued


@pytest.mark.parametrize("angle", [0.0, 10.0])
def test_no_seam_where_grabcut_works_on_a_coarse_image(angle):
    """GrabCut runs on a working image (here ~5 photo pixels per working pixel); the photo pixels just past the
    edge that share a working pixel with the window's own labels still continue the class: no unlabelled seam."""
    img, labels, win = scene(angle)
    out = extend_labels(img, labels, [win], [CLOTH], reach=0.5, work_side=16)
    inside = window_mask((S, S), [win])
    past = ~inside & (np.arange(S)[:, None] >= 40) & (np.arange(S)[:, None] < 58)  # the strip just below the edge
    shirt = np.zeros((S, S), bool)
    shirt[:, 26:46] = True
    assert (out[past & shirt] == CLOTH).all()


def test_labels_stay_within_reach():
    img, labels, win = scene()
    out = extend_labels(img, labels, [win], [CLOTH], reach=0.1)
    rows = np.nonzero((out == CLOTH).any(axis=1))[0]
    assert rows.max() < 48 + 4 + 1  # 0.1 of the 40-pixel side past the bottom edge (row 47)
    assert rows.max() > 48  # but past it


def test_nothing_to_continue():
    img, labels, win = scene()
    labels[labels == CLOTH] = 0
    assert np.array_equal(extend_labels(img, labels, [win], [CLOTH]), labels)
    assert np.array_equal(extend_labels(img, labels, [Window(-10, -10, S + 20)], [CLOTH]), labels)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image": np.zeros((S, S), np.uint8)}, "image"),
        ({"labels": np.zeros((S, S + 1), np.uint8)}, "labels"),
        ({"confident": np.ones((3, 3), bool)}, "confident"),
        ({"init": "x"}, "init"),
        ({"reach": 0.0}, "reach"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    img, labels, win = scene()
    args = {"image": img, "labels": labels, "windows": [win], "classes": [CLOTH], **kwargs}
    with pytest.raises(ValueError, match=name):
        extend_labels(**args)


def test_other_faces_windows_are_kept():
    img, labels, win = scene()
    other = Window(16, 50, 40)  # a neighbour's window right below, which labelled the shirt background
    out = extend_labels(img, labels, [win], [CLOTH], reach=0.5, others=[other])
    assert (out[window_mask((S, S), [other])] == 0).all()
    assert (out[48:50, 22:50] == CLOTH).mean() > 0.9  # the rows between the two windows are still continued


def parser_scene() -> tuple[np.ndarray, tuple]:
    """A tall grey-coded photo (the parser tests' Oracle reads the class off the grey level): a skin face with hair
    in a 40-pixel face window, and a cloth body from below the face down to the bottom, far past the lower context
    window; the detection of that face."""
    from oracle import CODE

    h, w, side, cx, cy = 260, 160, 40, 80, 50
    truth = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    truth[np.hypot(xx - cx, yy - cy) < side * 0.7] = 13
    truth[(yy > cy + side * 0.6) & (abs(xx - cx) < 45)] = 18
    truth[np.hypot(xx - cx, yy - cy) < side * 0.35] = 1
    image = np.repeat((truth * CODE)[..., None], 3, axis=2).astype(np.uint8)
    return image, ((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 0.99, None)


def test_the_parser_continues_the_clothes_past_its_windows():
    """``FaceParser(extend=True)`` (the default) labels the body past the lower context window as cloth, with one-hot
    probabilities there, and stops at the backdrop; ``extend=False`` (per call too) ends at the windows; the other
    pixels keep their probabilities."""
    from fpliif import FaceParser
    from fpliif.infer.framing import Framing
    from oracle import Oracle

    image, det = parser_scene()
    parser = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=40, align=False)
    grown = parser(image, boxes=[det], return_probs=True)
    plain = parser(image, boxes=[det], return_probs=True, extend=False)
    assert FaceParser(Oracle(), extend=False).extend is False
    bottom = plain.faces[0].region[3]  # the lower window's bounding box ends here
    assert bottom < 200 and (plain.labels[bottom + 5 :] == 0).all()  # without: nothing past the windows
    body = np.zeros(image.shape[:2], bool)
    body[bottom + 2 : bottom + 12, 40:120] = True  # within the reach (a share of the context window's side)
    assert (grown.labels[body] == 18).mean() > 0.95  # with: the body goes on as cloth
    assert (grown.labels[:, :30] == 0).all() and (grown.labels[:, 130:] == 0).all()  # not the backdrop
    new = grown.labels != plain.labels
    assert new.any() and (grown.labels[new] == 18).all()
    np.testing.assert_array_equal(grown.probs[18][new], 1.0)
    np.testing.assert_array_equal(grown.confidence[new], 1.0)
    np.testing.assert_array_equal(grown.probs[:, ~new], plain.probs[:, ~new])
    xa, ya, xb, yb = face = grown.faces[0].region  # the face's region and own labels grew to hold the new pixels
    assert yb > bottom and not new[:ya].any() and not new[yb:].any() and not new[:, :xa].any() and not new[:, xb:].any()
    np.testing.assert_array_equal(grown.faces[0].labels, grown.labels[ya:yb, xa:xb])
    assert face[1] == plain.faces[0].region[1] and face[0] >= 35  # the body's side (x 35) bounds it


def test_extend_is_a_flag():
    from fpliif import FaceParser
    from oracle import Oracle

    with pytest.raises(TypeError, match="extend"):
        FaceParser(Oracle(), extend="yes")
    with pytest.raises(TypeError, match="extend"):
        FaceParser(Oracle())(np.zeros((8, 8, 3), np.uint8), extend=1)

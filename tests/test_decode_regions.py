"""Decoding only the wanted pixels (issue 12, photo path): adaptive decoding restricted to a region of interest
gives the whole grid's logits there; the parser decodes a window's grid only where its pixels are sampled (the
context window outside the face window's core, any window inside the image), with the same labels and
probabilities as decoding the whole grid, and fewer decoder queries."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fpliif.adaptive import AdaptiveOptions, adaptive_decode, roi_levels
from fpliif.infer.framing import Framing
from fpliif.infer.geometry import Window, bilinear_points, mark_taps
from fpliif.infer.parser import FaceParser
from oracle import CODE, Oracle

SMALL = AdaptiveOptions(min_coarse=8)


def wavy_logits(coords):
    """Three classes with many curved boundaries and wide low-margin zones (stresses the region's reach)."""
    lib = torch if isinstance(coords, torch.Tensor) else np
    x, y = coords[..., 0], coords[..., 1]
    return lib.stack([lib.sin(9 * x + 4 * y), lib.cos(7 * y - 3 * x), 0.2 + 0 * x], -1)


def frame_roi(h: int, w: int, width: int) -> np.ndarray:
    """A frame ``width`` pixels wide along the border, and a few isolated pixels inside."""
    roi = np.ones((h, w), bool)
    roi[width:-width, width:-width] = False
    roi[h // 2, w // 3] = roi[h // 3, w // 2] = True
    return roi


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("size", [(97, 120), (64, 64)])
def test_adaptive_roi_gives_the_whole_grids_logits_at_the_wanted_pixels(lib, size):
    like = torch.zeros(1) if lib == "torch" else None
    roi = frame_roi(*size, 9)
    full, sf = adaptive_decode(wavy_logits, size, options=SMALL, like=like)
    part, sp = adaptive_decode(wavy_logits, size, options=SMALL, like=like, roi=roi)
    full, part = np.asarray(full[0]), np.asarray(part[0])
    np.testing.assert_array_equal(part[roi], full[roi])
    assert len(np.unique(full[roi].argmax(-1))) == 3 and sp.levels == sf.levels
    assert sp.total < 0.8 * sf.total  # the centre is not decoded


def test_roi_levels_reach_and_empty_or_bad_regions():
    levels = [(16, 16), (32, 32), (64, 64)]
    roi = np.zeros((64, 64), bool)
    roi[30, 40] = True
    allowed = roi_levels(roi, levels, AdaptiveOptions(radius=1, passes=2))
    assert [a.shape for a in allowed] == levels
    ys, xs = np.nonzero(allowed[-1])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (27, 33, 37, 43)  # radius * (passes + 1) = 3 around it
    assert all(0 < a.sum() < a.size / 2 for a in allowed)  # coarser levels: the taps, around them too
    logits, stats = adaptive_decode(wavy_logits, (64, 64), options=SMALL, roi=np.zeros((64, 64), bool))
    assert stats.total == 1 and logits.shape == (1, 64, 64, 3)  # nothing wanted: one point (the classes)
    with pytest.raises(ValueError, match="roi: expected a bool mask of the output size"):
        adaptive_decode(wavy_logits, (64, 64), options=SMALL, roi=np.ones((32, 64), bool))


def test_mark_taps_marks_what_bilinear_sampling_reads():
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((20, 30, 4)).astype(np.float32)
    sy, sx = rng.uniform(-2, 21, 50), rng.uniform(-2, 31, 50)
    taps = np.zeros((20, 30), bool)
    mark_taps(taps, sy, sx)
    changed = grid.copy()
    changed[~taps] = 1e6  # what is not marked must not matter
    np.testing.assert_array_equal(bilinear_points(changed, sy, sx), bilinear_points(grid, sy, sx))
    assert taps.sum() < 4 * 50


def _scene(shape: tuple[int, int], win: Window) -> np.ndarray:
    """Grey-coded classes (Oracle): background with a cloth block below the face, hair around it, a skin disc."""
    truth = np.zeros(shape, np.uint8)
    cx, cy = win.centre
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth[np.hypot(xx - cx, yy - cy) < win.side * 0.9] = 13
    truth[yy > cy + win.side * 0.6] = 18
    truth[np.hypot(xx - cx, yy - cy) < win.side * 0.35] = 1
    return np.repeat((truth * CODE)[..., None], 3, axis=2)


def _face_scene(shape: tuple[int, int], win: Window) -> tuple[np.ndarray, tuple]:
    """:func:`_scene` and the detection whose box is the window (for an unscaled framing)."""
    cx, cy, half = *win.centre, win.side / 2
    return _scene(shape, win), ((cx - half, cy - half, cx + half, cy + half), 0.99, None)


@pytest.mark.parametrize(
    "degrees,decode,max_decode,at",
    [
        (0, "dense", 40, (60, 50)),
        (25, "dense", 40, (5, 70)),
        (-20, "adaptive", None, (60, 50)),
        (10, "adaptive", 40, (0, 0)),
    ],
)
def test_parser_decodes_only_the_sampled_grid_pixels_with_the_same_result(monkeypatch, degrees, decode, max_decode, at):
    """Grids restricted to the sampled pixels (context window outside the face core, windows inside the image,
    also past the photo's border) give exactly the labels and probabilities of whole grids, with fewer queries."""
    shape, side = (150, 170), 60
    win = Window(at[0], at[1], side, float(degrees))
    image = _scene(shape, win)
    cx, cy = win.centre
    a = np.radians(degrees)
    lm = [[cx, cy], [cx + 10 * np.cos(a), cy + 10 * np.sin(a)], [cx, cy + 5], [cx - 3, cy + 9], [cx + 3, cy + 9]]
    det = ((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 0.99, lm)
    parser = FaceParser(
        Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, decode=decode, max_decode_size=max_decode
    )
    ours = parser(image, boxes=[det], return_probs=True)
    points = parser.points_decoded
    monkeypatch.setattr(FaceParser, "_grid_roi", lambda self, win, g, *a: np.ones((g, g), bool))
    parser.points_decoded = 0
    whole = parser(image, boxes=[det], return_probs=True)
    assert ours.faces[0].crop == whole.faces[0].crop == [at[0], at[1], at[0] + side, at[1] + side]
    np.testing.assert_array_equal(ours.labels, whole.labels)
    np.testing.assert_array_equal(ours.probs, whole.probs)
    assert {13, 18} <= set(np.unique(ours.labels).tolist())
    assert points < parser.points_decoded


def test_windows_are_where_the_parse_puts_them_and_the_context_edge_is_measured():
    """``FaceParser.windows`` frames without parsing; scripts/context_edges.py: a context window past every border
    has no edge in the photo, one inside it cuts the labels that reach its edge."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from context_edges import edge_shares
    finally:
        sys.path.pop(0)
    shape, win = (150, 170), Window(55, 40, 60, 12.0)
    image = _scene(shape, win)
    cx, cy = win.centre
    det = ((cx - 30, cy - 30, cx + 30, cy + 30), 0.99)
    parser = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=60, align=False)
    (face, ctx), *rest = parser.windows(image, boxes=[det])
    result = parser(image, boxes=[det], extend=False)  # the windows' own labels
    assert not rest and result.faces[0].crop == [face.x0, face.y0, face.x0 + 60, face.y0 + 60]
    assert result.faces[0].context == [ctx.x0, ctx.y0, ctx.x0 + ctx.side, ctx.y0 + ctx.side] and ctx.side == 90
    assert parser.windows(image, boxes=[det], context=False)[0][1] is None
    shares = edge_shares(ctx, result.labels, shape[1], shape[0])
    assert shares["inside"] == 1.0 and 0.3 < shares["cut"] < 1  # hair and cloth reach the edge, not everywhere
    grown = parser(image, boxes=[det])  # extend=True (the default): they go on past it
    assert edge_shares(ctx, grown.labels, shape[1], shape[0])["cut"] < shares["cut"] / 2
    assert edge_shares(Window(-10, -10, 190, 0.0), result.labels, shape[1], shape[0]) == {"inside": 0.0, "cut": 0.0}
    with pytest.raises(ValueError, match="one photo"):
        parser.windows([image, image])


@pytest.mark.parametrize("decode", ["dense", "adaptive"])
def test_pixel_strips_change_the_speed_never_the_result(monkeypatch, decode):
    """The photo's pixels are sampled, softmaxed and pasted in strips of ``PIXEL_BLOCK`` pixels: one row per
    strip gives the same labels and probabilities as the whole region in one strip (rolled window, context
    window, lower window and blend band all crossing strip boundaries)."""
    import fpliif.infer.parser as parser_module

    shape, side = (150, 170), 50
    win = Window(55, 30, side, 12.0)
    image, det = _face_scene(shape, win)
    parser = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, decode=decode, align=False)
    monkeypatch.setattr(parser_module, "PIXEL_BLOCK", 1)  # one row per strip
    rows = parser(image, boxes=[det], return_probs=True)
    monkeypatch.setattr(parser_module, "PIXEL_BLOCK", 1 << 30)  # the whole region (max_queries) per strip
    whole = parser(image, boxes=[det], return_probs=True)
    np.testing.assert_array_equal(rows.labels, whole.labels)
    np.testing.assert_array_equal(rows.probs, whole.probs)
    assert {13, 18} <= set(np.unique(rows.labels).tolist())


def test_context_windows_are_decoded_on_the_capped_grid_and_the_face_window_is_untouched(monkeypatch):
    """Adaptive decoding queries the context and lower context windows on a grid of at most ``CONTEXT_GRID_SCALE``
    times the input side (fewer queries), the face window on its own grid (same queries, same probabilities:
    ``feather=0``, so no blend reads the context window); ``decode="dense"`` is not capped."""
    import fpliif.infer.parser as parser_module

    shape, side = (200, 170), 60
    win = Window(55, 30, side, 0.0)
    image, det = _face_scene(shape, win)
    parser = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, align=False, feather=0.0)
    grids: list[tuple[int, int, int]] = []
    adaptive_logits = FaceParser._adaptive_logits

    def spy(self, z, zm, h, w, roi=None):
        before = self.points_decoded
        out = adaptive_logits(self, z, zm, h, w, roi)
        grids.append((h, w, self.points_decoded - before))
        return out

    monkeypatch.setattr(FaceParser, "_adaptive_logits", spy)
    gridded = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, align=False, max_decode_size=40)
    runs, dense = {}, {}
    for scale in (np.inf, 0.5):  # not capped; context grids of 30 x 30
        monkeypatch.setattr(parser_module, "CONTEXT_GRID_SCALE", scale)
        grids.clear()
        runs[scale] = (parser(image, boxes=[det], return_probs=True), list(grids))
        gridded.points_decoded = 0  # dense: every window on its 40 x 40 grid (over max_decode_size), never capped
        dense[scale] = (gridded(image, boxes=[det], decode="dense", return_probs=True).probs, gridded.points_decoded)
    np.testing.assert_array_equal(dense[0.5][0], dense[np.inf][0])
    assert dense[0.5][1] == dense[np.inf][1]
    (whole, (ctx, face, low)), (capped, (ctx2, face2, low2)) = runs[np.inf], runs[0.5]
    assert ctx[:2] == low[:2] == (90, 90) and face[:2] == face2[:2] == (60, 60)
    assert ctx2[:2] == low2[:2] == (30, 30) and ctx2[2] < ctx[2] and low2[2] < low[2]
    assert face2[2] == face[2]  # the face window's queries are the same
    inside = win.crop_coords(np.arange(shape[0]), np.arange(shape[1]))[1].reshape(shape)
    np.testing.assert_array_equal(capped.probs[:, inside], whole.probs[:, inside])
    assert {13, 18} <= set(np.unique(capped.labels[~inside]).tolist())
    assert (capped.labels[~inside] != whole.labels[~inside]).any()  # the coarser grid moves the context's edges


def test_face_windows_are_decoded_on_the_capped_grid_and_sampled_at_the_pixels(monkeypatch):
    """Adaptive decoding queries a face window larger than ``FACE_GRID_SCALE`` times the input side on that capped
    grid (fewer queries), sampled bilinearly at the photo's pixels: the same classes, labels as the uncapped grid's
    but near the edges; ``decode="dense"`` is not capped; a window within the cap keeps its own grid."""
    import fpliif.infer.parser as parser_module

    shape, side = (200, 170), 60
    win = Window(55, 30, side, 0.0)
    image, det = _face_scene(shape, win)
    parser = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=side, align=False, context=False)
    grids: list[tuple[int, int]] = []
    adaptive_logits = FaceParser._adaptive_logits

    def spy(self, z, zm, h, w, roi=None):
        grids.append((h, w))
        return adaptive_logits(self, z, zm, h, w, roi)

    monkeypatch.setattr(FaceParser, "_adaptive_logits", spy)
    runs = {}
    for scale in (np.inf, 1.0, 0.5):  # not capped; the window's own side (no change); a 30 x 30 grid
        monkeypatch.setattr(parser_module, "FACE_GRID_SCALE", scale)
        grids.clear()
        parser.points_decoded = 0
        result = parser(image, boxes=[det], return_probs=True)
        dense_points = parser.points_decoded
        dense = parser(image, boxes=[det], decode="dense", return_probs=True)
        runs[scale] = (result, list(grids), dense_points, dense, parser.points_decoded - dense_points)
    (whole, g_whole, p_whole, d_whole, _), (same, g_same, p_same, _, _) = runs[np.inf], runs[1.0]
    capped, g_capped, p_capped, d_capped, dense_points = runs[0.5]
    assert g_whole == g_same == [(60, 60)] and g_capped == [(30, 30)]
    np.testing.assert_array_equal(same.probs, whole.probs)
    assert p_capped < p_whole == p_same
    np.testing.assert_array_equal(d_capped.probs, d_whole.probs)
    assert dense_points == side * side  # dense: every pixel of the window, never capped
    inside = win.crop_coords(np.arange(shape[0]), np.arange(shape[1]))[1].reshape(shape)
    assert set(np.unique(capped.labels[inside])) == set(np.unique(whole.labels[inside])) == {1, 13}
    assert 0.9 < (capped.labels[inside] == whole.labels[inside]).mean() < 1  # the coarser grid moves edges only

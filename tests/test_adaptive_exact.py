"""The shortcuts of adaptive decoding's bookkeeping (issue 12, photo speed) give exactly the values of the plain
computations: bilinear upsampling at a subset of pixels, the top-2 margin without a full softmax, the label
filter on the active pixels only, region-restricted decoding of a random model, and the in-place ReLUs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpliif.adaptive import AdaptiveOptions, _NumpyOps, adaptive_decode
from fpliif.infer.geometry import bilinear_points, bilinear_rows_cols, softmax
from fpliif.models import pixel_centers
from test_adaptive import tiny


def test_bilinear_at_pixel_subsets_equals_the_whole_grid():
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((2, 23, 31, 5)).astype(np.float32)
    h, w = 45, 70  # not exactly x2: every weight pattern
    whole = _NumpyOps().interp(grid, (h, w), None)
    src_y, src_x = (np.arange(h) + 0.5) * (23 / h) - 0.5, (np.arange(w) + 0.5) * (31 / w) - 0.5
    np.testing.assert_array_equal(whole[1].reshape(h, w, 5), bilinear_rows_cols(grid[1], src_y, src_x))
    sparse = np.sort(rng.choice(h * w, 40, replace=False))  # a few pixels: four gathers each
    block = np.ravel_multi_index(np.mgrid[5:30, 9:60].reshape(2, -1), (h, w))  # a dense box: resampled whole
    for active in (sparse, block):
        np.testing.assert_array_equal(_NumpyOps().interp(grid, (h, w), active), whole[:, active])
    # columns first (the parser's sampling): the textbook formula, operation by operation
    sy, sx = rng.uniform(-1, 24, 60), rng.uniform(-1, 32, 60)
    y0, x0 = np.floor(np.clip(sy, 0, 22)).astype(int), np.floor(np.clip(sx, 0, 30)).astype(int)
    y1, x1 = np.minimum(y0 + 1, 22), np.minimum(x0 + 1, 30)
    wy = (np.clip(sy, 0, 22) - y0).astype(np.float32)[:, None]
    wx = (np.clip(sx, 0, 30) - x0).astype(np.float32)[:, None]
    g = grid[0]
    top, bottom = g[y0, x0] * (1 - wx) + g[y0, x1] * wx, g[y1, x0] * (1 - wx) + g[y1, x1] * wx
    np.testing.assert_array_equal(bilinear_points(g, sy, sx), top * (1 - wy) + bottom * wy)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_labels_and_margin_equal_softmax_and_its_top_two(temperature):
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((3, 500, 19)) * 4).astype(np.float32)
    values[0, :50, 7] = values[0, :50, 3] = values[0, :50].max(-1) + 1  # tied maxima: margin 0
    values[1, :50] = 2.5  # all equal
    values[2, :50, 0] = values[2, :50, 1] + np.float32(1e-6)  # near ties
    labels, margin = _NumpyOps().labels_margin(values, temperature)
    p = softmax(values, temperature)
    top2 = np.partition(p, 17, axis=-1)[..., -2:]
    np.testing.assert_array_equal(labels, values.argmax(-1))
    np.testing.assert_array_equal(margin, top2[..., 1] - top2[..., 0])
    assert (margin[0, :50] == 0).all() and (margin[1, :50] == 0).all()


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_label_filter_ignores_pixels_that_are_not_active(radius):
    rng = np.random.default_rng(2)
    size = (17, 23)
    labels = rng.integers(0, 3, (2, *size))
    labels[:, 4:12, 5:15] = 1  # a uniform patch
    active = np.flatnonzero(rng.random(size) < 0.6)
    for act in (None, active):
        flat = labels.reshape(2, -1) if act is None else labels.reshape(2, -1)[:, act]
        got = _NumpyOps().nonuniform(flat, size, act, radius)
        mask = np.ones(size, bool) if act is None else np.isin(np.arange(labels[0].size), act).reshape(size)
        expected = np.zeros(labels.shape, bool)
        for b, y, x in np.ndindex(labels.shape):  # brute force: the Chebyshev window, active pixels only
            win = (slice(max(y - radius, 0), y + radius + 1), slice(max(x - radius, 0), x + radius + 1))
            expected[b, y, x] = len(np.unique(labels[b][win][mask[win]])) > 1
        want = expected.reshape(2, -1) if act is None else expected.reshape(2, -1)[:, act]
        np.testing.assert_array_equal(got, want)
        assert want.any() == (radius > 0) and not want.all()


def random_field(seed: int, classes: int = 6):
    """Logits (Q, classes) of (x, y) coords (Q, 2): random waves per class (curved boundaries, low-margin zones)."""
    rng = np.random.default_rng(seed)
    freq, phase, amp = rng.uniform(-9, 9, (3, 2, classes)), rng.uniform(0, 6, (3, classes)), rng.uniform(1, 3, 3)
    waves = list(zip(amp, freq, phase, strict=True))
    return lambda c: sum(a * np.sin(np.asarray(c) @ f + p) for a, f, p in waves).astype(np.float32)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_region_restricted_decoding_of_a_random_field_equals_the_whole_grid(lib):
    """Random fields, a batch of 2, regions sparse (a few blobs: four gathers per pixel) and dense (a thick frame:
    the resampled box): the wanted pixels get exactly the whole grid's logits, for fewer points."""
    fields = [random_field(5), random_field(6)]

    def decode(c):
        out = np.stack([f(c[b]) for b, f in enumerate(fields)])
        return torch.from_numpy(out) if lib == "torch" else out

    size, opts, like = (70, 90), AdaptiveOptions(min_coarse=8), torch.zeros(1) if lib == "torch" else None
    rng = np.random.default_rng(3)
    blobs = np.zeros(size, bool)
    for y, x in rng.integers(0, [size[0], size[1]], (4, 2)):
        blobs[max(y - 2, 0) : y + 3, max(x - 3, 0) : x + 4] = True
    frame = np.ones(size, bool)
    frame[15:-15, 20:-20] = False
    full, sf = adaptive_decode(decode, size, batch=2, temperature=0.5, options=opts, like=like)
    for roi in (blobs, frame):
        part, sp = adaptive_decode(decode, size, batch=2, temperature=0.5, options=opts, like=like, roi=roi)
        np.testing.assert_array_equal(np.asarray(part)[:, roi], np.asarray(full)[:, roi])
        assert sp.total < sf.total
    labels = np.asarray(full).argmax(-1)
    assert all(len(np.unique(labels[b][frame])) >= 4 for b in range(2))  # many boundaries in the region
    assert 0.1 < sf.fraction < 0.9  # some pixels interpolated, many re-queried


def test_in_place_relus_give_the_same_logits():
    model = tiny().requires_grad_(False)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    coords = pixel_centers(20, 24).unsqueeze(0)
    with torch.enable_grad():  # out of place (as in training)
        plain = model.decode(model.encode(x), coords)
    with torch.inference_mode():
        inplace = model.decode(model.encode(x), coords)
    torch.testing.assert_close(inplace, plain, rtol=0, atol=0)

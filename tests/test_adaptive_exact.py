"""The shortcuts of the photo path (issue 12, photo speed) give exactly the values of the plain computations:
bilinear upsampling at a subset of pixels, the top-2 margin without a full softmax, the label filter on the active
pixels only, region-restricted decoding of a random model, the in-place ReLUs, the reductions over classes-first
arrays, the crop coordinates without a meshgrid, and the decoder's cached bf16 weights and fused layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fpliif
from fpliif.adaptive import AdaptiveOptions, _NumpyOps, adaptive_decode
from fpliif.infer.framing import Framing
from fpliif.infer.geometry import (
    Window,
    argmax_first,
    bilinear_points,
    bilinear_rows_cols,
    channels_first,
    max_first,
    softmax,
    softmax_first,
    sum_first,
)
from fpliif.infer.parser import FaceParser
from fpliif.models import fpliif as fpliif_model
from fpliif.models import pixel_centers
from oracle import Oracle
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


@pytest.mark.parametrize("classes", [1, 3, 7, 8, 9, 16, 19, 24, 129, 300])
def test_classes_first_reductions_equal_numpy_over_the_last_axis(classes):
    """Max, first argmax, pairwise sum and softmax over (C, P) rows: numpy's values over (P, C), bit for bit."""
    rng = np.random.default_rng(classes)
    x = (rng.standard_normal((1001, classes)) * 4).astype(np.float32)
    x[:300] = np.round(x[:300])  # ties: the first maximum wins
    x[300:310] = 0.0
    first = channels_first(x)
    assert first.flags.c_contiguous and np.array_equal(first, x.T)
    np.testing.assert_array_equal(max_first(first), x.max(-1))
    np.testing.assert_array_equal(argmax_first(first), x.argmax(-1))
    np.testing.assert_array_equal(sum_first(first).view(np.int32), x.sum(-1).view(np.int32))
    for t in (0.5, 1.0, 3.0):
        np.testing.assert_array_equal(softmax_first(first, t), softmax(x, t).T)
    x[5, classes // 2] = np.nan  # numpy's rule for a NaN: its index
    np.testing.assert_array_equal(argmax_first(channels_first(x)), x.argmax(-1))


@pytest.mark.parametrize("angle", [0.0, 3.7, -41.0])
def test_crop_coords_equal_the_meshgrid_formula(angle):
    win = Window(-15, 20, 137, angle)
    rows, cols = np.arange(-3, 90), np.arange(40, 171)
    dx, dy = np.meshgrid(cols + 0.5 - win.centre[0], rows + 0.5 - win.centre[1])
    c, s, h = np.cos(np.radians(angle)), np.sin(np.radians(angle)), win.side / 2
    u, v = ((c * dx + s * dy) / h, (-s * dx + c * dy) / h) if angle else (dx / h, dy / h)
    xy = np.stack([u, v], -1).reshape(-1, 2)
    coords, inside = win.crop_coords(rows, cols)
    np.testing.assert_array_equal(coords, xy.astype(np.float32))
    np.testing.assert_array_equal(inside, (np.abs(xy) < 1).all(1))
    assert inside.any() and not inside.all()
    assert win.crop_coords(rows[:0], cols)[0].shape == (0, 2)


def plain_query_weights(model):
    """The weights :meth:`FPLIIF.query` reads without the cast cache (autocast casts them on every call)."""
    return lambda device: fpliif_model.QueryWeights(model.mlp[0].weight[:, -2:], model._mlp_tail)


def bf16_logits(model, z, coords):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model.decode(z, coords)


def test_cached_bf16_weights_and_fused_layers_give_autocasts_logits(monkeypatch):
    """bf16 inference with the cast (and, where oneDNN gives the same values, fused Linear + ReLU) tail: autocast's
    logits bit for bit, at sizes below and across a query block; a weight changed in place is seen at once."""
    torch.manual_seed(0)
    spec = {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [256, 256]}
    model = fpliif.make({"name": "fpliif", "args": spec}).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    z = model.encode(x).detach()
    rng = torch.Generator().manual_seed(5)
    sizes = (1, 5, 300, fpliif_model.CPU_QUERY_BLOCK + 904)
    coords = [torch.rand(1, n, 2, generator=rng) * 2 - 1 for n in sizes]
    cached = [bf16_logits(model, z, c) for c in coords]
    assert model._cast_cache is not None and cached[0].dtype == torch.float32
    with monkeypatch.context() as m:
        m.setattr(model, "_query_weights", plain_query_weights(model))
        plain = [bf16_logits(model, z, c) for c in coords]
    for a, b in zip(cached, plain, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        model.mlp[2].weight.mul_(1.5)  # an in-place change (an optimiser step): the cached copies are stale
    changed = bf16_logits(model, z, coords[2])
    monkeypatch.setattr(model, "_query_weights", plain_query_weights(model))
    assert torch.equal(changed, bf16_logits(model, z, coords[2])) and not torch.equal(changed, cached[2])


def test_cast_cache_is_not_used_with_autograd_or_in_fp32():
    model = tiny()
    z = model.encode(torch.rand(1, 3, 32, 32)).detach()
    coords = pixel_centers(6, 7).unsqueeze(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.decode(z, coords)  # training and autograd: the modules, cast by autocast
    with torch.inference_mode():
        model.decode(z, coords)  # fp32
    assert model._cast_cache is None
    weights = fpliif_model.cast_query_weights(model.mlp[0].weight[:, -2:], model._mlp_tail, torch.bfloat16)
    assert weights.pos_weight.dtype == torch.bfloat16 and len(weights.tail) <= len(model._mlp_tail)


def test_parser_probs_classes_first_equal_the_masked_softmax_per_pixel():
    """The parser's probabilities (classes first) at the wanted pixels, over a window's classes ((C,) or per pixel):
    the plain (P, C) masked softmax, transposed; and the lower window's classes per pixel, transposed."""
    parser = FaceParser(Oracle(), framing=Framing(1.0, 0.0, 0.0), input_size=60, align=False)
    rng = np.random.default_rng(7)
    c, t = len(parser.classes), parser.backend.temperature
    logits = (rng.standard_normal((500, c)) * 3).astype(np.float32)
    want = rng.random(500) < 0.7
    per_pixel = rng.random((500, c)) < 0.5
    per_pixel[:, 0] = True

    def plain(mask: np.ndarray | None, wanted: np.ndarray) -> np.ndarray:
        x = logits if mask is None else np.where(mask, logits, np.float32(-np.inf))
        out = np.zeros_like(x)
        out[wanted] = softmax(x[wanted], t)
        return out.T

    everywhere = np.ones(500, bool)
    for rows, first in ((None, None), (parser._context_classes, parser._context_classes), (per_pixel, per_pixel.T)):
        np.testing.assert_array_equal(parser._probs(logits, want, first), plain(rows, want))
        np.testing.assert_array_equal(parser._probs(logits, None, first), plain(rows, everywhere))
    edge, u = rng.integers(0, c, 40).astype(np.uint8), rng.uniform(-1.2, 1.2, 300)
    k = np.clip(((u + 1) / 2 * edge.size).astype(np.int64), 0, edge.size - 1)
    continued = parser._continued & (edge[k, None] == np.arange(c))
    np.testing.assert_array_equal(parser._lower_classes(edge, u), (parser._below_classes | continued).T)

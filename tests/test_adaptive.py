"""Adaptive (coarse-to-fine) querying (issue 12, part 1): exactness where the label map is simple, agreement
with dense decoding on the bundled model, fewer queries, odd sizes, every entry point, and bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fpliif
from fpliif.adaptive import AdaptiveOptions, AdaptiveStats, adaptive_decode, level_sizes
from fpliif.cli import main
from fpliif.infer.cli import example_image
from fpliif.infer.geometry import pixel_centers
from fpliif.infer.parser import FaceParser
from fpliif.labels import get_label_set
from fpliif.models import pixel_centers as torch_pixel_centers
from test_data_helpers import mini_data_dir

TINY = {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]}
SMALL = AdaptiveOptions(min_coarse=8)  # lets small test outputs have several levels
EVERYWHERE = AdaptiveOptions(min_coarse=8, margin=1.0)  # every pixel of every level is re-queried


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return fpliif.make({"name": "fpliif", "args": TINY}).eval()


def smooth_logits(coords):
    """A smooth 3-class function of (x, y) with a few boundaries: a disc, a slanted line, background."""
    lib = torch if isinstance(coords, torch.Tensor) else np
    x, y = coords[..., 0], coords[..., 1]
    disc = 8 * (0.45 - lib.sqrt((x - 0.1) ** 2 + (y + 0.2) ** 2))
    line = 6 * (x - 0.55 + 0.3 * y)
    return lib.stack([0 * x, disc, line], -1)


class SmoothModel(torch.nn.Module):
    """An implicit 'model' whose logits are :func:`smooth_logits` of the query point (19 classes)."""

    label_set = get_label_set("celebamask-hq")
    num_classes = 19
    temperature = 0.5

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def decode(self, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        out = torch.full((*coords.shape[:2], 19), -10.0)
        out[..., [0, 1, 13]] = smooth_logits(coords)
        return out


def dense_labels(fn, h: int, w: int) -> np.ndarray:
    return np.asarray(fn(pixel_centers(h, w))).argmax(-1).reshape(h, w)


# ---------------------------------------------------------------------------------------------- levels, exactness
def test_level_sizes():
    assert level_sizes((256, 256)) == [(64, 64), (128, 128), (256, 256)]
    assert level_sizes((1024, 1024)) == [(128, 128), (256, 256), (512, 512), (1024, 1024)]
    assert level_sizes((128, 128)) == [(64, 64), (128, 128)]
    assert level_sizes((37, 250)) == [(37, 64), (37, 125), (37, 250)]  # the short side stays
    # a half below min_coarse: min_coarse itself where it is at most LAST_STEP (0.75) of the side, else no step
    assert level_sizes((242, 242)) == [(64, 64), (121, 121), (242, 242)]
    assert level_sizes((400, 400)) == [(64, 64), (100, 100), (200, 200), (400, 400)]
    assert level_sizes((172, 172)) == [(64, 64), (86, 86), (172, 172)]  # 64 <= 0.75 * 86
    assert level_sizes((170, 170)) == [(85, 85), (170, 170)]  # 64 > 0.75 * 85
    assert level_sizes((37, 250), SMALL) == [(10, 32), (10, 63), (19, 125), (37, 250)]
    assert level_sizes((63, 80)) == [(63, 80)]  # too small to coarsen: dense
    assert level_sizes((256, 256), AdaptiveOptions(max_levels=0)) == [(256, 256)]
    # by default the coarse grid samples each latent cell twice per axis; min_coarse overrides it
    assert level_sizes((256, 256), latent_size=(64, 64)) == [(128, 128), (256, 256)]
    assert level_sizes((256, 200), latent_size=(64, 16)) == [(128, 32), (128, 50), (128, 100), (256, 200)]
    assert level_sizes((256, 256), {"min_coarse": 16}, latent_size=(64, 64))[0] == (32, 32)


def test_a_part_thinner_than_a_latent_cell_is_found():
    """A band narrower than a latent cell and lying between the latent cells' centres: one coarse sample per cell
    (``min_coarse`` = the latent side) never sees it and, its neighbours being confident, never re-queries it; the
    default two samples per cell find it (a narrow eye in a photo's face window was lost this way)."""

    def band(coords):
        y = coords[..., 1]
        out = np.full((*coords.shape[:-1], 19), -10.0, np.float32)
        out[..., 0] = 0.0
        out[..., 4] = 200 * (0.02 - np.abs(y))  # |y| < 0.02: 6 rows of 256, between the 32-grid's centres
        return out

    dense = dense_labels(band, 256, 256)
    assert (dense == 4).sum() == 6 * 256
    found, _ = adaptive_decode(band, (256, 256), latent_size=(32, 32))
    np.testing.assert_array_equal(found[0].argmax(-1), dense)
    missed, _ = adaptive_decode(band, (256, 256), options={"min_coarse": 32}, latent_size=(32, 32))
    assert not (missed[0].argmax(-1) == 4).any()


@pytest.mark.parametrize("size", [(256, 256), (37, 250), (97, 61), (200, 96)])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_equals_dense_on_a_smooth_function_with_a_few_boundaries(size, lib):
    h, w = size
    like = torch.zeros(1) if lib == "torch" else None
    logits, stats = adaptive_decode(lambda c: smooth_logits(c), size, options=SMALL, like=like)
    assert type(logits) is (torch.Tensor if lib == "torch" else np.ndarray) and logits.shape == (1, h, w, 3)
    expected = dense_labels(smooth_logits, h, w)
    assert len(np.unique(expected)) == 3
    np.testing.assert_array_equal(np.asarray(logits[0].argmax(-1)), expected)
    assert stats.levels[-1] == size and stats.total < stats.dense and stats.fraction < 0.5


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_constant_label_map_decodes_only_the_coarse_grid(lib):
    like = torch.zeros(1) if lib == "torch" else None
    calls = []

    def decode(c):
        calls.append(c.shape[1])
        out = np.zeros((*c.shape[:2], 4), np.float32)
        out[..., 2] = 5.0
        return torch.from_numpy(out) if lib == "torch" else out

    logits, stats = adaptive_decode(decode, (130, 77), batch=2, options=SMALL, like=like)
    assert (np.asarray(logits).argmax(-1) == 2).all()
    assert stats.points[1:] == [0] * (len(stats.levels) - 1) and calls == [17 * 10] and stats.total == 2 * 17 * 10


def test_numpy_and_torch_implementations_agree():
    a, sa = adaptive_decode(smooth_logits, (120, 90), batch=1, options=SMALL)
    b, sb = adaptive_decode(smooth_logits, (120, 90), batch=1, options=SMALL, like=torch.zeros(1))
    np.testing.assert_array_equal(a.argmax(-1), b.numpy().argmax(-1))
    np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
    assert sa.points == sb.points


def test_requeried_pixels_carry_the_decoder_values_exactly():
    """margin=1 re-queries every pixel of every level: the result is dense decoding (any size, batches)."""
    model = tiny()
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        z = model.encode(x)
        for size in [(37, 250), (64, 64), (9, 13)]:
            dense = model.decode(z, torch_pixel_centers(*size).expand(2, -1, -1)).view(2, *size, -1)
            out, stats = model.decode_adaptive(z, size, options=EVERYWHERE)
            assert out.shape == (2, model.num_classes, *size)
            torch.testing.assert_close(out.permute(0, 2, 3, 1), dense, atol=1e-5, rtol=0)
            assert stats.levels[-1] == size and stats.points[-1] == stats.dense


def test_batched_images_are_decoded_independently():
    """Batching pads the smaller query sets with repeats; each image's result is its own."""
    model = tiny()
    x = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    x[1] = 0.5  # a flat image: few uncertain pixels, padded in the batch
    with torch.inference_mode():
        z = model.encode(x)
        batched, stats = model.decode_adaptive(z, (70, 50), options=SMALL)
        for i in range(3):
            alone, _ = model.decode_adaptive(z[i : i + 1], (70, 50), options=SMALL)
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=0)
    assert stats.total % 3 == 0  # padded: every image ran the same number of points


def test_stats_and_points_counter():
    model = tiny()
    with torch.inference_mode():
        z = model.encode(torch.rand(1, 3, 40, 48))
        model.points_decoded = 0
        _, stats = model.decode_adaptive(model.prepare(z), 80, options=SMALL)
    assert isinstance(stats, AdaptiveStats) and model.points_decoded == stats.total
    d = stats.to_dict()
    assert d["dense"] == 6400 and d["total"] == sum(d["points"]) and d["levels"][-1] == (80, 80)
    assert 0 < d["fraction"] == stats.total / 6400


# ---------------------------------------------------------------------------------------------- bundled model
DATA = mini_data_dir()


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "images").is_dir(), reason="celebamask-mini not available")
def test_bundled_model_agrees_with_dense_on_a_real_face():
    from fpliif.infer.geometry import model_input
    from fpliif.infer.images import load_image

    image = load_image(sorted((DATA / "images").glob("*.jpg"))[0])
    parser = FaceParser.from_pretrained(threads=None)
    dense = parser.parse_aligned(image, size=256, decode="dense")
    dense_points = parser.points_decoded
    adaptive = parser.parse_aligned(image, size=256, decode="adaptive")
    adaptive_points = parser.points_decoded - dense_points
    assert dense_points == 256 * 256 and adaptive_points < 0.5 * dense_points
    assert (adaptive.labels == dense.labels).mean() >= 0.99
    assert len(np.unique(dense.labels)) >= 5  # a real face: many parts
    model = parser.backend.model  # the model layer gives the same answer
    x = torch.from_numpy(model_input(image, (parser.input_size,) * 2))[None]
    with torch.inference_mode():
        logits, stats = model.decode_adaptive(model.encode(x), 256)
    assert (logits[0].argmax(0).numpy() == dense.labels).mean() >= 0.99 and stats.total < 0.5 * stats.dense


# ---------------------------------------------------------------------------------------------- FaceParser
def test_face_parser_adaptive_odd_sizes_tta_and_photos():
    model = tiny()
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    parser = FaceParser(model, input_size=64, adaptive=EVERYWHERE, decode="dense")  # adaptive: exact, = dense
    for tta in (False, True):
        dense = parser.parse_aligned(img, size=(37, 250), return_probs=True, tta=tta)
        adaptive = parser.parse_aligned(img, size=(37, 250), return_probs=True, tta=tta, decode="adaptive")
        assert adaptive.labels.shape == (37, 250)
        np.testing.assert_allclose(adaptive.probs, dense.probs, atol=1e-5)
        box = [[8, 8, 56, 56]]
        a, b = (
            parser(img, boxes=box, return_probs=True, tta=tta),
            parser(img, boxes=box, return_probs=True, tta=tta, decode="adaptive"),
        )
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    cheap = FaceParser(model, input_size=64, adaptive={"min_coarse": 8}, decode="adaptive")
    assert "decode='adaptive'" in repr(cheap)
    before = cheap.points_decoded
    res = cheap.parse_aligned(img, size=(37, 250))
    # (this random model's labels are noise: no savings, but each level decodes each pixel at most once)
    levels = level_sizes((37, 250), cheap.adaptive)
    assert res.labels.shape == (37, 250) and cheap.points_decoded - before <= sum(h * w for h, w in levels)
    smooth = FaceParser(SmoothModel(), input_size=64, adaptive={"min_coarse": 8}, decode="dense")
    dense = smooth.parse_aligned(img, size=(37, 250))
    assert smooth.points_decoded == 37 * 250
    np.testing.assert_array_equal(smooth.parse_aligned(img, size=(37, 250), decode="adaptive").labels, dense.labels)
    assert smooth.points_decoded - 37 * 250 < 0.5 * 37 * 250
    # photos: decoded on the crop window (and on the max_decode_size grid for big windows)
    big = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    small_grid = FaceParser(model, input_size=64, max_decode_size=64, adaptive=EVERYWHERE)
    box = [[20, 30, 260, 280]]
    a = small_grid(big, boxes=box, return_probs=True)
    b = small_grid(big, boxes=box, return_probs=True, decode="adaptive")
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


@pytest.mark.parametrize("bad", ["fast", "", None, 1])
def test_bad_decode_mode_raises(bad):
    model = tiny()
    img = np.zeros((32, 32, 3), np.uint8)
    if bad is not None:
        with pytest.raises(ValueError, match="decode: expected 'dense' or 'adaptive'"):
            FaceParser(model, decode=bad)
    parser = FaceParser(model, input_size=32)
    with pytest.raises(ValueError, match="decode: expected 'dense' or 'adaptive'"):
        parser.parse_aligned(img, decode=bad or "bogus")
    with pytest.raises(ValueError, match="decode: expected 'dense' or 'adaptive'"):
        parser(img, boxes=[[0, 0, 32, 32]], decode=bad or "bogus")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"margin": 1.5}, "margin"),
        ({"margin": -0.1}, "margin"),
        ({"min_coarse": 0}, "min_coarse"),
        ({"max_levels": -1}, "max_levels"),
        ({"radius": 1.5}, "radius"),
        ({"passes": -2}, "passes"),
        ({"min_coarse": True}, "min_coarse"),
        ({"bogus": 1}, "unknown"),
    ],
)
def test_bad_adaptive_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveOptions.of(options)
    with pytest.raises(ValueError, match=match):
        FaceParser(tiny(), adaptive=options)
    with pytest.raises(ValueError, match=match):
        adaptive_decode(smooth_logits, (64, 64), options=options)


def test_bad_adaptive_decode_arguments_raise():
    with pytest.raises(ValueError, match="positive"):
        adaptive_decode(smooth_logits, (0, 64))
    with pytest.raises(ValueError, match="chunk"):
        adaptive_decode(smooth_logits, (64, 64), chunk=0)
    with pytest.raises(ValueError, match="logits"):
        adaptive_decode(lambda c: np.zeros((5, 3)), (64, 64))
    with pytest.raises(ValueError, match="options"):
        AdaptiveOptions.of("fast")
    model = tiny()
    with pytest.raises(ValueError, match="z"):
        model.decode_adaptive(torch.zeros(8, 4, 4), 16)
    with pytest.raises(ValueError, match="size"):
        model.decode_adaptive(torch.zeros(1, 8, 4, 4), (0, 16))


def test_chunked_decode_calls():
    sizes = []

    def decode(c):
        sizes.append(c.shape[1])
        return smooth_logits(c)

    a, _ = adaptive_decode(decode, (100, 100), options=SMALL, chunk=500)
    assert max(sizes) <= 500
    b, _ = adaptive_decode(smooth_logits, (100, 100), options=SMALL)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------- eval, CLI, bench
def test_evaluate_adaptive():
    from fpliif.eval.evaluate import evaluate

    model = tiny()
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.rand(2, 3, 32, 32, generator=g),
            "masks": {s: torch.randint(0, 19, (2, s, s), generator=g) for s in (40, 80)},
        }
        for _ in range(2)
    ]
    ls = get_label_set("celebamask-hq")
    kw = dict(sizes=(80,), lowres=(40,), lowres_to=80, progress=False)
    dense = evaluate(model, batches, ls, **kw)
    assert dense["decode"] == "dense" and dense["points_per_image"] == {"80": 6400, "40→80": 1600}
    exact = evaluate(model, batches, ls, decode="adaptive", adaptive=EVERYWHERE, **kw)
    assert exact["decode"] == "adaptive" and exact["rows"] == dense["rows"]
    smooth = SmoothModel()
    cheap = evaluate(smooth, batches, ls, decode="adaptive", adaptive={"min_coarse": 8}, **kw)
    assert cheap["points_per_image"]["80"] < 0.5 * 6400
    assert cheap["rows"] == evaluate(smooth, batches, ls, **kw)["rows"]  # same labels as dense
    both = evaluate(model, batches, ls, decode="adaptive", adaptive=EVERYWHERE, tta=True, **kw)
    assert both["rows"] == evaluate(model, batches, ls, tta=True, **kw)["rows"]
    assert both["points_per_image"]["80"] > 2 * 6400  # two views, every level
    with pytest.raises(ValueError, match="decode"):
        evaluate(model, batches, ls, decode="fast", **kw)
    coarse = {"min_coarse": 8, "margin": 0.0, "radius": 0, "passes": 0}  # re-queries label changes only
    checked = evaluate(model, batches, ls, decode="adaptive", adaptive=coarse, compare_dense=True, **kw)
    assert checked["dense_rows"] == dense["rows"]
    assert checked["rows"] == evaluate(model, batches, ls, decode="adaptive", adaptive=coarse, **kw)["rows"]
    assert 0 < checked["agreement_with_dense"]["80"] < 100  # a random model's labels change everywhere
    same = evaluate(model, batches, ls, decode="adaptive", adaptive=EVERYWHERE, compare_dense=True, **kw)
    assert same["agreement_with_dense"] == {"80": 100.0, "40→80": 100.0}
    with pytest.raises(ValueError, match="compare_dense"):
        evaluate(model, batches, ls, compare_dense=True, **kw)


def test_cli_parse_decode(tmp_path, capsys):
    w = fpliif.save(tiny(), tmp_path / "tiny.safetensors")
    out = tmp_path / "out"
    argv = ["parse", str(example_image()), "--out", str(out), "--weights", str(w), "--format", "json"]
    assert main([*argv, "--decode", "adaptive", "--quiet"]) == 0
    assert len(json.loads((out / "astronaut.json").read_text())["faces"]) == 1
    with pytest.raises(SystemExit):
        main([*argv, "--decode", "fast"])
    assert "--decode" in capsys.readouterr().err


def test_bench_decode_modes(tmp_path, capsys):
    from fpliif.bench.inference import run_bench

    n = torch.get_num_threads()
    try:
        result = run_bench(tiny(), sizes=(8, 80), input_size=32, runs=1, threads=1, decode=["dense", "adaptive"])
        w = fpliif.save(tiny(), tmp_path / "tiny.safetensors")
        argv = ["bench", "--weights", str(w), "--sizes", "80", "--input-size", "32", "--runs", "1", "--threads", "1"]
        assert main([*argv, "--decode", "dense,adaptive"]) == 0
        text = capsys.readouterr().out
        assert main([*argv, "--decode", "dense,fast"]) == 2
        assert "--decode" in capsys.readouterr().err
        assert main([*argv, "--decode", "adaptive", "--train"]) == 2
    finally:
        torch.set_num_threads(n)
    assert "adaptive" in text and "points" in text
    for key in ("fps", "macs_executed", "points"):
        assert set(result[key]) == {"dense", "adaptive"} and all(set(v) == {"8", "80"} for v in result[key].values())
    assert result["points"]["dense"] == {"8": 64, "80": 6400}
    assert result["points"]["adaptive"]["8"] == 64  # no coarser than the 8 x 8 latent grid: dense
    # a random model's labels are noise: adaptive may decode more points than dense, at most each level once
    assert result["points"]["adaptive"]["80"] <= sum(h * w for h, w in level_sizes((80, 80), latent_size=(8, 8)))
    pa, pd = result["points"]["adaptive"]["80"], result["points"]["dense"]["80"]
    ma, md = result["macs_executed"]["adaptive"]["80"], result["macs_executed"]["dense"]["80"]
    assert md < result["macs"]["80"] and (ma > md) == (pa > pd)
    assert all(v > 0 for m in result["fps"].values() for v in m.values())
    assert result["decode"] == ["dense", "adaptive"] and result["adaptive_options"]["margin"] == 0.1
    plain = run_bench(tiny(), sizes=(16,), input_size=32, runs=1, threads=1)
    assert set(plain["fps"]) == {"16"} and "macs_executed" not in plain  # unchanged without --decode
    torch.set_num_threads(n)

"""The factored first decoder layer (issue 12, part 2): the same function as the paper's concatenated input.

``reference_decode`` below is written out independently of the model's query code: F.unfold, the full first
layer on the concatenation [Ẑ code, g, position] per query and ensemble member, LIIF's index arithmetic with
Python ints.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

import fpliif
from fpliif.bench.flops import count_macs
from fpliif.models import pixel_centers
from fpliif.models.pretrained import default_weights_path

TINY = {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]}
SWITCHES = [
    {},
    {"local_ensemble": False},
    {"global_feature": False},
    {"relative_coords": False},
    {"unfold": False},
    {"reduce_mlp": []},
    {"decoder_mlp": []},  # the first layer is the output layer
    {"local_ensemble": False, "global_feature": False, "relative_coords": False, "unfold": False},
]


def tiny(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return fpliif.make({"name": "fpliif", "args": {**TINY, **overrides}}).eval()


def reference_decode(model, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Straightforward FP-LIIF decoding: the whole query MLP on [code, g, rel] for each ensemble member."""
    b, c, h, w = z.shape
    feat = F.unfold(z, 3, padding=1).view(b, c * 9, h, w) if model.unfold else z
    zhat = model.reduce(feat.permute(0, 2, 3, 1)).reshape(b, h * w, -1)
    g = z.mean(dim=(2, 3))
    shifts = [(sx, sy) for sx in (-1, 1) for sy in (-1, 1)] if model.local_ensemble else [(0, 0)]
    preds, areas = [], []
    for sx, sy in shifts:
        x = coords[..., 0] + sx / w + 1e-6
        y = coords[..., 1] + sy / h + 1e-6
        ix = torch.floor((x + 1) / 2 * w).clamp(0, w - 1)
        iy = torch.floor((y + 1) / 2 * h).clamp(0, h - 1)
        code = torch.stack([zhat[i, (iy[i] * w + ix[i]).long()] for i in range(b)])
        cx, cy = (2 * ix + 1) / w - 1, (2 * iy + 1) / h - 1  # centre of the latent cell read
        rel = torch.stack([(coords[..., 0] - cx) * w, (coords[..., 1] - cy) * h], dim=-1)
        parts = [code]
        if model.global_feature:
            parts.append(g[:, None, :].expand(-1, coords.shape[1], -1))
        parts.append(rel if model.relative_coords else coords)
        preds.append(model.mlp(torch.cat(parts, dim=-1)))
        areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
    if len(preds) == 1:
        return preds[0]
    total = sum(areas)
    return sum(p * (areas[3 - i] / total)[..., None] for i, p in enumerate(preds))


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "base")
@pytest.mark.parametrize(("in_hw", "out_hw"), [((40, 56), (13, 17)), ((48, 32), (50, 70)), ((32, 32), (1, 1))])
def test_factored_decoder_equals_the_concatenated_reference(switches, in_hw, out_hw):
    model = tiny(**switches)
    x = torch.rand(2, 3, *in_hw, generator=torch.Generator().manual_seed(1))
    h, w = out_hw
    with torch.no_grad():
        z = model.encode(x)
        grid = pixel_centers(h, w).expand(2, -1, -1)
        rand = torch.rand(2, 257, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
        rand[:, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])  # corners and borders
        for coords in (grid, rand):
            ref = reference_decode(model, z, coords)
            assert model.prepare(z).factored
            torch.testing.assert_close(model.decode(z, coords), ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(model.decode(z, coords, chunk_size=50), ref, atol=1e-5, rtol=0)
            model.factored_decoder = False  # the paper's layout, kept for MAC counts
            torch.testing.assert_close(model.decode(z, coords), ref, atol=1e-5, rtol=0)
            model.factored_decoder = True
        dense = model(x, size=out_hw)
        torch.testing.assert_close(
            dense, reference_decode(model, z, grid).view(2, h, w, -1).permute(0, 3, 1, 2), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("switches", [{}, {"relative_coords": False, "global_feature": False}])
def test_training_gradients_are_unchanged(switches):
    """Same loss and parameter gradients as the reference (training results are unchanged)."""
    model = tiny(**switches).train()
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(3))
    coords = torch.rand(2, 300, 2, generator=torch.Generator().manual_seed(4)) * 2 - 1
    target = torch.randint(0, model.num_classes, (2, 300), generator=torch.Generator().manual_seed(5))
    grads = []
    for fn in (model.decode, lambda z, c: reference_decode(model, z, c)):
        model.zero_grad()
        loss = F.cross_entropy(fn(model.encode(x), coords).flatten(0, 1), target.flatten())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "mlp.0.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_state_dict_and_bundled_checkpoint_are_unchanged():
    model = fpliif.make("fpliif")
    path = default_weights_path()
    assert path is not None
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(model.state_dict())
    loaded = fpliif.load(path)  # strict load
    assert loaded.factored_decoder and loaded.spec == fpliif.make(loaded.spec).spec


def test_macs_paper_accounting_and_executed():
    """count_macs keeps the paper's accounting; executed=True is the factored decoder's work, exactly."""
    model = tiny()
    out = (20, 24)
    paper, executed = count_macs(model, (64, 64), out), count_macs(model, (64, 64), out, executed=True)
    assert model.factored_decoder  # restored
    q, cells, hidden = out[0] * out[1] * 4, 16 * 16, TINY["decoder_mlp"][0]
    latent, width = TINY["reduce_mlp"][-1], TINY["width"]
    # per query and ensemble member: (latent + width + 2) x hidden -> 2 x hidden; once per cell: latent x hidden;
    # once per image: width x hidden
    assert paper - executed == q * (latent + width) * hidden - cells * latent * hidden - width * hidden


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace: what the ONNX exporter runs
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_rows_equals_torch_gather_and_traces_as_it(batch, dtype):
    """The query's latent-code gather (one ``index_select`` of rows) gives ``torch.gather``'s values, per batch
    member, also from a strided grid; under tracing it is ``torch.gather`` itself (the ONNX graph is unchanged)."""
    from fpliif.models.fpliif import gather_rows

    flat = torch.randn(batch, 37, 32).to(dtype)[..., ::2]  # (B, N, 16), not contiguous
    idx = torch.randint(0, 37, (batch, 50))
    expected = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, 16))
    assert torch.equal(gather_rows(flat, idx), expected)
    traced = torch.jit.trace(gather_rows, (flat, idx))
    assert "aten::gather" in str(traced.graph) and "index_select" not in str(traced.graph)
    assert torch.equal(traced(flat, idx), expected)

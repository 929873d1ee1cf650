"""FP-LIIF (Sarkar et al., CVPR 2023): modified-EDSR encoder + local implicit image function decoder.

The choices the paper leaves open are pinned by its own parameter and compute tables; see
docs/architecture.md for the derivation. Defaults reproduce the paper's model (2.285 M parameters
for 19 classes, Table 6 MACs within 1 %).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..adaptive import AdaptiveOptions, AdaptiveStats, adaptive_decode
from ..labels import resolve_label_set
from ..limits import check_deadline
from .base import SegmentationModel, check_classes_spec, check_coords, check_image, check_size, pixel_centers
from .registry import register

CPU_QUERY_BLOCK = 4096
"""On a CPU, queries run through the per-query MLP in blocks of at most this many (besides ``chunk_size``), so a
block's activations (4096 x 256 floats: 4 MiB) stay in the core's cache: on the dev CPU (2 MiB L2 per core) a 256²
grid decoded 1.7x faster in fp32 and 3.8x in bf16 than in blocks of 65536, with identical logits
(docs/performance.md, "Query blocks"). On a GPU, ``chunk_size`` alone sets the block."""


def channels_last_cpu(x: torch.Tensor) -> bool:
    """Whether ``x`` is a CPU tensor laid out channels-last (and not also plainly contiguous, as 1x1 grids are)."""
    return x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that keeps a channels-last CPU tensor channels-last.

    PyTorch's instance norm copies a channels-last input to NCHW (4x slower than on NCHW at 128² here). The
    instance norm of one sample is the training-mode batch norm of a batch of one, whose CPU kernel reads
    channels-last natively, so such inputs are normalised sample by sample that way: the same function (equal to
    the NCHW path within float rounding, tests/test_model.py), and the convolutions around it stay on oneDNN's
    channels-last path (docs/performance.md, "A channels-last encoder on the CPU")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not channels_last_cpu(x) or self.track_running_stats or torch.jit.is_tracing():
            return super().forward(x)
        samples = [
            F.batch_norm(s, None, None, self.weight, self.bias, training=True, momentum=0.0, eps=self.eps)
            for s in x.split(1)
        ]
        return samples[0] if len(samples) == 1 else torch.cat(samples)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """conv - IN - ReLU - conv - IN, plus identity (paper Fig. 5; EDSR block with instance norms)."""

    def __init__(self, width: int, norm: str = "instance", affine_norm: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(width, width),
            make_norm(norm, width, affine_norm),
            nn.ReLU(),
            conv3x3(width, width),
            make_norm(norm, width, affine_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def make_norm(norm: str, width: int, affine: bool) -> nn.Module:
    if norm == "instance":
        return InstanceNorm2d(width, affine=affine)
    if norm == "batch":
        return nn.BatchNorm2d(width, affine=affine)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'instance', 'batch' or 'none', got {norm!r}")


class ResGroup(nn.Module):
    """A series of resblocks (optionally closed by a conv, as EDSR's body) with a group-level residual."""

    def __init__(self, width: int, depth: int, tail_conv: bool, norm: str, affine_norm: bool):
        super().__init__()
        layers: list[nn.Module] = [ResBlock(width, norm, affine_norm) for _ in range(depth)]
        if tail_conv:
            layers.append(conv3x3(width, width))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """conv 3->W, then resblock groups; a stride-2 conv follows every group but the last (Fig. 2).

    On a CPU the image is laid out channels-last first (``channels_last_on_cpu``): oneDNN's convolutions run
    1.5x faster that way on the dev CPU, and :class:`InstanceNorm2d` keeps the layout; the feature grid comes out
    channels-last, with the same values (docs/performance.md, "A channels-last encoder on the CPU")."""

    channels_last_on_cpu: bool = True

    def __init__(self, width: int, depths: Sequence[int], tail_convs: Sequence[bool], norm: str, affine_norm: bool):
        super().__init__()
        if len(tail_convs) != len(depths):
            raise ValueError(f"group_tail_conv: need one flag per group ({len(depths)}), got {list(tail_convs)}")
        self.head = conv3x3(3, width)
        stages: list[nn.Module] = []
        for i, (depth, tail) in enumerate(zip(depths, tail_convs, strict=True)):
            stages.append(ResGroup(width, depth, tail, norm, affine_norm))
            if i < len(depths) - 1:
                stages.append(conv3x3(width, width, stride=2))
        self.stages = nn.Sequential(*stages)
        self.stride = 2 ** (len(depths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_on_cpu and x.device.type == "cpu" and not torch.jit.is_tracing():
            x = x.contiguous(memory_format=torch.channels_last)
        return self.stages(self.head(x))


def mlp(sizes: Sequence[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def unfold3x3(z: torch.Tensor) -> torch.Tensor:
    """``F.unfold(z, 3, padding=1)`` as (B, 9C, h, w), channel ``c * 9 + ki * 3 + kj``, from 9 shifted slices of
    the zero-padded grid: the same values, and exportable to ONNX with dynamic h and w."""
    p = F.pad(z, (1, 1, 1, 1))
    h, w = p.shape[2], p.shape[3]
    shifts = [
        p[:, :, ki : h - 2 + ki if ki < 2 else None, kj : w - 2 + kj if kj < 2 else None]
        for ki in range(3)
        for kj in range(3)
    ]
    return torch.stack(shifts, dim=2).flatten(1, 2)


class LatentGrid(NamedTuple):
    """The latent grid as the per-query decoder reads it (:meth:`FPLIIF.prepare`).

    ``factored``: ``cells`` (B, h, w, F) are the first decoder layer's pre-activations without the position
    term, per latent cell (``g`` is None: it is folded in). Otherwise ``cells`` is Ẑ (B, h, w, D) and ``g`` the
    global feature (or None), concatenated per query as written in the paper.
    """

    cells: torch.Tensor
    g: torch.Tensor | None
    factored: bool

    def split(self) -> list[LatentGrid]:
        """One grid per batch member (views)."""
        return [
            LatentGrid(self.cells[i : i + 1], None if self.g is None else self.g[i : i + 1], self.factored)
            for i in range(self.cells.shape[0])
        ]


def _grid_wh(cells: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(w, h) of a (B, h, w, F) grid as a tensor in the coordinates' dtype (a runtime shape when tracing)."""
    if torch.jit.is_tracing():
        return torch._shape_as_tensor(cells)[1:3].flip(0).to(coords.dtype)
    return torch.tensor([cells.shape[2], cells.shape[1]], device=coords.device, dtype=coords.dtype)


@register("fpliif")
class FPLIIF(SegmentationModel):
    """FP-LIIF face parser.

    Args:
        classes: label-set name or list of class names (defines the number of output classes).
        width: channels of every encoder conv (64).
        depths: resblocks per group (2, 6, 16).
        group_tail_conv: whether each group ends with a 3x3 conv inside its residual (EDSR body style).
        norm / affine_norm: normalisation after each resblock conv (instance, no affine: PyTorch default).
        unfold: 3x3 feature unfolding before the reduce-channel MLP.
        reduce_mlp: hidden sizes of the reduce-channel MLP (its input is 9*width or width).
        decoder_mlp: hidden sizes of the per-query MLP (4 layers of 256); a final linear maps to classes.
        global_feature: concatenate the global average pool g of Z to each query's latent code.
        local_ensemble: LIIF local ensemble over the 4 nearest latent codes.
        relative_coords: feed the query position relative to its latent code (Eq. 2) instead of absolute.
        temperature: softmax temperature tau (0.5).
        chunk_size: queries decoded at once; bounds decoder memory for any output size (on a CPU, also at most
            :data:`CPU_QUERY_BLOCK`: a runtime choice for speed, the same logits).

    Runtime attributes (not part of the spec or the weights): ``factored_decoder`` (True) computes the first
    decoder layer's latent and global parts once per latent cell (:meth:`prepare`; exact algebra, same
    function); False runs the layer on the concatenated query input as written in the paper (MAC counts
    compare with the paper this way). ``quantized_tail`` (None): replacement layers for the MLP after its
    first layer (int8: :mod:`fpliif.quantize`; not saved with the weights). ``points_decoded`` counts the query
    points decoded (each is evaluated 4 times with the local ensemble); reset it freely.
    """

    # Sane bounds for specs read from untrusted files: far above any useful model, far below an allocation
    # that could exhaust memory (the paper's model: width 64, depths 2/6/16, MLPs of 256).
    SPEC_BOUNDS: dict[str, tuple[int, int]] = {
        "width": (1, 1024),
        "depth": (0, 64),
        "groups": (1, 8),
        "mlp_size": (1, 4096),
        "mlp_layers": (0, 16),
        "chunk_size": (1, 1 << 24),
    }

    @classmethod
    def check_spec_args(cls, args: Mapping[str, Any], where: str = "args") -> None:
        """Types and :data:`SPEC_BOUNDS` of constructor arguments, checked before anything is built;
        ValueError naming ``{where}.<field>``."""
        b = cls.SPEC_BOUNDS

        def fail(key: str, expected: str) -> None:
            raise ValueError(f"{where}.{key}: expected {expected}, got {args[key]!r:.200}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def int_in(key: str, bound: str) -> None:
            lo, hi = b[bound]
            if key in args and not (is_int(args[key]) and lo <= args[key] <= hi):
                fail(key, f"an integer in [{lo}, {hi}]")

        def int_list(key: str, bound: str, length: str) -> None:
            (lo, hi), (nlo, nhi) = b[bound], b[length]
            v = args.get(key)
            if key in args and not (
                isinstance(v, (list, tuple)) and nlo <= len(v) <= nhi and all(is_int(x) and lo <= x <= hi for x in v)
            ):
                fail(key, f"a list of {nlo} to {nhi} integers in [{lo}, {hi}]")

        int_in("width", "width")
        int_in("chunk_size", "chunk_size")
        int_list("depths", "depth", "groups")
        int_list("reduce_mlp", "mlp_size", "mlp_layers")
        int_list("decoder_mlp", "mlp_size", "mlp_layers")
        tails = args.get("group_tail_conv")
        if "group_tail_conv" in args and not (
            isinstance(tails, (list, tuple))
            and len(tails) <= b["groups"][1]
            and all(isinstance(t, bool) for t in tails)
        ):
            fail("group_tail_conv", "a list of booleans, one per group")
        if "depths" in args or "group_tail_conv" in args:  # one flag per group, given or by default
            defaults = inspect.signature(cls).parameters
            n_groups = len(args.get("depths", defaults["depths"].default))
            n_flags = len(args.get("group_tail_conv", defaults["group_tail_conv"].default))
            if n_flags != n_groups:
                key = "group_tail_conv" if "group_tail_conv" in args else "depths"
                fail(key, f"one group_tail_conv flag per group of depths ({n_groups} groups, {n_flags} flags)")
        for key in ("affine_norm", "unfold", "global_feature", "local_ensemble", "relative_coords"):
            if key in args and not isinstance(args[key], bool):
                fail(key, "true or false")
        if "norm" in args and args["norm"] not in ("instance", "batch", "none"):
            fail("norm", "'instance', 'batch' or 'none'")
        t = args.get("temperature")
        if "temperature" in args and not (
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and 0 < t <= 1000
        ):
            fail("temperature", "a finite number in (0, 1000]")
        check_classes_spec(args, where)

    def __init__(
        self,
        classes: str | Sequence[str] = "celebamask-hq",
        width: int = 64,
        depths: Sequence[int] = (2, 6, 16),
        group_tail_conv: Sequence[bool] = (False, False, True),
        norm: str = "instance",
        affine_norm: bool = False,
        unfold: bool = True,
        reduce_mlp: Sequence[int] = (256, 64),
        decoder_mlp: Sequence[int] = (256, 256, 256, 256),
        global_feature: bool = True,
        local_ensemble: bool = True,
        relative_coords: bool = True,
        temperature: float = 0.5,
        chunk_size: int = 65536,
    ):
        super().__init__()
        self.spec = {
            "name": "fpliif",
            "args": {
                "classes": classes if isinstance(classes, str) else list(classes),
                "width": width,
                "depths": list(depths),
                "group_tail_conv": list(group_tail_conv),
                "norm": norm,
                "affine_norm": affine_norm,
                "unfold": unfold,
                "reduce_mlp": list(reduce_mlp),
                "decoder_mlp": list(decoder_mlp),
                "global_feature": global_feature,
                "local_ensemble": local_ensemble,
                "relative_coords": relative_coords,
                "temperature": temperature,
                "chunk_size": chunk_size,
            },
        }
        if temperature <= 0:
            raise ValueError(f"temperature: must be positive, got {temperature}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size: must be positive, got {chunk_size}")
        if width <= 0:
            raise ValueError(f"width: must be positive, got {width}")
        if not depths or any(int(d) < 0 for d in depths):
            raise ValueError(f"depths: expected non-negative resblock counts per group, got {list(depths)}")
        self.label_set = resolve_label_set(classes)
        self.temperature = float(temperature)
        self.chunk_size = int(chunk_size)
        self.unfold = unfold
        self.global_feature = global_feature
        self.local_ensemble = local_ensemble
        self.relative_coords = relative_coords
        self.encoder = Encoder(width, depths, group_tail_conv, norm, affine_norm)
        rc_in = width * 9 if unfold else width
        self.reduce = mlp([rc_in, *reduce_mlp]) if reduce_mlp else nn.Identity()
        latent = reduce_mlp[-1] if reduce_mlp else rc_in
        q_in = latent + (width if global_feature else 0) + 2
        self.mlp = mlp([q_in, *decoder_mlp, self.num_classes])
        self.factored_decoder = True
        self.quantized_tail: tuple[nn.Module, ...] | None = None
        self.points_decoded = 0
        self._cast_cache: tuple[tuple[Any, ...], QueryWeights] | None = None  # see _query_weights
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------------------- encoder
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Feature grid Z (B, width, H/4, W/4) of an image batch in [0, 1]."""
        check_image(image)
        min_side = 2 * self.encoder.stride
        if min(image.shape[-2:]) < min_side:
            raise ValueError(f"image: spatial size {tuple(image.shape[-2:])} is too small; need at least {min_side} px")
        return self.encoder((image - self.mean) / self.std)

    # ----------------------------------------------------------------------------------------------- decoder
    def latent_codes(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Z -> (Z_hat as (B, h, w, D) channels-last, global feature g (B, width) or None)."""
        g = z.mean(dim=(2, 3)) if self.global_feature else None
        feat = unfold3x3(z) if self.unfold else z
        zhat = self.reduce(feat.permute(0, 2, 3, 1))
        return zhat, g

    def prepare(self, z: torch.Tensor) -> LatentGrid:
        """What the per-query decoder reads from Z, computed once per latent cell (see :class:`LatentGrid`).

        The first decoder layer is linear in [Ẑ code, g, position]: ``W [c; g; p] + b = (W_c c + W_g g + b)
        + W_p p``. With ``factored_decoder`` (the default) the bracket is computed here for every latent cell,
        so a query only gathers it and adds ``W_p p``: the same function, without the 128 x 256 part of the
        first layer per query and ensemble member. Otherwise the cells hold Ẑ and g is kept for the query.
        """
        zhat, g = self.latent_codes(z)
        if not self.factored_decoder:
            return LatentGrid(zhat, g, False)
        first = self.mlp[0]
        d = zhat.shape[-1]
        cells = F.linear(zhat, first.weight[:, :d], first.bias)
        if g is not None:
            cells = cells + F.linear(g, first.weight[:, d : d + g.shape[-1]])[:, None, None, :]
        return LatentGrid(cells, None, True)

    def decode(self, z: torch.Tensor, coords: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Logits (B, Q, C) at query coordinates (B, Q, 2) in [-1, 1], (x, y) order, chunked over Q."""
        if not isinstance(z, torch.Tensor) or z.dim() != 4:
            raise ValueError(f"z: expected the encoder's feature grid (B, C, h, w), got {getattr(z, 'shape', z)!r}")
        check_coords(coords, z.shape[0])
        step = self._chunk(chunk_size)
        return self._decode_checked(self.prepare(z), coords, step)

    def decode_prepared(self, grid: LatentGrid, coords: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """:meth:`decode` from the latent grid of :meth:`prepare` (prepare once, query many times)."""
        if not isinstance(grid, LatentGrid):
            raise ValueError(f"grid: expected a LatentGrid from FPLIIF.prepare, got {type(grid).__name__}")
        check_coords(coords, grid.cells.shape[0])
        return self._decode_checked(grid, coords, self._chunk(chunk_size))

    def decode_adaptive(
        self,
        z: torch.Tensor | LatentGrid,
        size: int | tuple[int, int],
        options: AdaptiveOptions | Mapping[str, Any] | None = None,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, AdaptiveStats]:
        """Logits (B, C, H, W) at output ``size`` by coarse-to-fine querying (:func:`fpliif.adaptive.adaptive_decode`),
        and how many points were decoded. ``z``: the encoder's grid or the result of :meth:`prepare`."""
        if isinstance(z, LatentGrid):
            grid = z
        elif isinstance(z, torch.Tensor) and z.dim() == 4:
            grid = self.prepare(z)
        else:
            raise ValueError(f"z: expected the encoder's feature grid (B, C, h, w), got {getattr(z, 'shape', z)!r}")
        h, w = check_size(size)
        step = self._chunk(chunk_size)
        logits, stats = adaptive_decode(
            lambda c: self._decode_checked(grid, c, step),
            (h, w),
            batch=grid.cells.shape[0],
            temperature=self.temperature,
            options=options,
            like=grid.cells,
            latent_size=tuple(grid.cells.shape[1:3]),
        )
        return logits.permute(0, 3, 1, 2), stats

    def _chunk(self, chunk_size: int | None) -> int:
        step = self.chunk_size if chunk_size is None else int(chunk_size)
        if step <= 0:
            raise ValueError(f"chunk_size: must be positive, got {chunk_size}")
        return step

    def _decode_checked(self, grid: LatentGrid, coords: torch.Tensor, step: int) -> torch.Tensor:
        if grid.cells.device.type == "cpu":
            step = min(step, CPU_QUERY_BLOCK)
        compiling = torch.compiler.is_compiling()
        if not compiling:  # a Python counter: no graph breaks or guards under torch.compile
            self.points_decoded += coords.shape[0] * coords.shape[1]
        if coords.shape[1] <= step:
            return self.query(grid, coords)
        outs = []
        for c in coords.split(step, dim=1):
            if not compiling:
                check_deadline()  # stop between chunks once a deadline set by fpliif.limits.scope has passed
            outs.append(self.query(grid, c))
        return torch.cat(outs, dim=1)

    def query(self, grid: LatentGrid, coords: torch.Tensor) -> torch.Tensor:
        """Logits (B, Q, C) at ``coords`` (B, Q, 2), unchecked and unchunked (traceable for ONNX export)."""
        cells = grid.cells
        flat = cells.flatten(1, 2)
        size = _grid_wh(cells, coords)  # (w, h), in the coordinates' dtype
        wi = size[0].to(torch.int64)
        first = self.mlp[0]
        pos_weight, tail = self._query_weights(cells.device)
        shifts = [(sx, sy) for sx in (-1, 1) for sy in (-1, 1)] if self.local_ensemble else [(0, 0)]
        absolute = None if self.relative_coords else coords.to(cells.dtype)
        pos_abs = F.linear(absolute, pos_weight) if grid.factored and absolute is not None else None
        # without autograd (and outside tracing: the exported graph keeps its ReLU nodes) the MLP's ReLUs run in
        # place on the fresh activations: the same values, without a new tensor per layer
        inplace = not torch.is_grad_enabled() and not torch.jit.is_tracing()
        preds, areas = [], []
        for sx, sy in shifts:
            # LIIF: move the query half a latent cell (plus a tiny epsilon) towards each neighbour and take
            # the latent code whose cell contains it (border cells are reused outside the grid).
            shifted = coords + torch.tensor([sx, sy], device=coords.device, dtype=coords.dtype) / size + 1e-6
            idx = torch.minimum(torch.floor((shifted + 1) / 2 * size).clamp_min(0), size - 1)
            center = (2 * idx + 1) / size - 1
            lin = idx[..., 1].to(torch.int64) * wi + idx[..., 0].to(torch.int64)
            code = gather_rows(flat, lin)
            rel = (coords - center) * size  # Eq. 2, in latent cells
            if grid.factored:
                if pos_abs is None:
                    hidden = code + F.linear(rel.to(code.dtype), pos_weight)
                else:
                    hidden = code + pos_abs
            else:
                parts = [code]
                if grid.g is not None:
                    parts.append(grid.g.unsqueeze(1).expand(-1, coords.shape[1], -1).to(code.dtype))
                parts.append(rel.to(code.dtype) if absolute is None else absolute)
                hidden = first(torch.cat(parts, dim=-1))
            for layer in tail:
                hidden = hidden.relu_() if inplace and type(layer) is nn.ReLU else layer(hidden)
            preds.append(hidden)
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        if len(preds) == 1:
            return preds[0]
        weights = ensemble_weights(areas)
        # weights stay in the coordinates' precision, so a bf16 decoder still blends in fp32
        out = preds[0] * weights[0].unsqueeze(-1)
        for p, wt in zip(preds[1:], weights[1:], strict=True):
            out = out + p * wt.unsqueeze(-1)
        return out

    def _query_weights(self, device: torch.device) -> QueryWeights:
        """The first layer's position columns and the MLP tail :meth:`query` runs. Under autocast to another dtype
        than the weights' (bf16 inference), without autograd and outside tracing or compiling: copies cast to that
        dtype (:func:`cast_query_weights`), cached until a weight changes (its tensor, storage or in-place version).
        Autocast would cast every weight again on each call (~0.4 ms per bf16 call); the values are the same."""
        pos_weight, tail = self.mlp[0].weight[:, -2:], self._mlp_tail
        if (
            torch.is_grad_enabled()
            or torch.jit.is_tracing()
            or torch.compiler.is_compiling()
            or self.quantized_tail is not None
            or not torch.is_autocast_enabled(device.type)
        ):
            return QueryWeights(pos_weight, tail)
        dtype = torch.get_autocast_dtype(device.type)
        params = list(self.mlp.parameters())
        if dtype == torch.float32 or any(p.dtype != torch.float32 or p.device != device for p in params):
            return QueryWeights(pos_weight, tail)
        key = (dtype, *((p, p.data_ptr(), p._version) for p in params))  # holding p: its storage is not reused
        cached = self._cast_cache
        if cached is None or len(cached[0]) != len(key) or not all(map(_same_key, cached[0], key)):
            self._cast_cache = cached = (key, cast_query_weights(pos_weight, tail, dtype))
        return cached[1]

    @property
    def _mlp_tail(self) -> Sequence[nn.Module]:
        """The per-query MLP after its first linear layer (``quantized_tail`` where set, e.g. int8 by
        :func:`fpliif.quantize.set_int8_decoder`)."""
        return self.quantized_tail if self.quantized_tail is not None else list(self.mlp)[1:]

    # ----------------------------------------------------------------------------------------------- dense
    def forward(self, image: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Logits (B, C, H, W) at output ``size`` (default: the input size) from any input size."""
        check_image(image)
        h, w = check_size(size if size is not None else tuple(image.shape[-2:]))
        z = self.encode(image)
        coords = pixel_centers(h, w, device=image.device).unsqueeze(0).expand(z.shape[0], -1, -1)
        logits = self.decode(z, coords)
        return logits.view(z.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()


class QueryWeights(NamedTuple):
    """What :meth:`FPLIIF.query` applies per query: the first layer's position columns (F, 2) and the MLP after the
    first layer (modules, or ``F.linear`` with cast weights)."""

    pos_weight: torch.Tensor
    tail: Sequence[Callable[[torch.Tensor], torch.Tensor]]


def cast_query_weights(pos_weight: torch.Tensor, tail: Sequence[nn.Module], dtype: torch.dtype) -> QueryWeights:
    """``pos_weight`` and ``tail`` (modules: Linear, ReLU) cast to ``dtype`` as autocast casts them: a Linear becomes
    ``F.linear`` with cast weights, and on a CPU a Linear followed by a ReLU one fused oneDNN call where it gives
    exactly the two calls' values (:func:`fused_linear`)."""
    layers: list[Callable[[torch.Tensor], torch.Tensor]] = []
    i = 0
    while i < len(tail):
        layer = tail[i]
        if type(layer) is not nn.Linear:
            layers.append(layer)
            i += 1
            continue
        weight, bias = layer.weight.to(dtype), None if layer.bias is None else layer.bias.to(dtype)
        relu = i + 1 < len(tail) and type(tail[i + 1]) is nn.ReLU
        fused = fused_linear(weight, bias, relu)
        layers.append(fused or functools.partial(F.linear, weight=weight, bias=bias))
        i += 2 if relu and fused else 1
    return QueryWeights(pos_weight.to(dtype).contiguous(), tuple(layers))


def fused_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, relu: bool
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``x -> relu(F.linear(x, weight, bias))`` (or without the ReLU) as one oneDNN call (the op TorchInductor uses
    on CPU: the ReLU runs on the output while it is in cache; bf16, 4096 x 256 queries, one thread: 0.56 ms against
    1.07 ms), or None where that op is missing or does not give the two calls' values bit for bit on a probe."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    attr = "relu" if relu else "none"

    def call(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "")

    def plain(x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, weight, bias)
        return out.relu_() if relu else out

    probe = torch.randn(1, 300, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    try:
        ok = all(torch.equal(call(x), plain(x)) for x in (probe, probe[:, :5]))
    except (AttributeError, RuntimeError, NotImplementedError):
        return None
    return call if ok else None


def _same_key(a: Any, b: Any) -> bool:
    """Entries of :meth:`FPLIIF._query_weights`' cache keys: the same dtype, or the same tensor, address and version."""
    if isinstance(a, tuple):
        return a[0] is b[0] and a[1:] == b[1:]
    return a == b


def gather_rows(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, Q, d): rows ``idx`` (B, Q) of each batch member's (B, N, d) ``flat``. One ``index_select`` of whole rows
    (bf16, 4096 x 256 rows on one CPU thread: 0.12 ms against 2.35 ms for ``torch.gather`` with the index expanded
    over d, the same values); when tracing (ONNX export), that ``torch.gather``, so the exported graph is unchanged."""
    if torch.jit.is_tracing():
        return torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
    b, n, d = flat.shape
    if b > 1:
        idx = idx + torch.arange(0, b * n, n, device=idx.device)[:, None]
    return flat.reshape(b * n, d).index_select(0, idx.reshape(-1)).view(b, idx.shape[1], d)


def ensemble_weights(areas: list[torch.Tensor]) -> list[torch.Tensor]:
    """LIIF's rule: each of the 4 predictions is weighted by the area opposite to it, normalised to sum 1.

    ``areas`` are ordered (-x,-y), (-x,+y), (+x,-y), (+x,+y); the diagonal opposite of i is 3 - i.
    """
    total = areas[0] + areas[1] + areas[2] + areas[3]
    return [areas[3 - i] / total for i in range(4)]

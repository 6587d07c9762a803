"""The layer library: conv blocks, the attention family, pooling variants.

Every op is registered by name; an ``ArchSpec`` holds only these names, never
callables. The classes depend on ``torch`` and ``math`` alone, so the exporter can
copy their source into a standalone ``model.py`` verbatim.

The attention family is written once over N positions (``attend``): a 2-D feature
map is N = H·W positions, a sequence is N positions.

Every layer serves images and sequences: a factory or class takes ``dims`` (2 for
(B, C, H, W) maps, 1 for (B, C, L) sequences) or a map ``shape`` ((H, W) or (L,)) and picks
Conv2d or Conv1d, BatchNorm2d or BatchNorm1d and so on; the module names inside stay the
same, so an image model's ``state_dict`` keys do not depend on this.

Text is padded to a fixed length with id 0, and padded positions must not change what a
network computes for the real ones. Every module that mixes positions takes an optional
``mask`` (B, 1, L), True at real tokens (:func:`token_mask`; ``None`` for images): convs
read ``x · mask`` (so a pad looks like the zero padding past a sequence's end), norms take
their statistics over real positions, attention never attends to a padded key, and pools
skip pads. Positions a pad-only window produces are zeros. So a text gives the same logits
however far it is padded (``tests/model/test_masking.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to factories. Registering a name twice is a bug and raises."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)


# --------------------------------------------------------------------------- basics

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu", lambda: nn.ReLU(inplace=True))
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("silu", lambda: nn.SiLU(inplace=True))
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("tanh", nn.Tanh)


# The 1-D and 2-D versions of the torch layers below, by the number of spatial dims.
CONV: dict[int, type[nn.Conv1d] | type[nn.Conv2d]] = {1: nn.Conv1d, 2: nn.Conv2d}


def token_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids → (B, 1, L) bool, True at real tokens (id 0 pads). The first
    position always counts, so an empty text still has one position to pool."""
    first = torch.arange(ids.shape[-1], device=ids.device) == 0
    return ((ids != 0) | first).unsqueeze(1)


def halve_mask(mask: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """The mask after an ``stride``-wide, ceil-mode downsample: a window with any real
    position is real."""
    return F.max_pool1d(mask.float(), stride, ceil_mode=True) > 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, L) → (B, C): the mean over real positions."""
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1)


def masked_avg_pool(x: torch.Tensor, mask: torch.Tensor, stride: int) -> torch.Tensor:
    """``stride``-wide ceil-mode average pooling over real positions only (0 where a
    window has none): avg(x·m) / avg(m), the window sizes cancel."""
    m = mask.to(x.dtype)
    total = F.avg_pool1d(x * m, stride, ceil_mode=True)
    return total / F.avg_pool1d(m, stride, ceil_mode=True).clamp_min(1e-6)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over sequences whose training statistics skip padded positions (short
    texts are mostly padding: its zeros would pull the mean and variance). In eval it is
    a per-position affine map, the same with or without a mask."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None or not self.training:
            return super().forward(x)
        m = mask.to(torch.float32)
        xf = x.float()
        count = m.sum()
        mean = (xf * m).sum((0, 2)) / count
        var = ((xf - mean[:, None]) ** 2 * m).sum((0, 2)) / count
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                unbiased = var * count / (count - 1).clamp_min(1)
                # momentum None: a cumulative average, as nn.BatchNorm1d keeps one
                factor = self.momentum
                if factor is None:
                    factor = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(unbiased, factor)
        y = (xf - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y.to(x.dtype)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics (per example and group) skip padded positions."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        b, c, n = x.shape
        xf = x.float().reshape(b, self.num_groups, -1, n)
        m = mask.to(torch.float32).reshape(b, 1, 1, n)
        count = m.sum((2, 3), keepdim=True) * xf.shape[2]
        mean = (xf * m).sum((2, 3), keepdim=True) / count
        var = ((xf - mean) ** 2 * m).sum((2, 3), keepdim=True) / count
        y = ((xf - mean) * torch.rsqrt(var + self.eps)).reshape(b, c, n)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y.to(x.dtype)


MASKED_NORMS = (MaskedBatchNorm1d, MaskedGroupNorm)


def _batch_norm(channels: int, dims: int) -> nn.Module:
    return MaskedBatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)


def _group_norm(channels: int, dims: int) -> nn.Module:
    # gcd keeps the group count a divisor of any width; 8 groups where the width allows.
    groups = math.gcd(channels, 8)
    return MaskedGroupNorm(groups, channels) if dims == 1 else nn.GroupNorm(groups, channels)


# Norm factories take (channels, dims).
NORMS: Registry[Callable[[int, int], nn.Module]] = Registry("norm")
NORMS.register("batch", _batch_norm)
NORMS.register("group", _group_norm)
NORMS.register("none", lambda channels, dims: nn.Identity())


class ConvNormAct(nn.Sequential):
    """Conv (same padding unless ``padding`` says) → norm → activation; the conv has a
    bias only without a norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm: str = "batch",
        activation: str | None = "relu",
        dims: int = 2,
    ) -> None:
        conv = CONV[dims]
        pad = kernel // 2 if padding is None else padding
        super().__init__(
            conv(cin, cout, kernel, stride, pad, groups=groups, bias=norm == "none"),
            NORMS[norm](cout, dims),
            ACTIVATIONS[activation]() if activation else nn.Identity(),
        )
        self.stride = stride

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        conv, norm, act = self
        if mask is None:
            return act(norm(conv(x)))
        x = conv(x * mask)
        if isinstance(norm, MASKED_NORMS):  # statistics over the output's real positions
            x = norm(x, mask if self.stride == 1 else halve_mask(mask, self.stride))
        else:
            x = norm(x)
        return act(x)


# --------------------------------------------------------------------------- blocks


class PlainBlock(nn.Module):
    """One conv → norm → activation, as in VGG."""

    def __init__(
        self, cin: int, cout: int, kernel: int, norm: str, activation: str, dims: int = 2
    ) -> None:
        super().__init__()
        self.conv = ConvNormAct(cin, cout, kernel, norm=norm, activation=activation, dims=dims)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x, mask)


class ResidualBlock(nn.Module):
    """ResNet basic block: two k×k convs and a skip (a 1×1 projection when widths differ)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, norm: str, activation: str, dims: int = 2
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel, norm=norm, activation=activation, dims=dims)
        self.conv2 = ConvNormAct(cout, cout, kernel, norm=norm, activation=None, dims=dims)
        self.skip = (
            nn.Identity()
            if cin == cout
            else ConvNormAct(cin, cout, 1, norm=norm, activation=None, dims=dims)
        )
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        skip = x if isinstance(self.skip, nn.Identity) else self.skip(x, mask)
        return self.act(self.conv2(self.conv1(x, mask), mask) + skip)


class SeparableBlock(nn.Module):
    """Depthwise k×k then pointwise 1×1 (MobileNet): cheap in FLOPs; a skip when widths match."""

    def __init__(
        self, cin: int, cout: int, kernel: int, norm: str, activation: str, dims: int = 2
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(
            cin, cin, kernel, groups=cin, norm=norm, activation=activation, dims=dims
        )
        self.pointwise = ConvNormAct(cin, cout, 1, norm=norm, activation=activation, dims=dims)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x, mask), mask)
        return x + y if self.residual else y


# Block factories take (cin, cout, kernel, norm, activation, dims).
BLOCKS: Registry[Callable[[int, int, int, str, str, int], nn.Module]] = Registry("block")
BLOCKS.register("plain", PlainBlock)
BLOCKS.register("residual", ResidualBlock)
BLOCKS.register("separable", SeparableBlock)


# --------------------------------------------------------------------------- attention

# How attention scores become weights. One implementation over N positions, shared by
# every attention module here (2-D maps are N = H·W positions, sequences N tokens).
NORMALIZATIONS = ("softmax", "sigmoid", "sigmoid_norm")


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    normalization: str,
    bias: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention of ``q`` (B, h, Nq, d) over ``k``, ``v`` (B, h, Nk, d).

    - ``softmax``: softmax(QKᵀ/√d + bias) V, by ``F.scaled_dot_product_attention``.
    - ``sigmoid``: σ(QKᵀ/√d + bias + b) V elementwise, with b = −log Nk: the bias that
      keeps the summed weights O(1) at init, so sigmoid attention trains stably.
    - ``sigmoid_norm``: w = σ(QKᵀ/√d + bias), each row divided by its sum, then w V —
      sigmoid-preprocessed, then normalised, N×N attention weights.

    ``bias`` (h, Nq, Nk), when given, is an additive positional bias on the scores.
    ``key_mask`` (B, 1, 1, Nk), when given, is True at the keys that take part (padded
    keys get zero weight, and N counts only the others); every row needs one.
    """
    if normalization == "softmax":
        mask = bias
        if key_mask is not None:
            mask = key_mask if bias is None else bias.masked_fill(~key_mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias
    if normalization == "sigmoid":
        if key_mask is None:
            return torch.sigmoid(scores - math.log(k.shape[-2])) @ v
        n = key_mask.sum(-1, keepdim=True).to(scores.dtype)  # real keys, (B, 1, 1, 1)
        return (torch.sigmoid(scores - n.log()) * key_mask) @ v
    if normalization == "sigmoid_norm":
        # σ(s_i) / Σ_j σ(s_j) is softmax(log σ(s)): the same weights, but a row whose
        # scores are all far below zero no longer sums to 0 (0/0 = NaN in training).
        log_weights = F.logsigmoid(scores)
        if key_mask is not None:
            log_weights = log_weights.masked_fill(~key_mask, float("-inf"))
        return torch.softmax(log_weights, dim=-1) @ v
    raise ValueError(f"unknown attention normalization {normalization!r}")


def relative_position_index(*sizes: int) -> torch.Tensor:
    """(N, N) index into a table of the relative offsets of N = ∏ sizes positions.

    Swin-style: an offset along a side of size s is one of 2s − 1 values, so a sequence
    (L,) has a (2L − 1)-entry table and an H×W map a (2H − 1)(2W − 1)-entry one. A 1×L map
    and an L sequence get the same index.
    """
    grids = torch.meshgrid(*(torch.arange(s) for s in sizes), indexing="ij")
    coords = torch.stack([g.flatten() for g in grids])  # (dims, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (dims, N, N)
    index = torch.zeros_like(rel[0])
    for axis, size in enumerate(sizes):  # mixed radix: the last side varies fastest
        index = index * (2 * size - 1) + rel[axis] + size - 1
    return index


def relative_table_size(shape: tuple[int, ...]) -> int:
    """Entries of the relative-offset table of a map of ``shape``."""
    return math.prod(2 * s - 1 for s in shape)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the N positions of a feature map or sequence.

    ``shape`` is the map's (H, W) (N = H·W, 2-D convs) or the sequence's (L,) (N = L,
    1-D convs). Q, K and V come from k×k (k-wide) convolutions (k = 1: the usual linear
    projections; k > 1: MANet's convolutional self-attention). With ``pool_stride`` s > 1
    keys and values come from an s×s (s-wide) average-pooled map (MANet's pooling
    self-attention), so the N×N score matrix shrinks to N×N/s² (N×N/s). The result joins
    the input through a per-channel gate initialised to zero: an inserted attention block
    starts as the identity.
    """

    rel_index: torch.Tensor  # a buffer, with relbias

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        normalization: str,
        shape: tuple[int, ...],
        *,
        kernel: int = 1,
        pool_stride: int = 1,
        position: str = "none",
    ) -> None:
        super().__init__()
        dims = len(shape)
        conv = CONV[dims]
        inner = heads * head_dim
        self.heads = heads
        self.normalization = normalization
        self.pool_stride = pool_stride
        self.q = conv(channels, inner, kernel, padding=kernel // 2)
        self.k = conv(channels, inner, kernel, padding=kernel // 2)
        self.v = conv(channels, inner, kernel, padding=kernel // 2)
        self.out = conv(inner, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1, channels, *(1,) * dims))
        self.position = position
        if position == "learned":
            self.pos = nn.Parameter(torch.randn(1, channels, *shape) * 0.02)
        elif position == "relbias":
            self.rel_table = nn.Parameter(torch.zeros(heads, relative_table_size(shape)))
            self.register_buffer("rel_index", relative_position_index(*shape), persistent=False)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        # (B, h·d, *map) -> (B, h, N, d)
        t = t.flatten(2)
        return t.reshape(t.shape[0], self.heads, -1, t.shape[-1]).transpose(-2, -1)

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool1d if t.dim() == 3 else F.avg_pool2d
        return pool(t, self.pool_stride, ceil_mode=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, *shape = x.shape
        xq = x + self.pos if self.position == "learned" else x
        xk = xq
        xv = x
        key_mask = mask
        if mask is not None:  # (k-wide) projections read real positions only
            xq, xv = xq * mask, xv * mask
            xk = xq
        if self.pool_stride > 1:
            if mask is None:
                xk, xv = self._pool(xk), self._pool(xv)
            else:
                xk = masked_avg_pool(xk, mask, self.pool_stride)
                xv = masked_avg_pool(xv, mask, self.pool_stride)
                key_mask = halve_mask(mask, self.pool_stride)
        bias = None
        if self.position == "relbias":
            n = math.prod(shape)
            bias = self.rel_table[:, self.rel_index.reshape(-1)].reshape(self.heads, n, n)
        q, k, v = self._heads(self.q(xq)), self._heads(self.k(xk)), self._heads(self.v(xv))
        if bias is not None:
            bias = bias.to(q.dtype)  # autocast makes q bf16; the table stays fp32
        if key_mask is not None:
            key_mask = key_mask.unsqueeze(1)  # (B, 1, 1, Nk): the same for every head
        y = attend(q, k, v, self.normalization, bias, key_mask)  # (B, h, N, d)
        y = y.transpose(-2, -1).reshape(b, -1, *shape)
        return x + self.gate * self.out(y)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: channels reweighted by a bottleneck MLP of their means.

    Gated like the spatial attention (x + gate·SE(x), gate zero at init) so inserting
    it leaves a network's function unchanged at first.
    """

    def __init__(self, channels: int, reduction: int, dims: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = CONV[dims](channels, hidden, 1)
        self.fc2 = CONV[dims](hidden, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1, channels, *(1,) * dims))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            means = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)  # (B, C, 1[, 1])
        else:
            means = masked_mean(x, mask)[..., None]
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(means))))
        return x + self.gate * (x * s)


class AttentionArgs(Protocol):
    """What an attention factory reads (``nas.model.AttentionSpec`` has these fields)."""

    @property
    def op(self) -> str: ...
    @property
    def heads(self) -> int: ...
    @property
    def head_dim(self) -> int | None: ...  # None: channels // heads
    @property
    def position(self) -> str: ...
    @property
    def kernel(self) -> int: ...
    @property
    def pool_stride(self) -> int: ...
    @property
    def reduction(self) -> int: ...


def _self_attention(channels: int, shape: tuple[int, ...], a: AttentionArgs) -> nn.Module:
    # The MANet modules are this attention with softmax weights and conv or pooled keys.
    normalization = a.op if a.op in NORMALIZATIONS else "softmax"
    return SelfAttention(
        channels,
        a.heads,
        a.head_dim or channels // a.heads,
        normalization,
        shape,
        kernel=a.kernel,
        pool_stride=a.pool_stride,
        position=a.position,
    )


def _channel_attention(channels: int, shape: tuple[int, ...], a: AttentionArgs) -> nn.Module:
    return ChannelAttention(channels, a.reduction, len(shape))


# Factories take (channels, shape, args); shape is the feature map's (H, W) or the
# sequence's (L,).
ATTENTIONS: Registry[Callable[[int, tuple[int, ...], AttentionArgs], nn.Module]] = Registry(
    "attention"
)
for _name in (*NORMALIZATIONS, "manet_conv", "manet_pool"):
    ATTENTIONS.register(_name, _self_attention)
ATTENTIONS.register("channel", _channel_attention)


# --------------------------------------------------------------------------- pooling


class AttentionPool(nn.Module):
    """Stride-2 downsampling by softmax-weighted averaging in each 2×2 (2-wide) window.

    A 1×1 conv scores every position per channel; each output is the softmax-weighted
    mean of its window (local importance pooling). Odd sizes round up, as ``ceil_mode``
    pooling does: missing positions get −inf scores and zero weight.
    """

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.score = CONV[dims](channels, channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:  # a pad gets no weight; a window of pads pools to zero
            x = x * mask
        logits = self.score(x)
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        # F.pad lists the last side first: (0, pad of the last side, 0, pad of the one before)
        pad = [p for side in reversed(x.shape[2:]) for p in (0, side % 2)]
        if any(pad):
            x = F.pad(x, pad)
            logits = F.pad(logits, pad, value=float("-inf"))
        weights = _windows(logits).softmax(dim=-1)
        return (_windows(x) * weights).sum(dim=-1)


def _windows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, *sides), sides even → (B, C, *sides/2, 2^dims): each window's positions last."""
    b, c, *sides = t.shape
    dims = len(sides)
    t = t.reshape(b, c, *(n for side in sides for n in (side // 2, 2)))
    outer, inner = range(2, 2 + 2 * dims, 2), range(3, 3 + 2 * dims, 2)
    return t.permute(0, 1, *outer, *inner).reshape(b, c, *(s // 2 for s in sides), 2**dims)


class MaskedMaxPool1d(nn.MaxPool1d):
    """Max pooling by 2 (ceil mode) in which a pad never wins; a window of pads gives 0."""

    def __init__(self) -> None:
        super().__init__(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        y = super().forward(x.masked_fill(~mask, torch.finfo(x.dtype).min))
        return y.where(halve_mask(mask), 0)


class MaskedAvgPool1d(nn.AvgPool1d):
    """Average pooling by 2 (ceil mode) over the real positions of each window."""

    def __init__(self) -> None:
        super().__init__(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x) if mask is None else masked_avg_pool(x, mask, 2)


def _max_pool(channels: int, norm: str, activation: str, dims: int) -> nn.Module:
    return MaskedMaxPool1d() if dims == 1 else nn.MaxPool2d(2, 2, ceil_mode=True)


def _avg_pool(channels: int, norm: str, activation: str, dims: int) -> nn.Module:
    return MaskedAvgPool1d() if dims == 1 else nn.AvgPool2d(2, 2, ceil_mode=True)


# Downsample factories take (channels, norm, activation, dims).
DOWNSAMPLES: Registry[Callable[[int, str, str, int], nn.Module]] = Registry("downsample")
DOWNSAMPLES.register("none", lambda channels, norm, activation, dims: nn.Identity())
DOWNSAMPLES.register("max", _max_pool)
DOWNSAMPLES.register("avg", _avg_pool)
DOWNSAMPLES.register(
    "conv",
    lambda channels, norm, activation, dims: ConvNormAct(
        channels, channels, 3, stride=2, norm=norm, activation=activation, dims=dims
    ),
)
DOWNSAMPLES.register(
    "attention", lambda channels, norm, activation, dims: AttentionPool(channels, dims)
)


# Global pools flatten the map's positions first, so one module serves every dims; a
# sequence's pads (``mask``) are skipped.


def _global_avg(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x.flatten(2).mean(-1) if mask is None else masked_mean(x, mask)


def _global_max(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        x = x.masked_fill(~mask, float("-inf"))  # the first position is always real
    return x.flatten(2).amax(-1)


class AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated (2·C features)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([_global_avg(x, mask), _global_max(x, mask)], dim=1)


class AttentionGlobalPool(nn.Module):
    """Global pooling by a learned query: softmax weights over the N positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(channels))
        self.key = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        scores = self.key(tokens) @ self.query * tokens.shape[-1] ** -0.5  # (B, N)
        if mask is not None:  # padded positions get no weight
            scores = scores.masked_fill(~mask.flatten(1), float("-inf"))
        return (scores.softmax(dim=1).unsqueeze(-1) * tokens).sum(dim=1)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return _global_avg(x, mask)


class GlobalMaxPool(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return _global_max(x, mask)


class Flatten(nn.Flatten):
    """All positions' features in a row; a sequence's pads as zeros."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if mask is None else x * mask)


# Global pools map (B, C, *map) to (B, features); the factory takes the channel count.
GLOBAL_POOLS: Registry[Callable[[int], nn.Module]] = Registry("global pool")
GLOBAL_POOLS.register("avg", lambda channels: GlobalAvgPool())
GLOBAL_POOLS.register("max", lambda channels: GlobalMaxPool())
GLOBAL_POOLS.register("avgmax", lambda channels: AvgMaxPool())
GLOBAL_POOLS.register("attention", AttentionGlobalPool)
GLOBAL_POOLS.register("flatten", lambda channels: Flatten())


# --------------------------------------------------------------------------- text


class TokenEmbedding(nn.Embedding):
    """The stem of a text network: (B, L) token ids → (B, E, L), channels first like a
    conv's output, so the 1-D stages after it are the image stages' 1-D twins.

    Id 0 pads: its vector is zero and gets no gradient.
    """

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__(vocab_size, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).transpose(1, 2)

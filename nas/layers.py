"""The layer library: conv blocks, the attention family, pooling variants.

Every op is registered by name; an ``ArchSpec`` holds only these names, never
callables. The classes depend on ``torch`` and ``math`` alone, so the exporter can
copy their source into a standalone ``model.py`` verbatim.

The attention family is written once over N positions (``attend``): a 2-D feature
map is N = H·W positions, a sequence is N positions.
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


def _group_norm(channels: int) -> nn.Module:
    # gcd keeps the group count a divisor of any width; 8 groups where the width allows.
    return nn.GroupNorm(math.gcd(channels, 8), channels)


NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")
NORMS.register("batch", nn.BatchNorm2d)
NORMS.register("group", _group_norm)
NORMS.register("none", lambda channels: nn.Identity())


class ConvNormAct(nn.Sequential):
    """Conv (same padding) → norm → activation; the conv has a bias only without a norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        norm: str = "batch",
        activation: str | None = "relu",
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=norm == "none"),
            NORMS[norm](cout),
            ACTIVATIONS[activation]() if activation else nn.Identity(),
        )


# --------------------------------------------------------------------------- blocks


class PlainBlock(nn.Module):
    """One conv → norm → activation, as in VGG."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, activation: str) -> None:
        super().__init__()
        self.conv = ConvNormAct(cin, cout, kernel, norm=norm, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """ResNet basic block: two k×k convs and a skip (a 1×1 projection when widths differ)."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, activation: str) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel, norm=norm, activation=activation)
        self.conv2 = ConvNormAct(cout, cout, kernel, norm=norm, activation=None)
        self.skip = (
            nn.Identity() if cin == cout else ConvNormAct(cin, cout, 1, norm=norm, activation=None)
        )
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class SeparableBlock(nn.Module):
    """Depthwise k×k then pointwise 1×1 (MobileNet): cheap in FLOPs; a skip when widths match."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, activation: str) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(cin, cin, kernel, groups=cin, norm=norm, activation=activation)
        self.pointwise = ConvNormAct(cin, cout, 1, norm=norm, activation=activation)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


BLOCKS: Registry[Callable[[int, int, int, str, str], nn.Module]] = Registry("block")
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
) -> torch.Tensor:
    """Multi-head attention of ``q`` (B, h, Nq, d) over ``k``, ``v`` (B, h, Nk, d).

    - ``softmax``: softmax(QKᵀ/√d + bias) V, by ``F.scaled_dot_product_attention``.
    - ``sigmoid``: σ(QKᵀ/√d + bias + b) V elementwise, with b = −log Nk: the bias that
      keeps the summed weights O(1) at init, so sigmoid attention trains stably.
    - ``sigmoid_norm``: w = σ(QKᵀ/√d + bias), each row divided by its sum, then w V —
      sigmoid-preprocessed, then normalised, N×N attention weights.

    ``bias`` (h, Nq, Nk), when given, is an additive positional bias on the scores.
    """
    if normalization == "softmax":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias
    if normalization == "sigmoid":
        return torch.sigmoid(scores - math.log(k.shape[-2])) @ v
    if normalization == "sigmoid_norm":
        weights = torch.sigmoid(scores)
        return (weights / weights.sum(dim=-1, keepdim=True)) @ v
    raise ValueError(f"unknown attention normalization {normalization!r}")


def relative_position_index(height: int, width: int) -> torch.Tensor:
    """(N, N) index into a ((2H−1)(2W−1))-entry table of relative offsets (Swin-style)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + height - 1) * (2 * width - 1) + (rel[1] + width - 1)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map.

    Q, K and V come from k×k convolutions (k = 1: the usual linear projections; k > 1:
    MANet's convolutional self-attention). With ``pool_stride`` s > 1 keys and values
    come from an s×s average-pooled map (MANet's pooling self-attention), so the N×N
    score matrix shrinks to N×N/s². The result joins the input through a per-channel
    gate initialised to zero: an inserted attention block starts as the identity.
    """

    rel_index: torch.Tensor  # a buffer, with relbias

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        normalization: str,
        height: int,
        width: int,
        *,
        kernel: int = 1,
        pool_stride: int = 1,
        position: str = "none",
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.normalization = normalization
        self.pool_stride = pool_stride
        self.q = nn.Conv2d(channels, inner, kernel, padding=kernel // 2)
        self.k = nn.Conv2d(channels, inner, kernel, padding=kernel // 2)
        self.v = nn.Conv2d(channels, inner, kernel, padding=kernel // 2)
        self.out = nn.Conv2d(inner, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.position = position
        if position == "learned":
            self.pos = nn.Parameter(torch.randn(1, channels, height, width) * 0.02)
        elif position == "relbias":
            self.rel_table = nn.Parameter(torch.zeros(heads, (2 * height - 1) * (2 * width - 1)))
            self.register_buffer(
                "rel_index", relative_position_index(height, width), persistent=False
            )

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        # (B, h·d, H, W) -> (B, h, N, d)
        b, _, hh, ww = t.shape
        return t.reshape(b, self.heads, -1, hh * ww).transpose(-2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xq = x + self.pos if self.position == "learned" else x
        xk = xq
        xv = x
        if self.pool_stride > 1:
            xk = F.avg_pool2d(xk, self.pool_stride, ceil_mode=True)
            xv = F.avg_pool2d(xv, self.pool_stride, ceil_mode=True)
        bias = None
        if self.position == "relbias":
            n = h * w
            bias = self.rel_table[:, self.rel_index.reshape(-1)].reshape(self.heads, n, n)
        q, k, v = self._heads(self.q(xq)), self._heads(self.k(xk)), self._heads(self.v(xv))
        if bias is not None:
            bias = bias.to(q.dtype)  # autocast makes q bf16; the table stays fp32
        y = attend(q, k, v, self.normalization, bias)  # (B, h, N, d)
        y = y.transpose(-2, -1).reshape(b, -1, h, w)
        return x + self.gate * self.out(y)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: channels reweighted by a bottleneck MLP of their means.

    Gated like the spatial attention (x + gate·SE(x), gate zero at init) so inserting
    it leaves a network's function unchanged at first.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x + self.gate * (x * s)


class AttentionArgs(Protocol):
    """What an attention factory reads (``nas.spec.AttentionSpec`` has these fields)."""

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


def _self_attention(channels: int, height: int, width: int, a: AttentionArgs) -> nn.Module:
    # The MANet modules are this attention with softmax weights and conv or pooled keys.
    normalization = a.op if a.op in NORMALIZATIONS else "softmax"
    return SelfAttention2d(
        channels,
        a.heads,
        a.head_dim or channels // a.heads,
        normalization,
        height,
        width,
        kernel=a.kernel,
        pool_stride=a.pool_stride,
        position=a.position,
    )


def _channel_attention(channels: int, height: int, width: int, a: AttentionArgs) -> nn.Module:
    return ChannelAttention(channels, a.reduction)


# Factories take (channels, height, width, args); height and width are the feature map's.
ATTENTIONS: Registry[Callable[[int, int, int, AttentionArgs], nn.Module]] = Registry("attention")
for _name in (*NORMALIZATIONS, "manet_conv", "manet_pool"):
    ATTENTIONS.register(_name, _self_attention)
ATTENTIONS.register("channel", _channel_attention)


# --------------------------------------------------------------------------- pooling


class AttentionPool2d(nn.Module):
    """2×2 stride-2 downsampling by softmax-weighted averaging in each window.

    A 1×1 conv scores every position per channel; each output is the softmax-weighted
    mean of its 2×2 window (local importance pooling). Odd sizes round up, as
    ``ceil_mode`` pooling does: missing positions get −inf scores and zero weight.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        logits = self.score(x)
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
            logits = F.pad(logits, (0, pw, 0, ph), value=float("-inf"))
        h2, w2 = (h + ph) // 2, (w + pw) // 2
        x = x.reshape(b, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h2, w2, 4)
        logits = logits.reshape(b, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5)
        weights = logits.reshape(b, c, h2, w2, 4).softmax(dim=-1)
        return (x * weights).sum(dim=-1)


DOWNSAMPLES: Registry[Callable[[int, str, str], nn.Module]] = Registry("downsample")
DOWNSAMPLES.register("none", lambda channels, norm, activation: nn.Identity())
DOWNSAMPLES.register("max", lambda channels, norm, activation: nn.MaxPool2d(2, 2, ceil_mode=True))
DOWNSAMPLES.register("avg", lambda channels, norm, activation: nn.AvgPool2d(2, 2, ceil_mode=True))
DOWNSAMPLES.register(
    "conv",
    lambda channels, norm, activation: ConvNormAct(
        channels, channels, 3, stride=2, norm=norm, activation=activation
    ),
)
DOWNSAMPLES.register("attention", lambda channels, norm, activation: AttentionPool2d(channels))


class AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated (2·C features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class AttentionGlobalPool(nn.Module):
    """Global pooling by a learned query: softmax over the N positions, then their mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(channels))
        self.key = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        scores = self.key(tokens) @ self.query * tokens.shape[-1] ** -0.5  # (B, N)
        return (scores.softmax(dim=1).unsqueeze(-1) * tokens).sum(dim=1)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class GlobalMaxPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


# Global pools map (B, C, H, W) to (B, features); the factory takes the channel count.
GLOBAL_POOLS: Registry[Callable[[int], nn.Module]] = Registry("global pool")
GLOBAL_POOLS.register("avg", lambda channels: GlobalAvgPool())
GLOBAL_POOLS.register("max", lambda channels: GlobalMaxPool())
GLOBAL_POOLS.register("avgmax", lambda channels: AvgMaxPool())
GLOBAL_POOLS.register("attention", AttentionGlobalPool)
GLOBAL_POOLS.register("flatten", lambda channels: nn.Flatten())

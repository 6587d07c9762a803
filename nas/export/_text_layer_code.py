"""The source a text ``model.py`` may hold for each kind of layer: the 1-D twins of
:mod:`nas.export._layer_code`'s image templates, which also take the mask of the real tokens.

Text is padded with id 0 to a fixed length, and padding must not change the logits, as in
``nas.model.layers``: ``Net.forward`` computes ``mask`` (B, 1, L), True at real tokens,
from the ids and halves it after each stage that downsamples, and every layer that mixes
positions takes it. Convs read ``x * mask``, norms take their statistics over real
positions, attention never attends to a pad key, and pools skip pads. The same rules as
the image templates hold: torch code only, keyed by registry names and formatted from
numbers, never from stored text.
"""

from __future__ import annotations

from nas.export._layer_code import PLUS_BIAS, SCORES, attention_class, relbias_lines

# Registry name → the code that makes it (tests/export/test_codegen.py checks they cover
# every registered name). The norms are classes that take the mask.
NORM_CODE = {"batch": "MaskedBatchNorm1d", "group": "MaskedGroupNorm", "none": "None"}
DOWNSAMPLE_CODE = {
    "none": None,
    "max": "MaskedMaxPool1d()",
    "avg": "MaskedAvgPool1d()",
    "conv": None,  # a strided ConvNormAct, rendered with the stage's width
    "attention": None,  # AttentionPool1d(width)
}
# The lines of Net.forward that pool a (B, C, L) sequence over its real positions.
GLOBAL_POOL_CODE = {
    "avg": ["x = masked_mean(x, mask)  # global average pooling"],
    "max": [
        "# Global max pooling: a pad never wins.",
        'x = x.masked_fill(~mask, float("-inf")).amax(dim=2)',
    ],
    "avgmax": [
        "# Global average and max pooling (a pad never wins the max).",
        'peak = x.masked_fill(~mask, float("-inf")).amax(dim=2)',
        "x = torch.cat([masked_mean(x, mask), peak], dim=1)",
    ],
    "flatten": ["x = (x * mask).flatten(1)  # pads as zeros"],
    "attention": ["x = self.global_pool(x, mask)  # attention pooling with a learned query"],
}


# --------------------------------------------------------------------------- helpers

TOKEN_MASK = '''
def token_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids → (B, 1, L), True at real tokens: what every layer reads, so padding
    never changes the output. The first always counts: an empty text has one to pool."""
    first = torch.arange(ids.shape[-1], device=ids.device) == 0
    return ((ids != PAD_ID) | first).unsqueeze(1)
'''

HALVE_MASK = '''
def halve_mask(mask: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """The mask after a ceil-mode downsample: a window with a real position is real."""
    return F.max_pool1d(mask.float(), stride, ceil_mode=True) > 0
'''

MASKED_MEAN = '''
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, L) → (B, C): the mean over real positions, so pads do not dilute it."""
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1)
'''

MASKED_AVG_POOL = '''
def masked_avg_pool(x: torch.Tensor, mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Ceil-mode average pooling over each window's real positions (0 if none)."""
    m = mask.to(x.dtype)
    total = F.avg_pool1d(x * m, stride, ceil_mode=True)
    return total / F.avg_pool1d(m, stride, ceil_mode=True).clamp_min(1e-6)
'''

# --------------------------------------------------------------------------- layers

MASKED_BATCH_NORM = '''
class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose training statistics skip pads (short texts are mostly padding,
    whose zeros would pull the mean and variance); in eval, the running statistics."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        m = mask.float()
        xf = x.float()
        count = m.sum()
        mean = (xf * m).sum((0, 2)) / count
        var = ((xf - mean[:, None]) ** 2 * m).sum((0, 2)) / count
        with torch.no_grad():  # the running variance is unbiased, as in nn.BatchNorm1d
            self.num_batches_tracked.add_(1)
            unbiased = var * count / (count - 1).clamp_min(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(unbiased, self.momentum)
        y = (xf - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps)
        return (y * self.weight[:, None] + self.bias[:, None]).to(x.dtype)
'''

MASKED_GROUP_NORM = '''
class MaskedGroupNorm(nn.GroupNorm):
    """Group norm (8 groups, or fewer where 8 does not divide the channels) whose
    statistics, per text and group, skip pads."""

    def __init__(self, channels: int) -> None:
        super().__init__(math.gcd(channels, 8), channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        xf = x.float().reshape(b, self.num_groups, -1, n)
        m = mask.float().reshape(b, 1, 1, n)
        count = m.sum((2, 3), keepdim=True) * xf.shape[2]
        mean = (xf * m).sum((2, 3), keepdim=True) / count
        var = ((xf - mean) ** 2 * m).sum((2, 3), keepdim=True) / count
        y = ((xf - mean) * torch.rsqrt(var + self.eps)).reshape(b, c, n)
        return (y * self.weight[:, None] + self.bias[:, None]).to(x.dtype)
'''

CONV_NORM_ACT = '''
class ConvNormAct(nn.Sequential):
    """Conv (same padding) → norm → activation; a conv bias only without a norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        norm: Callable[[int], nn.Module] | None = {norm},
        act: Callable[[], nn.Module] | None = {act},
    ) -> None:
        super().__init__(
            nn.Conv1d(
                cin, cout, kernel, stride, kernel // 2, groups=groups, bias=norm is None
            ),
            norm(cout) if norm is not None else nn.Identity(),
            act() if act is not None else nn.Identity(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self
        x = conv(x * mask)  # a pad reads as zero, like the padding past the end
{after_conv}
'''

# ConvNormAct.forward after its conv, by whether the model's convs have norms that take
# the mask (batch, group), no norms, or both.
CONV_NORM = {
    "masked": """        if conv.stride[0] > 1:  # the norm sees the downsampled positions
            mask = halve_mask(mask, conv.stride[0])
        return act(norm(x, mask))  # statistics over the real positions""",
    "none": """        return act(norm(x))""",
    "both": """        if isinstance(norm, nn.Identity):
            return act(x)
        if conv.stride[0] > 1:  # the norm sees the downsampled positions
            mask = halve_mask(mask, conv.stride[0])
        return act(norm(x, mask))  # statistics over the real positions""",
}

BLOCKS = {
    "plain": '''
class PlainBlock(nn.Module):
    """Conv → norm → activation, as in VGG."""

    def __init__(
        self,
        {args}
    ) -> None:
        super().__init__()
        self.conv = ConvNormAct(cin, cout, kernel, norm=norm, act=act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(x, mask)
''',
    "residual": '''
class ResidualBlock(nn.Module):
    """ResNet basic block: two convs and a skip connection."""

    def __init__(
        self,
        {args}
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel, norm=norm, act=act)
        self.conv2 = ConvNormAct(cout, cout, kernel, norm=norm, act=None)
        self.skip = (  # a 1-wide projection when the widths differ
            None if cin == cout else ConvNormAct(cin, cout, 1, norm=norm, act=None)
        )
        self.act = act()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.skip(x, mask)
        return self.act(self.conv2(self.conv1(x, mask), mask) + skip)
''',
    "separable": '''
class SeparableBlock(nn.Module):
    """Depthwise k-wide then pointwise conv (MobileNet); a skip when widths match."""

    def __init__(
        self,
        {args}
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(cin, cin, kernel, groups=cin, norm=norm, act=act)
        self.pointwise = ConvNormAct(cin, cout, 1, norm=norm, act=act)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x, mask), mask)
        return x + y if self.residual else y
''',
}

STAGE = '''
class Stage(nn.Module):
    """Conv blocks, then attention, then downsampling (either may be absent), each
    reading the mask of the sequence's real positions."""

    def __init__(
        self,
        blocks: list[nn.Module],
        attention: nn.Module | None = None,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.downsample = downsample

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        if self.attention is not None:
            x = self.attention(x, mask)
        if self.downsample is not None:  # Net.forward halves the mask after it
            x = self.downsample(x, mask)
        return x
'''

RELATIVE_POSITION_INDEX = '''
def relative_position_index(length: int) -> torch.Tensor:
    """(L, L) index into a table of the 2L-1 relative offsets of positions."""
    positions = torch.arange(length)
    return positions[:, None] - positions[None, :] + length - 1
'''

SQUEEZE_EXCITATION = '''
class SqueezeExcitation(nn.Module):
    """Channel attention: channels reweighted by a bottleneck MLP of their means over
    the real positions.

    Joins the input through a per-channel gate that starts at zero (identity at init).
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv1d(channels, hidden, 1)
        self.fc2 = nn.Conv1d(hidden, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        means = masked_mean(x, mask)[..., None]  # (B, C, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(means))))
        return x + self.gate * (x * s)
'''

ATTENTION_POOL = '''
class AttentionPool1d(nn.Module):
    """Downsampling by 2: a softmax-weighted average of each pair of positions.

    A pad gets no weight, and a pair of pads pools to zero. An odd length rounds up, as
    ceil_mode pooling does: the missing position gets zero weight.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        x = x * mask
        logits = self.score(x).masked_fill(~mask, torch.finfo(x.dtype).min)
        if n % 2:
            x = F.pad(x, (0, 1))
            logits = F.pad(logits, (0, 1), value=float("-inf"))
        half = (n + n % 2) // 2
        # (B, C, L) → (B, C, L/2, 2): the two positions of each window last
        weights = logits.reshape(b, c, half, 2).softmax(dim=-1)
        return (x.reshape(b, c, half, 2) * weights).sum(dim=-1)
'''

MAX_POOL = '''
class MaskedMaxPool1d(nn.Module):
    """Max pooling by 2 (ceil mode) where a pad never wins; a pair of pads gives 0."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x.masked_fill(~mask, torch.finfo(x.dtype).min)
        return F.max_pool1d(x, 2, ceil_mode=True).where(halve_mask(mask), 0)
'''

AVG_POOL = '''
class MaskedAvgPool1d(nn.Module):
    """Average pooling by 2 (ceil mode) over the real positions of each pair."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_avg_pool(x, mask, 2)
'''

ATTENTION_GLOBAL_POOL = '''
class AttentionGlobalPool(nn.Module):
    """Global pooling by a learned query: softmax weights over the real positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(channels))
        self.key = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = x.transpose(1, 2)  # (B, L, C)
        scores = self.key(tokens) @ self.query * tokens.shape[-1] ** -0.5  # (B, L)
        scores = scores.masked_fill(~mask[:, 0], float("-inf"))  # pads get no weight
        return (scores.softmax(dim=1).unsqueeze(-1) * tokens).sum(dim=1)
'''


# --------------------------------------------------------------------------- attention

# How each self-attention op turns scores into outputs over the real keys (``keys``:
# (B, 1, 1, N), True at real keys); the scores have the relative-position bias added
# first where a layer has one.
ATTEND = {
    "softmax": [
        "# No query attends to a pad.",
        "y = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)",
    ],
    "softmax_relbias": [
        "# The bias, and -inf at the pads: no query attends to one.",
        'allowed = keys if bias is None else bias.masked_fill(~keys, float("-inf"))',
        "y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)",
    ],
    "sigmoid": [
        "# b = -log N (N: the real keys) keeps the summed weights O(1) at the start of",
        "# training; pads get zero weight.",
        "real = keys.sum(-1, keepdim=True).to(scores.dtype)",
        "y = (torch.sigmoid(scores - real.log()) * keys) @ v",
    ],
    "sigmoid_norm": [
        "# sigmoid(s) / sum(sigmoid(s)) over the real keys, computed stably as",
        "# softmax(log sigmoid(s)).",
        'weights = F.logsigmoid(scores).masked_fill(~keys, float("-inf"))',
        "y = torch.softmax(weights, dim=-1) @ v",
    ],
}

NOTE = (
    "Only real positions are projected and attended to; the result joins the input\n"
    "    through a per-channel gate that starts at zero."
)


def self_attention_class(op: str, positions: set[str]) -> str:
    """The source of one self-attention class over a sequence with a mask, with only the
    ``positions`` it needs."""
    normalization = op if op in ("sigmoid", "sigmoid_norm") else "softmax"
    forward = ["b, _, n = x.shape", "xm = x * mask  # the projections read real positions"]
    q_in = k_in = "xm"
    if "learned" in positions:
        forward.append('xq = (x + self.pos) * mask if self.position == "learned" else xm')
        q_in = k_in = "xq"
    v_in = "xm"
    if op == "manet_pool":
        forward += [
            "# Keys and values from the pooled sequence: NxN/s scores instead of NxN.",
            f"xk = masked_avg_pool({k_in}, mask, self.pool_stride)",
            "xv = masked_avg_pool(xm, mask, self.pool_stride)",
            "keys = halve_mask(mask, self.pool_stride).unsqueeze(1)  # (B, 1, 1, N/s)",
        ]
        k_in, v_in = "xk", "xv"
    else:
        forward.append("keys = mask.unsqueeze(1)  # (B, 1, 1, N): the same for every head")
    forward += [
        f"q = self._split_heads(self.q({q_in}))  # (B, heads, N, d)",
        f"k = self._split_heads(self.k({k_in}))",
        f"v = self._split_heads(self.v({v_in}))",
    ]
    relbias = "relbias" in positions
    if relbias:
        forward += relbias_lines(1)
    if normalization != "softmax":
        forward += [SCORES, *(PLUS_BIAS if relbias else [])]
    attend = "softmax_relbias" if relbias and normalization == "softmax" else normalization
    forward += ATTEND[attend]
    forward += [
        "y = y.transpose(-2, -1).reshape(b, -1, n)",
        "return x + self.gate * self.out(y)",
    ]
    signature = "def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:"
    return attention_class(op, positions, 1, [signature, *("    " + f for f in forward)], note=NOTE)

"""The source an image ``model.py`` may hold for each kind of layer (2-D maps), and what
text code shares with it.

Registry name → code tables (one entry per op the builder knows), the templates of the
helpers, blocks, stage and pooling classes, and :func:`self_attention_class`, which writes
one self-attention class with only the positional encodings the model uses. A text model's
layers also take the mask of its real tokens: their 1-D templates are in
:mod:`nas.export._text_layer_code`, which shares the class names, :func:`wrap` and the
attention classes' ``__init__`` (:func:`attention_class`) with this module. Every piece is
torch code only, keyed by registry names and formatted from numbers, never from stored
text. :mod:`nas.export._codegen` puts the pieces a spec needs together with its ``Net``.
"""

from __future__ import annotations

# Registry name → the code that makes it. tests/export/test_codegen.py checks these cover every
# registered name, so a new op cannot be added without teaching the exporter about it.
ACTIVATION_CODE = {
    "relu": "nn.ReLU",
    "gelu": "nn.GELU",
    "silu": "nn.SiLU",
    "sigmoid": "nn.Sigmoid",
    "tanh": "nn.Tanh",
}
NORM_CODE = {"batch": "nn.BatchNorm2d", "group": "group_norm", "none": "None"}
DOWNSAMPLE_CODE = {
    "none": None,
    "max": "nn.MaxPool2d(2, ceil_mode=True)",
    "avg": "nn.AvgPool2d(2, ceil_mode=True)",
    "conv": None,  # a strided conv_norm_act, rendered with the stage's width
    "attention": None,  # AttentionPool2d(width)
}
BLOCK_CLASS = {"plain": "PlainBlock", "residual": "ResidualBlock", "separable": "SeparableBlock"}
ATTENTION_CLASS = {
    "softmax": "SoftmaxSelfAttention",
    "sigmoid": "SigmoidSelfAttention",
    "sigmoid_norm": "NormalizedSigmoidSelfAttention",
    "manet_conv": "ConvSelfAttention",
    "manet_pool": "PooledSelfAttention",
    "channel": "SqueezeExcitation",
}
# Global pools without parameters are one line in Net.forward; "attention" is a module.
GLOBAL_POOL_CODE = {
    "avg": "x.mean(dim=(2, 3))  # global average pooling",
    "max": "x.amax(dim=(2, 3))  # global max pooling",
    "avgmax": "torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # average + max",
    "flatten": "x.flatten(1)",
    "attention": "self.global_pool(x)  # attention pooling with a learned query",
}


# --------------------------------------------------------------------------- snippets

GROUP_NORM = '''
def group_norm(channels: int) -> nn.GroupNorm:
    """Group norm with 8 groups, or fewer where 8 does not divide the channels."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)
'''

CONV_NORM_ACT = '''
def conv_norm_act(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    norm: Callable[[int], nn.Module] | None = {norm},
    act: Callable[[], nn.Module] | None = {act},
) -> nn.Sequential:
    """Conv (same padding) → norm → activation; a conv bias only without a norm."""
    return nn.Sequential(
        nn.Conv2d(
            cin, cout, kernel, stride, kernel // 2, groups=groups, bias=norm is None
        ),
        norm(cout) if norm is not None else nn.Identity(),
        act() if act is not None else nn.Identity(),
    )
'''

# Blocks take the norm and activation like conv_norm_act (defaults: the model's own).
BLOCK_ARGS = """cin: int,
        cout: int,
        kernel: int,
        norm: Callable[[int], nn.Module] | None = {norm},
        act: Callable[[], nn.Module] = {act},"""

BLOCKS = {
    "plain": '''
class PlainBlock(nn.Module):
    """Conv → norm → activation, as in VGG."""

    def __init__(
        self,
        {args}
    ) -> None:
        super().__init__()
        self.conv = conv_norm_act(cin, cout, kernel, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
''',
    "residual": '''
class ResidualBlock(nn.Module):
    """ResNet basic block: two convs and a skip connection."""

    def __init__(
        self,
        {args}
    ) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(cin, cout, kernel, norm=norm, act=act)
        self.conv2 = conv_norm_act(cout, cout, kernel, norm=norm, act=None)
        self.skip = (  # a 1x1 projection when the widths differ
            nn.Identity()
            if cin == cout
            else conv_norm_act(cin, cout, 1, norm=norm, act=None)
        )
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))
''',
    "separable": '''
class SeparableBlock(nn.Module):
    """Depthwise kxk then pointwise 1x1 conv (MobileNet); a skip when widths match."""

    def __init__(
        self,
        {args}
    ) -> None:
        super().__init__()
        self.depthwise = conv_norm_act(cin, cin, kernel, groups=cin, norm=norm, act=act)
        self.pointwise = conv_norm_act(cin, cout, 1, norm=norm, act=act)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y
''',
}

STAGE = '''
class Stage(nn.Module):
    """Conv blocks, then attention, then downsampling (either may be absent)."""

    def __init__(
        self,
        blocks: list[nn.Module],
        attention: nn.Module | None = None,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.attention = attention if attention is not None else nn.Identity()
        self.downsample = downsample if downsample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.attention(self.blocks(x)))
'''

RELATIVE_POSITION_INDEX = '''
def relative_position_index(height: int, width: int) -> torch.Tensor:
    """(N, N) index into a table of the (2H-1)(2W-1) relative offsets of positions."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + height - 1) * (2 * width - 1) + (rel[1] + width - 1)
'''

# How each self-attention op turns scores into outputs (q, k, v: (B, heads, N, d)); the
# scores then have the relative-position bias added where a layer has one (SCORES).
ATTEND = {
    "softmax": ["y = F.scaled_dot_product_attention(q, k, v{mask})"],
    "sigmoid": [
        "# b = -log N keeps the summed weights O(1) at the start of training.",
        "y = torch.sigmoid(scores - math.log(k.shape[-2])) @ v",
    ],
    "sigmoid_norm": [
        "# sigmoid(s) / sum(sigmoid(s)), computed stably as softmax(log sigmoid(s)).",
        "y = torch.softmax(F.logsigmoid(scores), dim=-1) @ v",
    ],
}
SCORES = "scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5"
PLUS_BIAS = ["if bias is not None:", "    scores = scores + bias"]

SELF_ATTENTION_DOC = {
    "softmax": "Multi-head softmax self-attention over the {n} positions of a {map}.",
    "sigmoid": "Multi-head self-attention over the {n} positions, sigmoid-normalised:\n"
    "    sigmoid(QK^T/sqrt(d) - log N) weights instead of a softmax.",
    "sigmoid_norm": "Multi-head self-attention over the {n} positions with\n"
    "    sigmoid(QK^T/sqrt(d)) weights, each row divided by its sum.",
    "manet_conv": "MANet's convolutional self-attention: Q, K and V from {k} convolutions,\n"
    "    softmax attention over the {n} positions.",
    "manet_pool": "MANet's pooling self-attention: keys and values from an {s} average-pooled\n"
    "    {pooled}, so the NxN score matrix shrinks to {shrunk}; softmax weights.",
}
# The words of those docstrings for 2-D maps and 1-D sequences.
DOC_WORDS = {
    2: {"n": "H·W", "map": "feature map", "k": "kxk", "s": "sxs", "pooled": "map"},
    1: {"n": "L", "map": "sequence", "k": "k-wide", "s": "s-wide", "pooled": "sequence"},
}
SHRUNK = {2: "NxN/s²", 1: "NxN/s"}

SQUEEZE_EXCITATION = '''
class SqueezeExcitation(nn.Module):
    """Channel attention: channels reweighted by a bottleneck MLP of their means.

    Joins the input through a per-channel gate that starts at zero (identity at init).
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
'''

ATTENTION_POOL = '''
class AttentionPool2d(nn.Module):
    """2x2 downsampling by a softmax-weighted average of each window.

    Odd sizes round up, as ceil_mode pooling does: missing positions get zero weight.
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
        # (B, C, H, W) → (B, C, H/2, W/2, 4): the four positions of each 2x2 window last
        x = x.reshape(b, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5)
        x = x.reshape(b, c, h2, w2, 4)
        logits = logits.reshape(b, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5)
        weights = logits.reshape(b, c, h2, w2, 4).softmax(dim=-1)
        return (x * weights).sum(dim=-1)
'''

ATTENTION_GLOBAL_POOL = '''
class AttentionGlobalPool(nn.Module):
    """Global pooling by a learned query: softmax weights over the N positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(channels))
        self.key = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        scores = self.key(tokens) @ self.query * tokens.shape[-1] ** -0.5  # (B, N)
        return (scores.softmax(dim=1).unsqueeze(-1) * tokens).sum(dim=1)
'''


LINE = 88  # ruff's default line length: the file is clean under anyone's config


def wrap(head: str, args: list[str], tail: str = "", indent: int = 0) -> list[str]:
    """``head(args)tail`` on one line if it fits at ``indent``, else one argument a line."""
    one = f"{head}({', '.join(args)}){tail}"
    if indent + len(one) <= LINE:
        return [one]
    return [f"{head}(", *(f"    {a}," for a in args), f"){tail}"]


def indented(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else "" for line in lines)


GATE_NOTE = "The result joins the input through a per-channel gate that starts at zero."


def attention_class(
    op: str, positions: set[str], dims: int, forward: list[str], note: str = GATE_NOTE
) -> str:
    """The source of one self-attention class over a 2-D map or (``dims=1``) a sequence:
    its docstring (``note`` its second paragraph), ``__init__`` with only the
    ``positions`` it needs, ``_split_heads``, and ``forward`` (lines of the method)."""
    has_position = bool(positions - {"none"})
    sizes = "height, width" if dims == 2 else "length"  # the map's size, as arguments
    args = ["self", "channels: int", "heads: int", "head_dim: int"]
    args += {"manet_conv": ["kernel: int"], "manet_pool": ["pool_stride: int"]}.get(op, [])
    if has_position:
        args += [f"{name}: int" for name in sizes.split(", ")] + ['position: str = "none"']
    conv_args = "kernel, padding=kernel // 2" if op == "manet_conv" else "1"
    ones = ", ".join(["1"] * dims)
    init = [
        "super().__init__()",
        "inner = heads * head_dim",
        "self.heads = heads",
        *(["self.pool_stride = pool_stride"] if op == "manet_pool" else []),
        *(["self.position = position"] if has_position else []),
        *(f"self.{t} = nn.Conv{dims}d(channels, inner, {conv_args})" for t in "qkv"),
        f"self.out = nn.Conv{dims}d(inner, channels, 1)",
        "# A per-channel gate that starts at zero: the identity at init.",
        f"self.gate = nn.Parameter(torch.zeros(1, channels, {ones}))",
    ]
    branches = []
    if "learned" in positions:
        branches.append(
            (
                "learned",
                [
                    f"pos = torch.randn(1, channels, {sizes}) * 0.02",
                    "self.pos = nn.Parameter(pos)",
                ],
            )
        )
    if "relbias" in positions:
        table = "(2 * height - 1) * (2 * width - 1)" if dims == 2 else "2 * length - 1"
        branches.append(
            (
                "relbias",
                [
                    "# A learned bias per head for each relative offset of two positions.",
                    f"table = {table}",
                    "self.rel_table = nn.Parameter(torch.zeros(heads, table))",
                    f"index = relative_position_index({sizes})",
                    'self.register_buffer("rel_index", index, persistent=False)',
                ],
            )
        )
    for i, (kind, body) in enumerate(branches):
        init.append(f'{"if" if i == 0 else "elif"} position == "{kind}":')
        init += ["    " + line for line in body]

    split = (
        [
            "# (B, heads·d, H, W) → (B, heads, H·W, d)",
            "b, _, h, w = t.shape",
            "return t.reshape(b, self.heads, -1, h * w).transpose(-2, -1)",
        ]
        if dims == 2
        else [
            "# (B, heads·d, L) → (B, heads, L, d)",
            "b, _, n = t.shape",
            "return t.reshape(b, self.heads, -1, n).transpose(-2, -1)",
        ]
    )
    doc = SELF_ATTENTION_DOC[op].format(**DOC_WORDS[dims], shrunk=SHRUNK[dims])
    buffer = "    rel_index: torch.Tensor  # a buffer, rebuilt from the map's size\n\n"
    return "\n".join(
        [
            f"class {ATTENTION_CLASS[op]}(nn.Module):",
            f'    """{doc}',
            "",
            f"    {note}",
            '    """',
            "",
            (buffer if "relbias" in positions else "")
            + indented(wrap("def __init__", args, " -> None:", 4), 4),
            indented(init, 8),
            "",
            "    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:",
            indented(split, 8),
            "",
            indented(forward, 4),
        ]
    )


def relbias_lines(dims: int) -> list[str]:
    """``bias``: the relative-position bias of a layer that has one, else None; 1-D code
    has the length as ``n`` already."""
    return [
        "bias = None",
        'if self.position == "relbias":',
        *(["    n = h * w"] if dims == 2 else []),
        "    bias = self.rel_table[:, self.rel_index.reshape(-1)]",
        "    bias = bias.reshape(self.heads, n, n).to(q.dtype)",
    ]


def self_attention_class(op: str, positions: set[str]) -> str:
    """The source of one self-attention class over a 2-D map, with only the
    ``positions`` it needs."""
    normalization = op if op in ATTEND else "softmax"
    forward = ["b, _, h, w = x.shape"]
    q_in = k_in = v_in = "x"
    if "learned" in positions:
        forward.append('xq = x + self.pos if self.position == "learned" else x')
        q_in = k_in = "xq"
    if op == "manet_pool":
        forward += [
            "# Keys and values from the pooled map: NxN/s² scores instead of NxN.",
            f"xk = F.avg_pool2d({k_in}, self.pool_stride, ceil_mode=True)",
            "xv = F.avg_pool2d(x, self.pool_stride, ceil_mode=True)",
        ]
        k_in, v_in = "xk", "xv"
    forward += [
        f"q = self._split_heads(self.q({q_in}))  # (B, heads, N, d)",
        f"k = self._split_heads(self.k({k_in}))",
        f"v = self._split_heads(self.v({v_in}))",
    ]
    relbias = "relbias" in positions
    if relbias:
        forward += relbias_lines(2)
    if normalization != "softmax":
        forward += [SCORES, *(PLUS_BIAS if relbias else [])]
    mask = ", attn_mask=bias" if relbias else ""
    forward += [line.format(mask=mask) for line in ATTEND[normalization]]
    forward += [
        "y = y.transpose(-2, -1).reshape(b, -1, h, w)",
        "return x + self.gate * self.out(y)",
    ]
    return attention_class(
        op,
        positions,
        2,
        ["def forward(self, x: torch.Tensor) -> torch.Tensor:", *("    " + f for f in forward)],
    )

"""ArchSpec → the source of a standalone ``model.py`` (torch and the standard library only).

The generated file reads like code a person wrote for this one network: a small class
per block kind the model uses (``ResidualBlock``, ``SigmoidSelfAttention``, …), each
specialised to what the model needs (no positional-encoding code when no attention
layer uses one), and a ``Net`` written out layer by layer with the feature-map shape
beside each stage. It is not an interpreter of the spec: nothing in it looks up ops by
name at run time.

Safety: the spec has passed ``ArchSpec`` validation, so every op name is a registry
key; each piece of emitted code comes from the tables below, keyed by those names,
and numbers are formatted from ints and finite floats. No stored string reaches the
code: the one place text from a study may appear is the module docstring, and
:func:`render_code` refuses a docstring that could end its literal or start a line of
code (a backslash, ``\"\"\"``, a closing ``"``, a character that is not printable).
Callers put stored text there only through :func:`nas.stored.code_text`, whose output
holds none of those.

Module paths equal :mod:`nas.builder`'s (``stem``, ``stages.1.attention``, ``head``), so
a built model's ``state_dict`` loads strictly into the generated ``Net``.

An image spec gives 2-D classes (``nn.Conv2d``, ``nn.BatchNorm2d``, …) and ``preprocess``
for uint8 images; a text spec gives their 1-D twins (``nn.Conv1d``, ``nn.BatchNorm1d``, …)
after an ``nn.Embedding`` stem, and ``encode``, which turns texts into token ids exactly as
:class:`nas.text.Vocabulary` does, from the ``vocab.json`` the exporter writes beside it.
The templates below name the dims-dependent pieces as ``{dims}``, ``{ones}`` and ``{axes}``
(see :class:`_Dims`).
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from dataclasses import dataclass, field

from nas.data import BYTE_VOCAB_SIZE, OOV_ID, PAD_ID, WORD_PATTERN
from nas.model import ArchSpec, AttentionSpec, StageSpec, layers

# Registry name → the code that makes it. tests/test_codegen.py checks these cover every
# registered name, so a new op cannot be added without teaching the exporter about it.
ACTIVATION_CODE = {
    "relu": "nn.ReLU",
    "gelu": "nn.GELU",
    "silu": "nn.SiLU",
    "sigmoid": "nn.Sigmoid",
    "tanh": "nn.Tanh",
}
NORM_CODE = {"batch": "nn.BatchNorm{dims}d", "group": "group_norm", "none": "None"}
DOWNSAMPLE_CODE = {
    "none": None,
    "max": "nn.MaxPool{dims}d(2, ceil_mode=True)",
    "avg": "nn.AvgPool{dims}d(2, ceil_mode=True)",
    "conv": None,  # a strided conv_norm_act, rendered with the stage's width
    "attention": None,  # AttentionPool2d(width) or AttentionPool1d(width)
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
    "avg": "x.mean(dim={axes})  # global average pooling",
    "max": "x.amax(dim={axes})  # global max pooling",
    "avgmax": "torch.cat([x.mean(dim={axes}), x.amax(dim={axes})], dim=1)  # average + max",
    "flatten": "x.flatten(1)",
    "attention": "self.global_pool(x)  # attention pooling with a learned query",
}


@dataclass(frozen=True)
class _Dims:
    """The words that differ between 2-D (image) and 1-D (sequence) code."""

    dims: int

    def fields(self) -> dict[str, str]:
        """``{dims}``: 1 or 2 (``nn.Conv{dims}d``); ``{ones}``: a per-channel parameter's
        trailing sizes; ``{axes}``: the positions' axes of a (B, C, …) tensor."""
        return {
            "dims": str(self.dims),
            "ones": ", ".join(["1"] * self.dims),
            "axes": "(2, 3)" if self.dims == 2 else "2",
        }

    def format(self, template: str, **more: str) -> str:
        return template.format(**self.fields(), **more)


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
        nn.Conv{dims}d(
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
        self.skip = (  # a {one} projection when the widths differ
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
    """{separable}"""

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

# The blocks' words for 2-D maps and 1-D sequences.
BLOCK_WORDS = {
    2: {
        "one": "1x1",
        "separable": "Depthwise kxk then pointwise 1x1 conv (MobileNet); a skip when widths match.",
    },
    1: {
        "one": "1-wide",
        "separable": "Depthwise k-wide then pointwise conv (MobileNet); a skip when widths match.",
    },
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

RELATIVE_POSITION_INDEX = {
    2: '''
def relative_position_index(height: int, width: int) -> torch.Tensor:
    """(N, N) index into a table of the (2H-1)(2W-1) relative offsets of positions."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + height - 1) * (2 * width - 1) + (rel[1] + width - 1)
''',
    1: '''
def relative_position_index(length: int) -> torch.Tensor:
    """(L, L) index into a table of the 2L-1 relative offsets of positions."""
    positions = torch.arange(length)
    return positions[:, None] - positions[None, :] + length - 1
''',
}

# How each self-attention op turns scores into outputs (q, k, v: (B, heads, N, d)).
ATTEND = {
    "softmax": """        y = F.scaled_dot_product_attention(q, k, v{mask})""",
    "sigmoid": """        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5{plus_bias}
        # b = -log N keeps the summed weights O(1) at the start of training.
        y = torch.sigmoid(scores - math.log(k.shape[-2])) @ v""",
    "sigmoid_norm": """        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5{plus_bias}
        # sigmoid(s) / sum(sigmoid(s)), computed stably as softmax(log sigmoid(s)).
        y = torch.softmax(F.logsigmoid(scores), dim=-1) @ v""",
}

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
        self.fc1 = nn.Conv{dims}d(channels, hidden, 1)
        self.fc2 = nn.Conv{dims}d(hidden, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1, channels, {ones}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim={axes}, keepdim=True)))))
        return x + self.gate * (x * s)
'''

ATTENTION_POOL = {
    2: '''
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
''',
    1: '''
class AttentionPool1d(nn.Module):
    """Downsampling by 2: a softmax-weighted average of each pair of positions.

    An odd length rounds up, as ceil_mode pooling does: the missing position gets zero
    weight.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        logits = self.score(x)
        if n % 2:
            x = F.pad(x, (0, 1))
            logits = F.pad(logits, (0, 1), value=float("-inf"))
        half = (n + n % 2) // 2
        # (B, C, L) → (B, C, L/2, 2): the two positions of each window last
        weights = logits.reshape(b, c, half, 2).softmax(dim=-1)
        return (x.reshape(b, c, half, 2) * weights).sum(dim=-1)
''',
}

# Written once: the layer's own source (torch only, already dimension-agnostic).
ATTENTION_GLOBAL_POOL = inspect.getsource(layers.AttentionGlobalPool)


LINE = 88  # ruff's default line length: the file is clean under anyone's config


def _check_docstring(docstring: str) -> None:
    """Refuse a docstring that could end its literal or start a line of code."""
    lines = docstring.split("\n")
    if (
        "\\" in docstring
        or '"""' in docstring
        or docstring.endswith('"')
        or not all(line.isprintable() for line in lines)
    ):
        raise ValueError(
            "the docstring could end its string literal or start a line of code (a backslash, "
            "a '\"' at its end or three in a row, or a character that is not printable); "
            "pass stored text through nas.stored.code_text"
        )


def wrap(head: str, args: list[str], tail: str = "", indent: int = 0) -> list[str]:
    """``head(args)tail`` on one line if it fits at ``indent``, else one argument a line."""
    one = f"{head}({', '.join(args)}){tail}"
    if indent + len(one) <= LINE:
        return [one]
    return [f"{head}(", *(f"    {a}," for a in args), f"){tail}"]


def _indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else "" for line in lines)


def self_attention_class(op: str, positions: set[str], dims: int = 2) -> str:
    """The source of one self-attention class over a 2-D map or (``dims=1``) a sequence,
    with only the ``positions`` it needs."""
    normalization = op if op in ATTEND else "softmax"
    has_position = bool(positions - {"none"})
    sizes = "height, width" if dims == 2 else "length"  # the map's size, as arguments
    args = ["self", "channels: int", "heads: int", "head_dim: int"]
    args += {"manet_conv": ["kernel: int"], "manet_pool": ["pool_stride: int"]}.get(op, [])
    if has_position:
        args += [f"{name}: int" for name in sizes.split(", ")] + ['position: str = "none"']
    conv_args = "kernel, padding=kernel // 2" if op == "manet_conv" else "1"
    ones = _Dims(dims).fields()["ones"]
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

    forward = ["b, _, h, w = x.shape" if dims == 2 else "b, _, n = x.shape"]
    q_in = k_in = v_in = "x"
    if "learned" in positions:
        forward.append('xq = x + self.pos if self.position == "learned" else x')
        q_in = k_in = "xq"
    if op == "manet_pool":
        shrink = "NxN/s² scores" if dims == 2 else "NxN/s scores"
        forward += [
            f"# Keys and values from the pooled {'map' if dims == 2 else 'sequence'}: "
            f"{shrink} instead of NxN.",
            f"xk = F.avg_pool{dims}d({k_in}, self.pool_stride, ceil_mode=True)",
            f"xv = F.avg_pool{dims}d(x, self.pool_stride, ceil_mode=True)",
        ]
        k_in, v_in = "xk", "xv"
    forward += [
        f"q = self._split_heads(self.q({q_in}))  # (B, heads, N, d)",
        f"k = self._split_heads(self.k({k_in}))",
        f"v = self._split_heads(self.v({v_in}))",
    ]
    mask = plus_bias = ""
    if "relbias" in positions:
        forward += [
            "bias = None",
            'if self.position == "relbias":',
            *(["    n = h * w"] if dims == 2 else []),
            "    bias = self.rel_table[:, self.rel_index.reshape(-1)]",
            "    bias = bias.reshape(self.heads, n, n).to(q.dtype)",
        ]
        mask = ", attn_mask=bias"
        plus_bias = "\n        if bias is not None:\n            scores = scores + bias"
    attend = ATTEND[normalization].format(mask=mask, plus_bias=plus_bias)
    unsplit = "reshape(b, -1, h, w)" if dims == 2 else "reshape(b, -1, n)"
    tail = [f"y = y.transpose(-2, -1).{unsplit}", "return x + self.gate * self.out(y)"]
    split = (
        [
            "        # (B, heads·d, H, W) → (B, heads, H·W, d)",
            "        b, _, h, w = t.shape",
            "        return t.reshape(b, self.heads, -1, h * w).transpose(-2, -1)",
        ]
        if dims == 2
        else [
            "        # (B, heads·d, L) → (B, heads, L, d)",
            "        b, _, n = t.shape",
            "        return t.reshape(b, self.heads, -1, n).transpose(-2, -1)",
        ]
    )
    doc = SELF_ATTENTION_DOC[op].format(**DOC_WORDS[dims], shrunk=SHRUNK[dims])
    buffer = "    rel_index: torch.Tensor  # a buffer, rebuilt from the map's size\n\n"
    return "\n".join(
        [
            f"class {ATTENTION_CLASS[op]}(nn.Module):",
            f'    """{doc}',
            "",
            "    The result joins the input through a per-channel gate that starts at zero.",
            '    """',
            "",
            (buffer if "relbias" in positions else "")
            + _indent(wrap("def __init__", args, " -> None:", 4), 4),
            _indent(init, 8),
            "",
            "    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:",
            *split,
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            _indent(forward, 8),
            attend,
            _indent(tail, 8),
        ]
    )


# --------------------------------------------------------------------------- rendering

Call = tuple[str, list[str]]  # a constructor and its arguments, as code


@dataclass
class _Model:
    """What the generated file needs, collected while ``Net`` is written out.

    ``norm`` and ``act`` are the model's most common ones: the defaults in the helpers'
    signatures, so most calls need not name them. ``dims`` is 2 (images) or 1 (text).
    """

    spec: ArchSpec
    norm: str
    act: str
    blocks: set[str] = field(default_factory=set)
    attention_pool: bool = False
    # op → the positional encodings its layers use; known before any class is written
    positions: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stage in self.spec.stages:
            if stage.attention is not None:
                a = stage.attention
                self.positions.setdefault(a.op, set()).add(a.position)

    @property
    def dims(self) -> int:
        return self.spec.input.dims

    def norm_code(self, norm: str) -> str:
        return NORM_CODE[norm].format(dims=self.dims)

    def _norm_act(self, norm: str, act: str) -> list[str]:
        out = [] if norm == self.norm else [f"norm={self.norm_code(norm)}"]
        return out + ([] if act == self.act else [f"act={ACTIVATION_CODE[act]}"])

    def conv(self, cin: int, cout: int, kernel: int, stride: int, norm: str, act: str) -> Call:
        args = [str(cin), str(cout), str(kernel), *([f"stride={stride}"] if stride != 1 else [])]
        return "conv_norm_act", args + self._norm_act(norm, act)

    def block(self, stage: StageSpec, cin: int) -> Call:
        self.blocks.add(stage.block)
        args = [str(cin), str(stage.width), str(stage.kernel)]
        return BLOCK_CLASS[stage.block], args + self._norm_act(stage.norm, stage.activation)

    def attention(self, a: AttentionSpec, channels: int, h: int, w: int) -> Call:
        name = ATTENTION_CLASS[a.op]
        if a.op == "channel":
            return name, [str(channels), f"reduction={a.reduction}"]
        head_dim = a.head_dim or channels // a.heads
        args = [str(channels), f"heads={a.heads}", f"head_dim={head_dim}"]
        if a.op == "manet_conv":
            args.append(f"kernel={a.kernel}")
        if a.op == "manet_pool":
            args.append(f"pool_stride={a.pool_stride}")
        if self.positions[a.op] - {"none"}:  # the class takes the map's size
            args += [f"height={h}", f"width={w}"] if self.dims == 2 else [f"length={w}"]
        if a.position != "none":
            args.append(f'position="{a.position}"')
        return name, args

    def downsample(self, stage: StageSpec) -> Call | str | None:
        if stage.downsample == "conv":
            return self.conv(stage.width, stage.width, 3, 2, stage.norm, stage.activation)
        if stage.downsample == "attention":
            self.attention_pool = True
            return f"AttentionPool{self.dims}d", [str(stage.width)]
        code = DOWNSAMPLE_CODE[stage.downsample]
        return None if code is None else code.format(dims=self.dims)


def _most_common(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]


def _shape(c: int, h: int, w: int, dims: int = 2) -> str:
    return f"{c}x{h}x{w}" if dims == 2 else f"{c}x{w}"


def _call(call: Call | str, prefix: str, tail: str, indent: int) -> list[str]:
    if isinstance(call, str):
        return [f"{prefix}{call}{tail}"]
    return wrap(prefix + call[0], call[1], tail, indent)


def _convs_norms_acts(spec: ArchSpec) -> tuple[list[str], list[str]]:
    """The norms and activations of the model's convs: a text stem (an embedding) has none."""
    stem = [] if spec.input.is_text else [(spec.stem.norm, spec.stem.activation)]
    pairs = stem + [(s.norm, s.activation) for s in spec.stages]
    return [norm for norm, _ in pairs], [act for _, act in pairs]


def render_net(spec: ArchSpec) -> tuple[str, _Model]:
    """The ``Net`` class source, and what it uses."""
    norms, acts = _convs_norms_acts(spec)
    m = _Model(spec, norm=_most_common(norms), act=_most_common(acts))
    dims = m.dims
    stem = spec.stem
    if spec.input.is_text:
        lines = [
            "# Token embeddings; id 0 pads (a zero vector that is never trained).",
            f"self.stem = nn.Embedding(VOCAB_SIZE, {stem.width}, padding_idx=0)",
        ]
    else:
        stem_call = m.conv(
            spec.input.channels, stem.width, stem.kernel, stem.stride, stem.norm, stem.activation
        )
        lines = _call(stem_call, "self.stem = ", "", 8)
    lines.append("self.stages = nn.Sequential(")
    cin = stem.width
    for i, (stage, (h, w)) in enumerate(zip(spec.stages, spec.resolutions(), strict=True)):
        down = m.downsample(stage)
        oh, ow = (h, w) if down is None else (math.ceil(h / 2), math.ceil(w / 2))
        shapes = f"{_shape(cin, h, w, dims)} → {_shape(stage.width, oh, ow, dims)}"
        lines.append(f"    Stage(  # {i}: {shapes}")
        blocks = [m.block(stage, cin if j == 0 else stage.width) for j in range(stage.depth)]
        one_line = "[" + ", ".join(f"{n}({', '.join(a)})" for n, a in blocks) + "],"
        if 16 + len(one_line) <= LINE:
            lines.append("        " + one_line)
        else:
            lines.append("        [")
            for b in blocks:
                lines += ["            " + x for x in _call(b, "", ",", 20)]
            lines.append("        ],")
        if stage.attention is not None:
            att = m.attention(stage.attention, stage.width, h, w)
            lines += ["        " + x for x in _call(att, "attention=", ",", 16)]
        if down is not None:
            lines += ["        " + x for x in _call(down, "downsample=", ",", 16)]
        lines.append("    ),")
        cin = stage.width
    lines.append(")")
    if spec.global_pool == "attention":
        lines.append(f"self.global_pool = AttentionGlobalPool({cin})")
    head = []
    features = spec.pooled_features()
    for hidden in spec.head.hidden:
        head += [f"nn.Linear({features}, {hidden})", f"{ACTIVATION_CODE[spec.head.activation]}()"]
        if spec.head.dropout > 0:
            head.append(f"nn.Dropout({float(spec.head.dropout)!r})")
        features = hidden
    head.append(f"nn.Linear({features}, {spec.classes})")
    lines += wrap("self.head = nn.Sequential", head, "", 8)

    first = _shape(stem.width, *spec.resolutions()[0], dims)
    forward = [
        f"x = self.stem(x).transpose(1, 2)  # (B, L) ids → {first}, channels first"
        if spec.input.is_text
        else f"x = self.stem(x)  # {first}",
        f"x = self.stages(x)  # {_shape(cin, *spec.final_resolution(), dims)}",
        f"x = {_Dims(dims).format(GLOBAL_POOL_CODE[spec.global_pool])}",
        "return self.head(x)",
    ]
    inp = spec.input
    takes = (
        f"    Input: (B, {inp.width}) int64 token ids from ``encode``;"
        if inp.is_text
        else f"    Input: (B, {inp.channels}, {inp.height}, {inp.width}) images normalised by"
        " ``preprocess``;"
    )
    source = "\n".join(
        [
            "class Net(nn.Module):",
            '    """' + _indent(_summary_lines(spec), 4).lstrip(),
            "",
            takes,
            f"    output: (B, {spec.classes}) logits.",
            '    """',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            _indent(lines, 8),
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            _indent(forward, 8),
        ]
    )
    return source, m


PREPROCESS = '''
def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W), values 0..255 → the normalised floats Net expects."""
    mean = torch.tensor(MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std
'''

# Tokenises exactly like nas.text.Vocabulary (tests/test_export.py checks it on a real
# export): lower-cased words by WORD_PATTERN, or UTF-8 bytes; unknown words are OOV_ID.
ENCODE = '''
@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str) -> tuple[str, dict[str, int]]:
    """vocab.json → (tokenizer, token → id), checked against Net."""
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    if vocab.get("format") != "nas.vocabulary" or vocab.get("version") != 1:
        raise ValueError(f"{path} is not a nas.vocabulary version 1 file")
    if vocab["tokenizer"] == "words" and vocab["pattern"] != WORD_PATTERN:
        raise ValueError(f"{path} splits words other than Net's training data did")
    if (vocab["size"], vocab["length"]) != (VOCAB_SIZE, LENGTH):
        raise ValueError(
            f"{path} has {vocab['size']} ids and length {vocab['length']}; "
            f"Net was trained with {VOCAB_SIZE} ids and length {LENGTH}"
        )
    return vocab["tokenizer"], {token: i for i, token in enumerate(vocab["tokens"])}


def encode(
    texts: str | Sequence[str], vocab_path: str | Path = VOCAB_PATH
) -> torch.Tensor:
    """Texts → the int64 token ids (B, LENGTH) Net takes, encoded as in training.

    Longer texts keep their first LENGTH tokens; shorter ones are padded with PAD_ID.
    """
    tokenizer, index = load_vocabulary(str(vocab_path))
    batch = [texts] if isinstance(texts, str) else list(texts)
    ids = torch.full((len(batch), LENGTH), PAD_ID, dtype=torch.int64)
    for row, text in enumerate(batch):
        if tokenizer == "bytes":
            tokens = [b + BYTE_OFFSET for b in text.encode("utf-8")]
        else:
            words = re.findall(WORD_PATTERN, text.lower())
            tokens = [index.get(word, OOV_ID) for word in words]
        tokens = tokens[:LENGTH]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
    return ids
'''


def _text_constants(spec: ArchSpec) -> list[str]:
    # WORD_PATTERN goes out as a raw string literal: it must hold no quote to end it early.
    assert '"' not in WORD_PATTERN and not WORD_PATTERN.endswith("\\")
    return [
        "# The vocabulary the embedding was trained with and the tokens per example;",
        "# encode() reads vocab.json (beside this file) and checks it against them.",
        f"VOCAB_SIZE = {spec.input.vocab_size}",
        f"LENGTH = {spec.input.width}",
        'VOCAB_PATH = Path(__file__).with_name("vocab.json")',
        "# Words: lower-cased runs of word characters, and every other non-space character",
        "# alone. Bytes: UTF-8 byte b is id b + BYTE_OFFSET. Ids 0 and 1 pad and stand for",
        "# unknown words.",
        f'WORD_PATTERN = r"{WORD_PATTERN}"',
        f"BYTE_OFFSET = {BYTE_VOCAB_SIZE - 256}",
        f"PAD_ID = {PAD_ID}",
        f"OOV_ID = {OOV_ID}",
    ]


def render_code(
    spec: ArchSpec,
    *,
    docstring: str,
    mean: tuple[float, ...] = (),
    std: tuple[float, ...] = (),
) -> str:
    """The whole ``model.py`` for ``spec``; ``docstring`` opens the file.

    ``mean`` and ``std`` (per channel, of the training pixels) go into an image model's
    ``preprocess``; a text model has ``encode`` instead and takes neither.
    """
    text = spec.input.is_text
    if not text and not (mean and std):
        raise ValueError("an image model's preprocess needs the training pixels' mean and std")
    if not text:
        _check_normalisation(mean, std, spec.input.channels)
    docstring = docstring.strip()
    _check_docstring(docstring)
    net, m = render_net(spec)
    d = _Dims(m.dims)
    pieces: list[str] = []
    if "group" in _convs_norms_acts(spec)[0]:
        pieces.append(GROUP_NORM)
    defaults = {"norm": m.norm_code(m.norm), "act": ACTIVATION_CODE[m.act]}
    pieces.append(d.format(CONV_NORM_ACT, **defaults))
    args = BLOCK_ARGS.format(**defaults)
    words = BLOCK_WORDS[m.dims]
    pieces += [BLOCKS[kind].format(args=args, **words) for kind in BLOCK_CLASS if kind in m.blocks]
    if any("relbias" in p for p in m.positions.values()):
        pieces.append(RELATIVE_POSITION_INDEX[m.dims])
    for op in ATTENTION_CLASS:  # a stable order
        if op in m.positions:
            if op == "channel":
                pieces.append(d.format(SQUEEZE_EXCITATION))
            else:
                pieces.append(self_attention_class(op, m.positions[op], m.dims))
    if m.attention_pool:
        pieces.append(ATTENTION_POOL[m.dims])
    if spec.global_pool == "attention":
        pieces.append(ATTENTION_GLOBAL_POOL)
    pieces += [STAGE, net, ENCODE if text else PREPROCESS]
    body = "\n\n\n".join(p.strip("\n") for p in pieces)
    imports = ["from __future__ import annotations", ""]
    if text:
        imports += ["import functools", "import json"]
    if "math." in body:
        imports.append("import math")
    if text:
        imports += [
            "import re",
            "from collections.abc import Callable, Sequence",
            "from pathlib import Path",
        ]
    else:
        imports.append("from collections.abc import Callable")
    imports += ["", "import torch"]
    if "F." in body:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    constants = (
        _text_constants(spec)
        if text
        else [
            "# Per-channel mean and standard deviation of the training pixels, scaled to [0, 1].",
            f"MEAN = {_floats(mean)}",
            f"STD = {_floats(std)}",
        ]
    )
    return "\n".join([f'"""{docstring}', '"""', "", *imports, "", *constants, "", "", body, ""])


def _summary_lines(spec: ArchSpec) -> list[str]:
    """The spec's one-line summary, broken at its ``|`` separators to fit the line."""
    lines = [""]
    for part in spec.summary().split(" | "):
        if lines[-1] and 4 + 3 + len(lines[-1]) + 3 + len(part) + 2 > LINE:
            lines[-1] += " |"
            lines.append(part)
        else:
            lines[-1] = f"{lines[-1]} | {part}" if lines[-1] else part
    return lines


def _check_normalisation(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> None:
    """Finite means and stds (positive at the 6 decimals written): one per channel, or one
    for all (``preprocess`` broadcasts it)."""
    numbers = [*mean, *std]
    if (
        len(mean) not in (1, channels)
        or len(std) not in (1, channels)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
        or not all(math.isfinite(v) for v in numbers)
        or not all(round(s, 6) > 0 for s in std)
    ):
        raise ValueError(
            f"mean and std must be {channels} (or 1) finite numbers each, std > 0 to 6 "
            "decimals; "
            f"got mean {mean!r}, std {std!r}"
        )


def _floats(values: tuple[float, ...]) -> str:
    assert all(math.isfinite(v) for v in values)  # repr(nan) is not a Python literal
    inner = ", ".join(repr(round(float(v), 6)) for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"

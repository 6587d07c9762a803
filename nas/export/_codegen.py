"""ArchSpec → the source of a standalone ``model.py`` (torch and the standard library only).

The generated file reads like code a person wrote for this one network: a small class
per block kind the model uses (``ResidualBlock``, ``SigmoidSelfAttention``, …), each
specialised to what the model needs (no positional-encoding code when no attention
layer uses one), and a ``Net`` written out layer by layer with the feature-map shape
beside each stage. It is not an interpreter of the spec: nothing in it looks up ops by
name at run time. The layers' sources come from :mod:`nas.export._layer_code` (images)
and :mod:`nas.export._text_layer_code` (text); this module chooses the ones a spec needs
and writes ``Net``, ``preprocess`` or ``encode``.

Safety: the spec has passed ``ArchSpec`` validation, so every op name is a registry
key; each piece of emitted code comes from the tables of those two modules, keyed by
those names, and numbers are formatted from ints and finite floats. No stored
string reaches the code: the one place text from a study may appear is the module
docstring, and :func:`render_code` refuses a docstring that could end its literal or
start a line of code (a backslash, ``\"\"\"``, a closing ``"``, a character that is not
printable). Callers put stored text there only through :func:`nas.stored.code_text`,
whose output holds none of those.

Module paths equal :mod:`nas.model._builder`'s (``stem``, ``stages.1.attention``,
``head``), so a built model's ``state_dict`` loads strictly into the generated ``Net``.

An image spec gives 2-D classes (``nn.Conv2d``, ``nn.BatchNorm2d``, …) and ``preprocess``
for uint8 images; a text spec gives their 1-D twins (``nn.Conv1d``, ``MaskedBatchNorm1d``,
…) after an ``nn.Embedding`` stem, and ``encode``, which turns texts into token ids exactly
as :class:`nas.data.Vocabulary` does, from the ``vocab.json`` the exporter writes beside
it. Like the built model, a text ``Net`` computes the mask of the real tokens from the ids
and passes it to every layer that mixes positions, so padding never changes its logits.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from nas.data import (
    BYTE_VOCAB_SIZE,
    NGRAM_MAX,
    NGRAM_MIN,
    OOV_ID,
    PAD_ID,
    WORD_BEGIN,
    WORD_END,
    WORD_PATTERN,
)
from nas.export import _layer_code as image
from nas.export import _text_layer_code as text_code
from nas.export._layer_code import (
    ACTIVATION_CODE,
    ATTENTION_CLASS,
    BLOCK_ARGS,
    BLOCK_CLASS,
    LINE,
    indented,
    wrap,
)
from nas.model import ArchSpec, AttentionSpec, StageSpec

Call = tuple[str, list[str]]  # a constructor and its arguments, as code


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

    @property
    def text(self) -> bool:
        return self.spec.input.is_text

    def norm_code(self, norm: str) -> str:
        return (text_code.NORM_CODE if self.text else image.NORM_CODE)[norm]

    def _norm_act(self, norm: str, act: str) -> list[str]:
        out = [] if norm == self.norm else [f"norm={self.norm_code(norm)}"]
        return out + ([] if act == self.act else [f"act={ACTIVATION_CODE[act]}"])

    def conv(self, cin: int, cout: int, kernel: int, stride: int, norm: str, act: str) -> Call:
        args = [str(cin), str(cout), str(kernel), *([f"stride={stride}"] if stride != 1 else [])]
        name = "ConvNormAct" if self.text else "conv_norm_act"
        return name, args + self._norm_act(norm, act)

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
        table = text_code.DOWNSAMPLE_CODE if self.text else image.DOWNSAMPLE_CODE
        return table[stage.downsample]


def _most_common(values: list[str], default: str) -> str:
    return Counter(values).most_common(1)[0][0] if values else default


def _shape(c: int, h: int, w: int, dims: int = 2) -> str:
    return f"{c}x{h}x{w}" if dims == 2 else f"{c}x{w}"


def _call(call: Call | str, prefix: str, tail: str, indent: int) -> list[str]:
    if isinstance(call, str):
        return [f"{prefix}{call}{tail}"]
    return wrap(prefix + call[0], call[1], tail, indent)


def folds_batchnorm(spec: ArchSpec) -> bool:
    """Whether an image model's code has convs with BatchNorm, so ``fold_batchnorm``."""
    return not spec.input.is_text and "batch" in _convs_norms_acts(spec)[0]


def _convs_norms_acts(spec: ArchSpec) -> tuple[list[str], list[str]]:
    """The norms and activations of the model's convs: a text stem (an embedding) and an
    absent one have none."""
    convs = not spec.input.is_text and spec.stem.kind != "none"
    stem = [(spec.stem.norm, spec.stem.activation)] if convs else []
    pairs = stem + [(s.norm, s.activation) for s in spec.stages]
    return [norm for norm, _ in pairs], [act for _, act in pairs]


def _stem_lines(spec: ArchSpec, m: _Model) -> list[str]:
    """``self.stem = …``, or nothing for an image read as it is."""
    stem = spec.stem
    if spec.input.is_text:
        return [
            "# Token embeddings; id 0 pads (a zero vector that is never trained).",
            f"self.stem = nn.Embedding(VOCAB_SIZE, {stem.width}, padding_idx=0)",
        ]
    if stem.kind == "none":
        return []
    cin = spec.input.channels
    if stem.kind == "conv":
        call = m.conv(cin, stem.width, stem.kernel, stem.stride, stem.norm, stem.activation)
        return _call(call, "self.stem = ", "", 8)
    # A patch embedding: the conv's window is its stride and it has no padding.
    p, norm = stem.stride, stem.norm
    conv = f"nn.Conv2d({cin}, {stem.width}, {p}, stride={p}, bias={norm == 'none'})"
    norm_call = "nn.Identity()" if norm == "none" else f"{m.norm_code(norm)}({stem.width})"
    inp = spec.input
    shapes = f"{_shape(cin, inp.height, inp.width)} → {_shape(stem.width, *spec.stem_resolution())}"
    return [
        f"# {p}x{p} patches, no overlap: {shapes}",
        *wrap(
            "self.stem = nn.Sequential",
            [conv, norm_call, f"{ACTIVATION_CODE[stem.activation]}()"],
            "",
            8,
        ),
    ]


def render_net(spec: ArchSpec) -> tuple[str, _Model]:
    """The ``Net`` class source, and what it uses."""
    norms, acts = _convs_norms_acts(spec)
    m = _Model(spec, norm=_most_common(norms, "batch"), act=_most_common(acts, "relu"))
    dims = m.dims
    stem = spec.stem
    lines = _stem_lines(spec, m)
    if spec.stages:
        lines.append("self.stages = nn.Sequential(")
    cin = stem.width
    outputs = []  # each stage's output shape
    for i, (stage, (h, w)) in enumerate(zip(spec.stages, spec.resolutions(), strict=True)):
        down = m.downsample(stage)
        oh, ow = (h, w) if down is None else (math.ceil(h / 2), math.ceil(w / 2))
        outputs.append(_shape(stage.width, oh, ow, dims))
        shapes = f"{_shape(cin, h, w, dims)} → {outputs[-1]}"
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
    if spec.stages:
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

    first = _shape(stem.width, *spec.stem_resolution(), dims)
    forward = []
    if spec.input.is_text:
        forward += _text_forward(spec, first, outputs)
    else:
        if stem.kind != "none":
            forward.append(f"x = self.stem(x)  # {first}")
        if spec.stages:
            forward.append(f"x = self.stages(x)  # {_shape(cin, *spec.final_resolution(), dims)}")
        forward.append(f"x = {image.GLOBAL_POOL_CODE[spec.global_pool]}")
    forward.append("return self.head(x)")
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
            '    """' + indented(_summary_lines(spec), 4).lstrip(),
            "",
            takes,
            f"    output: (B, {spec.classes}) logits.",
            '    """',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            indented(lines, 8),
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            indented(forward, 8),
        ]
    )
    return source, m


def _text_forward(spec: ArchSpec, first: str, outputs: list[str]) -> list[str]:
    """A text ``Net.forward`` up to the head: the mask from the ids, each stage on the
    sequence and the mask, the mask halved after a stage that downsamples, the pool."""
    forward = [
        f"mask = token_mask(x)  # (B, 1, {spec.input.width}), True at real tokens",
        f"x = self.stem(x).transpose(1, 2)  # (B, L) ids → {first}, channels first",
    ]
    for i, (stage, shape) in enumerate(zip(spec.stages, outputs, strict=True)):
        forward.append(f"x = self.stages[{i}](x, mask)  # {shape}")
        if stage.downsample != "none":
            forward.append("mask = halve_mask(mask)")
    return forward + text_code.GLOBAL_POOL_CODE[spec.global_pool]


PREPROCESS = '''
def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W), values 0..255 → the normalised floats Net expects."""
    mean = torch.tensor(MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std
'''

# nas.model.fold_batchnorm, which the latency measurement applies.
FOLD_BATCHNORM = '''
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """For inference (net in eval mode), in place: each Conv2d followed by a BatchNorm2d
    becomes one conv with the norm folded in: the same outputs, one call less per conv,
    as the latency in README.md was measured."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d:
                seq[i] = fuse_conv_bn_eval(conv, norm)
                seq[i + 1] = nn.Identity()
    return net
'''

# Tokenises exactly like nas.data.Vocabulary (tests/export/test_encode.py checks every
# tokenizer without nas importable, tests/export/test_export.py real exports): lower-cased
# words by WORD_PATTERN, UTF-8 bytes, or ngrams (each word, its bigram with the word
# before, its character n-grams); an unknown word is OOV_ID, an unknown bigram or n-gram
# is dropped.
ENCODE = '''
@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str) -> tuple[str, dict[str, int]]:
    """vocab.json → (tokenizer, token → id), checked against Net."""
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    if vocab.get("format") != "nas.vocabulary" or vocab.get("version") != 1:
        raise ValueError(f"{path} is not a nas.vocabulary version 1 file")
    if vocab["tokenizer"] not in ("words", "bytes", "ngrams"):
        raise ValueError(f"{path} has an unknown tokenizer {vocab['tokenizer']!r}")
    if vocab["tokenizer"] != "bytes" and vocab["pattern"] != WORD_PATTERN:
        raise ValueError(f"{path} splits words other than Net's training data did")
    if vocab["tokenizer"] == "ngrams" and vocab.get("ngrams") != NGRAM_RULE:
        raise ValueError(f"{path} makes n-grams other than Net's training data did")
    if (vocab["size"], vocab["length"]) != (VOCAB_SIZE, LENGTH):
        raise ValueError(
            f"{path} has {vocab['size']} ids and length {vocab['length']}; "
            f"Net was trained with {VOCAB_SIZE} ids and length {LENGTH}"
        )
    return vocab["tokenizer"], {token: i for i, token in enumerate(vocab["tokens"])}


def word_ngrams(previous: str | None, word: str) -> list[str]:
    """What follows a word in an ngrams text: its bigram with the word before it, then
    the n-grams of WORD_BEGIN + word + WORD_END, by start, then length."""
    grams = [] if previous is None else [f"{previous} {word}"]
    marked = WORD_BEGIN + word + WORD_END
    for start in range(len(marked) - NGRAM_MIN + 1):
        for end in range(start + NGRAM_MIN, min(start + NGRAM_MAX, len(marked)) + 1):
            grams.append(marked[start:end])
    return grams


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
        elif tokenizer == "words":
            words = re.findall(WORD_PATTERN, text.lower())
            tokens = [index.get(word, OOV_ID) for word in words]
        else:
            tokens = []
            previous = None
            for word in re.findall(WORD_PATTERN, text.lower()):
                tokens.append(index.get(word, OOV_ID))
                # An unknown bigram or n-gram is dropped; "<pad>" and "<unk>" are none.
                grams = [index.get(g, PAD_ID) for g in word_ngrams(previous, word)]
                tokens += [i for i in grams if i > OOV_ID]
                previous = word
        tokens = tokens[:LENGTH]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
    return ids
'''


def _text_constants(spec: ArchSpec) -> list[str]:
    # WORD_PATTERN and the marks go out as string literals: no quote may end them early.
    assert '"' not in WORD_PATTERN and not WORD_PATTERN.endswith("\\")
    assert not {'"', "\\"} & {*WORD_BEGIN, *WORD_END}
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
        "# Ngrams: each word, its bigram with the word before, then the character n-grams",
        "# of WORD_BEGIN + word + WORD_END, NGRAM_MIN to NGRAM_MAX long; vocab.json names",
        "# the same rule.",
        f'WORD_BEGIN = "{WORD_BEGIN}"',
        f'WORD_END = "{WORD_END}"',
        f"NGRAM_MIN = {NGRAM_MIN}",
        f"NGRAM_MAX = {NGRAM_MAX}",
        "NGRAM_RULE = {",
        '    "word_bigrams": True,',
        '    "min_n": NGRAM_MIN,',
        '    "max_n": NGRAM_MAX,',
        '    "begin": WORD_BEGIN,',
        '    "end": WORD_END,',
        "}",
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
    pieces = _text_pieces(spec, m, net) if text else _image_pieces(spec, m, net)
    body = "\n\n\n".join(p.strip("\n") for p in pieces)
    stdlib = []
    if text:
        stdlib += ["import functools", "import json"]
    if "math." in body:
        stdlib.append("import math")
    abc = ", ".join(name for name in ("Callable", "Sequence") if f"{name}[" in body)
    if text:
        stdlib.append("import re")
    if abc:
        stdlib.append(f"from collections.abc import {abc}")
    if text:
        stdlib.append("from pathlib import Path")
    torch_imports = ["import torch"]
    if "F." in body:
        torch_imports.append("import torch.nn.functional as F")
    torch_imports.append("from torch import nn")
    if "fuse_conv_bn_eval(" in body:
        torch_imports.append("from torch.nn.utils.fusion import fuse_conv_bn_eval")
    groups = [["from __future__ import annotations"], stdlib, torch_imports]
    imports = "\n\n".join("\n".join(group) for group in groups if group).split("\n")
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


def _image_pieces(spec: ArchSpec, m: _Model, net: str) -> list[str]:
    """The helpers and classes an image ``Net`` uses, itself, and ``preprocess``."""
    pieces: list[str] = []
    if "group" in _convs_norms_acts(spec)[0]:
        pieces.append(image.GROUP_NORM)
    defaults = {"norm": m.norm_code(m.norm), "act": ACTIVATION_CODE[m.act]}
    args = BLOCK_ARGS.format(**defaults)
    blocks = [image.BLOCKS[kind].format(args=args) for kind in BLOCK_CLASS if kind in m.blocks]
    if any("conv_norm_act(" in piece for piece in [net, *blocks]):
        pieces.append(image.CONV_NORM_ACT.format(**defaults))
    pieces += blocks
    if any("relbias" in p for p in m.positions.values()):
        pieces.append(image.RELATIVE_POSITION_INDEX)
    for op in ATTENTION_CLASS:  # a stable order
        if op in m.positions:
            if op == "channel":
                pieces.append(image.SQUEEZE_EXCITATION)
            else:
                pieces.append(image.self_attention_class(op, m.positions[op]))
    if m.attention_pool:
        pieces.append(image.ATTENTION_POOL)
    if spec.global_pool == "attention":
        pieces.append(image.ATTENTION_GLOBAL_POOL)
    folds = [FOLD_BATCHNORM] if folds_batchnorm(spec) else []
    return [*pieces, *([image.STAGE] if spec.stages else []), net, PREPROCESS, *folds]


def _text_pieces(spec: ArchSpec, m: _Model, net: str) -> list[str]:
    """The helpers and classes a text ``Net`` uses, itself, and ``encode``; the mask
    helpers first, each only where some code calls it."""
    norms = set(_convs_norms_acts(spec)[0])
    pieces: list[str] = []
    if "batch" in norms:
        pieces.append(text_code.MASKED_BATCH_NORM)
    if "group" in norms:
        pieces.append(text_code.MASKED_GROUP_NORM)
    defaults = {"norm": m.norm_code(m.norm), "act": ACTIVATION_CODE[m.act]}
    args = BLOCK_ARGS.format(**defaults)
    blocks = [text_code.BLOCKS[kind].format(args=args) for kind in BLOCK_CLASS if kind in m.blocks]
    if any("ConvNormAct(" in piece for piece in [net, *blocks]):
        kind = "none" if norms == {"none"} else "both" if "none" in norms else "masked"
        after_conv = text_code.CONV_NORM[kind]
        pieces.append(text_code.CONV_NORM_ACT.format(**defaults, after_conv=after_conv))
    pieces += blocks
    if any("relbias" in p for p in m.positions.values()):
        pieces.append(text_code.RELATIVE_POSITION_INDEX)
    for op in ATTENTION_CLASS:  # a stable order
        if op in m.positions:
            if op == "channel":
                pieces.append(text_code.SQUEEZE_EXCITATION)
            else:
                pieces.append(text_code.self_attention_class(op, m.positions[op]))
    downsamples = {stage.downsample for stage in spec.stages}
    if m.attention_pool:
        pieces.append(text_code.ATTENTION_POOL)
    if "max" in downsamples:
        pieces.append(text_code.MAX_POOL)
    if "avg" in downsamples:
        pieces.append(text_code.AVG_POOL)
    if spec.global_pool == "attention":
        pieces.append(text_code.ATTENTION_GLOBAL_POOL)
    pieces += [*([text_code.STAGE] if spec.stages else []), net]
    helpers = [
        (name, code)
        for name, code in (
            ("halve_mask(", text_code.HALVE_MASK),
            ("masked_mean(", text_code.MASKED_MEAN),
            ("masked_avg_pool(", text_code.MASKED_AVG_POOL),
        )
        if any(name in piece for piece in pieces)
    ]
    return [text_code.TOKEN_MASK, *(code for _, code in helpers), *pieces, ENCODE]


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

"""ArchSpec: one network's structure, the single source of truth.

A tree of frozen dataclasses holding only primitives, tuples and op names (keys into
the registries of :mod:`nas.model.layers`, never callables). An :class:`ArchSpec` validates
the whole tree when it is constructed and raises :class:`ArchSpecError` naming the
path and the offending value. It round-trips through JSON with a ``schema_version``;
:func:`ArchSpec.from_dict` rejects unknown keys, wrong types, unknown op names and
out-of-range values: specs are read back from databases anyone can edit, so they are
data, never evaluated. Variants come from ``dataclasses.replace``.

Layout of the network a spec describes::

    input → stem → stages[0] → … → stages[-1] → global_pool → head → logits
    stage = blocks (depth × block, the first changes the width) → attention → downsample

There may be no stage (the pool reads the stem's map) and, for images, no stem
(``stem.kind="none"``: the stages or the pool read the pixels), so a spec spans from an
MLP on the flattened image to a deep attention CNN.

Images and text share the layout. An image input is ``channels × height × width``
pixels and the stem is a conv. A text input is a sequence of ``L`` token ids, described
as a 1×L map (``InputSpec(1, 1, L, kind="text", vocab_size=V)``) so that resolutions,
downsampling (the length halves, rounding up; the height stays 1) and the attention
memory budget are the same arithmetic; its stem is an embedding of ``stem.width``
dimensions and its stages run 1-D layers over the L positions.

Schema versions: 1 had no ``input.kind``/``input.vocab_size`` (every spec was an
image); 2 added them; 3 added ``stem.kind`` (``patch`` and ``none`` beside ``conv``) and
allows zero stages. Older dicts still load (version 1 as images, both with conv stems).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from nas.model import layers
from nas.model._budget import (
    attention_budget,
    attention_budget_bytes,
    budget_source,
)
from nas.model._plain import ArchSpecError, parse, to_plain

if TYPE_CHECKING:
    from nas.model._task import Task

SCHEMA_VERSION = 3
# Versions from_dict reads; what each added is in the module docstring.
READABLE_VERSIONS = (1, 2, 3)
INPUT_KINDS = ("image", "text")
STEM_KINDS = ("conv", "patch", "none")
MAX_PATCH = 16
# Ids 0 and 1 pad and stand for unknown tokens: a vocabulary needs at least one word more.
MIN_VOCAB_SIZE = 3
MAX_VOCAB_SIZE = 2**22

# Which attention fields each op reads; the others must stay at their defaults so
# that one network has one spec (the replay check in the export compares specs).
_SPATIAL_FIELDS = frozenset({"heads", "head_dim", "position"})
ATTENTION_FIELDS: dict[str, frozenset[str]] = {
    "softmax": _SPATIAL_FIELDS,
    "sigmoid": _SPATIAL_FIELDS,
    "sigmoid_norm": _SPATIAL_FIELDS,
    "manet_conv": _SPATIAL_FIELDS | {"kernel"},
    "manet_pool": _SPATIAL_FIELDS | {"pool_stride"},
    "channel": frozenset({"reduction"}),
}
POSITIONS = ("none", "learned", "relbias")
KERNELS = (1, 3, 5, 7)


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class InputSpec:
    """What the network takes: ``channels × height × width`` images, or for
    ``kind="text"`` a 1×1×L description of sequences of L token ids below ``vocab_size``.
    """

    channels: int
    height: int
    width: int
    kind: str = "image"
    vocab_size: int = 0

    @classmethod
    def for_task(cls, task: Task) -> InputSpec:
        """The input of a network for ``task`` (what the spaces build)."""
        if task.kind == "text":
            return cls(1, 1, task.length, kind="text", vocab_size=task.vocab_size)
        return cls(task.channels, task.height, task.width)

    @property
    def is_text(self) -> bool:
        return self.kind == "text"

    @property
    def dims(self) -> int:
        """Spatial dimensions of the feature maps: 2 (images) or 1 (sequences)."""
        return 1 if self.is_text else 2

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's tensor shape: ``(C, H, W)`` floats, or ``(L,)`` int64 token ids."""
        return (self.width,) if self.is_text else (self.channels, self.height, self.width)


@dataclass(frozen=True)
class StemSpec:
    """The first layer, by ``kind``:

    - ``conv``: a conv of ``kernel`` (same padding), input channels → ``width``, ``stride``
      1 or 2; for a text input, a token embedding of ``width`` dimensions (the other
      fields have no meaning there and must stay at their defaults);
    - ``patch``: non-overlapping ``stride``×``stride`` patches (``kernel`` equals
      ``stride``, 2..16; no padding, so an H×W image becomes ⌊H/p⌋×⌊W/p⌋), each projected
      to ``width`` channels, then the norm and activation;
    - ``none``: no layer, the pixels go on as they are: ``width`` is the input's channels
      and the other fields stay at their defaults.
    """

    width: int
    kernel: int = 3
    stride: int = 1
    norm: str = "batch"
    activation: str = "relu"
    kind: str = "conv"


@dataclass(frozen=True)
class AttentionSpec:
    """An attention op after a stage's blocks; see ``ATTENTION_FIELDS`` for which
    fields each op reads.

    ``head_dim`` None means width // heads (then heads must divide the width).
    ``kernel`` is the Q/K/V conv size of ``manet_conv``; ``pool_stride`` the key/value
    pooling of ``manet_pool``; ``reduction`` the squeeze ratio of ``channel``.
    """

    op: str
    heads: int = 1
    head_dim: int | None = None
    position: str = "none"
    kernel: int = 1
    pool_stride: int = 1
    reduction: int = 1


@dataclass(frozen=True)
class StageSpec:
    block: str
    width: int
    depth: int = 1
    kernel: int = 3
    activation: str = "relu"
    norm: str = "batch"
    attention: AttentionSpec | None = None
    downsample: str = "none"


@dataclass(frozen=True)
class HeadSpec:
    """Fully-connected head: hidden layers (Linear → activation → dropout), then logits."""

    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0


@dataclass(frozen=True)
class ArchSpec:
    input: InputSpec
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    global_pool: str
    head: HeadSpec
    classes: int

    schema_version: ClassVar[int] = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived facts -------------------------------------------------------------

    def stem_resolution(self) -> tuple[int, int]:
        """(height, width) of the stem's output (text: (1, L))."""
        stride = self.stem.stride
        if self.stem.kind == "patch":  # no padding: a partial patch at the edge is dropped
            return self.input.height // stride, self.input.width // stride
        return math.ceil(self.input.height / stride), math.ceil(self.input.width / stride)

    def resolutions(self) -> list[tuple[int, int]]:
        """(height, width) at which each stage's blocks and attention run (text: (1, L))."""
        h, w = self.stem_resolution()
        out = []
        for stage in self.stages:
            out.append((h, w))
            if stage.downsample != "none":
                h, w = math.ceil(h / 2), math.ceil(w / 2)
        return out

    def final_resolution(self) -> tuple[int, int]:
        """(height, width) of the map the global pool reads."""
        if not self.stages:
            return self.stem_resolution()
        h, w = self.resolutions()[-1]
        if self.stages[-1].downsample != "none":
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w

    def map_shape(self, height: int, width: int) -> tuple[int, ...]:
        """A resolution as the layers take it: ``(H, W)`` for images, ``(L,)`` for text."""
        return (width,) if self.input.is_text else (height, width)

    def map_shapes(self) -> list[tuple[int, ...]]:
        """Per stage, the shape of its feature map as the layers take it."""
        return [self.map_shape(h, w) for h, w in self.resolutions()]

    def pooled_features(self) -> int:
        """Width of the global pool's output, the head's input."""
        channels = self.stages[-1].width if self.stages else self.stem.width
        if self.global_pool == "avgmax":
            return 2 * channels
        if self.global_pool == "flatten":
            h, w = self.final_resolution()
            return channels * h * w
        return channels

    def attention_bytes(self) -> list[int]:
        """Per stage, the fp32 bytes one example's attention scores need (0: none)."""
        return [
            score_bytes(stage.attention, h, w)
            for stage, (h, w) in zip(self.stages, self.resolutions(), strict=True)
        ]

    def summary(self) -> str:
        """One line a person can read: ``stem16 | residual32x2 softmax(2x16) ↓max | …``."""
        stem = self.stem
        if self.input.is_text:
            parts = [f"embed{stem.width}"]
        elif stem.kind == "none":
            parts = ["pixels"]
        else:
            name = "patch" if stem.kind == "patch" else "stem"
            parts = [f"{name}{stem.width}" + (f"/{stem.stride}" if stem.stride > 1 else "")]
        for stage in self.stages:
            text = f"{stage.block}{stage.width}x{stage.depth}"
            if stage.kernel != 3:
                text += f" k{stage.kernel}"
            if stage.attention is not None:
                text += " " + _attention_summary(stage.attention)
            if stage.downsample != "none":
                text += f" ↓{stage.downsample}"
            parts.append(text)
        parts.append(self.global_pool)
        hidden = "-".join(map(str, self.head.hidden))
        parts.append(f"fc[{hidden}]→{self.classes}" if hidden else f"fc→{self.classes}")
        return " | ".join(parts)

    # -- JSON ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = to_plain(self)
        return {"schema_version": SCHEMA_VERSION, **data}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: object, *, attention_budget_mb: float | None = None) -> ArchSpec:
        """Parse untrusted data: every key, type, name and range is checked.

        ``attention_budget_mb`` is the attention memory budget to validate against (e.g.
        the one a study recorded); None: the current one (:func:`attention_budget_bytes`).
        """
        if attention_budget_mb is not None:
            with attention_budget(attention_budget_mb):
                return cls.from_dict(data)
        if not isinstance(data, dict):
            raise ArchSpecError("spec", f"must be a JSON object, got {type(data).__name__}")
        body = dict(data)
        version = body.pop("schema_version", None)
        if type(version) is not int or version not in READABLE_VERSIONS:
            known = " or ".join(map(str, READABLE_VERSIONS))
            raise ArchSpecError("schema_version", f"must be {known}, got {version!r}")
        # A key added by a later version, in an older dict, is an edit, not data.
        added = {2: ("input", ("kind", "vocab_size")), 3: ("stem", ("kind",))}
        for since, (part, keys) in added.items():
            if version < since and isinstance(body.get(part), dict):
                for key in keys:
                    if key in body[part]:
                        raise ArchSpecError(
                            f"{part}.{key}", f"is not a key of schema version {version}"
                        )
        spec = parse(cls, body, "")
        assert isinstance(spec, ArchSpec)
        return spec

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchSpecError("spec", f"is not valid JSON: {e}") from None
        return cls.from_dict(data)


def score_bytes(attention: AttentionSpec | None, h: int, w: int) -> int:
    """fp32 bytes of one example's attention scores for ``attention`` on an h×w map."""
    if attention is None or attention.op == "channel":
        return 0
    stride = attention.pool_stride
    keys = math.ceil(h / stride) * math.ceil(w / stride)
    return 4 * attention.heads * h * w * keys


def _attention_summary(a: AttentionSpec) -> str:
    if a.op == "channel":
        return f"channel(r{a.reduction})"
    dim = "" if a.head_dim is None else f"x{a.head_dim}"
    extra = {"manet_conv": f",k{a.kernel}", "manet_pool": f",s{a.pool_stride}"}.get(a.op, "")
    pos = "" if a.position == "none" else f",{a.position}"
    return f"{a.op}({a.heads}{dim}{extra}{pos})"


# --------------------------------------------------------------------------- validation


def _fail(path: str, message: str) -> ArchSpecError:
    return ArchSpecError(path, message)


def _int(path: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise _fail(path, f"must be in [{low}, {high}], got {value}")
    return value


def _choice(path: str, value: object, choices: tuple[Any, ...] | layers.Registry[Any]) -> None:
    # Exact type too: 3.0 == 3, but a float kernel is not a valid conv size.
    if not any(type(value) is type(c) and value == c for c in choices):
        names = ", ".join(map(repr, choices))
        raise _fail(path, f"must be one of {names}, got {value!r}")


def _validate(spec: ArchSpec) -> None:
    _validate_input(spec.input)
    _validate_stem(spec.stem, spec.input)
    if not isinstance(spec.stages, tuple) or not 0 <= len(spec.stages) <= 8:
        raise _fail("stages", f"must be a tuple of 0 to 8 stages, got {spec.stages!r}")
    budget = attention_budget_bytes()
    # Resolutions need the downsample names checked first; then each stage in turn.
    for i, stage in enumerate(spec.stages):
        if not isinstance(stage, StageSpec):
            raise _fail(f"stages[{i}]", f"must be a StageSpec, got {stage!r}")
        _choice(f"stages[{i}].downsample", stage.downsample, layers.DOWNSAMPLES)
    for i, (stage, (h, w)) in enumerate(zip(spec.stages, spec.resolutions(), strict=True)):
        _validate_stage(f"stages[{i}]", stage, h, w, spec.input.dims, budget)

    _choice("global_pool", spec.global_pool, layers.GLOBAL_POOLS)
    if spec.global_pool == "flatten" and spec.pooled_features() > 2**20:
        raise _fail(
            "global_pool",
            f"'flatten' would feed {spec.pooled_features()} features to the head, over 2^20",
        )
    head = spec.head
    if not isinstance(head.hidden, tuple) or len(head.hidden) > 4:
        raise _fail("head.hidden", f"must be a tuple of at most 4 widths, got {head.hidden!r}")
    for j, width in enumerate(head.hidden):
        _int(f"head.hidden[{j}]", width, 1, 8192)
    _choice("head.activation", head.activation, layers.ACTIVATIONS)
    dropout = head.dropout
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise _fail("head.dropout", f"must be a float in [0, 1), got {head.dropout!r}")
    _int("classes", spec.classes, 2, 100_000)


def _validate_input(inp: InputSpec) -> None:
    _choice("input.kind", inp.kind, INPUT_KINDS)
    if inp.kind == "image":
        _int("input.channels", inp.channels, 1, 64)
        _int("input.height", inp.height, 1, 4096)
        _int("input.width", inp.width, 1, 4096)
        if inp.vocab_size != 0:
            raise _fail(
                "input.vocab_size",
                f"applies to text inputs only and must stay 0, got {inp.vocab_size!r}",
            )
        return
    for name in ("channels", "height"):
        if getattr(inp, name) != 1:
            raise _fail(
                f"input.{name}",
                f"must be 1 for a text input (a sequence is a 1×L map), got {getattr(inp, name)!r}",
            )
    _int("input.width", inp.width, 1, 4096)  # the sequence length L
    _int("input.vocab_size", inp.vocab_size, MIN_VOCAB_SIZE, MAX_VOCAB_SIZE)


def _validate_stem(stem: StemSpec, inp: InputSpec) -> None:
    if not isinstance(stem, StemSpec):
        raise _fail("stem", f"must be a StemSpec, got {stem!r}")
    _choice("stem.kind", stem.kind, STEM_KINDS)
    _int("stem.width", stem.width, 1, 1024)
    _choice("stem.norm", stem.norm, layers.NORMS)
    _choice("stem.activation", stem.activation, layers.ACTIVATIONS)
    # One network, one spec: the fields a stem does not read stay at their defaults.
    unused: tuple[str, ...] = ()
    if inp.is_text:
        if stem.kind != "conv":
            raise _fail(
                "stem.kind", f"must be 'conv' (a token embedding) for text, got {stem.kind!r}"
            )
        unused, why = ("kernel", "stride", "norm", "activation"), "a text stem (a token embedding)"
    elif stem.kind == "conv":
        _choice("stem.kernel", stem.kernel, KERNELS)
        _choice("stem.stride", stem.stride, (1, 2))
    elif stem.kind == "patch":
        _int("stem.stride", stem.stride, 2, min(MAX_PATCH, inp.height, inp.width))
        if stem.kernel != stem.stride:
            raise _fail(
                "stem.kernel",
                f"must equal the patch size stem.stride={stem.stride} (patches do not "
                f"overlap), got {stem.kernel!r}",
            )
    else:
        if stem.width != inp.channels:
            raise _fail(
                "stem.width",
                f"must be the input's {inp.channels} channels when there is no stem, "
                f"got {stem.width}",
            )
        unused, why = ("kernel", "stride", "norm", "activation"), "stem kind 'none'"
    defaults = StemSpec(stem.width)
    for name in unused:
        value, default = getattr(stem, name), getattr(defaults, name)
        if value != default:
            raise _fail(
                f"stem.{name}", f"is not used by {why} and must stay {default!r}, got {value!r}"
            )


def _smallest_side(h: int, w: int, dims: int) -> int:
    """The side a 2-wide window must fit in: a sequence has only its length."""
    return w if dims == 1 else min(h, w)


def _validate_stage(path: str, stage: StageSpec, h: int, w: int, dims: int, budget: int) -> None:
    _choice(f"{path}.block", stage.block, layers.BLOCKS)
    _int(f"{path}.width", stage.width, 1, 2048)
    _int(f"{path}.depth", stage.depth, 1, 16)
    _choice(f"{path}.kernel", stage.kernel, KERNELS)
    _choice(f"{path}.activation", stage.activation, layers.ACTIVATIONS)
    _choice(f"{path}.norm", stage.norm, layers.NORMS)
    if stage.downsample != "none" and _smallest_side(h, w, dims) < 2:
        needs = (
            "a sequence of at least 2 positions" if dims == 1 else "a feature map of at least 2×2"
        )
        got = f"{w}" if dims == 1 else f"{h}×{w}"
        raise _fail(f"{path}.downsample", f"{stage.downsample!r} needs {needs}, got {got}")
    if stage.attention is not None:
        _validate_attention(f"{path}.attention", stage.attention, stage.width, h, w, dims, budget)


def _validate_attention(
    path: str, a: AttentionSpec, width: int, h: int, w: int, dims: int, budget: int
) -> None:
    if not isinstance(a, AttentionSpec):
        raise _fail(path, f"must be an AttentionSpec or None, got {a!r}")
    _choice(f"{path}.op", a.op, layers.ATTENTIONS)
    used = ATTENTION_FIELDS[a.op]
    defaults = AttentionSpec(op=a.op)
    for name in ("heads", "head_dim", "position", "kernel", "pool_stride", "reduction"):
        value, default = getattr(a, name), getattr(defaults, name)
        if name not in used and value != default:
            raise _fail(
                f"{path}.{name}",
                f"is not used by op {a.op!r} and must stay {default!r}, got {value!r}",
            )
    if a.op == "channel":
        _int(f"{path}.reduction", a.reduction, 1, 256)
        return
    _int(f"{path}.heads", a.heads, 1, 64)
    if a.head_dim is None:
        if width % a.heads:
            raise _fail(f"{path}.heads", f"must divide width {width}, got {a.heads}")
    else:
        _int(f"{path}.head_dim", a.head_dim, 1, 1024)
    _choice(f"{path}.position", a.position, POSITIONS)
    if a.op == "manet_conv":
        _choice(f"{path}.kernel", a.kernel, (3, 5, 7))
    if a.op == "manet_pool":
        _int(f"{path}.pool_stride", a.pool_stride, 2, 64)
        if a.pool_stride > _smallest_side(h, w, dims):
            where = f"sequence of {w} positions" if dims == 1 else f"{h}×{w} feature map"
            raise _fail(f"{path}.pool_stride", f"must not exceed the {where}, got {a.pool_stride}")
        if a.position == "relbias":
            raise _fail(
                f"{path}.position",
                "'relbias' needs one key per position; manet_pool pools the keys, got 'relbias'",
            )
    needed = score_bytes(a, h, w)
    if needed > budget:
        keys = needed // (4 * a.heads * h * w)
        raise _fail(
            path,
            f"needs {needed / 2**20:.1f} MiB of attention scores per example "
            f"({a.heads} heads × {h * w} × {keys} positions, fp32), over the budget of "
            f"{budget / 2**20:.1f} MiB ({budget_source()})",
        )

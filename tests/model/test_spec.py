"""ArchSpec: validation with paths and values, JSON round-trip, untrusted input."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from nas.model import (
    STEM_KINDS,
    ArchSpec,
    ArchSpecError,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
)
from nas.model._spec import SCHEMA_VERSION


def make_spec(**changes: object) -> ArchSpec:
    base = dict(
        input=InputSpec(1, 28, 28),
        stem=StemSpec(16),
        stages=(
            StageSpec(
                "residual", 32, 2, attention=AttentionSpec("softmax", 2, 8), downsample="max"
            ),
            StageSpec("plain", 96, attention=AttentionSpec("channel", reduction=4)),
        ),
        global_pool="avg",
        head=HeadSpec((64,), "gelu", 0.1),
        classes=10,
    )
    base.update(changes)
    return ArchSpec(**base)  # type: ignore[arg-type]


def with_stage(spec: ArchSpec, index: int, **changes: object) -> tuple[StageSpec, ...]:
    stages = list(spec.stages)
    stages[index] = dataclasses.replace(stages[index], **changes)  # type: ignore[arg-type]
    return tuple(stages)


def test_round_trip_is_exact() -> None:
    spec = make_spec()
    text = spec.to_json()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION == 3
    assert ArchSpec.from_json(text) == spec
    assert ArchSpec.from_json(text).to_json() == text


def test_heads_must_divide_width_names_path_and_value() -> None:
    spec = make_spec()
    bad = AttentionSpec("sigmoid", heads=5)  # head_dim None: width // heads
    stages = (*spec.stages, StageSpec("plain", 96, attention=bad))
    with pytest.raises(
        ArchSpecError, match=r"stages\[2\]\.attention\.heads must divide width 96, got 5"
    ):
        make_spec(stages=stages)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"classes": 1}, "classes"),
        ({"global_pool": "median"}, "global_pool"),
        ({"input": InputSpec(0, 28, 28)}, "input.channels"),
        ({"stem": StemSpec(16, stride=3)}, "stem.stride"),
        ({"stem": StemSpec(16, kernel=3.0)}, "stem.kernel"),  # type: ignore[arg-type]
        ({"head": HeadSpec((64,), "swish")}, "head.activation"),
        ({"head": HeadSpec((64,), "relu", 1.0)}, "head.dropout"),
        ({"head": HeadSpec((0,))}, r"head.hidden\[0\]"),
        ({"stages": (StageSpec("plain", 8),) * 9}, "stages"),
    ],
)
def test_invalid_top_level_fields_raise_with_path(changes: dict[str, object], path: str) -> None:
    with pytest.raises(ArchSpecError, match=rf"^{path} "):
        make_spec(**changes)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"block": "dense"}, r"stages\[1\]\.block"),
        ({"width": 0}, r"stages\[1\]\.width"),
        ({"depth": True}, r"stages\[1\]\.depth"),
        ({"kernel": 4}, r"stages\[1\]\.kernel"),
        ({"norm": "layer"}, r"stages\[1\]\.norm"),
        ({"attention": AttentionSpec("cosine")}, r"stages\[1\]\.attention\.op"),
        ({"attention": AttentionSpec("channel", heads=2)}, r"stages\[1\]\.attention\.heads"),
        (
            {"attention": AttentionSpec("softmax", 2, 8, "sinusoid")},
            r"stages\[1\]\.attention\.position",
        ),
        (
            {"attention": AttentionSpec("manet_conv", 2, 8, kernel=1)},
            r"stages\[1\]\.attention\.kernel",
        ),
        (
            {"attention": AttentionSpec("manet_pool", 2, 8, pool_stride=15)},
            r"stages\[1\]\.attention\.pool_stride",
        ),
        (
            {"attention": AttentionSpec("manet_pool", 2, 8, "relbias", pool_stride=2)},
            r"stages\[1\]\.attention\.position",
        ),
    ],
)
def test_invalid_stage_fields_raise_with_path(changes: dict[str, object], path: str) -> None:
    spec = make_spec()
    with pytest.raises(ArchSpecError, match=rf"^{path} "):
        make_spec(stages=with_stage(spec, 1, **changes))


def test_downsample_needs_a_map_to_halve() -> None:
    stages = tuple(StageSpec("plain", 8, downsample="max") for _ in range(6))
    with pytest.raises(
        ArchSpecError,
        match=r"stages\[5\]\.downsample 'max' needs a feature map of at least 2×2, got 1×1",
    ):
        make_spec(stages=stages)


def test_attention_over_memory_budget_is_refused_with_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = StageSpec("plain", 32, attention=AttentionSpec("softmax", heads=8, head_dim=4))
    # 8 heads × 784 × 784 × 4 bytes = 18.8 MiB > the 16 MiB default
    with pytest.raises(
        ArchSpecError,
        match=r"stages\[0\]\.attention needs 18\.8 MiB .* budget of 16\.0 MiB "
        r".*NAS_ATTENTION_BUDGET_MB",
    ):
        make_spec(stages=(big,))
    monkeypatch.setenv("NAS_ATTENTION_BUDGET_MB", "32")
    assert make_spec(stages=(big,)).attention_bytes() == [8 * 784 * 784 * 4]
    monkeypatch.setenv("NAS_ATTENTION_BUDGET_MB", "1")
    with pytest.raises(ArchSpecError, match=r"budget of 1\.0 MiB"):
        make_spec(stages=(big,))


def test_explicit_budget_is_independent_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nas.model import MAX_ATTENTION_BUDGET_MB, attention_budget, attention_budget_bytes

    big = StageSpec("plain", 32, attention=AttentionSpec("softmax", heads=8, head_dim=4))
    data = make_spec().to_dict()
    data["stages"] = [dataclasses.asdict(big)]  # 18.8 MiB of scores per example
    monkeypatch.setenv("NAS_ATTENTION_BUDGET_MB", "1")
    spec = ArchSpec.from_dict(data, attention_budget_mb=32)  # the stored budget, not the env
    assert spec.attention_bytes() == [8 * 784 * 784 * 4]
    with pytest.raises(ArchSpecError, match=r"over the budget of 1\.0 MiB"):
        ArchSpec.from_dict(data)  # no budget given: the reader's
    monkeypatch.setenv("NAS_ATTENTION_BUDGET_MB", "64")
    with pytest.raises(ArchSpecError, match=r"over the budget of 16\.0 MiB"):
        ArchSpec.from_dict(data, attention_budget_mb=16)
    # Everything built inside the context (a space's replay too) sees that budget.
    with attention_budget(16):
        assert attention_budget_bytes() == 16 * 2**20
        with pytest.raises(ArchSpecError, match=r"over the budget of 16\.0 MiB"):
            make_spec(stages=(big,))
    assert attention_budget_bytes() == 64 * 2**20
    for bad in (math.nan, math.inf, 0, -1.0, 1e30, MAX_ATTENTION_BUDGET_MB * 2, True, "16"):
        with pytest.raises(ArchSpecError, match="attention_budget_mb must be"):
            ArchSpec.from_dict(data, attention_budget_mb=bad)  # type: ignore[arg-type]
    for raw in ("inf", "nan", "-1", "x"):
        monkeypatch.setenv("NAS_ATTENTION_BUDGET_MB", raw)
        with pytest.raises(ArchSpecError, match="NAS_ATTENTION_BUDGET_MB must be"):
            attention_budget_bytes()


def test_pooled_attention_is_cheaper() -> None:
    pooled = StageSpec("plain", 32, attention=AttentionSpec("manet_pool", 8, 4, pool_stride=4))
    spec = make_spec(stages=(pooled,))
    assert spec.attention_bytes() == [8 * 784 * 49 * 4]


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["stem"].update(widht=3), "stem.widht"),
        (
            lambda d: d["stages"][0]["attention"].update(op="__import__('os').system('x')"),
            r"stages\[0\]\.attention\.op",
        ),
        (lambda d: d["stages"][0].update(width="32"), r"stages\[0\]\.width"),
        (lambda d: d["stages"][0].update(width=10**12), r"stages\[0\]\.width"),
        (lambda d: d["head"].update(hidden=[64, 2.5]), r"head\.hidden\[1\]"),
        (lambda d: d.pop("classes"), "classes"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(stages={"0": 1}), "stages"),
    ],
)
def test_from_dict_rejects_tampered_data(edit, path: str) -> None:  # type: ignore[no-untyped-def]
    data = make_spec().to_dict()
    edit(data)
    with pytest.raises(ArchSpecError, match=rf"^{path} "):
        ArchSpec.from_dict(data)


def test_from_json_rejects_non_json() -> None:
    with pytest.raises(ArchSpecError, match="not valid JSON"):
        ArchSpec.from_json("{not json")


def test_specs_are_frozen_and_variants_use_replace() -> None:
    spec = make_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.classes = 3  # type: ignore[misc]
    assert dataclasses.replace(spec, classes=3).classes == 3


def test_derived_shapes() -> None:
    spec = make_spec(global_pool="flatten")
    assert spec.resolutions() == [(28, 28), (14, 14)]
    assert spec.pooled_features() == 96 * 14 * 14
    assert "residual32x2 softmax(2x8) ↓max" in spec.summary()


# --------------------------------------------------------------------------- text


def make_text_spec(**changes: object) -> ArchSpec:
    base = dict(
        input=InputSpec(1, 1, 37, kind="text", vocab_size=500),
        stem=StemSpec(64),
        stages=(
            StageSpec(
                "residual",
                32,
                attention=AttentionSpec("softmax", 2, 8, "relbias"),
                downsample="max",
            ),
            StageSpec(
                "plain",
                48,
                kernel=5,
                attention=AttentionSpec("manet_pool", 2, 8, pool_stride=4),
                downsample="attention",
            ),
        ),
        global_pool="avgmax",
        head=HeadSpec((32,), "tanh", 0.25),
        classes=4,
    )
    base.update(changes)
    return ArchSpec(**base)  # type: ignore[arg-type]


def test_version_1_dicts_still_load_as_images() -> None:
    spec = make_spec()
    v1 = spec.to_dict()
    v1["schema_version"] = 1
    del v1["input"]["kind"], v1["input"]["vocab_size"]  # version 1 had neither
    del v1["stem"]["kind"]  # nor a stem kind (version 3)
    loaded = ArchSpec.from_dict(v1)
    assert loaded == spec and loaded.input.kind == "image" and loaded.input.vocab_size == 0
    assert ArchSpec.from_dict(loaded.to_dict()) == spec  # saved again as version 3
    v1["input"]["kind"] = "text"  # version 1 knew only images: this is an edit
    with pytest.raises(ArchSpecError, match=r"^input\.kind is not a key of schema version 1"):
        ArchSpec.from_dict(v1)


def test_version_2_dicts_load_with_conv_stems() -> None:
    spec = make_spec()
    v2 = spec.to_dict()
    v2["schema_version"] = 2
    del v2["stem"]["kind"]
    assert ArchSpec.from_dict(v2) == spec and spec.stem.kind == "conv"
    v2["stem"]["kind"] = "none"  # version 2 had conv stems only: this is an edit
    with pytest.raises(ArchSpecError, match=r"^stem\.kind is not a key of schema version 2"):
        ArchSpec.from_dict(v2)


def test_the_fast_end_mlp_patches_and_no_stages() -> None:
    mlp = make_spec(stem=StemSpec(1, kind="none"), stages=(), global_pool="flatten")
    assert mlp.stem_resolution() == mlp.final_resolution() == (28, 28)
    assert mlp.resolutions() == [] and mlp.pooled_features() == 784
    assert mlp.summary() == "pixels | flatten | fc[64]→10"
    # No padding: 28 // 8 = 3 patches a side (the last 4 pixels are dropped).
    patches = make_spec(
        stem=StemSpec(16, kernel=8, stride=8, kind="patch"), stages=(), global_pool="flatten"
    )
    assert patches.final_resolution() == (3, 3) and patches.pooled_features() == 16 * 9
    assert patches.summary().startswith("patch16/8 | flatten")
    staged = make_spec(stem=StemSpec(16, kernel=4, stride=4, kind="patch"))
    assert staged.resolutions() == [(7, 7), (4, 4)]
    for spec in (mlp, patches, staged):
        assert ArchSpec.from_json(spec.to_json()) == spec
    assert set(STEM_KINDS) == {"conv", "patch", "none"}


@pytest.mark.parametrize(
    ("stem", "message"),
    [
        (StemSpec(16, kernel=3, stride=4, kind="patch"), r"stem\.kernel must equal the patch"),
        (StemSpec(16, kernel=1, stride=1, kind="patch"), r"stem\.stride must be in \[2, 16\]"),
        (StemSpec(16, kernel=32, stride=32, kind="patch"), r"stem\.stride must be in \[2, 16\]"),
        (StemSpec(16, kind="none"), r"stem\.width must be the input's 1 channels"),
        (StemSpec(1, stride=2, kind="none"), r"stem\.stride is not used by stem kind 'none'"),
        (StemSpec(1, kind="conv2"), r"stem\.kind must be one of"),
        (StemSpec(16, stride=4), r"stem\.stride must be one of 1, 2"),
    ],
)
def test_stem_kinds_reject_what_they_do_not_read(stem: StemSpec, message: str) -> None:
    with pytest.raises(ArchSpecError, match=rf"^{message}"):
        make_spec(stem=stem)


def test_text_round_trip_shapes_and_summary() -> None:
    spec = make_text_spec()
    data = json.loads(spec.to_json())
    assert data["schema_version"] == 3
    assert data["input"] == {
        "channels": 1,
        "height": 1,
        "width": 37,
        "kind": "text",
        "vocab_size": 500,
    }
    assert ArchSpec.from_json(spec.to_json()) == spec
    # A sequence is a 1×L map: the length halves (rounding up), the height stays 1.
    assert spec.resolutions() == [(1, 37), (1, 19)]
    assert spec.final_resolution() == (1, 10)
    assert spec.map_shapes() == [(37,), (19,)]
    assert spec.input.shape == (37,) and spec.input.dims == 1
    assert spec.pooled_features() == 2 * 48
    assert spec.summary().startswith("embed64 | residual32x1 softmax(2x8,relbias) ↓max | ")
    # relbias and pooled keys on a sequence: 2 heads × 37 × 37, then 2 × 19 × ⌈19/4⌉.
    assert spec.attention_bytes() == [4 * 2 * 37 * 37, 4 * 2 * 19 * 5]
    assert make_text_spec(global_pool="flatten").pooled_features() == 48 * 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stem": StemSpec(64, kernel=5)}, r"^stem\.kernel is not used by a text stem"),
        ({"stem": StemSpec(64, stride=2)}, r"^stem\.stride is not used by a text stem"),
        ({"stem": StemSpec(64, norm="none")}, r"^stem\.norm .* must stay 'batch'"),
        ({"stem": StemSpec(64, activation="gelu")}, r"^stem\.activation .* must stay 'relu'"),
        (
            {"input": InputSpec(3, 1, 37, kind="text", vocab_size=500)},
            r"^input\.channels must be 1 for a text input \(a sequence is a 1×L map\), got 3",
        ),
        ({"input": InputSpec(1, 2, 37, kind="text", vocab_size=500)}, r"^input\.height "),
        ({"input": InputSpec(1, 1, 37, kind="text", vocab_size=2)}, r"^input\.vocab_size "),
        ({"input": InputSpec(1, 1, 0, kind="text", vocab_size=9)}, r"^input\.width "),
        ({"input": InputSpec(1, 1, 37, kind="audio")}, r"^input\.kind must be one of"),
    ],
)
def test_invalid_text_specs_name_the_path(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ArchSpecError, match=message):
        make_text_spec(**changes)


def test_image_inputs_have_no_vocabulary() -> None:
    with pytest.raises(ArchSpecError, match=r"^input\.vocab_size applies to text inputs only"):
        make_spec(input=InputSpec(1, 28, 28, vocab_size=100))


def test_sequences_refuse_what_does_not_fit_their_length() -> None:
    short = InputSpec(1, 1, 3, kind="text", vocab_size=50)
    halving = tuple(StageSpec("plain", 8, downsample="max") for _ in range(3))
    with pytest.raises(
        ArchSpecError,
        match=r"^stages\[2\]\.downsample 'max' needs a sequence of at least 2 positions, got 1",
    ):
        make_text_spec(input=short, stages=halving)
    pooled = StageSpec("plain", 8, attention=AttentionSpec("manet_pool", 1, 8, pool_stride=4))
    with pytest.raises(
        ArchSpecError,
        match=r"^stages\[0\]\.attention\.pool_stride must not exceed the sequence of 3 "
        r"positions, got 4",
    ):
        make_text_spec(input=short, stages=(pooled,))
    # On a sequence the length counts, not the height of 1: both fit 37 positions.
    assert make_text_spec().stages[0].downsample == "max"


def test_text_attention_over_the_budget_is_refused() -> None:
    long = InputSpec(1, 1, 4096, kind="text", vocab_size=50)
    big = StageSpec("plain", 32, attention=AttentionSpec("softmax", heads=1, head_dim=8))
    # 1 head × 4096 × 4096 × 4 bytes = 64 MiB > 16 MiB
    with pytest.raises(ArchSpecError, match=r"^stages\[0\]\.attention needs 64\.0 MiB"):
        make_text_spec(input=long, stages=(big,))


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d["input"].update(kind="audio"), r"input\.kind"),
        (lambda d: d["input"].update(kind=1), r"input\.kind"),
        (lambda d: d["input"].update(vocab_size="500"), r"input\.vocab_size"),
        (lambda d: d["input"].update(vocab_size=10**9), r"input\.vocab_size"),
        (lambda d: d["input"].update(kind="image"), r"input\.vocab_size"),  # 500 ids on images
        (lambda d: d["stem"].update(kernel=7), r"stem\.kernel"),
        (lambda d: d["stem"].update(kind="patch"), r"stem\.kind"),
        (lambda d: d.update(schema_version=4), "schema_version"),
        (lambda d: d.update(schema_version="2"), "schema_version"),
    ],
)
def test_from_dict_rejects_tampered_text_specs(edit, path: str) -> None:  # type: ignore[no-untyped-def]
    data = make_text_spec().to_dict()
    edit(data)
    with pytest.raises(ArchSpecError, match=rf"^{path} "):
        ArchSpec.from_dict(data)


def test_input_for_a_task() -> None:
    from nas.model import Task

    text = Task("t", "text", 1, 1, 1, 3, length=50, vocab_size=900)
    assert InputSpec.for_task(text) == InputSpec(1, 1, 50, kind="text", vocab_size=900)
    image = Task("i", "image", 3, 32, 30, 10)
    assert InputSpec.for_task(image) == InputSpec(3, 32, 30)
    assert InputSpec.for_task(image).shape == (3, 32, 30)

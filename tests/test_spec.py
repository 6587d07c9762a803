"""ArchSpec: validation with paths and values, JSON round-trip, untrusted input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nas.spec import (
    ArchSpec,
    ArchSpecError,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
)


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
    assert json.loads(text)["schema_version"] == 1
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
        ({"stages": ()}, "stages"),
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

"""Builder: module paths mirror spec paths, determinism, nothing global left behind."""

from __future__ import annotations

import torch

from nas.builder import build_model
from nas.spec import ArchSpec, AttentionSpec, HeadSpec, InputSpec, StageSpec, StemSpec


def spec() -> ArchSpec:
    return ArchSpec(
        input=InputSpec(3, 16, 16),
        stem=StemSpec(8),
        stages=(
            StageSpec(
                "residual",
                16,
                2,
                attention=AttentionSpec("softmax", 2, 4, "relbias"),
                downsample="conv",
            ),
            StageSpec("separable", 16, attention=AttentionSpec("channel", reduction=2)),
        ),
        global_pool="avgmax",
        head=HeadSpec((32,), "tanh", 0.5),
        classes=5,
    )


def test_module_paths_mirror_spec_paths() -> None:
    model = build_model(spec())
    names = dict(model.named_modules())
    for path in (
        "stem",
        "stages.0.blocks.0",
        "stages.0.blocks.1",
        "stages.0.attention",
        "stages.0.downsample",
        "stages.1.attention",
        "global_pool",
        "head",
    ):
        assert path in names
    assert "stages.0.attention.rel_table" in model.state_dict()
    assert "stages.0.attention.rel_index" not in model.state_dict()  # derived, not stored
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model(spec(), seed=7).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model(spec(), seed=7).state_dict()
    c = build_model(spec(), seed=8).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)

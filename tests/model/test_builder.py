"""Builder: module paths mirror spec paths, determinism, nothing global left behind."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from nas.model import (
    ArchSpec,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
    build_model,
    fold_batchnorm,
)


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


def text_spec() -> ArchSpec:
    return ArchSpec(
        input=InputSpec(1, 1, 21, kind="text", vocab_size=300),
        stem=StemSpec(16),
        stages=(
            StageSpec(
                "residual",
                24,
                attention=AttentionSpec("sigmoid", 2, 8, "relbias"),
                downsample="conv",
            ),
            StageSpec("separable", 24, 2, attention=AttentionSpec("channel", reduction=4)),
        ),
        global_pool="attention",
        head=HeadSpec((32,), "relu", 0.1),
        classes=3,
    )


def test_text_model_embeds_then_runs_1d_layers_under_the_same_paths() -> None:
    model = build_model(text_spec())
    assert isinstance(model.stem, nn.Embedding) and model.stem.padding_idx == 0
    state = model.state_dict()
    assert state["stem.weight"].shape == (300, 16)
    assert not state["stem.weight"][0].any()  # the padding id embeds to zeros
    assert state["stages.0.blocks.0.conv1.0.weight"].shape == (24, 16, 3)  # Conv1d
    assert state["stages.0.attention.rel_table"].shape == (2, 2 * 21 - 1)
    assert state["stages.0.attention.gate"].shape == (1, 24, 1)
    assert isinstance(dict(model.named_modules())["stages.0.downsample.0"], nn.Conv1d)
    ids = torch.randint(0, 300, (4, 21))
    out = model(ids)
    assert out.shape == (4, 3)
    out.sum().backward()
    assert model.stem.weight.grad is not None


def test_fold_batchnorm_gives_the_same_outputs_with_no_batchnorm_left_in_a_conv() -> None:
    model = build_model(spec(), seed=0)
    x = torch.randn(4, 3, 16, 16)
    model.train()
    model(x)  # running statistics other than the initial 0 and 1
    model.eval()
    with torch.inference_mode():
        expected = model(x)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(copy.deepcopy(model))
    left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert left < norms and isinstance(folded.stem[1], nn.Identity)
    assert folded.stem[0].bias is not None  # the norm's shift, now the conv's
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)
    # GroupNorm is no per-channel affine map in eval: it stays.
    grouped = build_model(replace(spec(), stem=StemSpec(8, norm="group")), seed=0).eval()
    assert isinstance(fold_batchnorm(grouped).stem[1], nn.GroupNorm)

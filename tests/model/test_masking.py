"""Padding never changes what a text network computes: the same texts padded to two
lengths give the same logits, in eval and in training (masked norm statistics).

The networks have no positional parameters (``learned`` and ``relbias`` are sized to one
length) and no ``flatten`` pool (its features are all positions'), so the same weights
run at both lengths."""

from __future__ import annotations

import pytest
import torch

from nas.model import (
    ArchSpec,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
    build_attention,
    build_model,
    layers,
)

VOCAB = 50
# Every op that mixes positions, every downsample, both norms, odd lengths on the way.
STAGES = {
    "softmax_max": (
        StageSpec("plain", 8, attention=AttentionSpec("softmax", 2, 4), downsample="max"),
        StageSpec("residual", 8, norm="group", attention=AttentionSpec("sigmoid", 2, 4)),
    ),
    "sigmoid_norm_avg": (
        StageSpec(
            "separable",
            8,
            depth=2,
            kernel=5,
            attention=AttentionSpec("sigmoid_norm", 1, 8),
            downsample="avg",
        ),
        StageSpec("residual", 12, attention=AttentionSpec("channel", reduction=4)),
    ),
    "manet_conv_conv": (
        StageSpec(
            "residual",
            8,
            norm="group",
            attention=AttentionSpec("manet_conv", 2, 4, kernel=5),
            downsample="conv",
        ),
        StageSpec("plain", 8, attention=AttentionSpec("manet_pool", 2, 4, pool_stride=4)),
    ),
    "attention_pool": (
        StageSpec("plain", 8, kernel=7, downsample="attention"),
        StageSpec("separable", 8, norm="none", attention=AttentionSpec("softmax", 1, 8)),
    ),
    "no_stages": (),
}


def spec(stages: tuple[StageSpec, ...], length: int, pool: str) -> ArchSpec:
    return ArchSpec(
        input=InputSpec(1, 1, length, kind="text", vocab_size=VOCAB),
        stem=StemSpec(8),
        stages=stages,
        global_pool=pool,
        head=HeadSpec((16,), "relu"),
        classes=3,
    )


def texts(length: int) -> torch.Tensor:
    """Three texts of 9, 1 and 0 tokens (ids ≥ 2), padded with 0 to ``length`` (≥ 9)."""
    ids = torch.zeros(3, length, dtype=torch.int64)
    ids[0, :9] = torch.tensor([5, 9, 2, 33, 7, 7, 41, 3, 18])
    ids[1, :1] = 12
    return ids


def opened(model: torch.nn.Module) -> torch.nn.Module:
    """Gates open and norms away from the identity, so every branch counts."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point() and not name.startswith("stem"):
                t.add_(torch.rand_like(t) * 0.3)
    return model


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "attention"])
@pytest.mark.parametrize("stages", STAGES.values(), ids=STAGES.keys())
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_text_padded_to_two_lengths_gives_the_same_logits(
    stages: tuple[StageSpec, ...], pool: str, training: bool
) -> None:
    """At length 9 the first text has no pad; at 23 it has 14."""
    short = opened(build_model(spec(stages, 9, pool)))
    long = build_model(spec(stages, 23, pool))
    long.load_state_dict(short.state_dict(), strict=True)
    short.train(training), long.train(training)
    got_short, got_long = short(texts(9)), long(texts(23))
    torch.testing.assert_close(got_long, got_short, rtol=1e-5, atol=1e-5)
    if training:  # the running statistics moved alike too
        for (name, a), b in zip(short.named_buffers(), long.buffers(), strict=True):
            if name.endswith(("running_mean", "running_var")):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_padding_changed_the_logits_before_masking() -> None:
    """The test above can fail: without the mask the same weights disagree."""
    model = opened(build_model(spec(STAGES["softmax_max"], 9, "avg"))).eval()
    x = model.stem(texts(9))
    for stage in model.stages:
        x = stage(x)  # no mask: pads take part
    unmasked = model.head(model.global_pool(x))
    assert not torch.allclose(unmasked, model(texts(9)), atol=1e-3)


def test_attention_gives_pads_no_weight() -> None:
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    keys = torch.tensor([True, True, False, True, False]).view(1, 1, 1, 5)
    for normalization in layers.NORMALIZATIONS:
        masked = layers.attend(q, k, v, normalization, key_mask=keys)
        kept = keys.flatten()
        expected = layers.attend(q, k[:, :, kept], v[:, :, kept], normalization)
        torch.testing.assert_close(masked, expected)


def test_an_empty_text_keeps_its_first_position() -> None:
    mask = layers.token_mask(torch.tensor([[0, 0, 0], [4, 0, 0]]))
    assert mask.tolist() == [[[True, False, False]], [[True, False, False]]]


def _modules() -> dict[str, torch.nn.Module]:
    attention = {
        op: build_attention_for(op)
        for op in ("softmax", "sigmoid", "sigmoid_norm", "manet_conv", "manet_pool", "channel")
    }
    blocks = {
        f"{block}_{norm}": layers.BLOCKS[block](
            6, 6 if block == "separable" else 8, 5, norm, "relu", 1
        )
        for block in layers.BLOCKS
        for norm in ("batch", "group")
    }
    downsamples = {
        f"down_{op}": layers.DOWNSAMPLES[op](6, "group", "relu", 1)
        for op in ("max", "avg", "conv", "attention")
    }
    pools = {
        f"pool_{op}": layers.GLOBAL_POOLS[op](6) for op in ("avg", "max", "avgmax", "attention")
    }
    return {**attention, **blocks, **downsamples, **pools}


def build_attention_for(op: str) -> torch.nn.Module:
    spec = {
        "manet_conv": AttentionSpec(op, 2, 4, kernel=5),
        "manet_pool": AttentionSpec(op, 2, 4, pool_stride=2),
        "channel": AttentionSpec(op, reduction=2),
    }.get(op, AttentionSpec(op, 2, 4))
    return build_attention(spec, 6, (12,))


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("real", [5, 12])
def test_a_layer_ignores_whatever_its_pads_hold(name: str, real: int) -> None:
    """A layer's output at real positions, with pads holding large garbage, equals its
    output on the sequence cut to its real positions (convs see zeros past its end)."""
    module = opened(MODULES[name]).train()
    torch.manual_seed(2)
    x = torch.randn(2, 6, 12)
    x[:, :, real:] = torch.randn(2, 6, 12 - real) * 50 + 20
    mask = torch.zeros(2, 1, 12, dtype=torch.bool)
    mask[:, :, :real] = True
    got = module(x, mask)
    expected = module(x[:, :, :real])
    if got.dim() == 3:  # positions: compare the real ones
        got = got[:, :, : expected.shape[-1]]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

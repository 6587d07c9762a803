"""The layer library: attention formulas, identity at init, registries, pooling, and the
1-D (sequence) twins of every layer."""

from __future__ import annotations

import math

import pytest
import torch

from nas.model import AttentionSpec, Stage, StageSpec, build_attention, layers


def qkv(n: int = 5, nk: int | None = None, d: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    nk = nk or n
    return (
        torch.randn(1, 2, n, d, generator=g),
        torch.randn(1, 2, nk, d, generator=g),
        torch.randn(1, 2, nk, d, generator=g),
    )


def weights_of(normalization: str, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The attention weights, read back by attending over one-hot values."""
    nk = k.shape[-2]
    eye = torch.eye(nk).expand(q.shape[0], q.shape[1], nk, nk)
    return layers.attend(q, k, eye, normalization)


def test_softmax_matches_formula_and_rows_sum_to_one() -> None:
    q, k, v = qkv()
    w = weights_of("softmax", q, k)
    expected = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)  # √d = 2
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 5))
    torch.testing.assert_close(layers.attend(q, k, v, "softmax"), expected @ v)


def test_sigmoid_uses_bias_minus_log_n() -> None:
    q, k, _ = qkv(n=3, nk=7)
    w = weights_of("sigmoid", q, k)
    scores = q @ k.transpose(-2, -1) / 2.0
    torch.testing.assert_close(w, torch.sigmoid(scores - math.log(7)))
    # Hand-checked entry: σ(s − log 7) = 1 / (1 + 7·e^(−s)).
    s = scores[0, 1, 2, 3].item()
    assert w[0, 1, 2, 3].item() == pytest.approx(1 / (1 + 7 * math.exp(-s)), rel=1e-5)
    # Elementwise, not normalised: rows need not sum to 1.
    assert not torch.allclose(w.sum(-1), torch.ones(1, 2, 3))


def test_sigmoid_norm_is_sigmoid_then_row_normalised() -> None:
    q, k, _ = qkv()
    w = weights_of("sigmoid_norm", q, k)
    sig = torch.sigmoid(q @ k.transpose(-2, -1) / 2.0)
    torch.testing.assert_close(w, sig / sig.sum(-1, keepdim=True))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 5))


def test_sigmoid_norm_survives_rows_of_very_negative_scores() -> None:
    # σ(-200) underflows to 0 in float32, so a plain σ / Σσ gives 0/0 = NaN: it stopped
    # text trials trained with AdamW. The weights must stay finite (uniform here).
    q = torch.full((1, 1, 3, 4), 20.0)
    k = torch.full((1, 1, 5, 4), -20.0)
    w = weights_of("sigmoid_norm", q, k)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.full_like(w, 1 / 5))


def test_hand_checked_two_by_two() -> None:
    # d = 1, q = [1, 0], k = [0, 2]: scores = [[0, 2], [0, 0]].
    q = torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1)
    k = torch.tensor([0.0, 2.0]).reshape(1, 1, 2, 1)
    s0 = 1 / (1 + math.exp(-2.0))
    sm = weights_of("softmax", q, k)[0, 0]
    torch.testing.assert_close(
        sm[0], torch.tensor([1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)])
    )
    torch.testing.assert_close(sm[1], torch.tensor([0.5, 0.5]))
    sn = weights_of("sigmoid_norm", q, k)[0, 0]
    torch.testing.assert_close(sn[0], torch.tensor([0.5 / (0.5 + s0), s0 / (0.5 + s0)]))
    sg = weights_of("sigmoid", q, k)[0, 0]  # b = −log 2
    torch.testing.assert_close(sg[1], torch.tensor([1 / 3, 1 / 3]))


ALL_OPS = [
    AttentionSpec("softmax", 2, 8, "relbias"),
    AttentionSpec("sigmoid", 2, 8, "learned"),
    AttentionSpec("sigmoid_norm", 1, 8),
    AttentionSpec("channel", reduction=4),
    AttentionSpec("manet_conv", 2, 4, kernel=5),
    AttentionSpec("manet_pool", 2, 8, "learned", pool_stride=2),
]


@pytest.mark.parametrize("spec", ALL_OPS, ids=lambda a: a.op)
def test_attention_is_identity_at_init_and_learns_away_from_it(spec: AttentionSpec) -> None:
    torch.manual_seed(0)
    module = build_attention(spec, channels=16, shape=(7, 5))
    x = torch.randn(3, 16, 7, 5)
    torch.testing.assert_close(module(x), x)
    module.gate.data.fill_(1.0)
    assert not torch.allclose(module(x), x)
    y = module(x)
    y.square().sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def test_relative_position_index_is_symmetric_in_offsets() -> None:
    idx = layers.relative_position_index(3, 4)
    assert idx.shape == (12, 12)
    assert idx.min() == 0 and idx.max() == (2 * 3 - 1) * (2 * 4 - 1) - 1
    assert torch.all(idx.diagonal() == idx[0, 0])  # zero offset, one entry


def test_registry_refuses_duplicates_and_names_unknowns() -> None:
    reg: layers.Registry[int] = layers.Registry("thing")
    reg.register("a", 1)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a", 2)
    with pytest.raises(KeyError, match="unknown thing 'b'; known: a"):
        reg["b"]


def test_every_attention_op_is_registered() -> None:
    assert set(layers.ATTENTIONS) == {
        "softmax",
        "sigmoid",
        "sigmoid_norm",
        "channel",
        "manet_conv",
        "manet_pool",
    }


@pytest.mark.parametrize("op", ["max", "avg", "conv", "attention"])
@pytest.mark.parametrize("size", [(8, 8), (7, 5), (2, 3)])
def test_downsamples_halve_rounding_up(op: str, size: tuple[int, int]) -> None:
    module = layers.DOWNSAMPLES[op](6, "batch", "relu", 2)
    y = module(torch.randn(2, 6, *size))
    assert y.shape == (2, 6, math.ceil(size[0] / 2), math.ceil(size[1] / 2))


def test_attention_pool_is_a_convex_combination_of_its_window() -> None:
    module = layers.AttentionPool(1)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = module(x)
    windows = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(1, 1, 2, 2, 4)
    assert torch.all(y >= windows.amin(-1) - 1e-5) and torch.all(y <= windows.amax(-1) + 1e-5)
    module.score.weight.data.fill_(0.0)
    module.score.bias.data.fill_(0.0)  # equal scores: the window mean
    torch.testing.assert_close(module(x), windows.mean(-1))


@pytest.mark.parametrize(
    ("op", "features"),
    [("avg", 6), ("max", 6), ("avgmax", 12), ("attention", 6), ("flatten", 6 * 12)],
)
def test_global_pools(op: str, features: int) -> None:
    y = layers.GLOBAL_POOLS[op](6)(torch.randn(2, 6, 3, 4))
    assert y.shape == (2, features)


def test_attention_global_pool_starts_as_the_mean() -> None:
    pool = layers.AttentionGlobalPool(4)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3)))  # zero query: uniform weights


# --------------------------------------------------------------------------- sequences


@pytest.mark.parametrize("spec", ALL_OPS, ids=lambda a: a.op)
def test_sequence_attention_is_identity_at_init_and_learns(spec: AttentionSpec) -> None:
    torch.manual_seed(0)
    module = build_attention(spec, channels=16, shape=(9,))
    x = torch.randn(3, 16, 9)
    torch.testing.assert_close(module(x), x)
    assert all(p.dim() <= 3 for p in module.parameters())  # Conv1d weights, (1, C, 1) gates
    module.gate.data.fill_(1.0)
    y = module(x)
    assert not torch.allclose(y, x)
    y.square().sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def test_relative_position_index_of_a_sequence() -> None:
    idx = layers.relative_position_index(5)
    assert torch.equal(idx, torch.arange(5)[:, None] - torch.arange(5)[None, :] + 4)
    assert torch.equal(idx, layers.relative_position_index(1, 5))  # a 1×L map: the same
    assert layers.relative_table_size((5,)) == 9 == layers.relative_table_size((1, 5))
    assert layers.relative_table_size((3, 4)) == 5 * 7


def as_sequence(state: dict[str, torch.Tensor], target: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A 1×L map model's weights for its sequence twin: a k×k conv on one row only ever
    meets the middle row of its kernel (the others see padding), the rest drop a 1."""
    out = {}
    for name, value in state.items():
        shape = target.state_dict()[name].shape
        if value.dim() == 4 and len(shape) == 3:  # conv weight (out, in, k, k)
            value = value[:, :, value.shape[2] // 2, :]
        out[name] = value.reshape(shape)
    return out


SEQUENCE_STAGES = [
    StageSpec("plain", 8, attention=AttentionSpec("softmax", 2, 4, "relbias"), downsample="max"),
    StageSpec(
        "residual",
        12,
        kernel=5,
        norm="group",
        attention=AttentionSpec("sigmoid", 2, 4, "learned"),
        downsample="avg",
    ),
    StageSpec(
        "separable",
        8,
        depth=2,
        norm="none",
        activation="gelu",
        attention=AttentionSpec("sigmoid_norm", 1, 8, "relbias"),
        downsample="conv",
    ),
    StageSpec(
        "plain", 8, attention=AttentionSpec("manet_conv", 2, 4, kernel=5), downsample="attention"
    ),
    StageSpec("plain", 8, attention=AttentionSpec("manet_pool", 2, 4, "learned", pool_stride=4)),
    StageSpec("residual", 16, attention=AttentionSpec("channel", reduction=4)),
]


@pytest.mark.parametrize("stage", SEQUENCE_STAGES, ids=lambda s: s.attention.op)
def test_a_sequence_is_a_one_row_map(stage: StageSpec) -> None:
    """The same weights give the same output on an L sequence (1-D layers) as on a 1×L map
    (2-D layers): the attention, blocks and downsampling are one computation over N
    positions, only the convs' and pools' dimensionality differs."""
    torch.manual_seed(0)
    image, sequence = Stage(stage, 8, (1, 11)), Stage(stage, 8, (11,))
    with torch.no_grad():  # gates open, norms away from the identity
        for t in [*image.parameters(), *image.buffers()]:
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.3)
    sequence.load_state_dict(as_sequence(image.state_dict(), sequence), strict=True)
    image.eval(), sequence.eval()
    x = torch.randn(2, 8, 11)
    with torch.inference_mode():
        expected = image(x.unsqueeze(2))
        got = sequence(x)
    assert expected.shape[2] == 1 and got.shape == (2, stage.width, expected.shape[3])
    torch.testing.assert_close(got, expected.squeeze(2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["max", "avg", "conv", "attention"])
@pytest.mark.parametrize("length", [8, 7, 2])
def test_sequence_downsamples_halve_rounding_up(op: str, length: int) -> None:
    module = layers.DOWNSAMPLES[op](6, "batch", "relu", 1)
    assert module(torch.randn(2, 6, length)).shape == (2, 6, math.ceil(length / 2))


@pytest.mark.parametrize(
    ("op", "features"),
    [("avg", 6), ("max", 6), ("avgmax", 12), ("attention", 6), ("flatten", 6 * 7)],
)
def test_global_pools_of_sequences(op: str, features: int) -> None:
    x = torch.randn(2, 6, 7)
    y = layers.GLOBAL_POOLS[op](6)(x)
    assert y.shape == (2, features)
    if op == "avg":
        torch.testing.assert_close(y, x.mean(-1))


def test_token_embedding_is_channels_first_and_pads_with_zeros() -> None:
    embed = layers.TokenEmbedding(10, 4)
    ids = torch.tensor([[3, 5, 0, 0]])
    y = embed(ids)
    assert y.shape == (1, 4, 4)  # (B, E, L)
    torch.testing.assert_close(y[0, :, 0], embed.weight[3])
    assert torch.equal(y[0, :, 2:], torch.zeros(4, 2))  # id 0 pads
    y.sum().backward()
    assert embed.weight.grad is not None and not embed.weight.grad[0].any()

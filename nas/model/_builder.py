"""ArchSpec → nn.Module.

Module paths mirror spec paths: ``stages.1.attention`` is built from
``spec.stages[1].attention``, ``stages.0.blocks.2`` from the third block of stage 0, so
``state_dict`` keys are predictable and the exported code has the same ones.

An image spec builds 2-D layers after a conv stem; a text spec builds a token embedding
(``nn.Embedding(V, E, padding_idx=0)``, its (B, L, E) output transposed to (B, E, L)) and
the 1-D twins of the same layers, under the same module paths. A text network carries
the mask of its real tokens (``layers.token_mask``) through every stage, halving it with
each downsample, so padding never changes its output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from nas.model import layers
from nas.model._spec import ArchSpec, AttentionSpec, StageSpec


class Stage(nn.Module):
    """``depth`` blocks (the first changes the width), attention, then downsampling."""

    def __init__(self, spec: StageSpec, cin: int, shape: tuple[int, ...]) -> None:
        """``shape``: the map's (H, W), or the sequence's (L,), this stage runs on."""
        super().__init__()
        dims = len(shape)
        make_block = layers.BLOCKS[spec.block]
        self.blocks = nn.Sequential(
            *(
                make_block(
                    cin if j == 0 else spec.width,
                    spec.width,
                    spec.kernel,
                    spec.norm,
                    spec.activation,
                    dims,
                )
                for j in range(spec.depth)
            )
        )
        self.attention = (
            nn.Identity()
            if spec.attention is None
            else build_attention(spec.attention, spec.width, shape)
        )
        self.downsample = layers.DOWNSAMPLES[spec.downsample](
            spec.width, spec.norm, spec.activation, dims
        )
        self.halves = spec.downsample != "none"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: a sequence's real positions (None for images); the output's are
        ``layers.halve_mask(mask)`` when the stage halves."""
        if mask is None:
            return self.downsample(self.attention(self.blocks(x)))
        for block in self.blocks:
            x = block(x, mask)
        if not isinstance(self.attention, nn.Identity):
            x = self.attention(x, mask)
        return self.downsample(x, mask) if self.halves else x


class Net(nn.Module):
    """stem → stages → global_pool → head, as the spec says (an absent stem or no stages:
    an identity)."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        stem = spec.stem
        self.text = spec.input.is_text
        self.stem: nn.Module
        if spec.input.is_text:
            self.stem = layers.TokenEmbedding(spec.input.vocab_size, stem.width)
        elif stem.kind == "none":
            self.stem = nn.Identity()
        else:
            self.stem = layers.ConvNormAct(
                spec.input.channels,
                stem.width,
                stem.kernel,
                stride=stem.stride,
                padding=0 if stem.kind == "patch" else None,
                norm=stem.norm,
                activation=stem.activation,
            )
        stages = []
        cin = stem.width
        for stage, shape in zip(spec.stages, spec.map_shapes(), strict=True):
            stages.append(Stage(stage, cin, shape))
            cin = stage.width
        self.stages = nn.Sequential(*stages)
        self.global_pool = layers.GLOBAL_POOLS[spec.global_pool](cin)
        head: list[nn.Module] = []
        features = spec.pooled_features()
        for hidden in spec.head.hidden:
            head += [nn.Linear(features, hidden), layers.ACTIVATIONS[spec.head.activation]()]
            if spec.head.dropout > 0:
                head.append(nn.Dropout(spec.head.dropout))
            features = hidden
        head.append(nn.Linear(features, spec.classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.text:
            return self.head(self.global_pool(self.stages(self.stem(x))))
        mask = layers.token_mask(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x, mask)
            if stage.halves:
                mask = layers.halve_mask(mask)
        return self.head(self.global_pool(x, mask))


def build_attention(spec: AttentionSpec, channels: int, shape: tuple[int, ...]) -> nn.Module:
    """The attention module of ``spec`` on ``channels`` × ``shape``: (H, W) or (L,)."""
    return layers.ATTENTIONS[spec.op](channels, shape, spec)


def build_model(spec: ArchSpec, seed: int | None = 0) -> Net:
    """Build the network of ``spec``; the same seed gives the same initial weights.

    The seed applies through a forked RNG, so the caller's global RNG state is left
    exactly as it was. ``seed=None`` draws from (and advances) the global RNG.
    """
    if seed is None:
        return Net(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net(spec)


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """For inference, in place: each ``Conv2d`` followed by a ``BatchNorm2d`` in a
    sequential module (``layers.ConvNormAct``) becomes one conv, the norm's eval-mode
    affine map folded into its weights and bias, and the norm an identity. Exact in eval
    mode (``net`` must be in it), as ONNX Runtime and ``torch.jit.freeze`` fold; at batch 1
    on a CPU the norm's call is about 1/6 of a one-conv network's latency (the README's fast
    end). Returns ``net``."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d:
                seq[i] = fuse_conv_bn_eval(conv, norm)
                seq[i + 1] = nn.Identity()
    return net

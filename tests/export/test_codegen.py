"""Generated model.py equals the built model: every op, every space, images and text (padded
texts too), without nas importable; padding never changes an exported text model's logits;
the generated encode() tokenises like nas.data.Vocabulary."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import optuna
import pytest
import torch

from nas.data import Vocabulary
from nas.export import _codegen as codegen
from nas.export import _layer_code as layer_code
from nas.export import _text_layer_code as text_layer_code
from nas.model import (
    STEM_KINDS,
    ArchSpec,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
    Task,
    build_model,
    layers,
)
from nas.search import load_space
from nas.train import make_input
from tests.conftest import build_vocabulary

optuna.logging.set_verbosity(optuna.logging.WARNING)

TASKS = (
    Task("gray", "image", channels=1, height=28, width=28, classes=10),
    Task("color", "image", channels=3, height=32, width=32, classes=7),
)
SPACES = ("attention_cnn", "manet", "seed_cnn", "resnet")
TEXT_TASKS = (
    Task("words", "text", 1, 1, 1, classes=4, length=40, vocab_size=500),
    Task("bytes", "text", 1, 1, 1, classes=2, length=33, vocab_size=258),
)

# Runs in a fresh interpreter where importing nas fails: the exported file must stand alone.
CHECK = """
import importlib.util, json, sys
sys.modules["nas"] = None  # any "import nas..." now raises ImportError
sys.modules["search_spaces"] = None
import torch
cases = json.loads(sys.argv[1])
for case in cases:
    spec = importlib.util.spec_from_file_location(case["name"], case["code"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net().eval()
    net.load_state_dict(torch.load(case["state"]), strict=True)
    x, expected = torch.load(case["io"])
    with torch.inference_mode():
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)
    if hasattr(module, "fold_batchnorm"):  # for inference: the same outputs, fewer norms
        norms = lambda m: sum(isinstance(n, torch.nn.BatchNorm2d) for n in m.modules())
        before = norms(net)
        folded = module.fold_batchnorm(net)
        assert norms(folded) < before, case["name"]
        with torch.inference_mode():
            torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)
    if "vocab" in case:  # encode() reads vocab.json with the standard library only
        ids = module.encode(case["texts"], case["vocab"])
        assert ids.dtype == torch.int64 and ids.tolist() == case["ids"], case["name"]
        assert module.encode(case["texts"][0], case["vocab"]).tolist() == case["ids"][:1]
print(f"{len(cases)} ok")
"""


def specs() -> list[tuple[str, ArchSpec]]:
    """Random specs of every space on both tasks, until every op has appeared."""
    out: list[tuple[str, ArchSpec]] = []
    for space in SPACES:
        suggest = load_space(space).suggest
        searched = space in ("attention_cnn", "manet")
        for task in TASKS:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=len(out)))
            for _ in range(12 if searched else 1):
                out.append((f"{space}_{task.name}_{len(out)}", suggest(study.ask(), task)))
    suggest = load_space("manet_text").suggest
    for task in TEXT_TASKS:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=len(out)))
        for _ in range(12):
            out.append((f"manet_text_{task.name}_{len(out)}", suggest(study.ask(), task)))
    return out


def ops_of(spec: ArchSpec) -> set[str]:
    used = {spec.global_pool, spec.head.activation}
    if not spec.input.is_text:  # a text stem is an embedding: no norm, no activation
        used.add(f"stem:{spec.stem.kind}")
        if spec.stem.kind != "none":
            used |= {spec.stem.norm, spec.stem.activation}
    for stage in spec.stages:
        used |= {stage.block, stage.norm, stage.activation, f"down:{stage.downsample}"}
        if stage.attention is not None:
            used |= {stage.attention.op, f"pos:{stage.attention.position}"}
    return used


# Hand-written specs for what random samples of the spaces may not reach.
EXTRA = (
    ArchSpec(
        input=InputSpec(3, 17, 15),  # odd sizes: ceil-mode and attention pooling pad
        stem=StemSpec(16, kernel=5, norm="none", activation="tanh"),
        stages=(
            StageSpec(
                "plain",
                16,
                norm="group",
                activation="sigmoid",
                downsample="attention",
                attention=AttentionSpec("sigmoid", heads=2, position="learned"),
            ),
            StageSpec(
                "separable",
                24,
                depth=2,
                activation="gelu",
                downsample="avg",
                attention=AttentionSpec("channel", reduction=4),
            ),
            StageSpec(
                "residual",
                24,
                kernel=5,
                norm="none",
                downsample="conv",
                attention=AttentionSpec(
                    "manet_pool", heads=3, head_dim=8, pool_stride=2, position="learned"
                ),
            ),
        ),
        global_pool="attention",
        head=HeadSpec(hidden=(32, 16), activation="silu", dropout=0.1),
        classes=5,
    ),
    ArchSpec(
        input=InputSpec(1, 12, 12),
        stem=StemSpec(8, stride=2),
        stages=(
            StageSpec(
                "residual", 16, attention=AttentionSpec("sigmoid_norm", heads=2, position="relbias")
            ),
            StageSpec(
                "plain",
                16,
                downsample="max",
                attention=AttentionSpec("manet_conv", heads=2, kernel=3),
            ),
        ),
        global_pool="flatten",
        head=HeadSpec(),
        classes=3,
    ),
    # The fast end: an MLP on the pixels, patches straight to the head (odd sizes: the
    # partial patches at the edges are dropped), and one stage on the pixels.
    ArchSpec(
        input=InputSpec(1, 28, 28),
        stem=StemSpec(1, kind="none"),
        stages=(),
        global_pool="flatten",
        head=HeadSpec(hidden=(32,), activation="gelu"),
        classes=10,
    ),
    ArchSpec(
        input=InputSpec(3, 17, 15),
        stem=StemSpec(8, kernel=4, stride=4, kind="patch", norm="group", activation="silu"),
        stages=(),
        global_pool="flatten",
        head=HeadSpec(hidden=(16,)),
        classes=4,
    ),
    ArchSpec(
        input=InputSpec(3, 9, 9),
        stem=StemSpec(3, kind="none"),
        stages=(StageSpec("plain", 8, attention=AttentionSpec("channel", reduction=2)),),
        global_pool="avgmax",
        head=HeadSpec(),
        classes=2,
    ),
)


# Hand-written text specs for what random manet_text samples never reach (channel
# attention, flatten, norms and activations the space does not offer), with odd lengths.
# Their vocabularies are real, so the exported encode() can be checked against nas.data.
CORPUS = ["Hello, World!", "hello again, world", "héllo wörld: 42 again", "the end"]
TEXT_VOCABS = (
    build_vocabulary(CORPUS, min_freq=1, length=29),
    Vocabulary("bytes", (), 12),
)
TEXTS = ["Hello there, WORLD!", "", "again " * 40, "héllo 42 zebra", "a\tb\nc"]


def text_input(vocab: Vocabulary) -> InputSpec:
    return InputSpec(1, 1, vocab.length, kind="text", vocab_size=vocab.size)


EXTRA_TEXT = (
    ArchSpec(
        input=text_input(TEXT_VOCABS[0]),
        stem=StemSpec(16),
        stages=(
            StageSpec(
                "plain",
                16,
                norm="group",
                activation="sigmoid",
                downsample="attention",
                attention=AttentionSpec("sigmoid", heads=2, position="learned"),
            ),
            StageSpec(
                "separable",
                24,
                depth=2,
                kernel=7,
                activation="gelu",
                downsample="avg",
                attention=AttentionSpec("channel", reduction=4),
            ),
            StageSpec(
                "residual",
                24,
                kernel=5,
                norm="none",
                downsample="conv",
                attention=AttentionSpec(
                    "manet_pool", heads=3, head_dim=8, pool_stride=2, position="learned"
                ),
            ),
        ),
        global_pool="attention",
        head=HeadSpec(hidden=(32, 16), activation="silu", dropout=0.1),
        classes=5,
    ),
    ArchSpec(
        input=text_input(TEXT_VOCABS[1]),
        stem=StemSpec(8),
        stages=(
            StageSpec(
                "residual", 16, attention=AttentionSpec("sigmoid_norm", heads=2, position="relbias")
            ),
            StageSpec(
                "plain",
                16,
                activation="tanh",
                downsample="max",
                attention=AttentionSpec("manet_conv", heads=2, kernel=3),
            ),
            StageSpec("plain", 8, attention=AttentionSpec("softmax", heads=2, position="relbias")),
        ),
        global_pool="flatten",
        head=HeadSpec(),
        classes=3,
    ),
)


def test_tables_cover_every_registered_name() -> None:
    assert set(layer_code.ACTIVATION_CODE) == set(layers.ACTIVATIONS)
    assert set(layer_code.BLOCK_CLASS) == set(layers.BLOCKS)
    assert set(layer_code.ATTENTION_CLASS) == set(layers.ATTENTIONS)
    for code in (layer_code, text_layer_code):  # images, and text with its mask
        assert set(code.NORM_CODE) == set(layers.NORMS)
        assert set(code.DOWNSAMPLE_CODE) == set(layers.DOWNSAMPLES)
        assert set(code.GLOBAL_POOL_CODE) == set(layers.GLOBAL_POOLS)
    assert set(text_layer_code.BLOCKS) == set(layers.BLOCKS)


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter and BN statistic moved, so zero-initialised gates and unit running
    stats cannot hide a wiring mistake behind an identity."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1)
    return model


def padded_texts(inputs: InputSpec) -> torch.Tensor:
    """Token ids as encode() pads them: a full text, two ending in pads (one of a single
    token), an empty one; then random ids, with a pad anywhere."""
    length = inputs.width
    ids = torch.randint(
        1, inputs.vocab_size, (4, length), generator=torch.Generator().manual_seed(0)
    )
    for row, n in enumerate((length, length // 2 + 1, 1, 0)):
        ids[row, n:] = 0
    return torch.cat([ids, make_input(inputs, 2)])


def test_exported_code_equals_built_model_for_every_op(tmp_path: Path) -> None:
    cases = []
    covered: dict[str, set[str]] = {"image": set(), "text": set()}
    all_specs = [
        *specs(),
        *((f"extra_{i}", s) for i, s in enumerate(EXTRA)),
        *((f"extra_text_{i}", s) for i, s in enumerate(EXTRA_TEXT)),
    ]
    for name, spec in all_specs:
        covered[spec.input.kind] |= ops_of(spec)
        model = perturb(build_model(spec, seed=1).eval())
        # float images, or int64 token ids: padded texts, an empty one among them
        x = padded_texts(spec.input) if spec.input.is_text else make_input(spec.input, 2)
        with torch.inference_mode():
            expected = model(x)
        code = tmp_path / f"{name}.py"
        code.write_text(codegen.render_code(spec, docstring=name, mean=(0.5,), std=(0.25,)))
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
        torch.save((x, expected), tmp_path / f"{name}.io.pt")
        case = {
            "name": name,
            "code": str(code),
            "state": str(tmp_path / f"{name}.pt"),
            "io": str(tmp_path / f"{name}.io.pt"),
        }
        if name.startswith("extra_text_"):
            vocab = TEXT_VOCABS[int(name.rsplit("_", 1)[1])]
            vocab.save(tmp_path / f"{name}.vocab.json")
            case |= {
                "vocab": str(tmp_path / f"{name}.vocab.json"),
                "texts": TEXTS,
                "ids": vocab.encode(TEXTS).tolist(),
            }
        cases.append(case)
    every = {
        *layers.BLOCKS,
        *layers.ATTENTIONS,
        *layers.GLOBAL_POOLS,
        *layers.NORMS,
        *layers.ACTIVATIONS,
        *(f"down:{d}" for d in layers.DOWNSAMPLES),
        "pos:none",
        "pos:learned",
        "pos:relbias",
    }
    for kind, ops in covered.items():  # every op, in 2-D and in 1-D
        assert every <= ops, f"not exercised on {kind}: {sorted(every - ops)}"
    stems = {f"stem:{kind}" for kind in STEM_KINDS}
    assert stems <= covered["image"], sorted(stems - covered["image"])
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(cases)} ok" in done.stdout
    assert sum(codegen.folds_batchnorm(spec) for _, spec in all_specs) >= 10


@pytest.mark.parametrize(
    "spec",
    EXTRA + EXTRA_TEXT,
    ids=["odd-sizes", "strided-stem", "mlp", "patches", "pixels-stage", "text-words", "text-bytes"],
)
def test_exported_code_is_lint_clean(spec: ArchSpec, tmp_path: Path) -> None:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed")
    path = tmp_path / "model.py"
    c = spec.input.channels  # one mean and std per channel
    path.write_text(
        codegen.render_code(spec, docstring="A model.\n\nMore.", mean=(0.5,) * c, std=(0.25,) * c)
    )
    # ruff's default line length (88), with the pyflakes, pycodestyle, import-order,
    # bugbear, pyupgrade, simplify and ruff rules: clean under a stricter config than ours.
    check = subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "E,F,W,I,B,UP,SIM,RUF", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [str(ruff), "format", "--isolated", "--check", "--diff", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_generated_code_has_only_what_the_model_uses() -> None:
    spec = EXTRA[1]
    code = codegen.render_code(spec, docstring="x", mean=(0.5,), std=(0.25,))
    assert "class ResidualBlock" in code and "class PlainBlock" in code
    assert "class SeparableBlock" not in code and "class SqueezeExcitation" not in code
    assert "class NormalizedSigmoidSelfAttention" in code and "class ConvSelfAttention" in code
    # manet_conv has no positional encoding here: no position code in its class
    conv_class = code.split("class ConvSelfAttention")[1].split("\nclass ")[0]
    assert "self.position" not in conv_class and "rel_table" not in conv_class
    assert "import nas" not in code and "from nas" not in code
    assert "x.flatten(1)" in code


def test_fold_batchnorm_only_where_a_conv_has_batchnorm() -> None:
    batch = replace(EXTRA[1], stem=replace(EXTRA[1].stem, norm="batch"))
    code = codegen.render_code(batch, docstring="x", mean=(0.5,), std=(0.25,))
    assert codegen.folds_batchnorm(batch) and "def fold_batchnorm(" in code
    assert "from torch.nn.utils.fusion import fuse_conv_bn_eval" in code
    mlp = codegen.render_code(EXTRA[2], docstring="x", mean=(0.5,), std=(0.25,))
    assert not codegen.folds_batchnorm(EXTRA[2]) and "fold_batchnorm" not in mlp
    assert not codegen.folds_batchnorm(EXTRA_TEXT[0])  # text convs: masked norms, kept


def test_fast_end_code_has_no_conv_helpers_it_does_not_use() -> None:
    mlp = codegen.render_code(EXTRA[2], docstring="x", mean=(0.5,), std=(0.25,))
    assert "conv_norm_act" not in mlp and "class Stage" not in mlp and "self.stem" not in mlp
    assert "x = x.flatten(1)" in mlp and "nn.Linear(784, 32)" in mlp
    patches = codegen.render_code(EXTRA[3], docstring="x", mean=(0.5,), std=(0.25,))
    assert "nn.Conv2d(3, 8, 4, stride=4, bias=False)" in patches and "3x17x15 → 8x4x3" in patches
    assert "conv_norm_act" not in patches and "group_norm(8)" in patches


def test_text_code_is_1d_with_an_embedding_and_encode() -> None:
    code = codegen.render_code(EXTRA_TEXT[1], docstring="x")
    assert "nn.Embedding(VOCAB_SIZE, 8, padding_idx=0)" in code and "VOCAB_SIZE = 258" in code
    assert "nn.Conv1d" in code and "MaskedBatchNorm1d(nn.BatchNorm1d)" in code
    assert "MaskedMaxPool1d()" in code and "MaskedGroupNorm" not in code
    assert "2d" not in code and "preprocess" not in code and "MEAN" not in code
    # The mask of the real tokens, from the ids, halved after the stage that downsamples
    forward = code.split("    def forward(self, x: torch.Tensor) -> torch.Tensor:")[1]
    assert "mask = token_mask(x)" in forward and forward.count("mask = halve_mask(mask)") == 1
    assert "x = self.stages[2](x, mask)" in forward and "(x * mask).flatten(1)" in forward
    assert "def encode(" in code and "LENGTH = 12" in code
    assert f'WORD_PATTERN = r"{codegen.WORD_PATTERN}"' in code
    assert "length=12" in code
    assert "import nas" not in code and "from nas" not in code
    with pytest.raises(ValueError, match="mean and std"):
        codegen.render_code(EXTRA[0], docstring="x")  # an image model needs them


def test_image_code_has_no_mask() -> None:
    for spec in EXTRA:
        code = codegen.render_code(spec, docstring="x", mean=(0.5,), std=(0.25,))
        assert "mask" not in code and "1d" not in code


# --------------------------------------------------------------------------- padding

# Exported text models on the same texts padded to two lengths: every op that mixes
# positions, every downsample and global pool, both masked norms, odd lengths on the way.
# No learned or relbias position and no flatten pool: their sizes are one length's.
PADDING_CASES = {
    "softmax-max-attention-avg-conv": (
        (
            StageSpec("plain", 8, attention=AttentionSpec("softmax", 2, 4), downsample="max"),
            StageSpec(
                "residual",
                12,
                norm="group",
                attention=AttentionSpec("sigmoid", 2, 4),
                downsample="attention",
            ),
            StageSpec(
                "separable",
                12,
                depth=2,
                kernel=5,
                attention=AttentionSpec("sigmoid_norm", 1, 8),
                downsample="avg",
            ),
            StageSpec(
                "plain",
                8,
                norm="none",
                attention=AttentionSpec("manet_pool", 2, 4, pool_stride=2),
                downsample="conv",
            ),
        ),
        "avgmax",
    ),
    "manet_conv-channel": (
        (
            StageSpec(
                "residual",
                8,
                norm="group",
                attention=AttentionSpec("manet_conv", 2, 4, kernel=5),
                downsample="conv",
            ),
            StageSpec("residual", 12, attention=AttentionSpec("channel", reduction=4)),
        ),
        "attention",
    ),
    "manet_pool-wide": (
        (StageSpec("plain", 8, attention=AttentionSpec("manet_pool", 1, 8, pool_stride=4)),),
        "max",
    ),
    "fasttext": ((), "avg"),
}


def padding_spec(stages: tuple[StageSpec, ...], pool: str, length: int) -> ArchSpec:
    return ArchSpec(
        input=InputSpec(1, 1, length, kind="text", vocab_size=50),
        stem=StemSpec(8),
        stages=stages,
        global_pool=pool,
        head=HeadSpec((16,), "relu"),
        classes=3,
    )


def texts(length: int) -> torch.Tensor:
    """Three texts of 9, 1 and 0 tokens, padded with 0 to ``length`` (≥ 9)."""
    ids = torch.zeros(3, length, dtype=torch.int64)
    ids[0, :9] = torch.tensor([5, 9, 2, 33, 7, 7, 41, 3, 18])
    ids[1, :1] = 12
    return ids


def exported(spec: ArchSpec, path: Path) -> ModuleType:
    """``spec``'s model.py, written to ``path`` and imported."""
    path.write_text(codegen.render_code(spec, docstring="x"))
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("stages", "pool"), PADDING_CASES.values(), ids=list(PADDING_CASES))
def test_exported_text_model_ignores_padding(
    stages: tuple[StageSpec, ...], pool: str, tmp_path: Path
) -> None:
    """The same weights give the same logits for the same texts padded to 20 or 37."""
    state = perturb(build_model(padding_spec(stages, pool, 20), seed=1)).state_dict()
    logits = []
    for length in (20, 37):
        module = exported(padding_spec(stages, pool, length), tmp_path / f"model_{length}.py")
        net = module.Net().eval()
        net.load_state_dict(state, strict=True)
        with torch.inference_mode():
            logits.append(net(texts(length)))
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0][0], logits[0][1])  # the texts are told apart


def test_exported_text_model_trains_like_the_built_one(tmp_path: Path) -> None:
    """In training the masked batch and group norms match the built model's: the same
    outputs and the same running statistics after a step."""
    stages, pool = PADDING_CASES["softmax-max-attention-avg-conv"]
    spec = padding_spec(stages, pool, 20)
    built = perturb(build_model(spec, seed=1))
    net = exported(spec, tmp_path / "model.py").Net()
    net.load_state_dict(built.state_dict(), strict=True)
    x = padded_texts(spec.input)
    torch.testing.assert_close(net.train()(x), built.train()(x), rtol=1e-4, atol=1e-5)
    for name, value in built.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, msg=name)


# --------------------------------------------------------------------------- stored text


def test_render_code_refuses_unsafe_docstrings_and_numbers() -> None:
    spec = EXTRA[0]
    fine = codegen.render_code(
        spec, docstring="A 'model'.\n\nMore.", mean=(0.5,) * 3, std=(0.25,) * 3
    )
    assert fine.startswith('"""A \'model\'.')
    for bad in ('x"""\nimport os', "x\\", 'ends in a quote"', "a\rb", "a\x00b", "a\u2028b"):
        with pytest.raises(ValueError, match="docstring"):
            codegen.render_code(spec, docstring=bad, mean=(0.5,) * 3, std=(0.25,) * 3)
    three = (0.5, 0.5, 0.5)
    for mean, std in (
        ((math.nan, 0.5, 0.5), three),
        (three, (0.5, math.inf, 0.5)),
        (three, (0.5, 0.5, 1e-9)),  # 0.0 at the 6 decimals written: a division by zero
        (three, (0.5, 0.5)),  # two stds for three channels
    ):
        with pytest.raises(ValueError, match="mean and std"):
            codegen.render_code(spec, docstring="x", mean=mean, std=std)

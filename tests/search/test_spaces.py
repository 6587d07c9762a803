"""Every space: random trials build, run forward and backward, and round-trip as JSON."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from nas.data import task_for
from nas.export._codegen import render_code
from nas.model import ArchSpec, Task, attention_budget_bytes, build_model
from nas.search import (
    SpaceError,
    check_task,
    default_space,
    load_builtin_space,
    load_space,
    space_names,
    starting_points,
)
from nas.space import sample

TASKS = [
    Task("gray28", "image", 1, 28, 28, 10),
    Task("rgb32", "image", 3, 32, 32, 7),
]
TRIALS = 200
FIXED = {"seed_cnn", "resnet"}


def test_builtin_spaces() -> None:
    assert set(space_names()) == {
        *("attention_cnn", "manet", "manet_text", "seed_cnn", "resnet", "text_cnn")
    }


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize("name", ["attention_cnn", "manet", "seed_cnn", "resnet"])
def test_random_trials_build_train_and_round_trip(name: str, task: Task) -> None:
    suggest = load_space(name).suggest
    count = 2 if name in FIXED else TRIALS  # a fixed design is the same every trial
    x = torch.randn(
        2, task.channels, task.height, task.width, generator=torch.Generator().manual_seed(0)
    )
    for i, (spec, params) in enumerate(sample(suggest, task, count, seed=1)):
        assert ArchSpec.from_json(spec.to_json()) == spec
        assert optuna.trial.FixedTrial(params).params is not None
        model = build_model(spec, seed=i)
        out = model(x)
        assert out.shape == (2, task.classes), spec.summary()
        out.logsumexp(dim=1).sum().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (pname, spec.summary())


def test_replay_gives_the_same_spec() -> None:
    suggest = load_space("attention_cnn").suggest
    for spec, params in sample(suggest, TASKS[0], 20, seed=3):
        assert suggest(optuna.trial.FixedTrial(params), TASKS[0]) == spec


def test_studies_made_before_the_fast_end_still_replay() -> None:
    """Params and specs recorded from attention_cnn when it had 2–4 stages only (seeded
    random samples on Fashion-MNIST's shape and a 96×96 RGB one): the same params give
    the same networks now."""
    rows = json.loads((Path(__file__).parent / "fixtures" / "attention_cnn_v1.json").read_text())
    tasks = {
        "fashion_mnist": task_for("fashion_mnist"),
        "rgb96": Task("rgb96", "image", 3, 96, 96, 5),
    }
    suggest = load_space("attention_cnn").suggest
    for row in rows:
        assert suggest(optuna.trial.FixedTrial(row["params"]), tasks[row["task"]]) == (
            ArchSpec.from_dict(row["spec"])
        ), row["params"]
    assert {len(r["spec"]["stages"]) for r in rows} == {2, 3, 4}


def test_the_space_spans_an_mlp_to_the_attention_cnn() -> None:
    """One seeded sample holds an MLP on the pixels, patches straight to the head, a
    one-stage network and a four-stage CNN with attention in every stage; every sample
    builds and exports to code that compiles."""
    task = TASKS[0]
    specs = [spec for spec, _ in sample(load_space("attention_cnn").suggest, task, 300, seed=5)]
    kinds = {(s.stem.kind, len(s.stages), s.global_pool == "flatten") for s in specs}
    assert ("none", 0, True) in kinds and ("patch", 0, True) in kinds
    assert any(len(s.stages) == 1 for s in specs)
    assert any(len(s.stages) == 4 and all(st.attention for st in s.stages) for s in specs)
    for spec in specs:
        build_model(spec)
        code = render_code(spec, docstring=spec.summary(), mean=(0.5,), std=(0.25,))
        compile(code, "model.py", "exec")


def test_large_inputs_map_attention_into_the_budget() -> None:
    task = Task("big", "image", 3, 224, 224, 100)
    for spec, _ in sample(load_space("attention_cnn").suggest, task, 30, seed=0):
        # Validated on construction, so within budget; a conv stem halves the map.
        assert spec.stem.stride == 2 if spec.stem.kind == "conv" else spec.stem.kind == "patch"


def test_load_space_by_path_and_errors(tmp_path: Path) -> None:
    src = Path(load_space("seed_cnn").__file__ or "")
    copy = tmp_path / "my_space.py"
    copy.write_text(src.read_text())
    assert load_space(str(copy)).suggest is not None
    with pytest.raises(SpaceError, match="unknown space 'nope'"):
        load_space("nope")
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(str(tmp_path / "missing.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(SpaceError, match="no function suggest"):
        load_space(str(tmp_path / "empty.py"))


def test_load_builtin_space_refuses_files_and_other_values(tmp_path: Path) -> None:
    # A name read from a study: only a built-in space, never a file it points at.
    assert load_builtin_space("seed_cnn") is load_space("seed_cnn")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\ndef suggest(trial, task): pass\n")
    for value in (str(evil), "evil.py", "search_spaces/seed_cnn.py", "_common", "", 42, None):
        with pytest.raises(SpaceError, match=r"is not a built-in space; built-in spaces: "):
            load_builtin_space(value)  # type: ignore[arg-type]
    assert not marker.exists()
    with pytest.raises(SpaceError, match=r"'seed_cnn\\nx' is not a built-in space"):
        load_builtin_space("seed_cnn\nx")  # shown escaped, on one line


def test_user_space_with_future_annotations_and_a_dataclass(tmp_path: Path) -> None:
    # dataclasses look the class's module up in sys.modules while the file runs.
    src = Path(load_space("seed_cnn").__file__ or "").read_text()
    path = tmp_path / "dc_space.py"
    head = "from __future__ import annotations\n\nimport dataclasses\n\n"
    body = src.replace("from __future__ import annotations\n", "")
    tail = "\n\n@dataclasses.dataclass\nclass Choice:\n    width: int = 8\n    name: str = 'x'\n"
    path.write_text(head + body + tail)
    module = load_space(str(path))
    assert module.Choice().width == 8 and callable(module.suggest)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nas.space", *args], capture_output=True, text=True, check=False
    )


def test_cli_sample_json_covers_every_op_and_is_reproducible() -> None:
    import json

    first = run_cli("attention_cnn", "--sample", "200", "--seed", "0", "--json")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 200
    rows = [json.loads(line) for line in lines]
    specs = [ArchSpec.from_dict(r["spec"]) for r in rows]
    assert all(r["flops"] > 0 and isinstance(r["params"], dict) for r in rows)
    ops = {s.attention.op for spec in specs for s in spec.stages if s.attention}
    assert ops == {"softmax", "sigmoid", "sigmoid_norm", "channel", "manet_conv", "manet_pool"}
    downs = {s.downsample for spec in specs for s in spec.stages}
    assert downs >= {"max", "avg", "conv", "attention"}
    assert {spec.global_pool for spec in specs} == {"avg", "max", "avgmax", "attention", "flatten"}
    # Same seed, same samples (the readable form, which skips the FLOP counts).
    readable = run_cli("attention_cnn", "--sample", "200", "--seed", "0")
    assert len(readable.stdout.splitlines()) == 200
    assert run_cli("attention_cnn", "--sample", "200", "--seed", "0").stdout == readable.stdout
    assert [line.split("] ", 1)[1] for line in readable.stdout.splitlines()] == [
        s.summary() for s in specs
    ]


def test_cli_describe_and_readable_sample() -> None:
    out = run_cli("attention_cnn", "--describe").stdout
    assert "s0.attn.kind" in out and "sigmoid_norm" in out and "(conditional)" in out
    out = run_cli("manet", "--sample", "2").stdout.splitlines()
    assert len(out) == 2 and "manet_conv" in out[0] and "manet_pool" in out[0]


def test_cli_unknown_space_is_one_line_exit_2() -> None:
    result = run_cli("no_such_space", "--sample", "1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown space" in result.stderr
    assert result.stdout == ""


def test_fixed_designs_match_their_description() -> None:
    seed = load_space("seed_cnn").spec(TASKS[0])
    assert seed.stem.width == 64 and seed.stages[0].width == 64 and seed.head.hidden == (512,)
    assert seed.pooled_features() == 64 * 14 * 14
    assert dataclasses.replace(seed, classes=3).classes == 3


# --------------------------------------------------------------------------- manet_text

TEXT_TASK = Task("news", "text", 1, 1, 1, 4, length=64, vocab_size=1000)


def test_manet_text_random_trials_build_train_and_round_trip() -> None:
    suggest = load_space("manet_text").suggest
    ids = torch.randint(0, TEXT_TASK.vocab_size, (2, TEXT_TASK.length))
    seen: set[str] = set()
    for i, (spec, params) in enumerate(sample(suggest, TEXT_TASK, TRIALS, seed=1)):
        assert spec.input.is_text and spec.input.shape == (TEXT_TASK.length,)
        assert ArchSpec.from_json(spec.to_json()) == spec
        assert suggest(optuna.trial.FixedTrial(params), TEXT_TASK) == spec  # replays
        model = build_model(spec, seed=i)
        out = model(ids)
        assert out.shape == (2, TEXT_TASK.classes), spec.summary()
        out.logsumexp(dim=1).sum().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (pname, spec.summary())
        seen |= {spec.global_pool, *(f"down:{s.downsample}" for s in spec.stages)}
        seen |= {s.attention.op for s in spec.stages if s.attention}
        seen |= {f"pos:{s.attention.position}" for s in spec.stages if s.attention}
        seen |= {f"kernel:{s.kernel}" for s in spec.stages}
        seen |= {f"stages:{len(spec.stages)}"}
    assert seen >= {
        *(f"stages:{n}" for n in range(4)),  # 0: a bag of embeddings (fastText)
        *("softmax", "sigmoid", "sigmoid_norm", "manet_conv", "manet_pool"),
        *("max", "avg", "avgmax", "attention"),
        *(f"down:{d}" for d in ("none", "max", "avg", "conv", "attention")),
        *("pos:none", "pos:learned", "pos:relbias"),
        *("kernel:3", "kernel:5", "kernel:7"),
    }


def test_text_cnn_is_one_fixed_text_network_that_builds_and_trains() -> None:
    suggest = load_space("text_cnn").suggest
    spec = suggest(optuna.trial.FixedTrial({}), TEXT_TASK)
    assert spec.summary() == "embed256 | plain64x1 k7 | avgmax | fc→4"
    assert ArchSpec.from_json(spec.to_json()) == spec
    out = build_model(spec, seed=0)(torch.randint(0, TEXT_TASK.vocab_size, (2, 64)))
    assert out.shape == (2, TEXT_TASK.classes)
    with pytest.raises(SpaceError, match="'text_cnn' builds networks for text tasks"):
        check_task(load_space("text_cnn"), Task("gray28", "image", 1, 28, 28, 10), "text_cnn")


@pytest.mark.parametrize("length", [8, 512, 4096])
def test_manet_text_fits_the_attention_budget(length: int) -> None:
    task = Task("long", "text", 1, 1, 1, 2, length=length, vocab_size=50)
    budget = attention_budget_bytes()
    specs = [spec for spec, _ in sample(load_space("manet_text").suggest, task, 100, seed=0)]
    for spec in specs:  # validated on construction; spelled out for the reader
        assert max(spec.attention_bytes(), default=0) <= budget
    first = [s.attention for spec in specs for s in spec.stages[:1] if s.attention]
    if length == 512:  # fits as sampled: up to 4 heads of full N×N attention
        assert any(a.op == "softmax" and a.heads == 4 for a in first)
    if length == 4096:  # 1 head of 4096² scores is 64 MiB: keys are pooled instead
        assert all(a.op == "manet_pool" for a in first)


def test_space_and_task_kinds_must_match() -> None:
    image = TASKS[0]
    with pytest.raises(ValueError, match="manet_text builds text networks"):
        load_space("manet_text").suggest(optuna.trial.FixedTrial({}), image)
    check_task(load_space("manet_text"), TEXT_TASK, "manet_text")
    check_task(load_space("attention_cnn"), image, "attention_cnn")
    with pytest.raises(SpaceError, match=r"'attention_cnn' builds networks for image tasks; "):
        check_task(load_space("attention_cnn"), TEXT_TASK, "attention_cnn")
    with pytest.raises(SpaceError, match=r"is an image task .*default space is attention_cnn"):
        check_task(load_space("manet_text"), image, "manet_text")
    assert (default_space(TEXT_TASK), default_space(image)) == ("manet_text", "attention_cnn")


def test_cli_samples_manet_text_on_its_example_task() -> None:
    import json

    result = run_cli("manet_text", "--sample", "3", "--seed", "0", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    specs = [ArchSpec.from_dict(r["spec"]) for r in rows]
    assert len(specs) == 3 and all(s.input.is_text and s.input.width == 64 for s in specs)
    assert all(r["flops"] > 0 for r in rows)
    readable = run_cli("manet_text", "--sample", "2").stdout.splitlines()
    assert len(readable) == 2 and all(" embed" in line for line in readable)
    assert "embed.width" in run_cli("manet_text", "--describe").stdout


def test_starting_points_are_whole_parameter_sets_of_the_space(tmp_path: Path) -> None:
    text = load_space("manet_text")
    bag, conv = starting_points(text, text.EXAMPLE_TASK, "manet_text")
    specs = [text.suggest(optuna.trial.FixedTrial(p), text.EXAMPLE_TASK) for p in (bag, conv)]
    assert specs[0].summary().startswith("embed64 | attention | fc")
    assert specs[1].summary().startswith("embed128 | separable128x1 k7 | attention | fc")
    # The default image space starts from bench/reference.py's attention CNN.
    image = load_space("attention_cnn")
    (cnn,) = starting_points(image, TASKS[0], "attention_cnn")
    assert image.suggest(optuna.trial.FixedTrial(cnn), TASKS[0]).summary() == (
        "stem16 | plain32x1 ↓max | plain64x1 ↓max | plain128x1 softmax(2x32,relbias) | avgmax "
        "| fc→10"
    )
    for name in space_names():  # every built-in space's points build on its task
        module = load_space(name)
        task = getattr(module, "EXAMPLE_TASK", TASKS[0])
        assert all(isinstance(p, dict) for p in starting_points(module, task, name))
    src = Path(load_space("seed_cnn").__file__ or "").read_text()
    src += "\ndef suggest(trial, task):\n    trial.suggest_int('w', 1, 4)\n    return spec(task)\n"
    for points, error in [
        ("[{'w': 2}]", None),
        ("{'w': 2}", "{'w': 2} is not a tuple of dicts"),
        (
            "({'w': [2]},)",
            r"\{'w': \[2\]\} is not a dict of parameter names to str, int, float, bool or None",
        ),
        ("({'w': 9},)", r"w = 9 is outside its distribution IntDistribution\(high=4"),
        ("({},)", r"\{\} does not build a network for 'gray28': .*'w' is not found"),
        (
            "({'w': 2, 'v': 1},)",
            r"\{'w': 2, 'v': 1\} sets parameters the space does not ask for here: v",
        ),
    ]:
        path = tmp_path / "points.py"
        path.write_text(f"{src}\nSTARTING_POINTS = {points}\n")
        module = load_space(str(path))
        if error is None:
            assert starting_points(module, TASKS[0], str(path)) == [{"w": 2}]
        else:
            with pytest.raises(
                SpaceError, match=re.escape(f"STARTING_POINTS of space '{path}': ") + error
            ):
                starting_points(module, TASKS[0], str(path))

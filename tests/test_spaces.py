"""Every space: random trials build, run forward and backward, and round-trip as JSON."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from nas.builder import build_model
from nas.space import SpaceError, load_space, sample, space_names
from nas.spec import ArchSpec
from nas.task import Task

TASKS = [
    Task("gray28", "image", 1, 28, 28, 10),
    Task("rgb32", "image", 3, 32, 32, 7),
]
TRIALS = 200
FIXED = {"seed_cnn", "resnet"}


def test_builtin_spaces() -> None:
    assert set(space_names()) == {"attention_cnn", "manet", "seed_cnn", "resnet"}


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


def test_large_inputs_map_attention_into_the_budget() -> None:
    task = Task("big", "image", 3, 224, 224, 100)
    for spec, _ in sample(load_space("attention_cnn").suggest, task, 30, seed=0):
        assert spec.stem.stride == 2  # validated on construction, so within budget


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
    assert {spec.global_pool for spec in specs} == {"avg", "max", "avgmax", "attention"}
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

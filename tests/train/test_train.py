"""The brief trainer: stopping rules, reporting, determinism, evaluation, global state."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch
from torch import nn

from nas.data import Data, Split
from nas.model import Task
from nas.train import TrainConfig, TrainConfigError, evaluate, train
from nas.train import _augment as aug
from nas.train import _device as dv
from nas.train import _trainer as tr

CLASSES = 4
SIDE = 8


def _split(n: int, seed: int) -> Split:
    """Images whose class is the quadrant holding a bright blob: learnable in a few steps,
    and still learnable after ±1 pixel translations and mirrors."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    half = SIDE // 2
    for c in range(CLASSES):
        top, left = (c // 2) * half, (c % 2) * half
        x[y == c, :, top + 1 : top + half - 1, left + 1 : left + half - 1] = 250
    return Split(x, y)


def _data(n_train: int = 256, n_val: int = 128, flip: bool = False) -> Data:
    task = Task("blobs", "image", channels=1, height=SIDE, width=SIDE, classes=CLASSES)
    return Data(
        task,
        _split(n_train, 1),
        _split(n_val, 2),
        _split(n_val, 3),
        mean=(0.3,),
        std=(0.4,),
        flip=flip,
    )


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8 * (SIDE // 2) ** 2, CLASSES),
    )


# fp32 asked for explicitly: "auto" would pick bf16 on an AMX machine. One thread: these
# models are tiny, and on a busy shared machine a second OpenMP thread mostly waits.
FAST = TrainConfig(
    epochs=2, batch_size=32, lr=0.05, crop_pad=1, report_every=None, precision="fp32", threads=1
)


class _Stop(Exception):
    pass


def test_learns_the_toy_task_and_fills_the_result() -> None:
    result = train(_model(), _data(), FAST)
    assert result.status == "ok"
    assert result.val_accuracy > 0.9
    assert result.steps == 2 * (256 // 32)
    assert result.epochs_done == pytest.approx(2.0)
    assert result.curve[-1] == (result.epochs_done, result.val_accuracy)
    assert len(result.loss_curve) == 1 and math.isfinite(result.loss_curve[0][1])
    assert result.images_per_second > 0
    assert result.wall_seconds >= result.train_seconds > 0
    assert result.precision == "fp32"


def test_same_seed_gives_identical_weights_other_seed_does_not() -> None:
    config = replace(FAST, epochs=1, flip=True, cutout=2, seed=7)
    data = _data(flip=True)
    models = [_model(), _model(), _model()]
    results = [
        train(models[0], data, config),
        train(models[1], data, config),
        train(models[2], data, replace(config, seed=8)),
    ]
    a, b, c = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert results[0].val_accuracy == results[1].val_accuracy
    assert results[0].loss_curve == results[1].loss_curve
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_lookahead_trains_and_stays_deterministic() -> None:
    config = replace(FAST, lookahead=True)
    a, b = _model(), _model()
    ra, rb = train(a, _data(), config), train(b, _data(), config)
    assert ra.status == "ok" and ra.val_accuracy > 0.9
    assert ra.val_accuracy == rb.val_accuracy
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_fractional_epochs() -> None:
    result = train(_model(), _data(), replace(FAST, epochs=0.5))
    assert result.steps == 4  # half of 8 steps per epoch
    assert result.epochs_done == pytest.approx(0.5)


def test_reports_at_each_rung_and_at_the_end() -> None:
    seen: list[tuple[float, float]] = []
    config = replace(FAST, report_every=0.5)
    result = train(_model(), _data(), config, report=lambda e, a: seen.append((e, a)))
    assert [e for e, _ in seen] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert seen == result.curve
    assert [e for e, _ in result.loss_curve] == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_report_raising_stops_training_and_reaches_the_caller() -> None:
    calls: list[float] = []

    def report(epoch: float, acc: float) -> None:
        calls.append(epoch)
        raise _Stop

    model, data = _model(), _data()
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    config = replace(FAST, epochs=50, report_every=1, threads=1)
    started = time.perf_counter()
    with pytest.raises(_Stop):
        train(model, data, config, report=report)
    assert calls == [1.0]
    assert time.perf_counter() - started < 20  # stopped after one epoch, not fifty
    # The trainer's forked RNG and thread setting were restored on the way out.
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before


def test_the_cost_is_estimated_from_the_first_steps_a_first_look_then_the_estimate() -> None:
    estimates: list[tuple[int, float, bool]] = []
    steps_taken: list[int] = []
    config = replace(FAST, epochs=4, report_every=1)  # 32 steps

    def report(epoch: float, acc: float) -> None:
        steps_taken.append(round(epoch * 8))

    def estimate(seconds: float, final: bool) -> None:
        estimates.append((len(steps_taken), seconds, final))

    result = train(_model(), _data(), config, report=report, estimate=estimate)
    # Both before the first rung (step 8): after step 2, then after step 5.
    assert [(rungs, final) for rungs, _, final in estimates] == [(0, False), (0, True)]
    assert estimates[-1][1] == result.estimated_seconds > 0 and estimates[0][1] > 0
    # An estimate of the whole training, not of the steps timed: near what it took.
    assert 0.2 * result.train_seconds < result.estimated_seconds < 5 * result.train_seconds
    estimates.clear()
    short = train(_model(), _data(), replace(FAST, epochs=0.5), estimate=estimate)
    assert [final for _, _, final in estimates] == [False]  # 4 steps: only the first look
    assert short.estimated_seconds == estimates[0][1]
    train(_model(), _data(), replace(FAST, epochs=0.25), estimate=estimate)  # 2 steps
    assert len(estimates) == 1  # nothing to estimate once training is done


def test_an_estimate_raising_stops_training_before_its_cost_is_spent() -> None:
    def estimate(seconds: float, final: bool) -> None:
        raise _Stop(seconds)

    started = time.perf_counter()
    with pytest.raises(_Stop):
        train(_model(), _data(), replace(FAST, epochs=200), estimate=estimate)
    assert time.perf_counter() - started < 20  # 2 of 1,600 steps (the first look)


def test_nan_from_the_model_stops_at_the_first_step() -> None:
    class NaNNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(SIDE * SIDE, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.flatten(1)) * float("nan")

    reported: list[float] = []
    config = replace(FAST, epochs=20, report_every=1)
    result = train(NaNNet(), _data(), config, report=lambda e, a: reported.append(e))
    assert result.status == "nan"
    assert result.steps == 1
    assert math.isnan(result.val_accuracy)
    assert reported == []


def test_exploding_learning_rate_is_caught_as_nan() -> None:
    config = replace(FAST, epochs=20, lr=1e9, warmup=0.0, start_factor=1.0)
    result = train(_model(), _data(), config)
    assert result.status == "nan"
    assert result.steps < 20 * 8


def test_time_budget_stops_with_an_annealed_schedule() -> None:
    config = replace(FAST, epochs=10_000, max_seconds=1.0)
    result = train(_model(), _data(), config)
    assert result.status == "time_limit"
    assert 0 < result.epochs_done < 10_000
    assert result.train_seconds < 1.5
    assert result.val_accuracy > 0.5  # a valid, finished model, not a crashed one


def test_flip_false_in_the_data_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_flip(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("flipped a dataset that forbids flips")

    monkeypatch.setattr(aug, "random_flip", no_flip)
    result = train(_model(), _data(flip=False), replace(FAST, flip=True, tta=True))
    assert result.status == "ok"


def test_global_state_is_left_alone() -> None:
    model, data = _model(), _data()  # _model seeds the global RNG itself
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    train(model, data, replace(FAST, threads=1, epochs=0.25))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_default_dtype() == dtype
    assert torch.get_num_threads() == threads


def test_auto_threads_trains_and_restores_the_count() -> None:
    threads = torch.get_num_threads()
    result = train(_model(), _data(), replace(FAST, threads="auto"))
    assert result.status == "ok" and result.val_accuracy > 0.9
    assert torch.get_num_threads() == threads


def test_thread_tuner_keeps_the_faster_count(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", counts.append)
    tuner = dv.ThreadTuner(2)
    probe = tuner.PROBE + 1  # steps per probe, the untimed first one included
    step_time = {2: 0.3, 1: 0.1}  # a busy machine: one thread is faster
    for _ in range(2 * probe):
        tuner.record(step_time[tuner.current])
    assert tuner.current == 1 and tuner.probing is None
    # A re-probe of two threads that loses backs off: the next one comes later.
    tuner.since -= tuner.PERIOD  # as if the period had passed
    for _ in range(3 + probe):
        tuner.record(step_time[tuner.current])
    assert tuner.current == 1 and tuner.period == 2 * tuner.PERIOD
    # The load goes away: the periodic re-probe moves back to two threads.
    tuner.since -= tuner.period
    step_time = {2: 0.05, 1: 0.1}
    for _ in range(3 + probe):
        tuner.record(step_time[tuner.current])
    assert tuner.current == 2
    assert tuner.period == tuner.PERIOD
    assert counts[-1] == 2


class _Oracle(nn.Module):
    """Predicts the class written in pixel (0, 0) as ``10 * class`` (after un-normalising)."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixel = (x[:, 0, 0, 0] * self.std + self.mean) * 255
        return -(pixel[:, None] - 10 * torch.arange(CLASSES, device=x.device)).abs()


def test_evaluate_counts_correct_predictions_across_ragged_batches() -> None:
    n = 103
    y = torch.arange(n) % CLASSES
    x = torch.zeros(n, 1, SIDE, SIDE, dtype=torch.uint8)
    x[:, 0, 0, 0] = (10 * y).to(torch.uint8)
    model = _Oracle(0.3, 0.4).train()
    assert evaluate(model, Split(x, y), (0.3,), (0.4,), batch_size=10) == 1.0
    assert model.training  # mode restored
    wrong = y.clone()
    wrong[:40] = (wrong[:40] + 1) % CLASSES
    assert evaluate(model, Split(x, wrong), (0.3,), (0.4,), batch_size=7) == pytest.approx(63 / n)
    empty = Split(x[:0], y[:0])
    assert math.isnan(evaluate(model, empty, (0.3,), (0.4,)))


def test_schedules() -> None:
    one = TrainConfig(schedule="onecycle", warmup=0.2, start_factor=0.1, end_factor=0.0)
    assert tr.lr_factor(one, 0.0) == pytest.approx(0.1)
    assert tr.lr_factor(one, 0.2) == pytest.approx(1.0)
    assert tr.lr_factor(one, 0.6) == pytest.approx(0.5)
    assert tr.lr_factor(one, 1.0) == pytest.approx(0.0)
    cos = TrainConfig(schedule="cosine", warmup=0.1, end_factor=0.0)
    assert tr.lr_factor(cos, 0.05) == pytest.approx(0.5)
    assert tr.lr_factor(cos, 0.1) == pytest.approx(1.0)
    assert tr.lr_factor(cos, 0.55) == pytest.approx(0.5)
    assert tr.lr_factor(cos, 1.0) == pytest.approx(0.0)


def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(dv, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert dv.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(dv, "_cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert dv.resolve_precision("auto", cpu) == "bf16"
    assert dv.resolve_precision("fp32", cpu) == "fp32"
    assert dv.resolve_memory_format("auto", cpu) == "channels_last"
    assert dv.resolve_memory_format("contiguous", cpu) == "contiguous"


def test_bf16_autocast_trains() -> None:
    config = replace(FAST, epochs=1, precision="bf16")
    result = train(_model(), _data(), config)
    assert result.status == "ok"
    assert result.precision == "bf16"
    assert result.val_accuracy > 0.5


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs"),
        ("optimizer", "lamb", "optimizer"),
        ("warmup", 1.0, "warmup"),
        ("crop_pad", -1, "crop_pad"),
        ("precision", "fp16", "precision"),
        ("report_every", 0, "report_every"),
        ("token_dropout", 1.0, "token_dropout"),
    ],
)
def test_bad_config_is_refused(field: str, value: object, match: str) -> None:
    with pytest.raises((TrainConfigError, aug.AugmentError), match=match):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_task_defaults_set_adamw_for_text_and_yield_to_given_fields() -> None:
    image = TrainConfig.for_task("image", epochs=3)
    assert image == TrainConfig(epochs=3)
    text = TrainConfig.for_task("text", epochs=2)
    assert (text.optimizer, text.lr, text.weight_decay) == ("adamw", 0.03, 0.0)
    assert TrainConfig.for_task("text", lr=0.003).lr == 0.003
    with pytest.raises(KeyError):
        TrainConfig.for_task("audio")  # type: ignore[arg-type]


def test_adamw_steps_fused_where_the_device_has_the_kernel_and_unfused_elsewhere() -> None:
    config = TrainConfig.for_task("text")
    model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 2))
    fused = tr._make_optimizer(model, config)
    assert isinstance(fused, torch.optim.AdamW) and fused.defaults["fused"] is True
    # No fused kernel on the meta device: the loop of tensor ops, not an error.
    elsewhere = tr._make_optimizer(nn.Linear(8, 2, device="meta"), config)
    assert isinstance(elsewhere, torch.optim.AdamW) and not elsewhere.defaults["fused"]

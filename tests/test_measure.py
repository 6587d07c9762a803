"""Measurements: exact counts, latency that is repeatable and ordered, memory, fingerprint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.train import Latency, count_flops, count_params, fingerprint, measure_latency, peak_memory

SHAPE = (16, 24, 24)


def _convs(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(16, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


def test_count_params() -> None:
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2, bias=False))
    assert count_params(model) == 10 * 5 + 5 + 5 * 2
    model[1].weight.requires_grad_(False)
    assert count_params(model) == 55


def test_count_flops_equals_the_hand_count() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    per_image = 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 × out elements × (cin × k × k)
    assert count_flops(conv, (3, 16, 16)) == per_image
    assert count_flops(conv, (3, 16, 16), batch=4) == 4 * per_image
    assert count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)).train()
    assert count_flops(model, (3, 16, 16)) == per_image + 2 * 8 * 16 * 16 * 10
    assert model.training  # mode restored


def _latency_pair(model: nn.Module) -> tuple[Latency, Latency]:
    def once() -> Latency:
        return measure_latency(model, SHAPE, batch=8, threads=1, min_run_time=0.5)

    return once(), once()


def test_same_model_twice_gives_medians_within_5_percent() -> None:
    # 0.26 GFLOP per call, a few ms: long enough that timer noise is small; one thread
    # so that a neighbour on the other core disturbs less. The shared
    # machine can still stall one run, so a pair may be retried, but each pair must agree.
    model = _convs(48)
    ratios = []
    for _ in range(5):
        a, b = _latency_pair(model)
        assert a.median_ms > 0.5, "model too small for a stable timing"
        ratios.append(abs(a.median_ms - b.median_ms) / min(a.median_ms, b.median_ms))
        if ratios[-1] <= 0.05:
            break
    assert min(ratios) <= 0.05, f"medians differ by {ratios}"


def test_more_compute_measures_slower() -> None:
    small, big = _convs(16), _convs(64)  # 4x the channels: ~10x the FLOPs
    big_ms = measure_latency(big, SHAPE, batch=8, threads=1, min_run_time=0.2).median_ms
    small_ms = measure_latency(small, SHAPE, batch=8, threads=1, min_run_time=0.2).median_ms
    assert big_ms > small_ms


def test_latency_fields_and_the_model_left_alone() -> None:
    model = _convs(8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    lat = measure_latency(
        model, SHAPE, batch=4, threads=1, min_run_time=0.05, memory_format="channels_last"
    )
    assert lat.batch == 4 and lat.threads == 1 and lat.device == "cpu"
    assert lat.memory_format == "channels_last" and lat.precision == "fp32"
    assert lat.iqr_ms >= 0 and lat.runs >= 1
    assert lat.throughput == pytest.approx(4 / (lat.median_ms / 1e3))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).is_contiguous()
    assert torch.get_num_threads() == threads


def test_peak_memory_counts_activations() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    activation = 4 * 8 * 28 * 28 * 4  # batch 4, 8 channels, 28×28, fp32
    inference = peak_memory(model, (1, 28, 28), batch=4)
    # conv output and ReLU output are alive together; at most a few more of that size.
    assert 2 * activation <= inference <= 4 * activation
    assert peak_memory(model, (1, 28, 28), batch=4, train=True) > inference


def test_fingerprint_has_the_keys() -> None:
    fp = fingerprint()
    for key in ("cpu", "cpu_count", "torch_threads", "gpu", "torch", "cuda", "python", "optuna"):
        assert key in fp
    assert fp["torch"] == torch.__version__
    assert isinstance(fp["cpu"], str) and fp["cpu"]
    assert fp["torch_threads"] == torch.get_num_threads()

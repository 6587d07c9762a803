"""Measurements: exact counts, latency that is repeatable and ordered, memory, fingerprint."""

from __future__ import annotations

import copy
import weakref
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nas.model import InputSpec
from nas.train import Latency, count_flops, count_params, fingerprint, make_input, measure_latency

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


# Peak memory is measured only here (no trial records it): the tracker and the
# measurement live with their test.
class _PeakTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created by ATen ops while active, and the peak.

    Each new storage is counted when an op returns it and uncounted when it is freed
    (a weakref finalizer on the storage object, which PyTorch keeps alive exactly as long
    as the storage). In-place ops and views return known storages and add nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.pop(key, None)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key in self._seen:
                    continue
                nbytes = storage.nbytes()
                self._seen[key] = nbytes
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, key, nbytes)
        return out


def peak_memory(
    model: nn.Module,
    input_shape: InputSpec | tuple[int, ...],
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    train: bool = False,
) -> int:
    """Peak bytes allocated by one forward pass (plus backward if ``train``), beyond what
    was allocated before it (parameters and the input are excluded).

    CUDA: the caching allocator's own ``max_memory_allocated`` delta. CPU has no allocator
    statistics, so every tensor storage an ATen op creates is tracked from creation to
    free (a dispatch mode) and the peak of the live sum is taken: activations, gradients
    and outputs, but not scratch space that libraries such as oneDNN keep to themselves,
    nor allocator slack. The two are therefore comparable across models on one device,
    not across devices.
    """
    dev = torch.device(device)
    net = copy.deepcopy(model).to(dev)  # a copy: the caller's model stays where it is
    net.train(train)
    x = make_input(input_shape, batch, dev)
    grad_mode = torch.enable_grad() if train else torch.inference_mode()

    def run() -> None:
        out = net(x)
        if train:
            out.float().sum().backward()

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        with grad_mode:
            run()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - before)
    tracker = _PeakTensorBytes()
    with grad_mode, tracker:
        run()
    return tracker.peak


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


def test_latency_folds_batchnorm_in_its_copy_only() -> None:
    model = nn.Sequential(nn.Conv2d(16, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).train()
    measure_latency(model, SHAPE, threads=1, min_run_time=0.01)
    assert isinstance(model[1], nn.BatchNorm2d) and model.training

"""Measurements of a built model: latency, FLOPs, parameters, and the device.

Latency is timed by ``torch.utils.benchmark.Timer`` (which synchronises CUDA and sets the
thread count for the duration), never by a hand-written loop: a warm-up first, then
``blocked_autorange`` gives blocks of runs whose median and interquartile range we report.
Throughput at a larger batch is the same call with another ``batch``.

Every function here leaves the model as it found it: latency is measured on a deep copy
(so moving it to another device or memory format cannot touch the caller's), FLOPs on
the model itself in eval mode, restored afterwards.

What a model is fed is derived from its spec, never guessed: pass the spec's
``InputSpec`` and a text network gets int64 token ids ``torch.randint(0, V, (batch, L))``,
an image network float pixels; a bare shape tuple means float inputs of that shape.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import logging
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.model import InputSpec, fold_batchnorm

Precision = Literal["fp32", "bf16"]
MemoryFormat = Literal["contiguous", "channels_last"]


# One example's input: the spec's InputSpec, or the shape of a float tensor.
Inputs = InputSpec | tuple[int, ...]


def make_input(inputs: Inputs, batch: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """A random batch of what the model takes: token ids below ``vocab_size`` for a text
    ``InputSpec`` (every id, padding included, is a valid input), normal floats otherwise."""
    if isinstance(inputs, InputSpec):
        if inputs.is_text:
            return torch.randint(0, inputs.vocab_size, (batch, *inputs.shape), device=device)
        inputs = inputs.shape
    return torch.randn((batch, *inputs), device=device)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: Inputs, batch: int = 1) -> int:
    """FLOPs of one forward pass (multiply-add counted as 2) for ``batch`` inputs.

    Counted by PyTorch's own ``FlopCounterMode`` on a dry run in eval mode without
    autograd, so counting leaves the model as it was. Ops it has no formula for (norms,
    activations, pooling, softmax) count zero: the figure is the matmul/conv work.
    """
    was_training = model.training
    model.eval()
    try:
        x = make_input(input_shape, batch, _device_of(model))  # the values do not matter
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class Latency:
    """Forward-pass latency of one batch.

    Attributes:
        median_ms: median time per forward pass (the figure to compare).
        iqr_ms: interquartile range across measured blocks (the spread).
        batch: inputs per forward pass.
        device: ``cpu`` or ``cuda:N``.
        threads: torch intra-op threads during timing.
        precision: ``fp32`` or ``bf16`` (autocast).
        memory_format: ``contiguous`` or ``channels_last``.
        runs: forward passes timed in all.
    """

    median_ms: float
    iqr_ms: float
    batch: int
    device: str
    threads: int
    precision: str
    memory_format: str
    runs: int

    @property
    def throughput(self) -> float:
        """Inputs per second at this batch size."""
        return self.batch / (self.median_ms / 1e3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    model: nn.Module,
    input_shape: Inputs,
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    min_run_time: float = 0.5,
    warmup: int = 3,
    precision: Precision = "fp32",
    memory_format: MemoryFormat = "contiguous",
) -> Latency:
    """Time a forward pass of ``model`` on a batch of ``batch`` inputs (see
    :func:`make_input`: token ids for a text ``InputSpec``, floats otherwise).

    The model is deep-copied, put on ``device`` in eval mode with its BatchNorms folded
    into their convs (:func:`nas.model.fold_batchnorm`) and run under
    ``torch.inference_mode()``; ``threads`` (default: the current torch setting) is set by
    the Timer only while it measures. ``min_run_time`` is the seconds of measurement after
    warm-up; longer runs give tighter medians on a busy machine.
    """
    dev = torch.device(device)
    n_threads = threads if threads is not None else torch.get_num_threads()
    net = _copy_to(model, dev, memory_format)
    x = make_input(input_shape, batch, dev)
    if memory_format == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    timer = _benchmark().Timer(
        stmt="net(x)",
        globals={"net": net, "x": x},
        num_threads=n_threads,
        label="latency",
        description=f"batch={batch}",
    )
    with torch.inference_mode(), autocast:
        # Warm-up outside the measurement: first calls pay for oneDNN primitive creation,
        # cuDNN algorithm search and allocator growth.
        timer.timeit(number=max(warmup, 1))
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(
        median_ms=m.median * 1e3,
        iqr_ms=m.iqr * 1e3,
        batch=batch,
        device=str(dev),
        threads=n_threads,
        precision=precision,
        memory_format=memory_format,
        runs=m.number_per_run * len(m.raw_times),
    )


def fingerprint() -> dict[str, Any]:
    """Where a measurement was taken: CPU, threads, GPU and library versions.

    Keys: ``cpu``, ``cpu_model`` (e.g. "family 25 model 17": a model name like "AMD EPYC"
    covers several CPUs; None off Linux), ``cpu_count``, ``cpu_capability``, ``cpu_bf16``,
    ``torch_threads``, ``gpu`` (None without CUDA), ``gpu_count``, ``torch``, ``cuda``,
    ``cudnn``, ``python``, ``optuna``, ``platform``.
    """
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    info = _cpu_info()
    flags = info.get("flags", "").split()
    family, model = info.get("cpu family"), info.get("model")
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_model": f"family {family} model {model}" if family and model else None,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": "amx_bf16" in flags or "avx512_bf16" in flags,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "optuna": _version("optuna"),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------------- helpers


def _benchmark() -> Any:
    """``torch.utils.benchmark``, imported on first use with its import-time warning about a
    missing CUDA toolkit (it pulls in cpp_extension for Callgrind) silenced: it is noise on
    a CPU machine and says nothing about timing."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    return benchmark


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _copy_to(model: nn.Module, device: torch.device, memory_format: MemoryFormat) -> nn.Module:
    """A copy of ``model`` for inference on ``device``: eval mode, BatchNorm folded into the
    conv before it (as a deployment runs it: exact, and a norm call less per conv)."""
    net = fold_batchnorm(copy.deepcopy(model).eval()).to(device)
    if memory_format == "channels_last":
        net = net.to(memory_format=torch.channels_last)
    return net


def _cpu_info() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty off Linux)."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if not line.strip():  # a blank line ends the first processor's block
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    return info


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None

"""How training uses the machine: the precision and memory format chosen for a device, and
the thread count, fixed or tuned to the machine's load while training runs.

Threads. ``threads="auto"`` (CPU only) times steps at one thread and at all of them, keeps
the faster, and re-checks every 10-160 s. On a shared machine whose cores other processes
also load, one thread can be several times faster than two (each OpenMP barrier waits for
a descheduled peer; ``python bench/trainer.py --threads 1`` shows it), and the load changes
during a run. Results then depend on the thread counts chosen, so ``auto`` is not
bit-reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

Precision = Literal["auto", "bf16", "fp32"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:  # not Linux: no flags, so no claims about bf16 speed
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bf16 and autocast is a loss: on an AVX2-only AMD EPYC we
    measured bf16 autocast training a small CNN ~10x *slower* than fp32.
    """
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: Precision, device: torch.device) -> Literal["bf16", "fp32"]:
    """``auto`` → bf16 on CUDA that supports it and on CPUs with native bf16, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def resolve_memory_format(
    memory_format: MemoryFormat, device: torch.device
) -> Literal["channels_last", "contiguous"]:
    """``auto`` → channels_last on CUDA and CPU (cuDNN and oneDNN convolutions prefer NHWC;
    ~1.45x for a small fp32 CNN on this project's CPU), contiguous elsewhere."""
    if memory_format != "auto":
        return memory_format
    return "channels_last" if device.type in ("cuda", "cpu") else "contiguous"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def thread_count(n: int | Literal["auto"] | None) -> Iterator[None]:
    """Set the thread count for the block (``auto``: the tuner changes it) and restore it."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    if n != "auto":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadTuner:
    """Picks the faster of 1 thread and ``most`` threads from timed steps, and re-checks.

    A probe runs ``PROBE`` steps at a candidate count (the first, which may rebuild oneDNN
    primitives for the new count, is not timed) and takes the median. After probing both,
    the faster one runs for a period, then the other is probed again against the
    incumbent's recent median, so a change in the machine's load is followed. A probe that
    loses doubles the period (up to ``MAX_PERIOD``): on a busy machine a two-thread step
    can take 3x a one-thread step, and frequent losing probes would eat the budget.
    """

    PROBE = 3
    PERIOD = 10.0
    MAX_PERIOD = 160.0

    def __init__(self, most: int) -> None:
        self.candidates = [most, 1]
        self.median: dict[int, float] = {}
        self.current = most
        self.probing: int | None = most
        self.times: list[float] = []
        self.recent: list[float] = []
        self.period = self.PERIOD
        self.since = time.perf_counter()
        torch.set_num_threads(most)

    def _switch(self, n: int) -> None:
        self.current = n
        torch.set_num_threads(n)

    def record(self, seconds: float) -> None:
        """Record one step's time; may change the thread count for the next step."""
        if self.probing is not None:
            self.times.append(seconds)
            if len(self.times) <= self.PROBE:
                return
            timed = sorted(self.times[1:])
            self.median[self.probing] = timed[len(timed) // 2]
            self.times = []
            missing = [c for c in self.candidates if c not in self.median]
            if missing:
                self.probing = missing[0]
                self._switch(missing[0])
                return
            best = min(self.median, key=self.median.__getitem__)
            if len(self.median) == 2 and best != self.probing:
                self.period = min(self.period * 2, self.MAX_PERIOD)  # the probe lost
            else:
                self.period = self.PERIOD
            self.probing = None
            self._switch(best)
            self.recent, self.since = [], time.perf_counter()
            return
        self.recent.append(seconds)
        if time.perf_counter() - self.since >= self.period and len(self.recent) >= 3:
            recent = sorted(self.recent[-self.PROBE * 2 :])
            self.median = {self.current: recent[len(recent) // 2]}
            other = next(c for c in self.candidates if c != self.current)
            self.probing = other
            self._switch(other)

"""Training and measuring one network: the training loop and its config, augmentation,
and the measurements a trial records (latency, FLOPs, parameters)."""

from nas.train._augment import AugmentError, normalize
from nas.train._config import TrainConfig, TrainConfigError
from nas.train._device import resolve_memory_format, resolve_precision
from nas.train._evaluate import evaluate
from nas.train._measure import (
    Latency,
    count_flops,
    count_params,
    fingerprint,
    make_input,
    measure_latency,
)
from nas.train._trainer import TrainResult, train

__all__ = [
    "AugmentError",
    "Latency",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "count_flops",
    "count_params",
    "evaluate",
    "fingerprint",
    "make_input",
    "measure_latency",
    "normalize",
    "resolve_memory_format",
    "resolve_precision",
    "train",
]

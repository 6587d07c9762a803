"""Training and measuring one network: the training loop and its config, augmentation,
and the measurements a trial records (latency, FLOPs, parameters, memory)."""

from nas.train._augment import AugmentError, normalize
from nas.train._measure import (
    Latency,
    count_flops,
    count_params,
    fingerprint,
    make_input,
    measure_latency,
    peak_memory,
)
from nas.train._trainer import (
    TrainConfig,
    TrainConfigError,
    evaluate,
    resolve_memory_format,
    resolve_precision,
    train,
)

__all__ = [
    "AugmentError",
    "Latency",
    "TrainConfig",
    "TrainConfigError",
    "count_flops",
    "count_params",
    "evaluate",
    "fingerprint",
    "make_input",
    "measure_latency",
    "normalize",
    "peak_memory",
    "resolve_memory_format",
    "resolve_precision",
    "train",
]

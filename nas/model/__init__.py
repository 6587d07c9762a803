"""What a network is: the task it solves, its architecture spec, its layers, and the builder
that turns a spec into a ``torch.nn.Module``. The ArchSpec is the one source of truth that
the search samples, the builder builds and the export writes out."""

from nas.model import layers
from nas.model._budget import (
    MAX_ATTENTION_BUDGET_MB,
    attention_budget,
    attention_budget_bytes,
    check_budget_mb,
)
from nas.model._builder import Stage, build_attention, build_model, fold_batchnorm
from nas.model._plain import ArchSpecError
from nas.model._spec import (
    ATTENTION_FIELDS,
    STEM_KINDS,
    ArchSpec,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
    score_bytes,
)
from nas.model._task import FASHION_MNIST, Task, TaskError, TaskKind

__all__ = [
    "ATTENTION_FIELDS",
    "FASHION_MNIST",
    "MAX_ATTENTION_BUDGET_MB",
    "STEM_KINDS",
    "ArchSpec",
    "ArchSpecError",
    "AttentionSpec",
    "HeadSpec",
    "InputSpec",
    "Stage",
    "StageSpec",
    "StemSpec",
    "Task",
    "TaskError",
    "TaskKind",
    "attention_budget",
    "attention_budget_bytes",
    "build_attention",
    "build_model",
    "check_budget_mb",
    "fold_batchnorm",
    "layers",
    "score_bytes",
]

"""The attention memory budget: how many bytes of attention scores one example may need.

Attention scores are O(N²) in memory; a spec over the budget is refused when validated,
not by an out-of-memory error in the middle of a search.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator

from nas.model._plain import ArchSpecError

# Attention scores are O(N²) in memory. A spec whose score matrices would need more
# than this many bytes per example (fp32) is refused at validation, not by an OOM
# in the middle of a search. Change it with the environment variable below, or give it
# explicitly (``from_dict(..., attention_budget_mb=)``, ``attention_budget``): a stored
# spec must be judged by the budget its study was searched with, not the reader's.
ATTENTION_BUDGET_ENV = "NAS_ATTENTION_BUDGET_MB"
DEFAULT_ATTENTION_BUDGET_MB = 16.0
# The largest explicit budget taken: budgets come from study attrs anyone may edit, and
# 1e30 would let any spec pass. 1 GiB of scores per example is 256 GiB for an evaluation
# batch of 256, more than any one accelerator holds, so no real study needs more.
MAX_ATTENTION_BUDGET_MB = 1024.0
# The explicit budget (MiB) of the current context; None: the environment's.
_BUDGET_MB: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "attention_budget_mb", default=None
)


def check_budget_mb(megabytes: object, where: str = "attention_budget_mb") -> float:
    """An explicit budget in MiB: a finite number in (0, ``MAX_ATTENTION_BUDGET_MB``]."""
    if (
        not isinstance(megabytes, int | float)
        or isinstance(megabytes, bool)
        or not 0 < megabytes <= MAX_ATTENTION_BUDGET_MB  # False for NaN too
    ):
        raise ArchSpecError(
            where,
            f"must be a number of MiB in (0, {MAX_ATTENTION_BUDGET_MB:g}], got {megabytes!r}",
        )
    return float(megabytes)


@contextlib.contextmanager
def attention_budget(megabytes: float) -> Iterator[None]:
    """Validate specs (and let spaces size attention) against ``megabytes`` MiB inside."""
    token = _BUDGET_MB.set(check_budget_mb(megabytes))
    try:
        yield
    finally:
        _BUDGET_MB.reset(token)


def attention_budget_bytes() -> int:
    """The per-example attention memory budget: the explicit one of the current context
    (:func:`attention_budget`), else ``NAS_ATTENTION_BUDGET_MB``, else the default."""
    explicit = _BUDGET_MB.get()
    if explicit is not None:
        return int(explicit * 2**20)
    raw = os.environ.get(ATTENTION_BUDGET_ENV)
    if raw is None:
        return int(DEFAULT_ATTENTION_BUDGET_MB * 2**20)
    try:
        megabytes = float(raw)
    except ValueError:
        raise ArchSpecError(ATTENTION_BUDGET_ENV, f"must be a number, got {raw!r}") from None
    if not 0 < megabytes < math.inf:
        raise ArchSpecError(ATTENTION_BUDGET_ENV, f"must be positive and finite, got {raw!r}")
    return int(megabytes * 2**20)


def budget_source() -> str:
    if _BUDGET_MB.get() is not None:
        return "the budget given for this spec, e.g. its study's attention_budget_mb"
    return f"set {ATTENTION_BUDGET_ENV} to change it"

"""The tracked no-op task type: the same work as the raw baseline, tracked as a row."""

from __future__ import annotations

from typing import Any

from long_time_task.registry import LongTimeTaskRegister

from .marks import mark


@LongTimeTaskRegister.register(task_type="bench_noop", timeout=60, soft_timeout=50, max_retries=0)
def bench_noop(task_id: int, params: dict[str, Any]) -> None:
    mark(params["sent_at"])


@LongTimeTaskRegister.register(task_type="bench_nothing", timeout=60, soft_timeout=50, max_retries=0)
def bench_nothing(task_id: int, params: dict[str, Any]) -> None:
    """Nothing at all: what ``python -m bench.instructions`` runs to count the worker's own work."""

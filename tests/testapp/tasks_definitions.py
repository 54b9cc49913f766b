"""Task types used by the tests. Discovered like any project's: by being an installed app's tasks_definitions."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from celery import current_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.db.models.functions import Now

from long_time_task.context import TaskContext, check_cancelled, report_progress
from long_time_task.registry import LongTimeTaskRegister

from .models import HandlerRun


def record(task_id: int, task_type: str) -> HandlerRun:
    request = current_task.request if current_task else None
    args = list(getattr(request, "args", None) or [])
    delivery = getattr(request, "delivery_info", None) or {}
    backend_pid = None
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        backend_pid = connection.connection.info.backend_pid
    return HandlerRun.objects.create(
        task_id=task_id,
        task_type=task_type,
        attempt=int(args[1]) if len(args) > 1 else 0,
        routing_key=str(delivery.get("routing_key") or ""),
        pid=os.getpid(),
        db_backend_pid=backend_pid,
    )


@LongTimeTaskRegister.register(task_type="test_echo", description="Echo the params", timeout=30, soft_timeout=20)
def echo(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    record(task_id, "test_echo")
    return {"echo": params, "task_id": task_id}


@LongTimeTaskRegister.register(task_type="test_heavy", timeout=30, soft_timeout=20, queue="heavy")
def heavy(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    run = record(task_id, "test_heavy")
    return {"routing_key": run.routing_key}


@LongTimeTaskRegister.register(task_type="test_fail", timeout=30, soft_timeout=20, max_retries=3)
def fail(task_id: int, params: dict[str, Any]) -> None:
    record(task_id, "test_fail")
    raise ValueError(params.get("message", "boom"))


@LongTimeTaskRegister.register(
    task_type="test_flaky",
    timeout=30,
    soft_timeout=20,
    max_retries=3,
    retry_delay=1,
    retry_backoff=False,
    param_schema={"type": "object", "properties": {"failures": {"type": "integer", "minimum": 0}}},
)
def flaky(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Fails with a retryable error for the first ``failures`` attempts, then succeeds."""
    record(task_id, "test_flaky")
    runs = HandlerRun.objects.filter(task_id=task_id).count()
    if runs <= params.get("failures", 1):
        raise ConnectionError(f"transient failure {runs}")
    return {"succeeded_on_run": runs}


@LongTimeTaskRegister.register(task_type="test_soft_timeout", timeout=5, soft_timeout=1, max_retries=3)
def overrun(task_id: int, params: dict[str, Any]) -> None:
    """Works (in small steps) for longer than its soft limit."""
    record(task_id, "test_soft_timeout")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.05)


@LongTimeTaskRegister.register(task_type="test_hard_timeout", timeout=2, soft_timeout=1, max_retries=3)
def ignores_soft_limit(task_id: int, params: dict[str, Any]) -> None:
    """Swallows the soft limit and keeps going, so only the hard limit can stop it."""
    record(task_id, "test_hard_timeout")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            continue


@LongTimeTaskRegister.register(task_type="test_priority_low", timeout=30, soft_timeout=20, queue="priority", priority=1)
def priority_low(task_id: int, params: dict[str, Any]) -> None:
    record(task_id, "test_priority_low")


@LongTimeTaskRegister.register(
    task_type="test_priority_high", timeout=30, soft_timeout=20, queue="priority", priority=10
)
def priority_high(task_id: int, params: dict[str, Any]) -> None:
    record(task_id, "test_priority_high")


@LongTimeTaskRegister.register(task_type="fault_work", timeout=30, soft_timeout=25, max_retries=3, retry_delay=1)
def fault_work(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Records its run (the side effect the fault suite counts), then works for ``seconds``."""
    run = record(task_id, "fault_work")
    seconds = float(params.get("seconds", 1))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    HandlerRun.objects.filter(id=run.id).update(ended=Now())  # to detect attempts running in parallel
    return {"slept": seconds}


def host_work(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """fault_work that also leaves a trace outside the database: every 50 ms it appends the wall-clock time to
    ``<ticks>/<run id>``, so the hosts suite can tell when an attempt cut off from the database really stopped."""
    run = record(task_id, "host_work")
    seconds = float(params.get("seconds", 1))
    path = Path(params["ticks"]) / str(run.id) if params.get("ticks") else None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path is not None:
            with path.open("a") as ticks:
                ticks.write(f"{time.time()}\n")
        time.sleep(0.05)
    HandlerRun.objects.filter(id=run.id).update(ended=Now())
    return {"slept": seconds}


# One handler on each queue the hosts suite routes across hosts.
for _suffix, _queue in (("", "default"), ("_heavy", "heavy"), ("_priority", "priority")):
    LongTimeTaskRegister.register(
        task_type=f"host_work{_suffix}", timeout=60, soft_timeout=55, max_retries=3, retry_delay=1, queue=_queue
    )(host_work)


@LongTimeTaskRegister.register(task_type="fault_kill_worker", timeout=30, soft_timeout=25, max_retries=2)
def kill_own_process(task_id: int, params: dict[str, Any]) -> None:
    """A poison task: kills the process running it, every time."""
    record(task_id, "fault_kill_worker")
    os.kill(os.getpid(), signal.SIGKILL)


@LongTimeTaskRegister.register(
    task_type="test_restricted", timeout=30, soft_timeout=20, permission="testapp.run_restricted"
)
def restricted(task_id: int, params: dict[str, Any]) -> None:
    record(task_id, "test_restricted")


@LongTimeTaskRegister.register(
    task_type="test_progress",
    description="Report progress step by step (cooperative: stops when cancelled)",
    timeout=120,
    soft_timeout=100,
    max_retries=0,
    param_schema={
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
            "delay": {"type": "number", "minimum": 0, "maximum": 10, "default": 0.5},
        },
        "additionalProperties": False,
    },
)
def progress_steps(task_id: int, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    record(task_id, "test_progress")
    steps, delay = int(params.get("steps", 5)), float(params.get("delay", 0.5))
    for step in range(steps):
        context.progress(current=step, total=steps, message=f"step {step + 1} of {steps}")
        time.sleep(delay)
    return {"steps": steps}


@LongTimeTaskRegister.register(task_type="test_progress_helper", timeout=60, soft_timeout=50, max_retries=0)
def progress_with_helpers(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """The seed's signature: progress through the module-level helpers; checks for a cancel in a tight loop."""
    record(task_id, "test_progress_helper")
    seconds = float(params.get("seconds", 30))
    deadline = time.monotonic() + seconds
    report_progress(50, "halfway")
    while time.monotonic() < deadline:
        check_cancelled()
        time.sleep(0.01)
    return {"ran": seconds}


@LongTimeTaskRegister.register(
    task_type="test_uncooperative", timeout=120, soft_timeout=100, max_retries=3, queue="operate"
)
def uncooperative(task_id: int, params: dict[str, Any]) -> None:
    """Never checks for a cancel: only the hard stop can end it."""
    record(task_id, "test_uncooperative")
    time.sleep(float(params.get("seconds", 60)))


@LongTimeTaskRegister.register(
    task_type="test_traced",
    timeout=30,
    soft_timeout=20,
    max_retries=2,
    retry_delay=1,
    retry_backoff=False,
    queue="operate",
)
def traced(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """For the tracing tests (tests/integration/test_tracing.py): opens a span of its own; fails for good with
    ``{"fail": true}``, with a retryable error on its first ``failures`` runs."""
    from opentelemetry import trace  # here, not at the top: the "absent" test loads this module without it

    with trace.get_tracer("tests").start_as_current_span("handler work"):
        record(task_id, "test_traced")
        runs = HandlerRun.objects.filter(task_id=task_id).count()
        if params.get("fail"):
            raise ValueError("asked to fail")
        if runs <= int(params.get("failures", 0)):
            raise ConnectionError(f"transient failure {runs}")
    return {"runs": runs}


# The Celery-tooling tests' task types, and the faults the integration tests switch on by environment variable.
from . import fault_hooks, tools_tasks  # noqa: E402, F401

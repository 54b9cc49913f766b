"""Task types of the Celery-tooling and log tests (tests/integration/test_celery_tools.py), on the "operate" queue,
which only workers started by a test consume."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from long_time_task.context import check_cancelled
from long_time_task.registry import LongTimeTaskRegister

from .models import HandlerRun
from .tasks_definitions import record

QUEUE = "operate"


@LongTimeTaskRegister.register(task_type="tools_ok", timeout=30, soft_timeout=20, queue=QUEUE)
def tools_ok(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    record(task_id, "tools_ok")
    time.sleep(float(params.get("seconds", 0)))
    return {"ok": True}


@LongTimeTaskRegister.register(task_type="tools_fail", timeout=30, soft_timeout=20, max_retries=0, queue=QUEUE)
def tools_fail(task_id: int, params: dict[str, Any]) -> None:
    record(task_id, "tools_fail")
    raise ValueError("tools_fail always fails")


@LongTimeTaskRegister.register(
    task_type="tools_flaky", timeout=30, soft_timeout=20, max_retries=2, retry_delay=1, retry_backoff=False, queue=QUEUE
)
def tools_flaky(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """A retryable error on its first run, then success."""
    record(task_id, "tools_flaky")
    if HandlerRun.objects.filter(task_id=task_id).count() == 1:
        raise ConnectionError("tools_flaky: transient")
    return {"ok": True}


@LongTimeTaskRegister.register(task_type="tools_soft_timeout", timeout=10, soft_timeout=1, max_retries=0, queue=QUEUE)
def tools_soft_timeout(task_id: int, params: dict[str, Any]) -> None:
    record(task_id, "tools_soft_timeout")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.05)


@LongTimeTaskRegister.register(task_type="tools_sleep", timeout=120, soft_timeout=100, max_retries=0, queue=QUEUE)
def tools_sleep(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Runs ``seconds``; checks for a cancel when ``cooperative``."""
    record(task_id, "tools_sleep")
    deadline = time.monotonic() + float(params.get("seconds", 60))
    while time.monotonic() < deadline:
        if params.get("cooperative"):
            check_cancelled()
        time.sleep(0.05)
    return {"slept": params.get("seconds", 60)}


@LongTimeTaskRegister.register(task_type="tools_kill_once", timeout=30, soft_timeout=20, max_retries=2, queue=QUEUE)
def tools_kill_once(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Kills the process running its first attempt (SIGKILL); the next attempt succeeds."""
    record(task_id, "tools_kill_once")
    if HandlerRun.objects.filter(task_id=task_id).count() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"ok": True}

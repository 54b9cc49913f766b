"""Django task functions for the django.tasks backend's tests (tests/test_django_tasks*.py, tests/integration).

Not imported by Celery's autodiscovery (it imports ``tasks`` modules): a worker finds them through the backend's
resolver, as it would find a project's tasks in any module of an installed app.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from long_time_task.django_tasks.compat import TaskContext, task, task_enqueued, task_finished, task_started
from long_time_task.django_tasks.definition import task as tracked_task


@task()
def noop_task(*args: Any, **kwargs: Any) -> None:
    return None


@task
def noop_task_from_bare_decorator(*args: Any, **kwargs: Any) -> None:
    return None


@task()
async def noop_task_async(*args: Any, **kwargs: Any) -> None:
    await asyncio.sleep(0)
    return None


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task()
async def async_echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"args": list(args), "kwargs": kwargs, "async": True}


@task()
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> Any:
    return {"when": time}  # a module: not JSON


@task(takes_context=True)
def get_task_id(context: TaskContext) -> str:
    return str(context.task_result.id)


@task(takes_context=True)
def context_attempt(context: TaskContext, attempt: int) -> dict[str, Any]:
    assert isinstance(context, TaskContext)
    assert context.attempt == attempt
    return {"attempt": context.attempt, "workers": list(context.task_result.worker_ids)}


@task(takes_context=True)
def report_progress(context: Any, steps: int) -> int:
    for step in range(steps):
        context.progress(current=step + 1, total=steps, message=f"step {step + 1}")
    return steps


@task(takes_context=True)
def wait_for_cancel(context: Any, marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        context.check_cancelled()
        time.sleep(0.05)


@tracked_task(max_retries=2, retry_delay=1, retry_backoff=False, retry_on=(ConnectionError,), takes_context=True)
def flaky(context: Any, fail_times: int) -> dict[str, Any]:
    if context.attempt <= fail_times:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return {"attempt": context.attempt, "workers": len(context.task_result.worker_ids)}


@tracked_task(timeout=3, soft_timeout=1)
def sleeps_too_long(seconds: float) -> None:
    time.sleep(seconds)


@tracked_task(timeout=2, soft_timeout=1)
def ignores_its_soft_limit(seconds: float) -> None:
    """Killed by its hard time limit: it swallows the soft one and sleeps on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            pass


@tracked_task(max_retries=0)
def kills_its_process() -> None:
    """Its worker process dies (as of the OOM killer) and, with no retries, the task fails."""
    os.kill(os.getpid(), signal.SIGKILL)


@tracked_task(takes_context=True)
def describes_its_result(context: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """What the context's TaskResult says while it runs."""
    result = context.task_result
    return {
        "id": result.id,
        "status": str(result.status),
        "enqueued_at": result.enqueued_at.isoformat(),
        "started_at": result.started_at.isoformat(),
        "last_attempted_at": result.last_attempted_at.isoformat(),
        "worker_ids": list(result.worker_ids),
        "attempts": result.attempts,
        "args": list(result.args),
        "kwargs": dict(result.kwargs),
        "queue_name": result.task.queue_name,
        "priority": result.task.priority,
    }


@tracked_task(kwargs_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
def needs_n(*, n: int) -> int:
    return n * 2


# A worker started with LTT_TEST_SIGNALS_FILE writes one line per django.tasks signal it sends (in the order sent):
# "<signal> <result id> <status> <attempts> <errors> <pid of the process that sent it>".
def _record_signal(signal_name: str) -> Any:
    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        path = os.environ.get("LTT_TEST_SIGNALS_FILE")
        if path:
            errors = ",".join(error.exception_class_path for error in task_result.errors)
            line = (
                f"{signal_name} {task_result.id} {task_result.status} {task_result.attempts} {errors or '-'} "
                f"{os.getpid()}\n"
            )
            with open(path, "a") as file:
                file.write(line)

    return receiver


_receivers = {name: _record_signal(name) for name in ("task_enqueued", "task_started", "task_finished")}
task_enqueued.connect(_receivers["task_enqueued"], dispatch_uid="tests.jobs.enqueued")
task_started.connect(_receivers["task_started"], dispatch_uid="tests.jobs.started")
task_finished.connect(_receivers["task_finished"], dispatch_uid="tests.jobs.finished")

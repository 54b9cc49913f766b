"""A ``TaskResult`` read from a task row: the status mapping, the attempts' workers and errors, the return value.

========================  ==========================
The row's state           ``TaskResult.status``
========================  ==========================
PENDING, RETRYING         READY (waiting for its first or next attempt)
RUNNING                   RUNNING
FINISHED                  SUCCESSFUL
FAILED, CANCELLED         FAILED
========================  ==========================
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..models import LongTimeTask, TaskState
from ..models.attempts import attempt_history, current_attempt
from .compat import InvalidTask, TaskError, TaskResult, TaskResultStatus, set_field

if TYPE_CHECKING:
    from ..models import TaskAttempt
    from .compat import AnyResult, AnyTask

STATUS = {
    TaskState.PENDING: TaskResultStatus.READY,
    TaskState.RETRYING: TaskResultStatus.READY,
    TaskState.RUNNING: TaskResultStatus.RUNNING,
    TaskState.FINISHED: TaskResultStatus.SUCCESSFUL,
    TaskState.FAILED: TaskResultStatus.FAILED,
    TaskState.CANCELLED: TaskResultStatus.FAILED,
}

# An attempt that ended without a traceback of the handler's: what stopped it, as an exception class.
STOPPED_BY = {
    "timeout": "celery.exceptions.TimeLimitExceeded",
    "worker_lost": "billiard.exceptions.WorkerLostError",
    "cancelled": "long_time_task.context.TaskCancelled",
}
GENERIC_ERROR = "long_time_task.exceptions.TaskError"
TRACEBACK_HEADER = "Traceback (most recent call last):"


def exception_path(traceback: str, error_code: str = "") -> str:
    """The dotted class of the exception a formatted traceback ends with: the first unindented line after its last
    "Traceback" header, up to ": " (Python prints ``module.QualName``, or ``Name`` for builtins). Without a
    traceback, what ``error_code`` says stopped the attempt."""
    if traceback:
        lines = traceback.splitlines()
        headers = [i for i, line in enumerate(lines) if line.startswith(TRACEBACK_HEADER)]
        for line in lines[headers[-1] + 1 :] if headers else []:
            if line and not line[0].isspace():
                name = line.split(": ", 1)[0].strip().rstrip(":")
                if name and " " not in name:
                    return name if "." in name else f"builtins.{name}"
                break
    if error_code == "cancelled":
        return STOPPED_BY["cancelled"]
    return STOPPED_BY.get(error_code, GENERIC_ERROR)


def attempts_of(row: LongTimeTask) -> list[TaskAttempt]:
    """The row's attempts, oldest first. A row on its first attempt needs no query (the common case)."""
    if not row.attempts:
        return []
    if row.attempts == 1 and row.state in (TaskState.RUNNING, *STATUS_TERMINAL):
        return [current_attempt(row)]
    return attempt_history(row)


STATUS_TERMINAL = (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED)


def error_of(traceback: str, code: str, message: str) -> TaskError:
    return TaskError(exception_class_path=exception_path(traceback, code), traceback=traceback or message)


def task_for_row(task: AnyTask, row: LongTimeTask, params: dict[str, Any]) -> AnyTask:
    """``task`` with the queue, priority and ``run_after`` this row was enqueued with."""
    run_after = params.get("run_after")
    try:
        return task.using(
            queue_name=row.queue or task.queue_name,
            priority=int(params.get("priority", 0)),
            run_after=datetime.fromisoformat(run_after) if isinstance(run_after, str) else None,
        )
    except (InvalidTask, TypeError, ValueError):  # the settings changed since (a queue was dropped)
        return task


def result_from_row(task: AnyTask, row: LongTimeTask, alias: str, *, as_enqueued: bool = False) -> AnyResult:
    """The ``TaskResult`` that ``row`` describes, for ``task`` (the function's ``Task``) on backend ``alias``;
    ``as_enqueued``: ``task`` is the one the row was enqueued with (not rebuilt from the row)."""
    params = row.task_params if isinstance(row.task_params, dict) else {}
    attempts = attempts_of(row)
    errors = [
        error_of(a.error_traceback, a.error_code, a.error_message)
        for a in attempts
        if a.error_code and a.outcome != "running"
    ]
    status = STATUS[TaskState(row.state)]
    if status == TaskResultStatus.FAILED and (not attempts or not attempts[-1].error_code):
        # Cancelled before it started, or failed without running (an unknown type): still one error, as Django's
        # backends give every failed result.
        errors.append(error_of(row.error_traceback, row.error_code or "cancelled", row.error_message or ""))
    result = TaskResult(
        task=task if as_enqueued else task_for_row(task, row, params),
        id=str(row.id),
        status=status,
        enqueued_at=row.create_at,
        started_at=row.start_at,
        finished_at=row.finish_at if row.state in STATUS_TERMINAL else None,
        last_attempted_at=row.claimed_at if row.attempts else None,
        args=list(params.get("args", [])),
        kwargs=dict(params.get("kwargs", {})),
        backend=alias,
        errors=errors,
        worker_ids=[a.worker for a in attempts],
    )
    if row.state == TaskState.FINISHED:
        # TaskResult has no public setter for it: Django's own backends set the field the same way.
        set_field(result, "_return_value", row.result)
    return result

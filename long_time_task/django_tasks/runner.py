"""The worker side: a registered task type's handler that runs a Django task function, with Django's signals.

The executor runs it like any handler (claim, lease, time limits, retries, progress, cancel, one outcome): it gets
``(task_id, params, context)`` and calls the function with ``params["args"]`` and ``params["kwargs"]``, the Django
``TaskContext`` first if the task ``takes_context``. ``task_started`` is sent here, before the function runs, with
the result built from what the claim returned (no query on a first attempt; the attempt history's one after).

``task_finished`` is sent from the library's ``task_ended`` signal: once per task, by the process whose write
ended it, after that write. When the executor ends it, that is the worker process that ran the function, and the
result carries its return value or exception; when something else does (a recovery that gives up, a hard time
limit in the worker's main process, a revoke, a cancel before it started), the result is read from the row
there (one SELECT, only when a receiver listens). An attempt that will be retried sends no ``task_finished``:
its result is READY again.
"""

from __future__ import annotations

import dataclasses
import traceback as tb
from typing import TYPE_CHECKING, Any

from celery import signals
from django.dispatch import receiver
from django.utils import timezone

from ..context import TaskContext as TrackedContext
from ..dispatch import EXECUTOR_TASK
from ..models import LongTimeTask, TaskState
from ..registry import LongTimeTaskRegister
from ..signals import task_ended
from .compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    set_field,
    task_finished,
    task_started,
)
from .results import error_of, result_from_row

if TYPE_CHECKING:
    from .compat import AnyResult, AnyTask


class TaskExited(Exception):  # noqa: N818 - says what the task did
    """The task function raised SystemExit: recorded as a failure (the worker process goes on)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrackedTaskContext(TaskContext):  # type: ignore[type-arg,misc]  # frozen in Django, not in its stubs
    """Django's ``TaskContext`` (``task_result``, ``attempt``) plus this project's progress and cancel checks."""

    tracked: TrackedContext

    def progress(self, percent: float | None = None, message: str = "", **kwargs: Any) -> None:
        """Report progress (``long_time_task.context.TaskContext.progress``); raises if a cancel was requested."""
        self.tracked.progress(percent, message, **kwargs)

    def check_cancelled(self) -> None:
        """Raise ``TaskCancelled`` if the task's cancel was requested (cheap in a loop)."""
        self.tracked.check_cancelled()

    @property
    def owner(self) -> Any:
        """The user the task was enqueued for (``owned_by``), or None."""
        return self.tracked.owner


@dataclasses.dataclass
class Running:
    """An attempt this process is running: its result, and what the function returned or raised."""

    result: AnyResult
    sender: type
    return_value: Any = None
    error: TaskError | None = None


_running: dict[tuple[int, int], Running] = {}


def error_from(exc: BaseException) -> TaskError:
    cls = type(exc)
    path, text = f"{cls.__module__}.{cls.__qualname__}", "".join(tb.format_exception(exc))
    return TaskError(exception_class_path=path, traceback=text)


class TaskRunner:
    """The handler of a Django task's type. Named after the function (``__module__``, ``__qualname__``), so that the
    registry's checks and messages speak of it."""

    def __init__(self, task: AnyTask, alias: str, sender: type) -> None:
        self.task, self.alias, self.sender = task, alias, sender
        self.options = task.options() if hasattr(task, "options") else {}  # what its type was built from
        self.__module__ = task.func.__module__
        self.__qualname__ = task.func.__qualname__

    def __call__(self, task_id: int, params: dict[str, Any], context: TrackedContext | None = None) -> Any:
        if context is None:  # the executor passes it: the signature names it
            raise TypeError("a Django task runs with its context")
        task = self.task
        row = claimed_row(task_id, params, context)
        if row is None:  # deleted while it ran (a purge): nothing to report
            raise LookupError(f"Task {task_id} is gone")
        result = result_from_row(task, row, self.alias)
        running = _running[(task_id, context.attempt)] = Running(result, self.sender)
        task_started.send(sender=self.sender, task_result=result)
        args, kwargs = list(params.get("args", [])), dict(params.get("kwargs", {}))
        try:
            if task.takes_context:
                value = task.call(TrackedTaskContext(task_result=result, tracked=context), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value = normalize_json(value)  # Django's error (TypeError "Unsupported type") for what JSON can't hold
        except SystemExit as exc:
            running.error = error_from(exc)
            raise TaskExited(f"The task raised SystemExit({exc.code!r})") from exc
        except BaseException as exc:
            running.error = error_from(exc)
            raise
        running.return_value = value
        return value


def claimed_row(task_id: int, params: dict[str, Any], context: TrackedContext) -> LongTimeTask | None:
    """The row as the claim left it, built from what the claim returned (``context.claimed``); read from the
    database when the handler runs without a claim (a test calling it directly)."""
    claimed = context.claimed
    if claimed is None:
        return LongTimeTask.objects.filter(id=task_id).first()
    return LongTimeTask(
        id=task_id,
        task_type=claimed.task_type,
        task_params=params,
        celery_task_id=claimed.celery_task_id,
        queue=claimed.queue,
        priority=claimed.priority,
        owner_id=claimed.owner_id,
        state=TaskState.RUNNING,
        attempts=context.attempt,
        create_at=claimed.create_at,
        start_at=claimed.start_at,
        claimed_at=claimed.claimed_at,
        worker=claimed.worker,
    )


@receiver(task_ended, dispatch_uid="long_time_task.django_tasks.finished")
def _send_finished(
    sender: Any = None,
    task_id: int = 0,
    task_type: str = "",
    state: str = "",
    error_code: str = "",
    attempt: int | None = None,
    **kwargs: Any,
) -> None:
    running = _running.pop((task_id, attempt), None) if attempt is not None else None
    if running is None:
        _send_finished_from_row(task_id, task_type)
        return
    result = running.result
    if state == TaskState.FINISHED:
        set_field(result, "_return_value", running.return_value)
        status = TaskResultStatus.SUCCESSFUL
    else:
        # The function's exception; else what stopped it (a cancel it did not raise for, a result that JSON
        # can't hold, a type unknown in this worker).
        result.errors.append(running.error or error_of("", error_code, ""))
        status = TaskResultStatus.FAILED
    set_field(result, "finished_at", timezone.now())
    set_field(result, "status", status)
    task_finished.send(sender=running.sender, task_result=result)


def _send_finished_from_row(task_id: int, task_type: str) -> None:
    """A Django task ended outside the process that ran its attempt: its result, read from the row."""
    config = LongTimeTaskRegister.get_task(task_type)
    runner = config.handler if config is not None else None
    if not isinstance(runner, TaskRunner) or not task_finished.has_listeners(runner.sender):
        return
    row = LongTimeTask.objects.filter(id=task_id).first()
    if row is not None:
        task_finished.send(sender=runner.sender, task_result=result_from_row(runner.task, row, runner.alias))


@signals.task_postrun.connect(dispatch_uid="long_time_task.django_tasks.forget")
def _forget(sender: Any = None, args: Any = None, **kwargs: Any) -> None:
    # The attempt is over in this process: an entry still here was retried or lost its row (no task_ended here).
    if getattr(sender, "name", None) == EXECUTOR_TASK and args:
        _running.pop((int(args[0]), int(args[1]) if len(args) > 1 else 1), None)

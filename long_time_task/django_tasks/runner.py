"""The worker side: a registered task type's handler that runs a Django task function, with Django's signals.

The executor runs it like any handler (claim, lease, time limits, retries, progress, cancel, one outcome): it gets
``(task_id, params, context)`` and calls the function with ``params["args"]`` and ``params["kwargs"]``, the Django
``TaskContext`` first if the task ``takes_context``. ``task_started`` is sent here, before the function runs, with
the result read from the row (one SELECT per attempt); ``task_finished`` once the executor has written the row's
outcome (Celery's ``task_postrun``, in the same worker process), so a receiver that reads the result sees it.
An attempt that will be retried sends no ``task_finished``: its result is READY again.
"""

from __future__ import annotations

import dataclasses
import traceback as tb
from typing import TYPE_CHECKING, Any

from celery import signals
from django.utils import timezone

from ..context import TaskContext as TrackedContext
from ..dispatch import EXECUTOR_TASK
from ..models import LongTimeTask
from .compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    set_field,
    task_finished,
    task_started,
)
from .results import result_from_row

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
        row = LongTimeTask.objects.filter(id=task_id).first()
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


@signals.task_postrun.connect(dispatch_uid="long_time_task.django_tasks.finished")
def _send_finished(
    sender: Any = None, args: Any = None, retval: Any = None, state: str | None = None, **kwargs: Any
) -> None:
    # In the worker process that ran the attempt, after the executor wrote the row's outcome.
    if getattr(sender, "name", None) != EXECUTOR_TASK or not args:
        return
    running = _running.pop((int(args[0]), int(args[1]) if len(args) > 1 else 1), None)
    if running is None or state == "RETRY":
        return
    result = running.result
    if state == "SUCCESS":
        if retval != "finished":  # the row had moved on (cancelled hard, recovered elsewhere): not this attempt's
            return
        set_field(result, "_return_value", running.return_value)
        status = TaskResultStatus.SUCCESSFUL
    else:
        error = running.error
        if error is None and isinstance(retval, BaseException):  # it failed without running (an unknown type)
            error = error_from(retval)
        if error is not None:
            result.errors.append(error)
        status = TaskResultStatus.FAILED
    set_field(result, "finished_at", timezone.now())
    set_field(result, "status", status)
    task_finished.send(sender=running.sender, task_result=result)

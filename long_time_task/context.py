"""What a running handler can do besides return a result: report progress, and notice a cancel request.

A handler gets the context as a keyword argument if it declares one named ``context``::

    @LongTimeTaskRegister.register(task_type="import_rows")
    def import_rows(task_id, params, context):
        for i, row in enumerate(rows):
            context.progress(current=i, total=len(rows), message=f"row {i}")  # raises TaskCancelled if asked
            ...

Handlers with the seed's signature ``(task_id, params)`` use the module-level helpers instead, which act
on the task running in this process: ``report_progress(...)`` and ``check_cancelled()``. Outside a task
(a plain function call, a test), both do nothing.

Writes are throttled: at most one per ``LONG_TIME_TASK_PROGRESS_INTERVAL`` seconds. The first report is
written at once; a report inside the interval is kept, and written by the next call after the interval or
when the handler returns (the latest values win). Each
write also reads the cancel request, so a handler that reports progress notices a cancel for free.
"""

from __future__ import annotations

import contextvars
import math
import time
from typing import Any

from .conf import conf

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("long_time_task_context", default=None)


class TaskCancelled(BaseException):  # noqa: N818 - reads like asyncio.CancelledError
    """Raised inside a handler whose task was cancelled (or whose attempt no longer owns the row).

    A BaseException, like ``asyncio.CancelledError``, so that a handler's ``except Exception`` does not
    swallow it by accident. Let it propagate (clean up in ``finally``): the row then ends CANCELLED.
    """


class TaskContext:
    """The running attempt ``attempt`` of task ``task_id``, as its handler sees it."""

    def __init__(self, task_id: int, attempt: int, *, clock: Any = time.monotonic) -> None:
        self.task_id, self.attempt = task_id, attempt
        self._clock = clock
        self._last_contact = -math.inf  # the first report is written at once
        self._pending: dict[str, Any] | None = None
        self.cancel_requested = False
        self.lost = False  # the row moved on without this attempt (cancelled hard, or recovered elsewhere)
        self.writes = 0

    # ------------------------------------------------------------ progress
    def progress(
        self,
        percent: float | None = None,
        message: str = "",
        *,
        current: int | None = None,
        total: int | None = None,
        check: bool = True,
    ) -> None:
        """Report how far the task has got: a percent (0-100), or ``current`` of ``total`` (the percent is
        then computed), and a short message. Raises TaskCancelled if a cancel was requested (``check=False``
        only records it in ``cancel_requested``)."""
        if percent is None and current is not None and total:
            percent = 100.0 * current / total
        if percent is not None:
            if not isinstance(percent, int | float) or math.isnan(percent):
                raise ValueError("percent must be a number")
            percent = min(100.0, max(0.0, float(percent)))
        self._pending = {"percent": percent, "message": str(message), "current": current, "total": total}
        if self._clock() - self._last_contact >= conf.PROGRESS_INTERVAL:
            self.flush()
        if check:
            self._raise_if_cancelled()

    def flush(self) -> None:
        """Write the latest reported progress now (the executor calls it when the handler returns)."""
        if self._pending is None:
            return
        from .models import LongTimeTask

        values, self._pending = self._pending, None
        owned, requested = LongTimeTask.objects.report_progress(self.task_id, attempt=self.attempt, **values)
        self.writes += 1
        self._contact(owned, requested)

    # ------------------------------------------------------------ cancellation
    def check_cancelled(self) -> None:
        """Raise TaskCancelled if this task's cancel was requested. Reads the database at most once per
        progress interval; cheap to call in a tight loop."""
        if not self.cancel_requested and not self.lost and self._clock() - self._last_contact >= conf.PROGRESS_INTERVAL:
            if self._pending is not None:
                self.flush()
            else:
                from .models import LongTimeTask

                self._contact(*LongTimeTask.objects.cancel_requested(self.task_id, attempt=self.attempt))
        self._raise_if_cancelled()

    def _contact(self, owned: bool, requested: bool) -> None:
        self._last_contact = self._clock()
        self.cancel_requested = self.cancel_requested or requested
        self.lost = self.lost or not owned

    def _raise_if_cancelled(self) -> None:
        if self.cancel_requested or self.lost:
            raise TaskCancelled(f"task {self.task_id} was cancelled")


def current_context() -> TaskContext | None:
    """The context of the task running in this process, or None outside a task."""
    return _current.get()


def report_progress(
    percent: float | None = None, message: str = "", *, current: int | None = None, total: int | None = None
) -> None:
    """``context.progress(...)`` for the running task; does nothing outside a task."""
    context = _current.get()
    if context is not None:
        context.progress(percent, message, current=current, total=total)


def check_cancelled() -> None:
    """``context.check_cancelled()`` for the running task; does nothing outside a task."""
    context = _current.get()
    if context is not None:
        context.check_cancelled()


def activate(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _current.set(context)


def deactivate(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)

"""What a running handler can do besides return a result: report progress, and notice a cancel request.

A handler gets the context as a keyword argument if it declares one named ``context``::

    @LongTimeTaskRegister.register(task_type="import_rows")
    def import_rows(task_id, params, context):
        for i, row in enumerate(rows):
            context.progress(current=i, total=len(rows), message=f"row {i}")  # raises TaskCancelled if asked
            ...

Handlers with the seed's signature ``(task_id, params)`` use the module-level helpers instead, which act
on the task running in this process: ``report_progress(...)``, ``check_cancelled()`` and ``current_owner()``.
Outside a task (a plain function call, a test), they do nothing and there is no owner.

**Who submitted the task**: ``context.owner_id`` (from the row the claim already read: no extra query) and
``context.owner``, the user, loaded on first use. Both are None for a task without an owner, submitted by
trusted server code (a command, a periodic job). A handler that shows data to its owner must cover only
what that owner may see, e.g. ``LongTimeTask.objects.visible_to(context.owner)``.

Writes are throttled: at most one per ``LONG_TIME_TASK_PROGRESS_INTERVAL`` seconds. The first report is
written at once; a report inside the interval is kept, and written by the next call after the interval or
when the handler returns (the latest values win). Each
write also reads the cancel request, so a handler that reports progress notices a cancel for free.
"""

from __future__ import annotations

import contextvars
import math
import time
from typing import Any, Final

from .conf import conf

_UNLOADED: Final = object()

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("long_time_task_context", default=None)


class TaskCancelled(BaseException):  # noqa: N818 - reads like asyncio.CancelledError
    """Raised inside a handler whose task was cancelled (or whose attempt no longer owns the row).

    A BaseException, like ``asyncio.CancelledError``, so that a handler's ``except Exception`` does not
    swallow it by accident. Let it propagate (clean up in ``finally``): the row then ends CANCELLED.
    """


class TaskContext:
    """The running attempt ``attempt`` of task ``task_id``, as its handler sees it. ``owner_id`` is the pk of
    the user who submitted it (None: submitted by trusted server code)."""

    def __init__(
        self, task_id: int, attempt: int, *, owner_id: Any = None, claimed: Any = None, clock: Any = time.monotonic
    ) -> None:
        self.task_id, self.attempt, self.owner_id = task_id, attempt, owner_id
        self.claimed = claimed  # what the claim returned (``ClaimedTask``), when the executor runs it
        self._owner: Any = _UNLOADED
        self._clock = clock
        self._last_contact = -math.inf  # the first report is written at once
        self._pending: dict[str, Any] | None = None
        self.cancel_requested = False
        self.lost = False  # the row moved on without this attempt (cancelled hard, or recovered elsewhere)
        self.writes = 0

    # ------------------------------------------------------------ owner
    @property
    def owner(self) -> Any:
        """The user who submitted the task, loaded on first use (one query, then cached); None if it has no
        owner, or if that user was deleted since (then ``owner_id`` is still set: treat it as no one's)."""
        if self._owner is _UNLOADED:
            self._owner = None
            if self.owner_id is not None:
                from django.contrib.auth import get_user_model

                self._owner = get_user_model()._default_manager.filter(pk=self.owner_id).first()
        return self._owner

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

    def take_report(self) -> dict[str, Any] | None:
        """The report the throttle held back, if any, now the executor's to write (with the finish, in the same
        statement); it is no longer pending here."""
        report, self._pending = self._pending, None
        return report

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


def current_owner() -> Any:
    """``context.owner`` for the running task: the user who submitted it; None outside a task or for a task
    without an owner (trusted server code)."""
    context = _current.get()
    return context.owner if context is not None else None


def check_cancelled() -> None:
    """``context.check_cancelled()`` for the running task; does nothing outside a task."""
    context = _current.get()
    if context is not None:
        context.check_cancelled()


def activate(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _current.set(context)


def deactivate(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)

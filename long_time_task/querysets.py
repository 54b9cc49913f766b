"""Named filters and the guarded state transitions of LongTimeTask.

Every transition is one ``UPDATE ... WHERE id = ? AND state = ? AND attempts = ?``; it returns whether it
won. There is no read-modify-save of state anywhere, so a stale instance or a duplicate message cannot
overwrite a newer state, and a terminal state never changes again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

if TYPE_CHECKING:
    from .models import LongTimeTask  # noqa: F401 - the QuerySet's type argument


def _states() -> Any:
    from .models import TaskState

    return TaskState


class LongTimeTaskQuerySet(models.QuerySet["LongTimeTask"]):
    # ------------------------------------------------------------ named filters
    def pending(self) -> LongTimeTaskQuerySet:
        return self.filter(state=_states().PENDING)

    def running(self) -> LongTimeTaskQuerySet:
        return self.filter(state=_states().RUNNING)

    def finished(self) -> LongTimeTaskQuerySet:
        return self.filter(state=_states().FINISHED)

    def failed(self) -> LongTimeTaskQuerySet:
        return self.filter(state=_states().FAILED)

    def unfinished(self) -> LongTimeTaskQuerySet:
        s = _states()
        return self.filter(state__in=[s.PENDING, s.RUNNING, s.RETRYING])

    def visible_to(self, user: Any) -> LongTimeTaskQuerySet:
        """Tasks ``user`` may see: staff and holders of ``view_all_tasks`` see all, others their own."""
        if not user or not user.is_authenticated:
            return self.none()
        if user.is_staff or user.has_perm("long_time_task.view_all_tasks"):
            return self
        return self.filter(owner=user)

    # ------------------------------------------------------------ transitions
    # ``attempt`` is the 1-based number of the attempt a broker message is for. ``attempts`` on the row
    # counts the attempts claimed so far, so the claim of attempt N requires ``attempts == N - 1``.

    def claim(self, task_id: int, *, attempt: int, worker: str) -> bool:
        """PENDING/RETRYING -> RUNNING for attempt ``attempt``. Loses to a duplicate or stale message."""
        s = _states()
        now = timezone.now()
        return bool(
            self.filter(id=task_id, state__in=[s.PENDING, s.RETRYING], attempts=attempt - 1).update(
                state=s.RUNNING,
                attempts=attempt,
                start_at=Coalesce(models.F("start_at"), models.Value(now)),
                worker=worker,
                retry_at=None,
            )
        )

    def finish(self, task_id: int, *, attempt: int, result: Any) -> bool:
        """RUNNING -> FINISHED with ``result``."""
        s = _states()
        return bool(
            self.filter(id=task_id, state=s.RUNNING, attempts=attempt).update(
                state=s.FINISHED,
                finish_at=timezone.now(),
                result=result,
                error_message=None,
                error_code="",
                error_traceback="",
            )
        )

    def fail(self, task_id: int, *, attempt: int | None, message: str, code: str, traceback: str = "") -> bool:
        """RUNNING -> FAILED. With ``attempt=None`` any unfinished state may fail (a hard time limit)."""
        s = _states()
        rows = self.filter(id=task_id)
        if attempt is None:
            rows = rows.filter(state__in=[s.PENDING, s.RUNNING, s.RETRYING])
        else:
            rows = rows.filter(state=s.RUNNING, attempts=attempt)
        return bool(
            rows.update(
                state=s.FAILED,
                finish_at=timezone.now(),
                error_message=message,
                error_code=code,
                error_traceback=traceback,
                retry_at=None,
            )
        )

    def schedule_retry(
        self, task_id: int, *, attempt: int, retry_at: datetime, message: str, code: str, traceback: str = ""
    ) -> bool:
        """RUNNING -> RETRYING until ``retry_at``; the last error stays visible while it waits."""
        s = _states()
        return bool(
            self.filter(id=task_id, state=s.RUNNING, attempts=attempt).update(
                state=s.RETRYING,
                retry_at=retry_at,
                error_message=message,
                error_code=code,
                error_traceback=traceback,
            )
        )

"""Named filters and the guarded state transitions of LongTimeTask.

Every transition is one ``UPDATE ... WHERE id = ? AND state = ? AND attempts = ?``; it returns whether it
won. There is no read-modify-save of state anywhere, so a stale instance or a duplicate message cannot
overwrite a newer state, and a terminal state never changes again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import ExpressionWrapper
from django.db.models.functions import Coalesce, Greatest, Now
from django.utils import timezone

if TYPE_CHECKING:
    from .models import LongTimeTask  # noqa: F401 - the QuerySet's type argument


def db_now_plus(seconds: float) -> Any:
    """The database's current time plus ``seconds``, as an expression."""
    return ExpressionWrapper(Now() + models.Value(timedelta(seconds=seconds)), output_field=models.DateTimeField())


def storable(text: str, limit: int | None = None) -> str:
    """Text any database accepts: NULs and lone surrogates escaped, cut to ``limit`` characters."""
    clean = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return clean[:limit] if limit else clean


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

    def claim(self, task_id: int, *, attempt: int, worker: str, lease: float) -> bool:
        """PENDING/RETRYING -> RUNNING for attempt ``attempt``, holding a lease of ``lease`` seconds.

        Loses to a duplicate or stale message.
        """
        s = _states()
        return bool(
            self.filter(id=task_id, state__in=[s.PENDING, s.RETRYING], attempts=attempt - 1).update(
                state=s.RUNNING,
                attempts=attempt,
                start_at=Coalesce(models.F("start_at"), Now()),
                claimed_at=Now(),
                lease_expires_at=db_now_plus(lease),
                worker=worker,
                retry_at=None,
                redispatch_at=None,
            )
        )

    def finish(self, task_id: int, *, attempt: int, result: Any) -> bool:
        """RUNNING -> FINISHED with ``result``."""
        s = _states()
        return bool(
            self.filter(id=task_id, state=s.RUNNING, attempts=attempt).update(
                state=s.FINISHED,
                finish_at=timezone.now(),
                lease_expires_at=None,
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
                error_message=storable(message),
                error_code=storable(code, 50),
                error_traceback=storable(traceback),
                retry_at=None,
                lease_expires_at=None,
                redispatch_at=None,
            )
        )

    def schedule_retry(
        self,
        task_id: int,
        *,
        attempt: int,
        retry_at: datetime,
        redispatch_at: datetime,
        message: str,
        code: str,
        traceback: str = "",
    ) -> bool:
        """RUNNING -> RETRYING until ``retry_at``; the last error stays visible while it waits.

        Also used by the reaper for an attempt whose worker was lost (``retry_at`` now).
        """
        s = _states()
        return bool(
            self.filter(id=task_id, state=s.RUNNING, attempts=attempt).update(
                state=s.RETRYING,
                retry_at=retry_at,
                redispatch_at=redispatch_at,
                dispatch_count=0,
                lease_expires_at=None,
                error_message=storable(message),
                error_code=storable(code, 50),
                error_traceback=storable(traceback),
            )
        )

    # ------------------------------------------------------------ leases and dispatch

    def renew_leases(self, celery_task_ids: Iterable[str], *, worker: str, lease: float) -> int:
        """Extend the leases of ``worker``'s RUNNING rows behind these Celery ids (its heartbeat).

        Lease times are the database's clock, never a worker's, so clock skew between hosts cannot expire
        a live lease or keep a dead one.
        """
        ids = list(celery_task_ids)
        if not ids:
            return 0
        rows = self.filter(celery_task_id__in=ids, state=_states().RUNNING, worker=worker)
        return rows.update(lease_expires_at=db_now_plus(lease))

    def lease_expired(self) -> LongTimeTaskQuerySet:
        return self.filter(state=_states().RUNNING, lease_expires_at__lt=Now())

    def dispatch_due(self, now: datetime) -> LongTimeTaskQuerySet:
        """Waiting rows whose message never went out, or has not started for too long."""
        s = _states()
        return self.filter(state__in=[s.PENDING, s.RETRYING], redispatch_at__lte=now)

    def postpone_dispatch(self, task_id: int, *, state: str, attempts: int, seen: datetime, until: datetime) -> bool:
        """Take the right to re-publish a waiting row: only one sweeper wins, and only if nothing moved."""
        return bool(
            self.filter(id=task_id, state=state, attempts=attempts, redispatch_at=seen).update(
                redispatch_at=until, dispatch_count=models.F("dispatch_count") + 1
            )
        )

    def dispatch_failed(self, task_id: int) -> int:
        """A publish failed: make the row due for the next sweep."""
        s = _states()
        now = timezone.now()
        waiting = self.filter(id=task_id, state__in=[s.PENDING, s.RETRYING])
        # A waiting retry stays due at its retry time, not earlier.
        return waiting.update(
            redispatch_at=Coalesce(Greatest(models.F("retry_at"), models.Value(now)), models.Value(now))
        )

"""Named filters and the guarded state transitions of LongTimeTask.

Every transition is one ``UPDATE ... WHERE id = ? AND state = ? AND attempts = ?``; it returns whether it
won. There is no read-modify-save of state anywhere, so a stale instance or a duplicate message cannot
overwrite a newer state, and a terminal state never changes again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import connections, models
from django.db.models import ExpressionWrapper
from django.db.models.functions import Coalesce, Greatest, Now
from django.utils import timezone

from .attempts import ending_attempt
from .statements import (
    InsertPlan,
    LongTimeTaskModel,
    PreparedUpdate,
    convert_returned,
    hot_cursor,
    queue_wait_sql,
    task_model,
    update_returning,
)
from .states import AttemptCause, AttemptOutcome, TaskState

if TYPE_CHECKING:
    from . import LongTimeTask  # noqa: F401 - the QuerySet's type argument


@dataclass(frozen=True)
class ClaimedTask:
    """What a worker learns from a successful claim."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "task_type",
        "task_params",
        "celery_task_id",
        "queue",
        "priority",
        "owner_id",
        "create_at",
        "start_at",
        "claimed_at",
        "worker",
    )

    id: int
    task_type: str
    task_params: dict[str, Any]
    celery_task_id: str
    queue: str
    priority: int
    owner_id: int | None  # for the handler's context: who submitted it (None: trusted server code)
    # What the row says of this attempt once claimed, for a handler that describes it (the django.tasks backend's
    # TaskResult) without reading the row again: the same UPDATE ... RETURNING, no extra round trip.
    create_at: datetime
    start_at: datetime  # the first attempt's start
    claimed_at: datetime  # this attempt's
    worker: str
    waited: float | None = None  # seconds from when the attempt was due to the claim (a timed claim only)


def sees_all(user: Any) -> bool:
    """Whether ``user`` sees every user's tasks: staff, and holders of ``long_time_task.view_all_tasks``."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm("long_time_task.view_all_tasks")))


def _claim_statement(db: str, task_id: int, attempt: int, previous: int, worker: str, lease: float) -> Any:
    model = task_model()
    s = TaskState
    rows = model.objects.using(db).filter(id=task_id, state__in=[s.PENDING, s.RETRYING], attempts=previous)
    # A delayed task never starts before its time, whatever publishes it (within a clock tolerance: the time
    # was set by the web host's clock, and is compared here with the database's).
    rows = rows.filter(models.Q(run_after__isnull=True) | models.Q(run_after__lte=db_now_plus(CLOCK_TOLERANCE)))
    return rows, {
        "state": s.RUNNING,
        "attempts": attempt,
        "start_at": Coalesce(models.F("start_at"), Now()),
        "claimed_at": Now(),
        "lease_expires_at": db_now_plus(lease),
        "worker": worker,
        "retry_at": None,
        "redispatch_at": None,
    }


def _finish_statement(
    db: str,
    task_id: int,
    attempt: int,
    result: Any,
    report: bool = False,
    message: str = "",
    current: Any = None,
    total: Any = None,
) -> Any:
    """``report``: the statement also writes the handler's last progress report (message, current, total),
    which the throttle had held back when the handler returned."""
    model = task_model()
    s = TaskState
    rows = model.objects.using(db).filter(id=task_id, state=s.RUNNING, attempts=attempt)
    values = {
        "state": s.FINISHED,
        "progress": 100.0,
        "finish_at": Now(),
        "lease_expires_at": None,
        "result": result,
        "error_message": None,
        "error_code": "",
        "error_traceback": "",
    }
    if report:
        values.update(progress_message=message, progress_current=current, progress_total=total, progress_at=Now())
    return rows, values


def _progress_statement(
    db: str, task_id: int, attempt: int, percent: Any, message: str, current: Any, total: Any
) -> Any:
    model = task_model()
    rows = model.objects.using(db).filter(id=task_id, state=TaskState.RUNNING, attempts=attempt)
    return rows, {
        "progress": percent,
        "progress_message": message,
        "progress_current": current,
        "progress_total": total,
        "progress_at": Now(),
    }


CLOCK_TOLERANCE = 1.0  # seconds: how early (by the database's clock) a delayed task may be claimed


def database_now(using: str = "default") -> datetime:
    """The database's current time (aware): the one clock every host shares, whatever each host's own says. Leases,
    redispatch times and schedules' due times are compared with it."""
    connection = connections[using]
    sql = {
        "postgresql": "SELECT CURRENT_TIMESTAMP",
        "sqlite": "SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')",
        "mysql": "SELECT UTC_TIMESTAMP(6)",
    }.get(connection.vendor)
    if sql is None:
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(sql)
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def db_now_plus(seconds: float) -> Any:
    """The database's current time plus ``seconds``, as an expression."""
    return ExpressionWrapper(Now() + models.Value(timedelta(seconds=seconds)), output_field=models.DateTimeField())


def storable(text: str, limit: int | None = None) -> str:
    """Text any database accepts: NULs and lone surrogates escaped, cut to ``limit`` characters."""
    clean = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return clean[:limit] if limit else clean


class LongTimeTaskQuerySet(models.QuerySet["LongTimeTask"]):
    # ------------------------------------------------------------ named filters
    def pending(self) -> LongTimeTaskQuerySet:
        return self.filter(state=TaskState.PENDING)

    def running(self) -> LongTimeTaskQuerySet:
        return self.filter(state=TaskState.RUNNING)

    def finished(self) -> LongTimeTaskQuerySet:
        return self.filter(state=TaskState.FINISHED)

    def failed(self) -> LongTimeTaskQuerySet:
        return self.filter(state=TaskState.FAILED)

    def unfinished(self) -> LongTimeTaskQuerySet:
        s = TaskState
        return self.filter(state__in=[s.PENDING, s.RUNNING, s.RETRYING])

    def visible_to(self, user: Any) -> LongTimeTaskQuerySet:
        """Tasks ``user`` may see: staff and holders of ``view_all_tasks`` see all, others their own."""
        if not user or not user.is_authenticated:
            return self.none()
        if sees_all(user):
            return self
        return self.filter(owner=user)

    @property
    def write_db(self) -> str:
        """The database the transitions write to: the queryset's own (``using``), else the router's choice
        for writes (``self.db`` is the read alias until a queryset is marked for writing, as
        ``select_for_update()`` does; nothing is locked, the clone is never run)."""
        return self.select_for_update().db  # a queryset marked for writing: its own, else the router's

    # ------------------------------------------------------------ the insert of a submit

    def insert(self, **values: Any) -> LongTimeTask:
        """INSERT one row with ``values`` (the rest: defaults, NULL where nullable) and return it.

        The submit path's one statement. The ORM's ``create()`` compiles an INSERT of every column on each
        call, which costs more CPU than the round trip; here the statement is compiled once per column set
        and database, and the constant defaults are prepared once (``InsertPlan``). Like the guarded UPDATEs,
        it sends no model signals.
        """
        db = self.write_db
        connection = connections[db]
        if not connection.features.can_return_columns_from_insert:
            return self.create(**values)
        plan = InsertPlan.get(db)
        row, names, params = plan.row(values, connection)
        statement = plan.statement(names, connection)
        # An insert with an idempotency key may fail by design (a concurrent duplicate): a failed prepared
        # statement stays on the server under a name psycopg forgets, so that one is not prepared.
        keyed = values.get("idempotency_key") is not None
        with connection.cursor() if keyed else hot_cursor(db) as cursor:
            cursor.execute(statement, params)
            (row[0],) = cursor.fetchone()
        task = self.model(*row)  # type: ignore[misc] # positional: Django's fast path, every field in order
        task._state.adding, task._state.db = False, db
        return task

    # ------------------------------------------------------------ transitions
    # ``attempt`` is the 1-based number of the attempt a broker message is for. ``attempts`` on the row
    # counts the attempts claimed so far, so the claim of attempt N requires ``attempts == N - 1``.

    def claim(
        self, task_id: int, *, attempt: int, worker: str, lease: float, timed: bool = False
    ) -> ClaimedTask | None:
        """PENDING/RETRYING -> RUNNING for attempt ``attempt``, holding a lease of ``lease`` seconds.

        Returns what the worker needs to run it, or None if it lost (a duplicate or stale message). One round
        trip on PostgreSQL and SQLite (``UPDATE ... RETURNING``), two elsewhere. ``timed``: also how long the
        attempt waited since it was due (``ClaimedTask.waited``; PostgreSQL and SQLite only).
        """
        db = self.write_db
        if update_returning(connections[db]):
            statement = CLAIM_TIMED if timed else CLAIM
            row = statement.run(
                db, {"lease": lease}, task_id=task_id, attempt=attempt, previous=attempt - 1, worker=worker
            )
            if row is None:
                return None
            count = len(ClaimedTask.FIELDS)
            claimed = ClaimedTask(task_id, *convert_returned(row[:count], ClaimedTask.FIELDS, db))
            if timed and row[count] is not None:
                claimed = dataclasses.replace(claimed, waited=float(row[count]))
            return claimed
        rows, values = _claim_statement(db, task_id, attempt, attempt - 1, worker, lease)
        updated = rows.update(**values)
        returned = self.filter(id=task_id).values_list(*ClaimedTask.FIELDS).first() if updated else None
        return ClaimedTask(task_id, *returned) if returned else None

    def finish(self, task_id: int, *, attempt: int, result: Any, report: dict[str, Any] | None = None) -> bool:
        """RUNNING -> FINISHED with ``result``; returns whether the row was RUNNING in that attempt. ``report``:
        a progress report still to write (``message``, ``current``, ``total``), written by the same statement."""
        db = self.write_db
        prepared = LongTimeTaskModel().meta.get_field("result").get_db_prep_save(result, connections[db])
        if report is None:
            return bool(FINISH.run(db, {}, task_id=task_id, attempt=attempt, result=prepared))
        progress = {
            "message": storable(str(report.get("message") or ""), 255),
            "current": report.get("current"),
            "total": report.get("total"),
        }
        return bool(FINISH.run(db, {"report": True}, task_id=task_id, attempt=attempt, result=prepared, **progress))

    def fail(
        self,
        task_id: int,
        *,
        attempt: int | None,
        message: str,
        code: str,
        traceback: str = "",
        cause: str | None = None,
    ) -> bool:
        """RUNNING -> FAILED. With ``attempt=None`` any unfinished state may fail (a hard time limit).

        ``cause`` (recovery: ``AttemptCause``) also records the attempt in the history, in the same transaction.
        """
        s = TaskState
        rows = self.filter(id=task_id)
        if attempt is None:
            rows = rows.filter(state__in=[s.PENDING, s.RUNNING, s.RETRYING])
        else:
            rows = rows.filter(state=s.RUNNING, attempts=attempt)
        now = timezone.now()
        values = {
            "state": s.FAILED,
            "finish_at": now,
            "error_message": storable(message),
            "error_code": storable(code, 50),
            "error_traceback": storable(traceback),
            "retry_at": None,
            "lease_expires_at": None,
            "redispatch_at": None,
        }
        if cause is None or attempt is None:
            return bool(rows.update(**values))
        return ending_attempt(
            rows, values, db=self.write_db, task_id=task_id, ended_at=now, outcome=AttemptOutcome.FAILED, cause=cause
        )

    def cancel_waiting(self, task_id: int, *, message: str) -> bool:
        """PENDING/RETRYING -> CANCELLED. A message already queued for it finds nothing to claim."""
        s = TaskState
        now = timezone.now()
        return bool(
            self.filter(id=task_id, state__in=[s.PENDING, s.RETRYING]).update(
                state=s.CANCELLED,
                finish_at=now,
                cancel_requested_at=Coalesce(models.F("cancel_requested_at"), models.Value(now)),
                error_message=storable(message),
                error_code="cancelled",
                retry_at=None,
                redispatch_at=None,
                lease_expires_at=None,
            )
        )

    def request_cancel(self, task_id: int) -> bool:
        """Mark a RUNNING row for cancellation (its handler sees it; after a grace period it is stopped)."""
        s = TaskState
        return bool(
            self.filter(id=task_id, state=s.RUNNING).update(
                cancel_requested_at=Coalesce(models.F("cancel_requested_at"), Now())
            )
        )

    def finish_cancelled(self, task_id: int, *, attempt: int, message: str, cause: str | None = None) -> bool:
        """RUNNING -> CANCELLED for attempt ``attempt``, whose cancel was requested. ``cause``: as for ``fail``."""
        s = TaskState
        rows = self.filter(id=task_id, state=s.RUNNING, attempts=attempt, cancel_requested_at__isnull=False)
        now = timezone.now()
        values = {
            "state": s.CANCELLED,
            "finish_at": now,
            "error_message": storable(message),
            "error_code": "cancelled",
            "lease_expires_at": None,
        }
        if cause is None:
            return bool(rows.update(**values))
        return ending_attempt(
            rows, values, db=self.write_db, task_id=task_id, ended_at=now, outcome=AttemptOutcome.CANCELLED, cause=cause
        )

    def cancel_overdue(
        self, celery_task_ids: Iterable[str], *, grace: float, worker: str
    ) -> list[tuple[int, int, str]]:
        """(id, attempt, celery id) of these RUNNING rows of ``worker`` whose cancel request is older than
        ``grace``."""
        ids = list(celery_task_ids)
        if not ids:
            return []
        rows = self.filter(
            celery_task_id__in=ids,
            state=TaskState.RUNNING,
            worker=worker,
            cancel_requested_at__lte=db_now_plus(-grace),
        )
        return [(row[0], row[1], row[2]) for row in rows.values_list("id", "attempts", "celery_task_id")]

    def report_progress(
        self,
        task_id: int,
        *,
        attempt: int,
        percent: float | None,
        message: str,
        current: int | None,
        total: int | None,
    ) -> tuple[bool, bool]:
        """Write attempt ``attempt``'s progress: one UPDATE that also reads the cancel request.

        Returns (the attempt still owns the row, a cancel was requested).
        """
        db = self.write_db
        values: dict[str, Any] = {
            "percent": percent,
            "message": storable(message, 255),
            "current": current,
            "total": total,
        }
        if update_returning(connections[db]):
            row = PROGRESS.run(db, {}, task_id=task_id, attempt=attempt, **values)
            if row is None:
                return False, False
            return True, row[0] is not None
        rows, update = _progress_statement(db, task_id, attempt, **values)
        if not rows.update(**update):
            return False, False
        return True, self.filter(id=task_id, cancel_requested_at__isnull=False).exists()

    def cancel_requested(self, task_id: int, *, attempt: int) -> tuple[bool, bool]:
        """(the attempt still owns the row, a cancel was requested): a read, for handlers that only check."""
        row = self.filter(id=task_id).values_list("state", "attempts", "cancel_requested_at").first()
        if row is None or row[0] != TaskState.RUNNING or row[1] != attempt:
            return False, row is not None and row[0] == TaskState.CANCELLED
        return True, row[2] is not None

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
        cause: str = AttemptCause.NONE,
    ) -> bool:
        """RUNNING -> RETRYING until ``retry_at``; the last error stays visible while it waits.

        Also used by recovery for an attempt whose worker was lost (``retry_at`` now; ``cause`` says how it
        was found). The attempt is recorded in the history, in the same transaction: the next attempt's claim
        overwrites its worker and start on the task row.
        """
        s = TaskState
        # A task whose cancel was requested is not retried (the caller cancels it instead).
        rows = self.filter(id=task_id, state=s.RUNNING, attempts=attempt, cancel_requested_at__isnull=True)
        values = {
            "state": s.RETRYING,
            "retry_at": retry_at,
            "redispatch_at": redispatch_at,
            "dispatch_count": 0,
            "lease_expires_at": None,
            "error_message": storable(message),
            "error_code": storable(code, 50),
            "error_traceback": storable(traceback),
        }
        return ending_attempt(
            rows,
            values,
            db=self.write_db,
            task_id=task_id,
            ended_at=timezone.now(),
            outcome=AttemptOutcome.RETRY,
            cause=cause,
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
        rows = self.filter(celery_task_id__in=ids, state=TaskState.RUNNING, worker=worker)
        return rows.update(lease_expires_at=db_now_plus(lease))

    def lease_expired(self) -> LongTimeTaskQuerySet:
        return self.filter(state=TaskState.RUNNING, lease_expires_at__lt=Now())

    def dispatch_due(self, now: datetime | None = None) -> LongTimeTaskQuerySet:
        """Waiting rows whose message never went out, or has not started for too long: due by the database's
        clock (``Now()``, whatever the clock of the host asking) unless ``now`` is given."""
        s = TaskState
        return self.filter(state__in=[s.PENDING, s.RETRYING], redispatch_at__lte=Now() if now is None else now)

    def postpone_dispatch(self, task_id: int, *, state: str, attempts: int, seen: datetime, until: datetime) -> bool:
        """Take the right to re-publish a waiting row: only one sweeper wins, and only if nothing moved."""
        return bool(
            self.filter(id=task_id, state=state, attempts=attempts, redispatch_at=seen).update(
                redispatch_at=until, dispatch_count=models.F("dispatch_count") + 1
            )
        )

    def dispatch_failed(self, task_id: int) -> int:
        """A publish failed: make the row due for the next sweep."""
        s = TaskState
        now = timezone.now()
        waiting = self.filter(id=task_id, state__in=[s.PENDING, s.RETRYING])
        # A waiting retry stays due at its retry time, not earlier.
        return waiting.update(
            redispatch_at=Coalesce(Greatest(models.F("retry_at"), models.Value(now)), models.Value(now))
        )


CLAIM = PreparedUpdate(
    _claim_statement,
    {
        "task_id": (1_000_001, 1_000_002),
        "attempt": (1_000_003, 1_000_004),
        "previous": (1_000_005, 1_000_006),
        "worker": ("\x01a", "\x01b"),
    },  # fmt: skip
    returning=ClaimedTask.FIELDS,
)
# The same claim, also returning how long the attempt waited since it was due (for the queue-wait metric).
CLAIM_TIMED = PreparedUpdate(
    _claim_statement,
    {
        "task_id": (1_000_001, 1_000_002),
        "attempt": (1_000_003, 1_000_004),
        "previous": (1_000_005, 1_000_006),
        "worker": ("\x01a", "\x01b"),
    },  # fmt: skip
    returning=ClaimedTask.FIELDS,
    returning_sql=queue_wait_sql,
)
PROGRESS = PreparedUpdate(
    _progress_statement,
    {
        "task_id": (1_000_001, 1_000_002),
        "attempt": (1_000_003, 1_000_004),
        "percent": (1_000_005.5, 1_000_006.5),
        "message": ("\x01a", "\x01b"),
        "current": (1_000_007, 1_000_008),
        "total": (1_000_009, 1_000_010),
    },  # fmt: skip
    returning=("cancel_requested_at",),
)
FINISH = PreparedUpdate(
    _finish_statement,
    {
        "task_id": (1_000_001, 1_000_002),
        "attempt": (1_000_003, 1_000_004),
        "result": ({"\x01": "a"}, {"\x01": "b"}),
        "message": ("\x01a", "\x01b"),
        "current": (1_000_005, 1_000_006),
        "total": (1_000_007, 1_000_008),
    },  # fmt: skip
)

"""Named filters and the guarded state transitions of LongTimeTask.

Every transition is one ``UPDATE ... WHERE id = ? AND state = ? AND attempts = ?``; it returns whether it
won. There is no read-modify-save of state anywhere, so a stale instance or a duplicate message cannot
overwrite a newer state, and a terminal state never changes again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

from django.apps import apps
from django.db import connections, models
from django.db.models import ExpressionWrapper, sql
from django.db.models.functions import Coalesce, Greatest, Now
from django.utils import timezone

from .states import TaskState

if TYPE_CHECKING:
    from . import LongTimeTask  # noqa: F401 - the QuerySet's type argument


@dataclass(frozen=True)
class ClaimedTask:
    """What a worker learns from a successful claim."""

    FIELDS: ClassVar[tuple[str, ...]] = ("task_type", "task_params", "celery_task_id", "queue", "priority", "owner_id")

    id: int
    task_type: str
    task_params: dict[str, Any]
    celery_task_id: str
    queue: str
    priority: int
    owner_id: int | None  # for the handler's context: who submitted it (None: trusted server code)


_CONVERTERS: dict[tuple[str, ...], list[Any]] = {}


def convert_returned(row: Sequence[Any], fields: Sequence[str], db: str) -> tuple[Any, ...]:
    """Values from ``RETURNING``, converted as the ORM would (JSON decoded, ...)."""
    key = tuple(fields)
    converters = _CONVERTERS.get(key)
    if converters is None:
        meta = LongTimeTaskModel().meta
        converters = _CONVERTERS[key] = [getattr(meta.get_field(name), "from_db_value", None) for name in fields]
    connection = connections[db]
    return tuple(
        convert(value, None, connection) if convert is not None and value is not None else value
        for convert, value in zip(converters, row, strict=True)
    )


def _unwrap(value: Any) -> Any:
    """Adapted parameters (psycopg's Jsonb) compare by identity; compare what they carry."""
    return getattr(value, "obj", value)


def compile_update(queryset: models.QuerySet[Any], values: dict[str, Any]) -> tuple[str, list[Any]]:
    query = cast(sql.UpdateQuery, queryset.query.chain(sql.UpdateQuery))
    query.add_update_values(values)
    query.annotations = {}
    statement, params = query.get_compiler(queryset.db).as_sql()
    return statement, list(params)


class PreparedUpdate:
    """An UPDATE the ORM compiles once per database and setting, then runs with new values.

    Compiling a queryset costs more CPU than the round trip it makes on a hot path (a worker runs two per
    task). ``build(**variables)`` returns the queryset and the values to set; the statement is compiled
    with two sample values for each variable, to find where that variable's parameters sit.
    """

    def __init__(self, build: Any, samples: dict[str, tuple[Any, Any]], returning: Sequence[str] = ()) -> None:
        self.build, self.samples, self.returning = build, samples, tuple(returning)
        self._templates: dict[tuple[Any, ...], tuple[str, list[Any], dict[str, list[int]]]] = {}

    def template(self, db: str, constants: dict[str, Any]) -> tuple[str, list[Any], dict[str, list[int]]]:
        """The statement, its parameters with sample values, and where each variable's values go."""
        key = (db, *sorted(constants.items()))
        template = self._templates.get(key)
        if template is None:
            base = {name: a for name, (a, _) in self.samples.items()}
            statement, params = compile_update(*self.build(db=db, **constants, **base))
            positions = {}
            for name, (_, b) in self.samples.items():
                other_statement, other = compile_update(*self.build(db=db, **constants, **{**base, name: b}))
                if other_statement != statement:
                    raise RuntimeError(f"{name} changes the statement itself; it cannot be a parameter")
                positions[name] = [
                    i for i, (x, y) in enumerate(zip(params, other, strict=True)) if _unwrap(x) != _unwrap(y)
                ]
            taken = [i for indexes in positions.values() for i in indexes]
            if len(taken) != len(set(taken)):
                raise RuntimeError(f"ambiguous parameter positions: {positions}")
            if self.returning:
                meta = LongTimeTaskModel().meta
                columns = ", ".join(connections[db].ops.quote_name(meta.get_field(f).column) for f in self.returning)
                statement = f"{statement} RETURNING {columns}"
            template = self._templates[key] = (statement, params, positions)
        return template

    def run(self, db: str, constants: dict[str, Any], **values: Any) -> Any:
        """Run with ``values`` for the variables; ``constants`` are compiled into the statement (one per set)."""
        statement, params, positions = self.template(db, constants)
        params = list(params)
        for name, value in values.items():
            for index in positions[name]:
                params[index] = value
        with hot_cursor(db) as cursor:
            cursor.execute(statement, params)
            return cursor.fetchone() if self.returning else cursor.rowcount


class LongTimeTaskModel:
    """Late access to the model's options (the model's module imports this one)."""

    @property
    def meta(self) -> Any:
        return task_model()._meta


NOT_GIVEN = object()


class InsertPlan:
    """How to turn a submit's values into one INSERT, worked out once per database.

    For each concrete field, in the model's order: where its value comes from (the caller, a callable
    default, the time of the insert, a constant default, or NULL), with constant defaults already prepared
    for the database. Only the columns with a value are inserted; the rest keep their database NULL.
    """

    _plans: ClassVar[dict[str, InsertPlan]] = {}

    def __init__(self, db: str) -> None:
        connection = connections[db]
        self.sources: list[tuple[Any, str, str, Any, Any]] = []  # field, name, attname, default, prepared
        for field in LongTimeTaskModel().meta.concrete_fields:
            default = field.get_default if field.has_default() and callable(field.default) else NOT_GIVEN
            prepared = NOT_GIVEN
            if field.has_default() and not callable(field.default):
                default = field.default
                prepared = field.get_db_prep_save(default, connection) if default is not None else NOT_GIVEN
            if isinstance(field, models.DateTimeField) and getattr(field, "auto_now_add", False):
                default = timezone.now
            self.sources.append((field, field.name, field.attname, default, prepared))
        self.statements: dict[tuple[str, ...], str] = {}

    @classmethod
    def get(cls, db: str) -> InsertPlan:
        plan = cls._plans.get(db)
        if plan is None:
            plan = cls._plans[db] = cls(db)
        return plan

    def row(self, values: dict[str, Any], connection: Any) -> tuple[list[Any], tuple[str, ...], list[Any]]:
        """The new row's values in field order (the id still None), and the columns and parameters to insert."""
        row: list[Any] = []
        names: list[str] = []
        params: list[Any] = []
        for field, name, attname, default, prepared in self.sources:
            if field.primary_key:
                row.append(None)
                continue
            value = values[name] if name in values else values.get(attname, NOT_GIVEN)
            if value is None and default is timezone.now:  # auto_now_add, as the ORM does
                value = NOT_GIVEN
            if value is NOT_GIVEN:
                if prepared is not NOT_GIVEN:  # a constant default, prepared once
                    row.append(default)
                    names.append(attname)
                    params.append(prepared)
                    continue
                value = default() if default is not NOT_GIVEN else None
            if isinstance(value, models.Model):
                value = value.pk
            row.append(value)
            if value is not None:
                names.append(attname)
                params.append(field.get_db_prep_save(value, connection))
        return row, tuple(names), params

    def statement(self, names: tuple[str, ...], connection: Any) -> str:
        statement = self.statements.get(names)
        if statement is None:
            meta = LongTimeTaskModel().meta
            quote = connection.ops.quote_name
            columns = ", ".join(quote(meta.get_field(name).column) for name in names)
            marks = ", ".join(["%s"] * len(names))
            # Only quoted column and table names from the model go into the text; values are parameters.
            statement = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks}) RETURNING {quote('id')}"  # noqa: S608
            self.statements[names] = statement
        return statement


def hot_cursor(db: str) -> Any:
    """A cursor for the statements of the hot path (the submit's INSERT, claim, progress, finish).

    On PostgreSQL with psycopg 3 it is psycopg's own server-binding ``Cursor`` on Django's connection, and
    ``execute(..., prepare=True)`` prepares each statement once per connection (psycopg's documented
    prepared-statement API), so the server skips parsing and planning it on every task (about a third of a
    claim's database CPU). Django's cursors bind on the client and never prepare. Errors are still Django's
    (``wrap_database_errors``). Where Django must see the statement (its query log under DEBUG and in tests,
    or an ``execute_wrapper`` a project installed), it is Django's ordinary cursor, unprepared. Turn it off
    with ``LONG_TIME_TASK_PREPARED_STATEMENTS = False`` behind a pooler that cannot keep prepared statements
    (PgBouncer in transaction mode before 1.21).
    """
    connection = connections[db]
    if not _prepares(connection):
        return connection.cursor()
    # What Django's cursor() checks first: the thread owns the connection, no broken atomic block.
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns automatic preparing off (None), which also ignores an explicit prepare=True. A
        # threshold no query reaches keeps everything else unprepared, as before.
        raw.prepare_threshold = 2**31
    return PreparingCursor(connection, raw)


def _prepares(connection: Any) -> bool:
    from ..conf import conf

    return (
        connection.vendor == "postgresql"
        and conf.PREPARED_STATEMENTS
        and not connection.queries_logged
        and not connection.execute_wrappers
        and _psycopg3()
    )


def _psycopg3() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


class PreparingCursor:
    """psycopg's ``Cursor`` on the connection, every execute prepared, errors translated as Django does."""

    def __init__(self, connection: Any, raw: Any) -> None:
        import psycopg

        self.connection = connection
        self.cursor = psycopg.Cursor(raw)

    def __enter__(self) -> PreparingCursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cursor.close()

    def execute(self, statement: str, params: Sequence[Any]) -> None:
        with self.connection.wrap_database_errors:
            self.cursor.execute(statement, params, prepare=True)

    def fetchone(self) -> Any:
        with self.connection.wrap_database_errors:
            return self.cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)


def task_model() -> type[LongTimeTask]:
    """The LongTimeTask model, from Django's app registry: the model imports this module, not the reverse."""
    return apps.get_model("long_time_task", "LongTimeTask")


def sees_all(user: Any) -> bool:
    """Whether ``user`` sees every user's tasks: staff, and holders of ``long_time_task.view_all_tasks``."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm("long_time_task.view_all_tasks")))


def update_returning(connection: Any) -> bool:
    """Whether ``UPDATE ... RETURNING`` works: PostgreSQL, and SQLite from 3.35 (Django 5.2 allows 3.31)."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return bool(connection.Database.sqlite_version_info >= (3, 35))
    return False


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


def _finish_statement(db: str, task_id: int, attempt: int, result: Any) -> Any:
    model = task_model()
    s = TaskState
    rows = model.objects.using(db).filter(id=task_id, state=s.RUNNING, attempts=attempt)
    return rows, {
        "state": s.FINISHED,
        "progress": 100.0,
        "finish_at": Now(),
        "lease_expires_at": None,
        "result": result,
        "error_message": None,
        "error_code": "",
        "error_traceback": "",
    }


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

    def claim(self, task_id: int, *, attempt: int, worker: str, lease: float) -> ClaimedTask | None:
        """PENDING/RETRYING -> RUNNING for attempt ``attempt``, holding a lease of ``lease`` seconds.

        Returns what the worker needs to run it, or None if it lost (a duplicate or stale message). One round
        trip on PostgreSQL and SQLite (``UPDATE ... RETURNING``), two elsewhere.
        """
        db = self.write_db
        if update_returning(connections[db]):
            row = CLAIM.run(db, {"lease": lease}, task_id=task_id, attempt=attempt, previous=attempt - 1, worker=worker)
            returned = convert_returned(row, ClaimedTask.FIELDS, db) if row else None
        else:
            rows, values = _claim_statement(db, task_id, attempt, attempt - 1, worker, lease)
            updated = rows.update(**values)
            returned = self.filter(id=task_id).values_list(*ClaimedTask.FIELDS).first() if updated else None
        return ClaimedTask(task_id, *returned) if returned else None

    def finish(self, task_id: int, *, attempt: int, result: Any) -> bool:
        """RUNNING -> FINISHED with ``result``; returns whether the row was RUNNING in that attempt."""
        db = self.write_db
        prepared = LongTimeTaskModel().meta.get_field("result").get_db_prep_save(result, connections[db])
        return bool(FINISH.run(db, {}, task_id=task_id, attempt=attempt, result=prepared))

    def fail(self, task_id: int, *, attempt: int | None, message: str, code: str, traceback: str = "") -> bool:
        """RUNNING -> FAILED. With ``attempt=None`` any unfinished state may fail (a hard time limit)."""
        s = TaskState
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

    def finish_cancelled(self, task_id: int, *, attempt: int, message: str) -> bool:
        """RUNNING -> CANCELLED for attempt ``attempt``, whose cancel was requested."""
        s = TaskState
        rows = self.filter(id=task_id, state=s.RUNNING, attempts=attempt, cancel_requested_at__isnull=False)
        return bool(
            rows.update(
                state=s.CANCELLED,
                finish_at=timezone.now(),
                error_message=storable(message),
                error_code="cancelled",
                lease_expires_at=None,
            )
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
    ) -> bool:
        """RUNNING -> RETRYING until ``retry_at``; the last error stays visible while it waits.

        Also used by the reaper for an attempt whose worker was lost (``retry_at`` now).
        """
        s = TaskState
        # A task whose cancel was requested is not retried (the caller cancels it instead).
        rows = self.filter(id=task_id, state=s.RUNNING, attempts=attempt, cancel_requested_at__isnull=True)
        return bool(
            rows.update(
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
        rows = self.filter(celery_task_id__in=ids, state=TaskState.RUNNING, worker=worker)
        return rows.update(lease_expires_at=db_now_plus(lease))

    def lease_expired(self) -> LongTimeTaskQuerySet:
        return self.filter(state=TaskState.RUNNING, lease_expires_at__lt=Now())

    def dispatch_due(self, now: datetime) -> LongTimeTaskQuerySet:
        """Waiting rows whose message never went out, or has not started for too long."""
        s = TaskState
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
    },  # fmt: skip
)

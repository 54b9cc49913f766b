"""The hot path's SQL: statements the ORM compiles once and runs many times, on a cursor that prepares them.

The submit's INSERT (``InsertPlan``) and the worker's claim, progress and finish (``PreparedUpdate``) are
compiled by Django's ORM once per database, then run with new parameters on every task through
``hot_cursor``: psycopg's own server-binding cursor with ``prepare=True`` (psycopg's documented prepared
statements) on PostgreSQL, Django's ordinary cursor elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from django.apps import apps
from django.db import connections, models
from django.db.models import sql
from django.utils import timezone

if TYPE_CHECKING:
    from . import LongTimeTask

_CONVERTERS: dict[tuple[tuple[str, ...], str], list[tuple[Any, list[Any]]]] = {}


def convert_returned(row: Sequence[Any], fields: Sequence[str], db: str) -> tuple[Any, ...]:
    """Values from ``RETURNING``, converted as the ORM converts a SELECT's: the backend's converters (SQLite's
    datetimes, ...), then the field's (JSON decoded, ...), found once per database and column list."""
    connection = connections[db]
    key = (tuple(fields), db)
    converters = _CONVERTERS.get(key)
    if converters is None:
        meta = LongTimeTaskModel().meta
        converters = []
        for name in fields:
            column = meta.get_field(name).get_col(meta.db_table)
            converters.append(
                (column, [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)])
            )
        _CONVERTERS[key] = converters
    converted = []
    for (column, functions), value in zip(converters, row, strict=True):
        for convert in functions:
            value = convert(value, column, connection)
        converted.append(value)
    return tuple(converted)


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

    def __init__(
        self,
        build: Any,
        samples: dict[str, tuple[Any, Any]],
        returning: Sequence[str] = (),
        returning_sql: Any = None,
    ) -> None:
        """``returning``: fields whose new values the statement returns; ``returning_sql(connection)``: one
        more returned expression, SQL written for that connection's database."""
        self.build, self.samples, self.returning = build, samples, tuple(returning)
        self.returning_sql = returning_sql
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
                if self.returning_sql is not None:
                    columns = f"{columns}, {self.returning_sql(connections[db])}"
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
    if not _is_psycopg3(raw):
        return connection.cursor()
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
    )


def _is_psycopg3(raw: Any) -> bool:
    """Whether Django's connection is psycopg 3's (with psycopg2 it is not, and nothing is prepared)."""
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(raw, psycopg.Connection)


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

    def fetchall(self) -> list[Any]:
        with self.connection.wrap_database_errors:
            return list(self.cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)


def queue_wait_sql(connection: Any) -> str:
    """The seconds from when a claimed attempt became due to its claim, as a claim's ``RETURNING`` expression.

    Due is the latest of the row's creation, delayed start and retry time, as they were *before* the claim
    (which clears ``retry_at``). On PostgreSQL a subquery in ``RETURNING`` reads the row as of the start of the
    statement (every part of one statement sees the same snapshot), so it sees ``retry_at`` before the claim:
    one more primary-key lookup of a page already in memory, no round trip. SQLite's ``RETURNING`` sees only
    the new row: there the wait of a retry (attempt 2 and later) is left out (NULL).
    """
    meta = LongTimeTaskModel().meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    names = ("create_at", "run_after", "retry_at", "claimed_at", "attempts", "id")
    create_at, run_after, retry_at, claimed_at, attempts, pk = (quote(meta.get_field(name).column) for name in names)
    if connection.vendor == "postgresql":
        due = (
            f"(SELECT GREATEST(o.{create_at}, o.{run_after}, o.{retry_at}) FROM {table} o "  # noqa: S608 - names only
            f"WHERE o.{pk} = {table}.{pk})"
        )
        return f"EXTRACT(EPOCH FROM ({claimed_at} - {due}))::float8"
    due = f"MAX({create_at}, COALESCE({run_after}, {create_at}))"
    return f"CASE WHEN {attempts} > 1 THEN NULL ELSE (julianday({claimed_at}) - julianday({due})) * 86400.0 END"


def task_model() -> type[LongTimeTask]:
    """The LongTimeTask model, from Django's app registry: the model imports this module, not the reverse."""
    return apps.get_model("long_time_task", "LongTimeTask")


def update_returning(connection: Any) -> bool:
    """Whether ``UPDATE ... RETURNING`` works: PostgreSQL, and SQLite from 3.35 (Django 5.2 allows 3.31)."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return bool(connection.Database.sqlite_version_info >= (3, 35))
    return False

"""Pagination that stays fast on a big table: an opaque keyset cursor for deep pages, and a count that
stops at a cap (then an estimate from PostgreSQL's planner) instead of a ``COUNT(*)`` over millions of rows."""

from __future__ import annotations

import base64
import json
import re
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Q, QuerySet

QS = TypeVar("QS", bound=QuerySet[Any])

# A cursor is a position in the list's order, (create_at, id), as 16 bytes (microseconds since 1970 and the
# id, two signed 64-bit integers) in URL-safe base64 without padding: 22 characters. Every string of this
# pattern decodes to some position, so the schema's pattern is exactly what the server accepts.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{22}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_LAYOUT = struct.Struct(">qq")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_EARLIEST = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LATEST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND


class InvalidCursor(ValueError):  # noqa: N818
    pass


def encode_cursor(create_at: datetime, task_id: int) -> str:
    micros = (create_at - _EPOCH) // _MICROSECOND
    return base64.urlsafe_b64encode(_LAYOUT.pack(micros, task_id)).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The position of a cursor. A time beyond what a datetime holds is clamped to its ends (a cursor the
    API gave out never is): before year 1 is after every task, after year 9999 before every task."""
    if not _CURSOR.fullmatch(cursor):  # fullmatch: "$" alone would let a trailing newline in
        raise InvalidCursor("cursor is not one this API gave out")
    micros, task_id = _LAYOUT.unpack(base64.urlsafe_b64decode(cursor + "=="))
    return _EPOCH + min(max(micros, _EARLIEST), _LATEST) * _MICROSECOND, task_id


def after_cursor(tasks: QS, cursor: str) -> QS:
    """The rows after ``cursor`` in the list's order (newest first: create_at, then id, descending)."""
    when, task_id = decode_cursor(cursor)
    # create_at <= when lets the index scan start at the cursor; the OR then settles the ties.
    return tasks.filter(Q(create_at__lt=when) | Q(create_at=when, id__lt=task_id), create_at__lte=when)


def capped_count(tasks: QuerySet[Any], cap: int) -> tuple[int, bool]:
    """``(count, is_estimate)``: exact up to ``cap`` rows; past it, PostgreSQL's planner estimate.

    The estimate comes first (it only plans the query): when it is far above the cap, even counting up to
    the cap would read ``cap`` rows for nothing.
    """
    estimate = planner_estimate(tasks)
    if estimate is not None and estimate > 2 * cap:
        return estimate, True
    exact = tasks.order_by()[: cap + 1].count()
    if exact <= cap:
        return exact, False
    return max(estimate or 0, cap + 1), True


def planner_estimate(tasks: QuerySet[Any]) -> int | None:
    connection = connections[tasks.db]
    if connection.vendor != "postgresql":
        return None
    try:
        statement, params = tasks.order_by().values("id").query.sql_with_params()
    except EmptyResultSet:  # e.g. .none()
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def fetch_page(tasks: QS, offset: int, limit: int) -> list[Any]:
    """The rows of one page, newest first: the page's ids first, then those rows.

    The ids come from the filter's own index in the list's order, (filter, create_at, id), as an index-only
    scan. A single query that also reads the other columns lets PostgreSQL prefer walking the create_at index
    backwards and filtering row by row, which reads most of the table when the matching tasks are all old
    (2.3 s at 10M rows, for an owner whose tasks are all old). Two short queries keep every first page flat.
    """
    ordered = tasks.order_by("-create_at", "-id")
    ids = list(ordered.values_list("id", flat=True)[offset : offset + limit])
    if not ids:
        return []
    rows = {row.id: row for row in ordered.filter(id__in=ids)}
    return [rows[i] for i in ids if i in rows]

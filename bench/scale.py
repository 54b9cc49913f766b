"""List latency against table size: ``python -m bench.scale [--sizes 1000000 10000000]``.

Fills the benchmark database's task table with generated rows (a year of tasks, 10 owners, mostly finished),
then times the list endpoint through the whole Django/DRF stack in-process: first page, a filtered page,
a page by cursor 50 pages down and one halfway down the table, the deepest page number allowed, an owner's
first page, and a detail. Each figure is the median of 31 requests, with the time spent in SQL beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


TABLE = "long_time_task"
REPEAT = 31  # timed requests per endpoint and size (after two warm-up requests); the figures are medians
CHUNK = 1_000_000  # rows per INSERT statement (all in one transaction): progress, and bounded statements


def secondary_indexes(cursor: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """What to drop before a bulk load, and how to recreate it exactly.

    ``(constraints, indexes)``: the table's unique, exclusion and foreign-key constraints as
    ``(name, type, definition)`` (``pg_get_constraintdef``), and the indexes that back no constraint as
    ``(name, indexdef)`` (``pg_indexes``). The primary key and the CHECK constraints stay.
    """
    cursor.execute(
        """
        SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = %s::regclass AND contype IN ('u', 'x', 'f') ORDER BY contype DESC, conname
        """,
        [TABLE],
    )
    constraints = [(name, kind, definition) for name, kind, definition in cursor.fetchall()]
    cursor.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename = %s
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                          WHERE c.conrelid = %s::regclass AND c.conindid = to_regclass(quote_ident(i.indexname)))
        ORDER BY i.indexname
        """,
        [TABLE, TABLE],
    )
    return constraints, [(name, definition) for name, definition in cursor.fetchall()]


def schema_snapshot(cursor: Any) -> set[tuple[str, str]]:
    """Every index and constraint of the table, by name and definition: the same before and after a fill."""
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
        [TABLE],
    )
    rows = set(cursor.fetchall())
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass", [TABLE]
    )
    return rows | set(cursor.fetchall())


def fill(size: int) -> tuple[list[int], dict[str, float]]:
    """Replace the table's rows with ``size`` generated tasks; returns the owners and the fill's timings.

    A bulk load, as one would do it by hand: drop the secondary indexes and the unique and foreign-key
    constraints (the owner foreign key is DEFERRABLE INITIALLY DEFERRED, so every inserted row would queue a
    check until the commit), insert with generate_series, then recreate exactly the same indexes and
    constraints from their definitions, all in one transaction (a failure leaves the table as it was).
    Then VACUUM ANALYZE: statistics for the planner, and the visibility map and hint bits that a long-lived
    table has (otherwise the first reads after the load pay for writing them).

    The INSERT names its columns: the columns it leaves out must be nullable or have a database default.
    """
    from django.contrib.auth import get_user_model
    from django.db import DatabaseError, connection, transaction

    # scale0..scale9 own the tasks in turn; scale-old owns the oldest 5 % alone (a user who left, a batch
    # job that stopped): its newest task is about 11 months old.
    users = [get_user_model().objects.get_or_create(username=f"scale{i}")[0].id for i in range(10)]
    users.append(get_user_model().objects.get_or_create(username="scale-old")[0].id)
    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        before = schema_snapshot(cursor)
        constraints, indexes = secondary_indexes(cursor)
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET synchronous_commit = off")
        started = time.perf_counter()
        with transaction.atomic():
            for name, _kind, _definition in constraints:
                cursor.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')
            for name, _definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            # CASCADE: tables that reference tasks (e.g. an audit trail) are emptied with them.
            cursor.execute(f"TRUNCATE {TABLE} RESTART IDENTITY CASCADE")
            for first in range(1, size + 1, CHUNK):
                last = min(size, first + CHUNK - 1)
                cursor.execute(
                    f"""
                    INSERT INTO {TABLE} (celery_task_id, task_type, task_params, state, result, create_at,
                        start_at, finish_at, owner_id, attempts, worker, queue, priority, error_code,
                        error_traceback, dispatch_count)
                    SELECT md5(i::text) || '-' || i,
                        (ARRAY['data_analysis', 'file_processing', 'report_generation'])[1 + mod(i, 3)],
                        '{{"dataset_id": 1}}'::jsonb,
                        CASE WHEN mod(i, 20) = 0 THEN 'FAILED' WHEN mod(i, 20) = 1 THEN 'PENDING' ELSE 'FINISHED' END,
                        CASE WHEN mod(i, 20) > 1 THEN '{{"ok": true}}'::jsonb END,
                        now() - (i * interval '1 second') * (31536000.0 / %s),
                        now() - (i * interval '1 second') * (31536000.0 / %s) + interval '1 second',
                        now() - (i * interval '1 second') * (31536000.0 / %s) + interval '2 seconds',
                        CASE WHEN i > %s THEN (%s::bigint[])[11] ELSE (%s::bigint[])[1 + mod(i, 10)] END,
                        1, 'w@host', 'default', 5, '', '', 0
                    FROM generate_series(%s::bigint, %s::bigint) AS i
                    """,
                    [size, size, size, size - size // 20, users, users, first, last],
                )
                if size > CHUNK:
                    print(f"  {last:,} / {size:,} rows", flush=True)  # noqa: T201 - progress of a long fill
            timings["insert_s"] = time.perf_counter() - started
            for _name, definition in indexes:
                cursor.execute(definition)
            for name, _kind, definition in constraints:
                cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')
            timings["index_s"] = time.perf_counter() - started - timings["insert_s"]
        cursor.execute("RESET synchronous_commit")
        mark = time.perf_counter()
        cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
        try:  # write the load's dirty pages now, not while the requests are timed (needs pg_checkpoint)
            cursor.execute("CHECKPOINT")
        except DatabaseError:
            pass
        cursor.execute("RESET maintenance_work_mem")
        timings["vacuum_analyze_s"] = time.perf_counter() - mark
        timings["fill_s"] = time.perf_counter() - started
        after = schema_snapshot(cursor)
        if after != before:
            raise RuntimeError(f"the fill changed the table's indexes: {sorted(before ^ after)}")
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [TABLE])
        timings["table_and_indexes_gb"] = cursor.fetchone()[0] / 2**30
    return users, {key: round(value, 2) for key, value in timings.items()}


class SqlTimer:
    """An execute wrapper that adds up the time spent in the database driver (round trips included)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


def timed(client: Any, path: str, repeat: int = REPEAT, warmup: int = 2) -> tuple[float, float]:
    """Median wall time of ``GET path`` and median time of its SQL, in ms, after ``warmup`` requests."""
    from django.db import connection

    walls, sqls = [], []
    for i in range(repeat + warmup):
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            started = time.perf_counter()
            response = client.get(path)
            wall = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.content[:300]!r}")
        if i >= warmup:
            walls.append(wall * 1000)
            sqls.append(timer.seconds * 1000)
    return statistics.median(walls), statistics.median(sqls)


def measure(size: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from long_time_task.pagination import encode_cursor

    users, fill_timings = fill(size)
    staff, _ = get_user_model().objects.get_or_create(username="scale-staff", defaults={"is_staff": True})
    client, owner_client, old_owner_client = Client(), Client(), Client()
    client.force_login(staff)
    owner_client.force_login(get_user_model().objects.get(id=users[0]))
    old_owner_client.force_login(get_user_model().objects.get(id=users[10]))
    first = client.get("/api/tasks/?page_size=20").json()
    cursor = first["next_cursor"]
    for _ in range(50):  # 50 pages down by cursor, to time a deep one
        cursor = client.get(f"/api/tasks/?page_size=20&cursor={cursor}").json()["next_cursor"]
    with connection.cursor() as c:  # the row halfway down the list, and a cursor that points at it
        c.execute(f"SELECT create_at, id FROM {TABLE} ORDER BY create_at DESC, id DESC OFFSET %s LIMIT 1", [size // 2])
        middle_at, middle_id = c.fetchone()
    paths = {
        "first_page_ms": (client, "/api/tasks/?page_size=20"),
        "state_filter_ms": (client, "/api/tasks/?page_size=20&state=FAILED"),
        "type_filter_ms": (client, "/api/tasks/?page_size=20&task_type=file_processing"),
        "cursor_page_ms": (client, f"/api/tasks/?page_size=20&cursor={cursor}"),
        "middle_cursor_ms": (client, f"/api/tasks/?page_size=20&cursor={encode_cursor(middle_at, middle_id)}"),
        "last_page_number_ms": (client, "/api/tasks/?page_size=20&page=500"),
        "owner_first_page_ms": (owner_client, "/api/tasks/?page_size=20"),
        "detail_ms": (client, f"/api/tasks/{middle_id}/"),
    }
    result: dict[str, Any] = {"size": size, "repeat": REPEAT}
    sql: dict[str, float] = {}
    for key, (who, path) in paths.items():
        result[key], sql[key] = timed(who, path)
    # Seconds per request at 10M rows (see docs/performance.md): fewer samples. Then the same with
    # random_page_cost = 1.1 (the usual value for SSDs, or a table in RAM) instead of the default 4.
    result["old_owner_first_page_ms"], sql["old_owner_first_page_ms"] = timed(
        old_owner_client, "/api/tasks/?page_size=20", repeat=5, warmup=1
    )
    with connection.cursor() as c:
        c.execute("SET random_page_cost = 1.1")
        key = "old_owner_first_page_rpc_1_1_ms"
        result[key], sql[key] = timed(old_owner_client, "/api/tasks/?page_size=20", repeat=5, warmup=1)
        c.execute("RESET random_page_cost")
    result["sql_ms"] = sql
    result["total"] = first["total"]
    result["total_is_estimate"] = first["total_is_estimate"]
    result.update(fill_timings)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "scale.json"))
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("BENCH_SYSTEM", "tracked")
    from bench.run import setup

    setup()
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["testserver"]
    results = []
    for size in args.sizes:
        started = time.perf_counter()
        result = measure(size)
        result["fill_and_measure_s"] = round(time.perf_counter() - started, 1)
        results.append(result)
        print(json.dumps(result), flush=True)  # noqa: T201 - a command-line report
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

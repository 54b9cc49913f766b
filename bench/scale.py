"""List latency against table size: ``python -m bench.scale [--sizes 1000000 10000000]``.

Fills the benchmark database's task table with generated rows (a year of tasks, 10 owners, mostly finished),
then times the list endpoint through the whole Django/DRF stack in-process: first page, a filtered page,
a deep page by cursor, the deepest page number allowed, an owner's first page, and a detail. Median of 7.
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


def fill(size: int) -> list[int]:
    from django.contrib.auth import get_user_model
    from django.db import connection

    users = [get_user_model().objects.get_or_create(username=f"scale{i}")[0].id for i in range(10)]
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE long_time_task")
        cursor.execute(
            """
            INSERT INTO long_time_task (celery_task_id, task_type, task_params, state, result, create_at, start_at,
                finish_at, owner_id, attempts, worker, queue, priority, error_code, error_traceback, dispatch_count)
            SELECT md5(i::text) || '-' || i,
                (ARRAY['data_analysis', 'file_processing', 'report_generation'])[1 + mod(i, 3)],
                '{"dataset_id": 1}'::jsonb,
                CASE WHEN mod(i, 20) = 0 THEN 'FAILED' WHEN mod(i, 20) = 1 THEN 'PENDING' ELSE 'FINISHED' END,
                CASE WHEN mod(i, 20) > 1 THEN '{"ok": true}'::jsonb END,
                now() - (i * interval '1 second') * (31536000.0 / %s),
                now() - (i * interval '1 second') * (31536000.0 / %s) + interval '1 second',
                now() - (i * interval '1 second') * (31536000.0 / %s) + interval '2 seconds',
                (%s::bigint[])[1 + mod(i, 10)], 1, 'w@host', 'default', 5, '', '', 0
            FROM generate_series(1, %s) AS i
            """,
            [size, size, size, users, size],
        )
        cursor.execute("ANALYZE long_time_task")
    return users


def timed(client: Any, path: str, repeat: int = 7) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.content[:300]!r}")
    return statistics.median(samples)


def measure(size: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from long_time_task.models import LongTimeTask

    users = fill(size)
    staff, _ = get_user_model().objects.get_or_create(username="scale-staff", defaults={"is_staff": True})
    client, owner_client = Client(), Client()
    client.force_login(staff)
    owner_client.force_login(get_user_model().objects.get(id=users[0]))
    first = client.get("/api/tasks/?page_size=20").json()
    cursor = first["next_cursor"]
    for _ in range(50):  # 50 pages down by cursor, to time a deep one
        cursor = client.get(f"/api/tasks/?page_size=20&cursor={cursor}").json()["next_cursor"]
    some_id = LongTimeTask.objects.order_by().values_list("id", flat=True)[size // 2]
    return {
        "size": size,
        "first_page_ms": timed(client, "/api/tasks/?page_size=20"),
        "state_filter_ms": timed(client, "/api/tasks/?page_size=20&state=FAILED"),
        "type_filter_ms": timed(client, "/api/tasks/?page_size=20&task_type=file_processing"),
        "cursor_page_ms": timed(client, f"/api/tasks/?page_size=20&cursor={cursor}"),
        "last_page_number_ms": timed(client, "/api/tasks/?page_size=20&page=500"),
        "owner_first_page_ms": timed(owner_client, "/api/tasks/?page_size=20"),
        "detail_ms": timed(client, f"/api/tasks/{some_id}/"),
        "total": first["total"],
        "total_is_estimate": first["total_is_estimate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
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

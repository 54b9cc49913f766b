"""What a scheduler tick costs against the number of schedules: ``python -m bench.schedules [--sizes 1000 100000]``.

For each size, the benchmark database's schedule table is filled with that many enabled schedules (daily, each from
a random start within the coming day: nothing due), then:

- a tick with nothing due: median wall time and SQL time of 31 ticks (after two warm-ups), the statements it ran,
  and the plan of its one read (EXPLAIN);
- a tick with 1,000 due: 1,000 of them moved to one second ago, then ticks until none is due (``MAINTENANCE_BATCH``,
  500, per tick): the wall time to make the 1,000 runs (each a task row, published to Redis after its tick's
  commit), per run, and the statements per run. Three rounds; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 31
DUE = 1000


def fill(size: int) -> float:
    """Replace the schedules (and their runs) with ``size`` enabled daily schedules; seconds taken."""
    from django.db import connection, transaction
    from django.utils import timezone

    from long_time_task.models import LongTimeTask, Schedule

    started = time.perf_counter()
    rng = random.Random(size)  # noqa: S311 - spreading due times, not secrets
    now = timezone.now()
    with transaction.atomic():
        LongTimeTask.objects.filter(schedule__isnull=False).delete()
        Schedule.objects.all().delete()
        batch = []
        for i in range(size):
            start = now + timedelta(seconds=rng.randrange(7_200, 93_600))  # none due while the benchmark runs
            batch.append(
                Schedule(
                    name=f"bench {i}",
                    task_type="bench_noop",
                    params={"sent_at": 0},
                    interval_seconds=86_400,
                    timezone="UTC",
                    start_at=start,
                    next_run_at=start,
                )
            )
            if len(batch) == 5000:
                Schedule.objects.bulk_create(batch)
                batch = []
        Schedule.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE long_time_task_schedule")
    return time.perf_counter() - started


def measure(size: int) -> dict[str, Any]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from bench.metrics import plan
    from bench.scale import SqlTimer
    from long_time_task.models import LongTimeTask, Schedule
    from long_time_task.schedules import scheduler

    result: dict[str, Any] = {"size": size, "fill_s": round(fill(size), 2)}
    walls, sqls = [], []
    for i in range(REPEAT + 2):
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            started = time.perf_counter()
            counts = scheduler.tick()
            wall = time.perf_counter() - started
        if counts.get("created"):
            raise RuntimeError(f"a tick with nothing due made runs: {counts}")
        if i >= 2:
            walls.append(wall * 1000)
            sqls.append(timer.seconds * 1000)
    reset_queries()  # the log holds 9,000 queries: each capture starts from an empty one
    with CaptureQueriesContext(connection) as captured:
        scheduler.tick()
    result["idle_tick_ms"] = round(statistics.median(walls), 3)
    result["idle_tick_sql_ms"] = round(statistics.median(sqls), 3)
    result["idle_tick_statements"] = [q["sql"].split()[0] for q in captured.captured_queries]
    result["due_plan"] = plan(Schedule.objects.due(timezone.now())[:500])

    rounds = []
    for _ in range(3):
        ids = list(Schedule.objects.order_by("?").values_list("id", flat=True)[:DUE])
        due = timezone.now() - timedelta(seconds=1)  # a due time of each: its start
        Schedule.objects.filter(id__in=ids).update(start_at=due, next_run_at=due)
        before = LongTimeTask.objects.filter(schedule__isnull=False).count()
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            ticks = 0
            while Schedule.objects.due(timezone.now()).exists():
                scheduler.tick()
                ticks += 1
            wall = time.perf_counter() - started
        made = LongTimeTask.objects.filter(schedule__isnull=False).count() - before
        if made != DUE:
            raise RuntimeError(f"{made} runs made for {DUE} due schedules")
        rounds.append({"wall_s": wall, "ticks": ticks, "statements": len(captured.captured_queries)})
    result["due"] = DUE
    result["due_wall_s"] = round(statistics.median(r["wall_s"] for r in rounds), 3)
    result["due_ms_per_run"] = round(result["due_wall_s"] * 1000 / DUE, 3)
    result["due_ticks"] = rounds[0]["ticks"]
    result["due_statements_per_run"] = round(statistics.median(r["statements"] for r in rounds) / DUE, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "schedules.json"))
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("BENCH_SYSTEM", "tracked")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from bench.run import setup

    setup()
    import django

    django.setup()
    from django.conf import settings

    from long_time_task.registry import LongTimeTaskRegister

    settings.DEBUG = False
    if LongTimeTaskRegister.get_task("bench_noop") is None:  # bench/tasks_definitions.py, an installed app's
        raise RuntimeError("bench_noop is not registered")
    results = []
    for size in args.sizes:
        result = measure(size)
        results.append(result)
        print(json.dumps(result), flush=True)  # noqa: T201 - a command-line report
    report = {"command": "python -m bench.schedules --sizes " + " ".join(map(str, args.sizes)), "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""What a scheduler tick costs against the number of schedules: ``python -m bench.schedules [--sizes 1000 100000]``.

For each size, the benchmark database's schedule table is filled with that many enabled schedules (daily, each from
a random start within the coming day: nothing due), then:

- a tick with nothing due: median wall time and SQL time of 31 ticks (after two warm-ups), the statements it ran,
  and the plan of its one read (EXPLAIN);
- a tick with 1,000 due: 1,000 of them moved to one second ago, then ticks until none is due (``MAINTENANCE_BATCH``,
  500, per tick): the wall time to make the 1,000 runs (each a task row, published to Redis after its tick's
  commit), per run. Three rounds, timed without capturing the SQL; medians. The statements per run are counted in
  one more round, captured and not timed;
- the same through the one-at-a-time path the tick had before its runs were batched (``baseline_tick``: a
  savepoint, ``services.submit`` and a guarded UPDATE per run), in the same rounds, alternating which goes first,
  and the ratio of the two medians (batched / one at a time). For both, the time spent publishing the runs to
  Redis after the commits (one Celery message per run either way), and the ratio of the times without it.
"""

from __future__ import annotations

import argparse
import contextlib
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
ROUNDS = 3


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
    from long_time_task.models import Schedule
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

    paths = {"batched": scheduler.tick, "baseline": baseline_tick}
    statements = {name: make_due_runs(tick, count=True)["statements"] for name, tick in paths.items()}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for i in range(ROUNDS):
        for name in list(paths)[:: 1 if i % 2 == 0 else -1]:  # alternating which goes first
            rounds[name].append(make_due_runs(paths[name]))
    batched, baseline = rounds["batched"], rounds["baseline"]
    result["due"] = DUE
    result["due_wall_s"] = round(statistics.median(r["wall_s"] for r in batched), 3)
    result["due_ms_per_run"] = round(result["due_wall_s"] * 1000 / DUE, 3)
    result["due_ticks"] = batched[0]["ticks"]
    result["due_statements_per_run"] = round(statements["batched"] / DUE, 3)
    result["baseline_due_wall_s"] = round(statistics.median(r["wall_s"] for r in baseline), 3)
    result["baseline_due_ms_per_run"] = round(result["baseline_due_wall_s"] * 1000 / DUE, 3)
    result["baseline_due_statements_per_run"] = round(statements["baseline"] / DUE, 3)
    result["due_ratio"] = round(result["due_wall_s"] / result["baseline_due_wall_s"], 3)
    # Of which publishing the runs to the broker after the commits (one Celery message each, in both paths).
    result["due_publish_s"] = round(statistics.median(r["publish_s"] for r in batched), 3)
    result["baseline_due_publish_s"] = round(statistics.median(r["publish_s"] for r in baseline), 3)
    # The same ratio for what is left once the publishes are taken out: the part batching changes.
    unpublished = {name: statistics.median(r["wall_s"] - r["publish_s"] for r in rs) for name, rs in rounds.items()}
    result["due_ratio_without_publish"] = round(unpublished["batched"] / unpublished["baseline"], 3)
    result["due_rounds_s"] = {name: [round(r["wall_s"], 3) for r in rs] for name, rs in rounds.items()}
    return result


def make_due_runs(tick: Any, *, count: bool = False) -> dict[str, Any]:
    """Make ``DUE`` random schedules due one second ago, then ``tick()`` until none is due: its wall time and the
    ticks it took; with ``count``, the statements too (captured, which costs time and turns off the hot path's
    prepared statements: such a round is not timed)."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from long_time_task import services
    from long_time_task.models import LongTimeTask, Schedule

    ids = list(Schedule.objects.order_by("?").values_list("id", flat=True)[:DUE])
    due = timezone.now() - timedelta(seconds=1)  # a due time of each: its start
    Schedule.objects.filter(id__in=ids).update(start_at=due, next_run_at=due)
    before = LongTimeTask.objects.filter(schedule__isnull=False).count()
    reset_queries()
    publish = services.publish
    publishing = 0.0

    def timed_publish(*args: Any, **kwargs: Any) -> bool:
        nonlocal publishing
        started = time.perf_counter()
        try:
            return publish(*args, **kwargs)
        finally:
            publishing += time.perf_counter() - started

    services.publish = timed_publish  # both paths publish through it, after their commit
    try:
        with CaptureQueriesContext(connection) if count else contextlib.nullcontext() as captured:
            started = time.perf_counter()
            ticks = 0
            while Schedule.objects.due(timezone.now()).exists():
                tick()
                ticks += 1
            wall = time.perf_counter() - started
    finally:
        services.publish = publish
    made = LongTimeTask.objects.filter(schedule__isnull=False).count() - before
    if made != DUE:
        raise RuntimeError(f"{made} runs made for {DUE} due schedules")
    statements = len(captured.captured_queries) if captured else None
    return {"wall_s": wall, "publish_s": publishing, "ticks": ticks, "statements": statements}


def baseline_tick() -> None:
    """The tick as it was before its runs were batched (commit 41d4f69): per due run a savepoint and one
    ``services.submit`` (validation, permission, quota, INSERT, a publish after the commit), and per schedule a
    guarded UPDATE of its next run, all in one transaction. The bench's schedules have no owner, and none is
    skip-if-running or refused, so the paths left out here (pausing, skipping) are never taken."""
    from django.db import IntegrityError, connection, transaction
    from django.utils import timezone

    from long_time_task import services
    from long_time_task.conf import conf
    from long_time_task.models import Schedule
    from long_time_task.schedules.scheduler import due_times
    from long_time_task.schedules.timing import timing_of

    now = timezone.now()
    with transaction.atomic():
        due = Schedule.objects.due(now).select_related("owner")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        for schedule in due[: conf.MAINTENANCE_BATCH]:
            runs, _ = due_times(schedule, now)
            values: dict[str, Any] = {"next_run_at": timing_of(schedule).after(now)}
            for at in runs:
                try:
                    with transaction.atomic():
                        values["last_task"] = services.submit(
                            schedule.task_type,
                            schedule.params,
                            owner=schedule.owner,
                            schedule=schedule,
                            scheduled_for=at,
                            count_rate=False,
                        ).task
                except IntegrityError:
                    pass  # a duplicate: none in the bench, which runs one tick at a time
            if runs:
                values["last_run_at"] = runs[-1]
            Schedule.objects.filter(id=schedule.id, next_run_at=schedule.next_run_at).update(**values, updated_at=now)


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

"""What a ``/metrics`` scrape costs against table size: ``python -m bench.metrics [--sizes 100000 1000000]``.

Fills the benchmark database's task table as ``bench.scale`` does (a year of tasks, 5 % of them PENDING on one
queue: a backlog of 5,000 to 500,000 rows, the case where the oldest-waiting query has the most to skip), then
times ``GET /metrics`` through the whole Django stack in-process with the scraper's token (the broker's reading is
cached for 5 s, as in production: most scrapes reuse it), the database gauges alone, and one uncached reading of
the broker's queue lengths. Each figure is the median of 31 (after two warm-up scrapes), with the SQL time beside
it, and the plans of the gauges' queries (EXPLAIN) are kept to show which index each uses.
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
REPEAT = 31
TOKEN = "bench-scraper-token"  # noqa: S105


def median_ms(action: Any, repeat: int = REPEAT, warmup: int = 2) -> tuple[float, float]:
    """Median wall time of ``action()`` and of its SQL, in ms."""
    from django.db import connection

    from bench.scale import SqlTimer

    walls, sqls = [], []
    for i in range(repeat + warmup):
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            started = time.perf_counter()
            action()
            wall = time.perf_counter() - started
        if i >= warmup:
            walls.append(wall * 1000)
            sqls.append(timer.seconds * 1000)
    return round(statistics.median(walls), 2), round(statistics.median(sqls), 2)


def plan(queryset: Any) -> str:
    """The plan's node types, outermost first (``EXPLAIN``)."""
    from django.db import connection

    statement, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", params)
        tree = cursor.fetchone()[0]
    tree = json.loads(tree) if isinstance(tree, str) else tree
    nodes, node = [], tree[0]["Plan"]
    while node:
        nodes.append(f"{node['Node Type']}" + (f" on {node['Index Name']}" if "Index Name" in node else ""))
        node = (node.get("Plans") or [None])[0]
    return " > ".join(nodes)


def measure(size: int) -> dict[str, Any]:
    from django.test import Client

    from bench.scale import fill
    from long_time_task.metrics import collector
    from long_time_task.models import LongTimeTask, TaskState

    _users, fill_timings = fill(size)
    client = Client()

    def scrape() -> None:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        if response.status_code != 200:
            raise RuntimeError(f"/metrics: {response.status_code} {response.content[:300]!r}")

    result: dict[str, Any] = {"size": size, "repeat": REPEAT}
    result["scrape_ms"], result["scrape_sql_ms"] = median_ms(scrape)
    result["database_gauges_ms"], result["database_gauges_sql_ms"] = median_ms(collector.database_gauges)
    queues = collector.broker_queues()
    result["broker_uncached_ms"], _ = median_ms(lambda: collector.read_queue_lengths(queues, 1.0), repeat=11)
    result["plans"] = {
        "oldest_waiting_sample": plan(collector.waiting_sample(TaskState.PENDING)),
        "capped_count_running": plan(
            LongTimeTask.objects.filter(state=TaskState.RUNNING).order_by()[: collector.STATE_COUNT_CAP + 1]
        ),
    }
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    result["gauges"] = [
        line
        for line in text.splitlines()
        if line.startswith(("long_time_task_tasks{", "long_time_task_tasks_estimated{", "long_time_task_oldest"))
    ]  # noqa: E501
    result.update(fill_timings)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "metrics.json"))
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("BENCH_SYSTEM", "tracked")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this process's own counters: the scrape's cost is the gauges
    from bench.run import setup

    setup()
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["testserver"]
    settings.LONG_TIME_TASK_METRICS_TOKEN = TOKEN
    results = []
    for size in args.sizes:
        result = measure(size)
        results.append(result)
        print(json.dumps(result), flush=True)  # noqa: T201 - a command-line report
    report = {"command": "python -m bench.metrics --sizes " + " ".join(map(str, args.sizes)), "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

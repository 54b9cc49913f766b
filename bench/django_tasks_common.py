"""What the django.tasks comparison measures, and how its numbers are summarised: plain data and pure functions,
shared by the runner (``bench.django_tasks``), its Django settings (``bench.django_tasks_settings``), the report and
the tests (standard library only: importable without Django 6, psutil or a database).
"""

from __future__ import annotations

import statistics
from typing import Any

BASELINE = "raw"
# The systems, in the order the tables show them; the baseline first.
SYSTEMS = ["raw", "ltt", "dtdb", "dtc"]
LABELS = {
    "raw": "raw Celery, results ignored (baseline)",
    "ltt": "django-celery-task-manage: LongTimeTaskBackend on Celery workers",
    "dtdb": "django-tasks-db: DatabaseBackend and its db_worker",
    "dtc": "django-tasks-celery: CeleryBackend (Redis result backend)",
}
# The Django tasks backend of each system (the baseline is a plain Celery task, not a Django task).
BACKENDS = {
    "ltt": "long_time_task.django_tasks.backend.LongTimeTaskBackend",
    "dtdb": "django_tasks_db.DatabaseBackend",
    "dtc": "django_tasks_celery.CeleryBackend",
}
# Which systems run their tasks on Celery workers (the others: on their own worker processes).
ON_CELERY = {"raw", "ltt", "dtc"}
WORKLOADS = {
    "noop": "no-op tasks",
    "progress": "tasks that report progress",
}
METRICS = ["e2e_rate", "enqueue_rate", "cpu_per_1000", "machine_cpu_per_1000", "db_xacts_per_task",
           "latency_p50_ms", "latency_p99_ms"]  # fmt: skip


def tasks_setting(system: str) -> dict[str, Any]:
    """Django's ``TASKS`` setting for ``system``: its backend as the default, on the queue the workers consume."""
    if system not in BACKENDS:
        return {}
    return {"default": {"BACKEND": BACKENDS[system], "QUEUES": ["default"]}}


def worker_command(system: str, concurrency: int, python: str, db_interval: float) -> list[list[str]]:
    """The worker processes of ``system``, one command each: one Celery worker (prefork, ``concurrency`` processes),
    or ``concurrency`` of django-tasks-db's single-threaded ``db_worker``."""
    if system in ON_CELERY:
        return [
            [python, "-m", "celery", "-A", "demo", "worker", "-Q", "default", "-c", str(concurrency), "-P", "prefork",
             "-l", "WARNING", "--without-mingle", "--without-gossip", "--without-heartbeat", "-n", f"bench-{system}@%h"]
        ]  # fmt: skip
    if system == "dtdb":
        return [
            [python, "manage.py", "db_worker", "--queue-name", "default", "--interval", str(db_interval),
             "--no-startup-delay", "--no-reload", "--worker-id", f"bench-dtdb-{i}"]
            for i in range(concurrency)
        ]  # fmt: skip
    raise ValueError(f"unknown system {system!r}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank (the same as ``bench.run``'s)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{workload: {system: {metric: {median, min, max}, "cpu_split_per_1000": {part: median}}}}`` over the
    repetitions, and each system's end-to-end rate over the baseline's (no-op workload) of the same repetition."""
    baseline = {r["rep"]: r["e2e_rate"] for r in runs if r["system"] == BASELINE and r["workload"] == "noop"}
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in WORKLOADS:
        for system in SYSTEMS:
            mine = [r for r in runs if r["system"] == system and r["workload"] == workload]
            if not mine:
                continue
            out = summary.setdefault(workload, {}).setdefault(system, {})
            for metric in METRICS:
                values = [r[metric] for r in mine if metric in r]
                if values:
                    out[metric] = spread(values)
            ratios = [r["e2e_rate"] / baseline[r["rep"]] for r in mine if baseline.get(r["rep"])]
            if ratios:
                out["ratio_to_baseline"] = spread(ratios)
            splits = [r["cpu_split_per_1000"] for r in mine if "cpu_split_per_1000" in r]
            if splits:
                parts = sorted({part for split in splits for part in split})
                out["cpu_split_per_1000"] = {
                    part: statistics.median(split.get(part, 0.0) for split in splits) for part in parts
                }
    return summary


def rotated(systems: list[str], rep: int) -> list[str]:
    """The order of the systems in repetition ``rep``: rotated, so that each leads once every len(systems)."""
    k = rep % len(systems)
    return systems[k:] + systems[:k]

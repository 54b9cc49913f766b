"""Every queue has a consumer: the queues tasks are sent to, and the live workers reading each.

The queues that must have a consumer are those of the registered task types and those Celery beat sends the
maintenance jobs to (the reaper and the sweeper: without a consumer there, recovery silently stops). Who reads
them comes from the workers' own rows (``models/workers.py``), written by each worker's lease heartbeat: one
indexed read of a table with one row per worker, cheap enough for every page view and every scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from ..conf import conf
from ..models import WorkerHeartbeat
from ..registry import LongTimeTaskRegister

MAINTENANCE_TASKS = ("long_time_task.reap_expired_leases", "long_time_task.dispatch_due_tasks")


@dataclass(frozen=True)
class QueueConsumers:
    name: str
    consumers: int  # live workers reading it
    purpose: str  # "tasks" (a registered type's queue), "maintenance", or both


def default_queue() -> str:
    return str(getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", None) or "celery")


def maintenance_queues() -> set[str]:
    """Where beat sends the reaper and the sweeper: their schedule entries' ``queue`` option, else the default."""
    schedule: dict[str, Any] = getattr(settings, "CELERY_BEAT_SCHEDULE", None) or {}
    queues = set()
    for entry in schedule.values():
        if isinstance(entry, dict) and entry.get("task") in MAINTENANCE_TASKS:
            options = entry.get("options") or {}
            queues.add(str(options.get("queue") or default_queue()))
    return queues


def task_queues() -> set[str]:
    return {config.queue for config in LongTimeTaskRegister.get_all_tasks().values()}


def live_workers() -> list[WorkerHeartbeat]:
    return list(WorkerHeartbeat.objects.alive(conf.LEASE_SECONDS))


def consumers_by_queue(workers: Iterable[WorkerHeartbeat]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in workers:
        for queue in worker.queues or ():
            counts[str(queue)] = counts.get(str(queue), 0) + 1
    return counts


def queue_consumers(workers: Iterable[WorkerHeartbeat] | None = None) -> list[QueueConsumers]:
    """Each queue that must be consumed, with its live consumers; then the other queues some worker reads."""
    counts = consumers_by_queue(live_workers() if workers is None else workers)
    tasks, maintenance = task_queues(), maintenance_queues()
    needed = sorted(tasks | maintenance)
    rows = []
    for name in needed:
        purpose = " + ".join(p for p, queues in (("tasks", tasks), ("maintenance", maintenance)) if name in queues)
        rows.append(QueueConsumers(name, counts.get(name, 0), purpose))
    rows += [QueueConsumers(name, counts[name], "") for name in sorted(set(counts) - set(needed))]
    return rows


def unconsumed_queues() -> list[QueueConsumers]:
    return [queue for queue in queue_consumers() if queue.purpose and not queue.consumers]

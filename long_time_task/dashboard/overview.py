"""The overview's figures: counts by state and type, queues (depth and consumers), workers, recent failures.

The broker is asked with a short timeout, and the answers are cached for a few seconds, so a slow or missing
broker never hangs the page (it then says "unknown"). The workers are not asked at all: each one's heartbeat
writes its row (``models/workers.py``), which says whether it is alive and which queues it reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone

from ..conf import conf
from ..models import LongTimeTask, TaskState, WorkerHeartbeat
from ..models.querysets import LongTimeTaskQuerySet
from ..observability.consumers import queue_consumers

logger = logging.getLogger(__name__)

CACHE_SECONDS = 5


@dataclass(frozen=True)
class QueueDepth:
    name: str
    depth: int | None  # None: the broker could not say


@dataclass(frozen=True)
class Worker:
    name: str
    alive: bool  # wrote its heartbeat within the lease (False: stopped, or not heard from)
    queues: list[str]
    concurrency: int | None
    last_seen_at: Any  # datetime
    running: int  # tasks holding a live lease in its name


@dataclass(frozen=True)
class Queue:
    name: str
    depth: int | None  # messages waiting; None: the broker could not say
    consumers: int  # live workers reading it
    purpose: str  # "tasks", "maintenance", both, or "" (read by a worker, but nothing is sent there)

    @property
    def unconsumed(self) -> bool:
        return bool(self.purpose) and not self.consumers


def counts(tasks: LongTimeTaskQuerySet) -> dict[str, Any]:
    """Tasks by state, and by type and state (one grouped query each)."""
    by_state = {row["state"]: row["n"] for row in tasks.order_by().values("state").annotate(n=Count("id"))}
    by_type: dict[str, dict[str, int]] = {}
    for row in tasks.order_by().values("task_type", "state").annotate(n=Count("id")):
        by_type.setdefault(row["task_type"], {})[row["state"]] = row["n"]
    states = [(state, label, by_state.get(state, 0)) for state, label in TaskState.choices]
    types = [
        (name, [by_type[name].get(state, 0) for state, _ in TaskState.choices], sum(by_type[name].values()))
        for name in sorted(by_type)
    ]
    return {"states": states, "types": types, "total": sum(by_state.values())}


def cached_counts(tasks: LongTimeTaskQuerySet, *, scope: str) -> dict[str, Any]:
    """``counts``, cached for a few seconds per scope (everyone's tasks, or one user's): on a big table the
    two grouped queries read the whole table, and an overview page must not do that on every view."""
    key = f"ltt_dashboard:counts:{scope}"
    cached: dict[str, Any] | None = cache.get(key)
    if cached is None:
        cached = counts(tasks)
        cache.set(key, cached, CACHE_SECONDS)
    return cached


def recent_failures(tasks: LongTimeTaskQuerySet, *, hours: float = 1, limit: int = 10) -> tuple[int, list[Any]]:
    since = timezone.now() - timedelta(hours=hours)
    failed = tasks.filter(state=TaskState.FAILED, finish_at__gte=since, create_at__gte=since - timedelta(days=7))
    return failed.count(), list(failed.select_related("owner").order_by("-finish_at")[:limit])


def queue_names() -> list[str]:
    queues = current_app.conf.task_queues or ()
    names = [str(getattr(q, "name", q)) for q in queues]
    return names or [str(current_app.conf.task_default_queue or "celery")]


def queue_depths() -> list[QueueDepth]:
    """Messages waiting in each queue (all priority levels), or None per queue if the broker cannot say."""
    cached: list[QueueDepth] | None = cache.get("ltt_dashboard:queues")
    if cached is not None:
        return cached
    names = queue_names()
    depths: list[QueueDepth] = []
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for name in names:
                try:
                    declared = channel.queue_declare(name, passive=True)  # type: ignore[attr-defined]
                    depths.append(QueueDepth(name, int(declared.message_count)))
                except Exception:  # noqa: BLE001 - a queue the broker does not know, or cannot count
                    depths.append(QueueDepth(name, None))
    except Exception:  # noqa: BLE001 - the broker is down: say "unknown", never fail the page
        logger.info("Dashboard: cannot reach the broker for queue depths", exc_info=True)
        depths = [QueueDepth(name, None) for name in names]
    cache.set("ltt_dashboard:queues", depths, CACHE_SECONDS)
    return depths


def workers() -> list[Worker]:
    """Every worker seen in the last day, alive ones first, from the rows their heartbeats write (no broadcast
    to the workers: this works on every broker), with the tasks each holds a live lease for."""
    cached: list[Worker] | None = cache.get("ltt_dashboard:workers")
    if cached is not None:
        return cached
    alive = {row.pk for row in WorkerHeartbeat.objects.alive(conf.LEASE_SECONDS)}
    running = {
        row["worker"]: row["n"]
        for row in LongTimeTask.objects.filter(state=TaskState.RUNNING, lease_expires_at__gt=timezone.now())
        .exclude(worker="")
        .order_by()
        .values("worker")
        .annotate(n=Count("id"))
    }
    recent = WorkerHeartbeat.objects.filter(last_seen_at__gte=timezone.now() - timedelta(days=1))
    result = sorted(
        (
            Worker(row.hostname, row.pk in alive, list(row.queues or ()), row.concurrency, row.last_seen_at,
                   running.get(row.hostname, 0))
            for row in recent
        ),
        key=lambda worker: (not worker.alive, worker.name),
    )  # fmt: skip
    cache.set("ltt_dashboard:workers", result, CACHE_SECONDS)
    return result


def queues() -> list[Queue]:
    """The queues tasks and maintenance jobs go to, and any other a worker reads: depth and live consumers."""
    depths = {queue.name: queue.depth for queue in queue_depths()}
    consumed = queue_consumers(WorkerHeartbeat.objects.alive(conf.LEASE_SECONDS))
    rows = [Queue(q.name, depths.get(q.name), q.consumers, q.purpose) for q in consumed]
    known = {queue.name for queue in rows}
    rows += [Queue(name, depth, 0, "") for name, depth in depths.items() if name not in known]
    return rows

"""The overview's figures: counts by state and type, queue depths, live workers, recent failures.

The broker and the workers are asked with short timeouts, and the answers are cached for a few seconds, so
a slow or missing broker never hangs the page (it then says "unknown").
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

from ..models import LongTimeTask, TaskState
from ..models.querysets import LongTimeTaskQuerySet

logger = logging.getLogger(__name__)

CACHE_SECONDS = 5
PING_TIMEOUT = 1.0


@dataclass(frozen=True)
class QueueDepth:
    name: str
    depth: int | None  # None: the broker could not say


@dataclass(frozen=True)
class Worker:
    name: str
    responded: bool  # answered a ping just now (False: known only from the leases of its running tasks)
    running: int


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


def broadcasts() -> bool:
    """Whether the broker can carry a ping to every worker (the SQLAlchemy transport cannot)."""
    try:
        with current_app.connection_for_read() as conn:
            return "fanout" in conn.transport.implements.exchange_type
    except Exception:  # noqa: BLE001 - an unknown transport: try the ping
        return True


def workers() -> tuple[list[Worker], bool]:
    """The workers alive: those answering a ping (within a second), plus those holding a live lease.
    Returns the workers and whether the ping could be sent at all (not on brokers without broadcast)."""
    cached: tuple[list[Worker], bool] | None = cache.get("ltt_dashboard:workers")
    if cached is not None:
        return cached
    pinged: set[str] = set()
    ping_works = broadcasts()
    if ping_works:
        try:
            pinged = set(current_app.control.inspect(timeout=PING_TIMEOUT).ping() or {})
        except Exception:  # noqa: BLE001 - the broker is down: fall back on the leases
            ping_works = False
    running = {
        row["worker"]: row["n"]
        for row in LongTimeTask.objects.filter(state=TaskState.RUNNING, lease_expires_at__gt=timezone.now())
        .exclude(worker="")
        .order_by()
        .values("worker")
        .annotate(n=Count("id"))
    }
    names = sorted(pinged | set(running))
    result = ([Worker(name, name in pinged, running.get(name, 0)) for name in names], ping_works)
    cache.set("ltt_dashboard:workers", result, CACHE_SECONDS * 2)
    return result

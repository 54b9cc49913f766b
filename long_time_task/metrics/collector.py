"""The gauges read at scrape time from the database and the broker: a prometheus-client custom collector.

Each source is read by the web process that answers ``/metrics``, never stored in the multiprocess files, and
describes the whole system (every worker, every queue): scrape it from one job, and deduplicate across the
web hosts that answer it (``max without (instance)``). The worker's exporter does not serve them.

- ``long_time_task_tasks{state}``: tasks per state, exact up to ``STATE_COUNT_CAP`` rows per state, then
  PostgreSQL's planner statistics (``long_time_task_tasks_estimated{state}`` says which): capped index reads,
  never a ``COUNT(*)`` over millions of finished rows.
- ``long_time_task_oldest_waiting_seconds{queue_name}``: the age of each queue's oldest waiting task, from
  when it was due (created, delayed start, retry time), read from the ``WAITING_SAMPLE`` oldest-created rows
  of each waiting state through the ``(state, create_at)`` index. A queue none of whose waiting tasks is
  among them (more than that many older ones wait elsewhere) is left out of that scrape: unknown, not 0.
- ``long_time_task_broker_queue_length{queue_name}``: messages ready in the broker, per queue (kombu's
  ``queue_declare(passive=True)``: on Redis every priority list counted; not the messages a worker has
  reserved or holds for an ETA), read at most every ``BROKER_CACHE_SECONDS`` per process, in a thread of its
  own, so that a dead broker costs a scrape ``METRICS_QUERY_TIMEOUT`` seconds at most.
- ``long_time_task_workers_alive`` and ``long_time_task_queue_consumers{queue_name}``: the live workers, and how
  many read each queue that tasks or the maintenance jobs are sent to (0: nobody does) and any other queue a
  worker reads, from the workers' own rows (``models/workers.py``, ``observability/consumers.py``): one read of
  a table with a row per worker.
- ``long_time_task_metrics_source_up{source}``: 1 when the source answered in time, else 0 and its gauges are
  left out.

A new source is one more ``Source`` in ``SOURCES``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..conf import conf
from ..models import LongTimeTask, TaskState, WorkerHeartbeat
from ..models.statements import hot_cursor
from ..registry import LongTimeTaskRegister
from . import PREFIX

logger = logging.getLogger(__name__)

STATE_COUNT_CAP = 1_000
WAITING_SAMPLE = 1_000
BROKER_CACHE_SECONDS = 5.0
WAITING = (TaskState.PENDING, TaskState.RETRYING)


@dataclass(frozen=True)
class Source:
    """A named reader of gauges; ``read()`` raises (or times out) when its dependency does not answer."""

    name: str
    read: Callable[[], Iterable[Metric]]


def task_queues() -> list[str]:
    """The queues task types are registered on."""
    return sorted({config.queue for config in LongTimeTaskRegister.get_all_tasks().values()})


def broker_queues() -> list[str]:
    """The registered task types' queues and the queues Celery declares (such as ``maintenance``)."""
    from celery import current_app

    declared = {queue.name for queue in current_app.conf.task_queues or ()}
    return sorted(declared | set(task_queues()))


# ---------------------------------------------------------------- the database


@contextmanager
def bounded(db: str, seconds: float) -> Iterator[None]:
    """One transaction whose statements are cancelled after ``seconds`` each (PostgreSQL's
    ``statement_timeout``, for this transaction only)."""
    with transaction.atomic(using=db):
        connection = connections[db]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{max(int(seconds * 1000), 1)}"])
        yield


def state_counts() -> dict[str, tuple[int, bool]]:
    """(count, is an estimate) per state, in at most two statements.

    First every state counted up to ``STATE_COUNT_CAP + 1`` rows, in one statement (a capped index-only read of
    the ``(state, create_at, id)`` index per state). A state past the cap gets PostgreSQL's own estimate, the one
    its planner uses: the table's row count (``pg_class.reltuples``) times the state's frequency in the column's
    statistics (``pg_stats``), as of the last ``ANALYZE``; elsewhere, the cap plus one, marked as an estimate.
    """
    db = LongTimeTask.objects.db
    connection = connections[db]
    quote = connection.ops.quote_name
    state_column = str(LongTimeTask._meta.get_field("state").column)
    table, column = quote(LongTimeTask._meta.db_table), quote(state_column)
    states = [str(state) for state in TaskState]
    branch = f"SELECT %s, COUNT(*) FROM (SELECT 1 FROM {table} WHERE {column} = %s LIMIT %s) c"  # noqa: S608 - names
    # Prepared once per connection on PostgreSQL (planning six branches costs more than running them).
    with hot_cursor(db) as cursor:
        cursor.execute(
            " UNION ALL ".join([branch] * len(states)),
            [value for state in states for value in (state, state, STATE_COUNT_CAP + 1)],
        )
        exact = {state: int(count) for state, count in cursor.fetchall()}
        counts = {state: (exact.get(state, 0), False) for state in states}
        over = [state for state in states if counts[state][0] > STATE_COUNT_CAP]
        if over and connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.reltuples, s.most_common_vals::text::text[], s.most_common_freqs FROM pg_class c "
                "LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = %s AND s.attname = %s "
                "WHERE c.oid = to_regclass(%s)",
                [LongTimeTask._meta.db_table, state_column, table],
            )
            row = cursor.fetchone()
            rows, values, freqs = (row or (0, None, None))[:3]
            frequency = dict(zip(values or [], freqs or [], strict=False))
            for state in over:
                estimate = int(float(rows or 0) * float(frequency.get(state, 0.0)))
                counts[state] = (max(estimate, STATE_COUNT_CAP + 1), True)
        else:
            for state in over:
                counts[state] = (STATE_COUNT_CAP + 1, True)
    return counts


def waiting_sample(state: str) -> QuerySet[LongTimeTask, tuple[str, datetime]]:
    """(queue, due time) of the ``WAITING_SAMPLE`` oldest-created tasks in ``state``.

    ``state BETWEEN s AND s``, not ``state = s``: with an equality PostgreSQL drops state from the order and may
    walk the create_at index from the oldest task, filtering (millions of finished rows when the waiting ones
    are recent); with a range, only the (state, create_at, id) index gives this order.
    """
    due = Greatest("create_at", Coalesce("run_after", "create_at"), Coalesce("retry_at", "create_at"))
    return (
        LongTimeTask.objects.filter(state__range=(state, state))
        .order_by("state", "create_at", "id")
        .annotate(due=due)
        .values_list("queue", "due")[:WAITING_SAMPLE]
    )


def oldest_waiting(now: datetime) -> dict[str, float]:
    """Seconds each queue's oldest due waiting task has waited; a queue with none is 0; a queue that the
    sample cannot tell about is absent.

    Per waiting state, one statement: the ``WAITING_SAMPLE`` oldest-created rows of that state, read in the
    order of the ``(state, create_at, id)`` index, grouped by queue in the database (earliest due time among
    those already due, and how many rows the sample held).
    """
    ages: dict[str, float] = dict.fromkeys(task_queues(), 0.0)
    complete = True
    db = LongTimeTask.objects.db
    for state in WAITING:
        inner, params = waiting_sample(state).query.sql_with_params()
        with hot_cursor(db) as cursor:
            cursor.execute(
                "SELECT s.queue, MIN(CASE WHEN s.due <= %s THEN s.due END), COUNT(*) "  # noqa: S608 - the ORM's SQL
                f"FROM ({inner}) s (queue, due) GROUP BY s.queue",
                [now, *params],
            )
            rows = cursor.fetchall()
        complete = complete and sum(count for _queue, _due, count in rows) < WAITING_SAMPLE
        for queue, due, _count in rows:
            if due is None:
                ages.setdefault(queue, 0.0)
                continue
            if isinstance(due, str):  # SQLite returns the text it stores (UTC)
                due = (parse_datetime(due) or now).replace(tzinfo=UTC)
            ages[queue] = max(ages.get(queue, 0.0), (now - due).total_seconds())
    if not complete:
        # Past the sample, a queue's waiting tasks were not seen: 0 would claim none waits.
        ages = {queue: age for queue, age in ages.items() if age > 0}
    return ages


def database_gauges() -> list[Metric]:
    db = LongTimeTask.objects.db
    with bounded(db, conf.METRICS_QUERY_TIMEOUT):
        counts = state_counts()
        ages = oldest_waiting(timezone.now())
    tasks = GaugeMetricFamily(
        PREFIX + "tasks",
        f"Tasks per state: exact up to {STATE_COUNT_CAP} per state, then PostgreSQL's planner estimate.",
        labels=["state"],
    )
    estimated = GaugeMetricFamily(
        PREFIX + "tasks_estimated", "1 when long_time_task_tasks is an estimate for that state.", labels=["state"]
    )
    for state, (count, is_estimate) in counts.items():
        tasks.add_metric([state], count)
        estimated.add_metric([state], 1 if is_estimate else 0)
    oldest = GaugeMetricFamily(
        PREFIX + "oldest_waiting_seconds",
        "Age of each queue's oldest waiting task (PENDING or RETRYING), from when it was due; 0: none waits.",
        labels=["queue_name"],
    )
    for queue, age in sorted(ages.items()):
        oldest.add_metric([queue], age)
    return [tasks, estimated, oldest]


# ---------------------------------------------------------------- the broker


def read_queue_lengths(queues: list[str], timeout: float) -> dict[str, int]:
    """Messages ready per queue, through kombu's passive ``queue_declare`` (a queue the broker does not know,
    or an empty one on Redis, is 0). One channel per queue: RabbitMQ closes the channel of a failed declare."""
    from celery import current_app

    lengths: dict[str, int] = {}
    with current_app.connection_for_read(connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=0)
        for queue in queues:
            channel: Any = connection.channel()
            try:
                lengths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors:
                lengths[queue] = 0
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: S110 - already closed by the broker after NOT_FOUND
                    pass
    return lengths


class CachedReading:
    """A slow reading shared by a process's scrapes: at most one at a time, in a daemon thread, reused for
    ``ttl`` seconds (its failure too); a caller waits at most ``timeout`` seconds for it."""

    def __init__(self, read: Callable[[], Any], ttl: float) -> None:
        self.read, self.ttl = read, ttl
        self.lock = threading.Lock()
        self.future: Future[Any] | None = None
        self.ended = 0.0

    def get(self, timeout: float) -> Any:
        with self.lock:
            future = self.future
            fresh = future is not None and (not future.done() or time.monotonic() - self.ended < self.ttl)
            if future is None or not fresh:
                future = self.future = Future()
                threading.Thread(target=self.work, args=(future,), name="long-time-task-metrics", daemon=True).start()
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def work(self, future: Future[Any]) -> None:
        try:
            result = self.read()
        except Exception as exc:
            self.ended = time.monotonic()
            future.set_exception(exc)
        else:
            self.ended = time.monotonic()
            future.set_result(result)


_broker = CachedReading(lambda: read_queue_lengths(broker_queues(), conf.METRICS_QUERY_TIMEOUT), BROKER_CACHE_SECONDS)


def broker_gauges() -> list[Metric]:
    lengths = _broker.get(conf.METRICS_QUERY_TIMEOUT)
    family = GaugeMetricFamily(
        PREFIX + "broker_queue_length", "Messages ready in the broker, per queue.", labels=["queue_name"]
    )
    for queue, length in sorted(lengths.items()):
        family.add_metric([queue], length)
    return [family]


# ---------------------------------------------------------------- the workers


def worker_gauges() -> list[Metric]:
    from ..observability.consumers import live_workers, queue_consumers

    with bounded(WorkerHeartbeat.objects.db, conf.METRICS_QUERY_TIMEOUT):
        workers = live_workers()
    alive = GaugeMetricFamily(
        PREFIX + "workers_alive", "Workers whose lease heartbeat wrote their row within the lease (LEASE_SECONDS)."
    )
    alive.add_metric([], len(workers))
    consumers = GaugeMetricFamily(
        PREFIX + "queue_consumers",
        "Live workers reading each queue that tasks or the maintenance jobs are sent to (0: nobody does), and any "
        "other queue a live worker reads.",
        labels=["queue_name"],
    )
    for queue in queue_consumers(workers):
        consumers.add_metric([queue.name], queue.consumers)
    return [alive, consumers]


# ---------------------------------------------------------------- the collector

SOURCES: list[Source] = [
    Source("database", database_gauges),
    Source("broker", broker_gauges),
    Source("workers", worker_gauges),
]


class GaugeCollector:
    """Reads every source at each scrape; a source that fails is logged and reported down, the rest still
    answer."""

    def __init__(self, sources: Iterable[Source] | None = None) -> None:
        self.sources = list(SOURCES if sources is None else sources)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            PREFIX + "metrics_source_up",
            "1 when the source of these gauges (database, broker, workers) answered this scrape in time.",
            labels=["source"],
        )
        for source in self.sources:
            try:
                gauges = list(source.read())
            except Exception:
                logger.warning("Metrics: the %s did not answer; its gauges are left out", source.name, exc_info=True)
                up.add_metric([source.name], 0)
                continue
            up.add_metric([source.name], 1)
            yield from gauges
        yield up

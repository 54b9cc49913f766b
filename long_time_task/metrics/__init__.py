"""Prometheus metrics: the counters and histograms every door and the worker record (``prometheus-client``).

What happens to tasks is counted where it happens, once per guarded write that won: a submit (``services``),
a claim, every terminal transition (the executor, the hard time limit, recovery, a cancel of a waiting task,
the sweeper failing an unknown type, an enforced cancel), a retry, a recovery. The gauges read from the
database and the broker at scrape time are in ``collector``; serving them is ``exposition``.

Several processes on one host (gunicorn's workers, Celery's prefork children) each count their own. With
``PROMETHEUS_MULTIPROC_DIR`` set in their environment *before they start* (prometheus-client picks its value
store when it is first imported), every process writes its counts to files there and a scrape sums them:
that is what makes the counters exact across processes. Without it, each process counts in its own memory,
and a scrape sees only the process that answered it.

Everything here is a no-op when ``LONG_TIME_TASK_METRICS`` is off, and never raises into the caller: a
metric that cannot be written (a missing multiprocess directory, a full disk) is logged, and the task goes on.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from ..conf import conf

logger = logging.getLogger(__name__)

PREFIX = "long_time_task_"
# celery-exporter's label names where the concept is the same: ``name`` is the task's name (here its task
# type, which is also the name Celery's events show), ``queue_name`` its queue.
LABELS = ("name", "queue_name")

# Recovery causes (the ``cause`` label).
WORKER_LOST = "worker_lost"  # the worker's main process saw the child running the attempt die
LEASE_EXPIRED = "lease_expired"  # the reaper found the attempt's lease expired (its worker is gone)
REPUBLISHED = "republished"  # the sweeper published a waiting task whose message was lost or never sent
CAUSES = (WORKER_LOST, LEASE_EXPIRED, REPUBLISHED)

# Seconds. Long-running tasks wait and run for minutes or hours: the buckets reach that far.
QUEUE_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 10800)
RUNTIME_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800)


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` (or its deprecated lower-case spelling), as prometheus-client reads it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class Family:
    """One metric and its children by label values, looked up in a dict (prometheus-client's ``labels()``
    converts and locks on every call)."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def child(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


class Instruments:
    """The counters and histograms, created once per process in prometheus-client's default registry (so a
    project that already serves that registry shows them too)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.submitted = Family(Counter(PREFIX + "tasks_submitted", "Tasks submitted (rows created).", LABELS))
        self.started = Family(
            Counter(PREFIX + "tasks_started", "Attempts started: a worker claimed the task and runs it.", LABELS)
        )
        self.finished = Family(
            Counter(
                PREFIX + "tasks_finished",
                "Tasks that reached a terminal state (state FINISHED, FAILED or CANCELLED; error_code as the row "
                "has it), counted once each.",
                (*LABELS, "state", "error_code"),
            )
        )
        self.retried = Family(
            Counter(PREFIX + "tasks_retried", "Attempts that failed with a temporary error and were retried.", LABELS)
        )
        self.recovered = Family(
            Counter(
                PREFIX + "tasks_recovered",
                "Recoveries: attempts whose worker was lost (cause worker_lost, lease_expired) and waiting tasks "
                "published again by the sweeper (cause republished).",
                (*LABELS, "cause"),
            )
        )
        self.queue_wait = Family(
            Histogram(
                PREFIX + "queue_wait_seconds",
                "Seconds from when an attempt was due (created, delayed start or retry time) to its claim.",
                LABELS,
                buckets=QUEUE_WAIT_BUCKETS,
            )
        )
        self.runtime = Family(
            Histogram(
                PREFIX + "runtime_seconds",
                "Seconds from an attempt's claim to its end, for the attempts the executor ended itself.",
                LABELS,
                buckets=RUNTIME_BUCKETS,
            )
        )

    def prepare(self, name: str, queue: str) -> None:
        """Create a task type's series at zero, so that rates start from the first event."""
        for family in (self.submitted, self.started, self.retried, self.queue_wait, self.runtime):
            family.child(name, queue)
        self.finished.child(name, queue, "FINISHED", "")
        self.finished.child(name, queue, "CANCELLED", "cancelled")
        for cause in CAUSES:
            self.recovered.child(name, queue, cause)


_instruments: Instruments | None = None
_broken = False
_lock = threading.Lock()


def instruments() -> Instruments | None:
    """This process's instruments, or None when metrics are off (or could not be set up here)."""
    global _instruments, _broken
    if not conf.METRICS or _broken:
        return None
    if _instruments is not None:
        return _instruments
    with _lock:
        if _instruments is None and not _broken:
            try:
                from ..registry import LongTimeTaskRegister

                created = Instruments()
                for config in LongTimeTaskRegister.get_all_tasks().values():
                    created.prepare(config.name, config.queue)
                _instruments = created
            except Exception:
                # E.g. PROMETHEUS_MULTIPROC_DIR names no directory: never break a submit or a run for a metric.
                _broken = True
                logger.exception("Prometheus metrics are off in this process: they could not be set up")
    return _instruments


def _record(what: str, action: Any) -> None:
    try:
        action()
    except Exception:
        logger.warning("Could not record the %s metric", what, exc_info=True)


def submitted(name: str, queue: str) -> None:
    if (m := instruments()) is not None:
        _record("submitted", lambda: m.submitted.child(name, queue).inc())


def started(name: str, queue: str, waited: float | None) -> None:
    """An attempt was claimed, ``waited`` seconds after it was due (None: unknown)."""
    if (m := instruments()) is not None:

        def record() -> None:
            m.started.child(name, queue).inc()
            if waited is not None:
                m.queue_wait.child(name, queue).observe(max(waited, 0.0))

        _record("started", record)


def finished(name: str, queue: str, state: str, error_code: str = "", runtime: float | None = None) -> None:
    """A terminal transition won (``state`` FINISHED, FAILED or CANCELLED); ``runtime``: the attempt's seconds,
    when the executor ended it."""
    if (m := instruments()) is not None:

        def record() -> None:
            m.finished.child(name, queue, str(state), error_code).inc()
            if runtime is not None:
                m.runtime.child(name, queue).observe(runtime)

        _record("finished", record)


def retried(name: str, queue: str, runtime: float | None = None) -> None:
    if (m := instruments()) is not None:

        def record() -> None:
            m.retried.child(name, queue).inc()
            if runtime is not None:
                m.runtime.child(name, queue).observe(runtime)

        _record("retried", record)


def recovered(name: str, queue: str, cause: str) -> None:
    if (m := instruments()) is not None:
        _record("recovered", lambda: m.recovered.child(name, queue, cause).inc())

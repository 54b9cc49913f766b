"""The lease heartbeat: a thread in each worker's main process renews the leases of the tasks it runs.

One UPDATE per interval per worker, whatever its concurrency. If the worker's main process dies (SIGKILL,
OOM, lost host), the renewals stop and the leases expire, and the reaper recovers the tasks. If only a
child process dies, the main process drops the request at once, so its lease stops being renewed too.

The same beat enforces cancels: a task whose cancel was requested more than ``CANCEL_GRACE_SECONDS`` ago
and that is still running (its handler does not check) is marked CANCELLED, then the one child process
running it is killed (SIGKILL). Only that process: the request must still be active in this worker, and
the guarded UPDATE to CANCELLED must win, so the attempt was still running a moment before the kill. The
remaining window (the handler returning between the UPDATE and the kill, microseconds) is the same as
Celery's own ``revoke(terminate=True)``; its result is then dropped, as the row is already CANCELLED.

Each beat also writes the worker's row in ``long_time_task_worker`` (``models/workers.py``): its name, the queues
its consumer reads at that moment (``celery control add_consumer`` included) and its concurrency. That row is how
the system check, the dashboard and the metrics know that a queue has no consumer. A clean shutdown marks it
stopped.

Self-fencing (``LEASE_FENCE``, on by default): a lease only works if the worker that loses it stops. A worker cut
off from the database (a partition, its link down) cannot renew its leases, and once they run out the reaper,
on a host that still reaches the database, retries the tasks elsewhere; left alone, the cut-off worker would go on
running its attempt at the same time. So a second thread, ``LeaseFence``, which needs neither the database nor the
broker, watches the time since the last renewal that succeeded (on this process's monotonic clock, counted from
before the renewal was sent, so never later than the database's own count): once a running attempt has gone two
thirds of ``LEASE_SECONDS`` without one, it kills the child process running it (SIGKILL), a third of the lease
before anyone else may claim the task. Nothing runs twice at once, whatever the network does; the attempt is
recovered as any killed one (at once if the database answers, else by the reaper when its lease has expired).

With ``WORKER_LIVENESS_FILE`` set, the thread also touches that file when it starts and after every beat, whether
or not the database answered, for the worker's liveness probe (``observability/probe.py``): a worker whose main
process or heartbeat is stuck goes stale and is restarted, one cut off from its database is not.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connection

from ..conf import conf
from ..dispatch import EXECUTOR_TASK
from ..observability.liveness import LivenessFile

logger = logging.getLogger(__name__)


def active_requests() -> list[Any]:
    """The executor's requests running in this worker. ``request.type`` is the registered task name; ``request.name``
    is the message's ``shadow`` (its task type) when it has one."""
    from celery.worker import state

    return [request for request in list(state.active_requests) if request.type == EXECUTOR_TASK]


def active_celery_ids() -> list[str]:
    return [request.id for request in active_requests()]


def request_attempt(request: Any) -> int | None:
    """The attempt number a request runs (its second argument), or None if it cannot be read."""
    args: list[Any] = list(getattr(request, "args", None) or [])
    try:
        return int(args[1]) if len(args) > 1 else 1
    except (TypeError, ValueError):
        return None


def enforce_cancels(grace: float, worker: str) -> list[int]:
    """Stop the running tasks of ``worker`` whose cancel is overdue; returns their row ids.

    A row's Celery id is the same for every attempt, so the process to stop is found by (Celery id,
    attempt): a stale attempt still running here after its lease was handed to another worker is never
    taken for the current one, and the row must name this worker.
    """
    from ..models import AuditAction, LongTimeTask, TaskState
    from ..models.audit import record
    from .executor import count_terminal

    running = {(request.id, request_attempt(request)): request for request in active_requests()}
    celery_ids = {celery_id for celery_id, _ in running}
    stopped = []
    for task_id, attempt, celery_id in LongTimeTask.objects.cancel_overdue(celery_ids, grace=grace, worker=worker):
        request = running.get((celery_id, attempt))
        pid = getattr(request, "worker_pid", None)
        if request is None or not pid or pid == os.getpid():
            continue  # not running here (yet), or not in a child process: checked again at the next beat
        message = f"The task was stopped: it did not stop within {grace:g}s of its cancel request."
        if not LongTimeTask.objects.finish_cancelled(task_id, attempt=attempt, message=message):
            continue  # it finished (or was cancelled) meanwhile
        # The same request must still be active in the same process a moment before the kill: once it is
        # not, the child may have moved on to another task.
        if not any(r is request and r.worker_pid == pid for r in active_requests()):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        record(task_id, AuditAction.CANCEL_ENFORCED, actor=None, note=f"pid {pid}")
        count_terminal(task_id, TaskState.CANCELLED, "cancelled", attempt=attempt)
        logger.warning(
            "Task %s did not stop within %gs of its cancel request: killed its process %s", task_id, grace, pid
        )
        stopped.append(task_id)
    return stopped


def consumed_queues(consumer: Any) -> Callable[[], list[str]]:
    """What ``consumer`` (Celery's worker consumer, the sender of ``worker_ready``) reads now: its task consumer's
    queues, or the last ones seen while it reconnects to the broker (it then has no task consumer)."""
    last: list[str] = []

    def queues() -> list[str]:
        nonlocal last
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is not None:
            last = sorted({str(queue.name) for queue in list(task_consumer.queues)})
        return last

    return queues


class LeaseHeartbeat(threading.Thread):
    def __init__(
        self,
        worker: str,
        interval: float | None = None,
        lease: float | None = None,
        *,
        queues: Callable[[], list[str]] | None = None,
        concurrency: int | None = None,
    ) -> None:
        super().__init__(name="long-time-task-heartbeat", daemon=True)
        self.worker = worker
        self.queues = queues
        self.concurrency = concurrency
        self.interval = interval if interval is not None else conf.HEARTBEAT_INTERVAL
        self.lease = lease if lease is not None else conf.LEASE_SECONDS
        path = conf.WORKER_LIVENESS_FILE
        self.liveness = LivenessFile(path) if path is not None else None
        self._stopped = threading.Event()
        # When the last renewal that succeeded was sent (monotonic); a start counts as one (a claim just made
        # its lease).
        self.renewed_at = time.monotonic()

    def run(self) -> None:
        self.alive()
        self.present(started=True)
        wait = self.interval
        while not self._stopped.wait(wait):
            # After a failed beat (database down), try again every second rather than every interval, so
            # that leases are renewed as soon as the database is back, before the reaper sees them expired.
            wait = self.interval if self.beat() is not None else min(1.0, self.interval)
            self.alive()
        connection.close()

    def alive(self) -> None:
        if self.liveness is not None:
            self.liveness.touch()

    def beat(self) -> int | None:
        """Renew the leases; the number renewed, or None if the database could not be reached."""
        from ..models import LongTimeTask

        sent = time.monotonic()
        try:
            if not connection.in_atomic_block:  # (never, in the heartbeat thread; only in tests)
                close_old_connections()  # this thread's own connection: CONN_MAX_AGE and health checks
            renewed = LongTimeTask.objects.renew_leases(active_celery_ids(), worker=self.worker, lease=self.lease)
            self.renewed_at = sent
            enforce_cancels(conf.CANCEL_GRACE_SECONDS, self.worker)
        except Exception:
            logger.exception("Could not renew task leases")
            connection.close()
            return None
        self.present()
        return renewed

    def present(self, *, started: bool = False) -> None:
        """Write this worker's row: alive, consuming these queues (only for a worker that names its queues)."""
        from ..models import WorkerHeartbeat

        if self.queues is None:
            return
        try:
            rows = WorkerHeartbeat.objects
            report = rows.started if started else rows.beat
            report(self.worker, queues=self.queues(), pid=os.getpid(), concurrency=self.concurrency)
        except Exception:
            logger.exception("Could not record worker %s as alive", self.worker)
            connection.close()

    def gone(self) -> None:
        """A clean shutdown: from now on this worker consumes nothing."""
        from ..models import WorkerHeartbeat

        if self.queues is None:
            return
        try:
            WorkerHeartbeat.objects.stopped(self.worker)
        except Exception:
            logger.exception("Could not record worker %s as stopped", self.worker)

    def stop(self) -> None:
        self._stopped.set()


def request_started(request: Any, now: float) -> float | None:
    """When ``request`` started in its child process, on this process's monotonic clock (None: not started yet).
    Celery keeps the start as wall-clock time (``time_start``); converted here, within this one process."""
    started = getattr(request, "time_start", None)
    if not started:
        return None
    return now - max(0.0, time.time() - float(started))


class LeaseFence(threading.Thread):
    """Kills the child process of every running attempt whose lease this worker could not renew for ``after``
    seconds (the module's docstring says why). Reads only this process's state: it works while the database and
    the broker are unreachable, and while the heartbeat thread itself is stuck on a dead connection."""

    def __init__(self, heartbeat: LeaseHeartbeat, *, after: float | None = None, period: float = 0.25) -> None:
        super().__init__(name="long-time-task-lease-fence", daemon=True)
        self.heartbeat = heartbeat
        self.after = after if after is not None else conf.LEASE_SECONDS * 2 / 3
        self.period = period
        self.fenced: set[tuple[str, int | None, int]] = set()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.period):
            try:
                self.check(time.monotonic())
            except Exception:  # never let the fence die: it is the last line
                logger.exception("Lease fence: check failed")

    def check(self, now: float) -> list[int]:
        """Kill what is overdue; returns the pids killed."""
        killed = []
        renewed = self.heartbeat.renewed_at
        for request in active_requests():
            pid = getattr(request, "worker_pid", None)
            started = request_started(request, now)
            if not pid or started is None or pid == os.getpid():
                continue  # not in a child process (yet): nothing this thread may kill
            # The lease in force is the later of the last renewal and the attempt's own claim (after its start).
            if now - max(renewed, started) < self.after:
                continue
            key = (str(request.id), request_attempt(request), int(pid))
            if key in self.fenced:
                continue
            self.fenced.add(key)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(int(pid))
            logger.error(
                "Lease fence: could not renew the lease of %s (attempt %s) for %.1fs (lease %gs): killed its "
                "process %s, before the lease runs out and the task may be retried elsewhere",
                request.id, key[1], now - max(renewed, started), conf.LEASE_SECONDS, pid,
            )  # fmt: skip
        return killed

    def stop(self) -> None:
        self._stopped.set()

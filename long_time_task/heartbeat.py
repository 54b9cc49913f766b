"""The lease heartbeat: a thread in each worker's main process renews the leases of the tasks it runs.

One UPDATE per interval per worker, whatever its concurrency. If the worker's main process dies (SIGKILL,
OOM, lost host), the renewals stop and the leases expire, and the reaper recovers the tasks. If only a
child process dies, the main process drops the request at once, so its lease stops being renewed too.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connection

from .conf import conf

logger = logging.getLogger(__name__)

EXECUTOR_TASK = "long_time_task.celery_tasks.execute_long_time_task"


def active_celery_ids() -> list[str]:
    from celery.worker import state

    return [request.id for request in list(state.active_requests) if request.name == EXECUTOR_TASK]


class LeaseHeartbeat(threading.Thread):
    def __init__(self, worker: str, interval: float | None = None, lease: float | None = None) -> None:
        super().__init__(name="long-time-task-heartbeat", daemon=True)
        self.worker = worker
        self.interval = interval if interval is not None else conf.HEARTBEAT_INTERVAL
        self.lease = lease if lease is not None else conf.LEASE_SECONDS
        self._stopped = threading.Event()

    def run(self) -> None:
        wait = self.interval
        while not self._stopped.wait(wait):
            # After a failed beat (database down), try again every second rather than every interval, so
            # that leases are renewed as soon as the database is back, before the reaper sees them expired.
            wait = self.interval if self.beat() is not None else min(1.0, self.interval)
        connection.close()

    def beat(self) -> int | None:
        """Renew the leases; the number renewed, or None if the database could not be reached."""
        from .models import LongTimeTask

        try:
            if not connection.in_atomic_block:  # (never, in the heartbeat thread; only in tests)
                close_old_connections()  # this thread's own connection: CONN_MAX_AGE and health checks
            return LongTimeTask.objects.renew_leases(active_celery_ids(), worker=self.worker, lease=self.lease)
        except Exception:
            logger.exception("Could not renew task leases")
            connection.close()
            return None

    def stop(self) -> None:
        self._stopped.set()

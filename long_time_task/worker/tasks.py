"""The one Celery task: it carries a row id and an attempt number, nothing else."""

from __future__ import annotations

import logging
import time
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Task, shared_task, signals
from celery.exceptions import TimeLimitExceeded
from django.db import close_old_connections, connection

from .. import metrics
from ..conf import conf
from ..dispatch import EXECUTOR_TASK
from . import recovery
from .executor import Executor
from .heartbeat import LeaseHeartbeat

logger = logging.getLogger(__name__)
_heartbeat: LeaseHeartbeat | None = None


class LongTimeTaskCeleryTask(Task):  # type: ignore[type-arg]
    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], einfo: ExceptionInfo
    ) -> None:
        # The executor records every outcome itself, except a hard time limit: the child was killed, and
        # Celery reports it here, in the worker's main process.
        if isinstance(exc, TimeLimitExceeded) and args:
            row_id, attempt = int(args[0]), int(args[1]) if len(args) > 1 else 1
            limit = exc.args[0] if exc.args else 0
            close_old_connections()
            if Executor.fail_on_hard_time_limit(row_id, attempt, float(limit or 0)):
                logger.error("Task %s killed by its hard time limit (%ss)", row_id, limit)


@shared_task(
    bind=True,
    base=LongTimeTaskCeleryTask,
    name=EXECUTOR_TASK,
    # acks_late follows the project's CELERY_TASK_ACKS_LATE (True in the demo, as in the seed). Either way
    # the row, not the message, is what recovery trusts: a message acknowledged early whose worker dies
    # before the claim leaves the row waiting, and the sweeper publishes it again.
    ignore_result=True,
)
def execute_long_time_task(self: Task, task_id: int, attempt: int = 1) -> str:  # type: ignore[type-arg]
    """Run attempt ``attempt`` of the LongTimeTask row ``task_id``."""
    maybe_refresh_connection()
    try:
        return Executor(worker=str(self.request.hostname or "")).run(int(task_id), int(attempt))
    finally:
        if connection.errors_occurred or not connection.get_autocommit():
            close_old_connections()  # checks the connection now, and drops a broken or left-in-a-transaction one


_last_refresh = 0.0


def maybe_refresh_connection() -> None:
    """Keep one connection per process across tasks (CELERY_DB_REUSE_MAX), but every
    CONNECTION_CHECK_INTERVAL seconds honour CONN_MAX_AGE and let the health check run. Checking before
    every task would cost a ``SELECT 1`` per task; a connection that broke in between (the database
    restarted) is replaced by the claim's retry instead."""
    global _last_refresh
    now = time.monotonic()
    if now - _last_refresh >= conf.CONNECTION_CHECK_INTERVAL:
        _last_refresh = now
        close_old_connections()


@shared_task(name=recovery.REAPER_TASK, ignore_result=True)
def reap_expired_leases() -> dict[str, int]:
    """Run by Celery beat: recover the tasks whose worker stopped renewing their lease."""
    close_old_connections()
    return recovery.reap_expired_leases()


@shared_task(name=recovery.SWEEPER_TASK, ignore_result=True)
def dispatch_due_tasks() -> int:
    """Run by Celery beat: publish waiting tasks whose message never went out or was lost."""
    close_old_connections()
    return recovery.dispatch_due_tasks()


@shared_task(name="long_time_task.purge_expired_tasks", ignore_result=True)
def purge_expired_tasks() -> int:
    """Run by Celery beat: delete finished tasks past their retention (and their result files)."""
    from ..retention import purge_expired_tasks as purge

    close_old_connections()
    return purge().tasks


@signals.worker_ready.connect(dispatch_uid="long_time_task.worker.heartbeat.start")
def _start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    global _heartbeat
    if _heartbeat is None:
        # The same name the executor writes into the row's ``worker`` (the task request's hostname).
        _heartbeat = LeaseHeartbeat(worker=str(getattr(sender, "hostname", "") or ""))
        _heartbeat.start()


@signals.worker_ready.connect(dispatch_uid="long_time_task.worker.metrics.start")
def _start_metrics_exporter(**kwargs: Any) -> None:
    from ..metrics.exposition import start_worker_exporter

    try:
        start_worker_exporter()
    except OSError:
        # The port is taken (another worker on this host serves it): this worker runs without one.
        logger.exception("Metrics: could not serve the worker's metrics on port %s", conf.WORKER_METRICS_PORT)


@signals.worker_shutdown.connect(dispatch_uid="long_time_task.worker.metrics.stop")
def _stop_metrics_exporter(**kwargs: Any) -> None:
    from ..metrics.exposition import stop_worker_exporter

    stop_worker_exporter()


@signals.worker_shutdown.connect(dispatch_uid="long_time_task.worker.heartbeat.stop")
def _stop_heartbeat(**kwargs: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.task_failure.connect(dispatch_uid="long_time_task.worker_lost")
def _on_worker_lost(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **kwargs: Any
) -> None:
    # A child process died mid-task (OOM killer, SIGKILL, segfault). The main process learns it at once:
    # recover now instead of waiting for the lease to expire.
    if getattr(sender, "name", None) != EXECUTOR_TASK or not isinstance(exception, WorkerLostError) or not args:
        return
    close_old_connections()
    attempt = int(args[1]) if len(args) > 1 else 1
    outcome = recovery.recover_attempt(int(args[0]), attempt, "the worker process died", cause=metrics.WORKER_LOST)
    logger.warning("Task %s lost its worker process (attempt %s): %s", args[0], attempt, outcome)

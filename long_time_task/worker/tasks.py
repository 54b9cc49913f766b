"""The one Celery task: it carries a row id and an attempt number, nothing else; and the maintenance tasks.

What Celery's monitoring (events, Flower, ``celery inspect``) shows is kept true to the row: each message is named
after its task type (``shadow``, set by ``dispatch.publish``); an attempt the executor recorded as FAILED or CANCELLED
ends by raising ``AttemptFailed`` or ``AttemptCancelled`` *after* the row was written, so the event is task-failed
(both are ``Task.throws``: logged by Celery on one INFO line, without a traceback); a retried attempt raises Celery's
``Retry`` (task-retried; the next attempt is already published). A revoke (``celery control revoke``, Flower's
button) cancels the row (``_on_revoked``). The maintenance tasks send no events (``send_events=False``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Task, shared_task, signals
from celery.exceptions import Retry, TimeLimitExceeded
from django.db import close_old_connections, connection

from .. import services
from ..conf import conf
from ..dispatch import EXECUTOR_TASK
from ..models import AttemptCause, LongTimeTask, TaskState
from ..schedules.scheduler import SCHEDULER_TASK, tick
from ..signals import ended
from ..tracing import traced_attempt
from . import recovery
from .executor import Executor
from .heartbeat import LeaseFence, LeaseHeartbeat, consumed_queues, request_attempt

logger = logging.getLogger(__name__)
_heartbeat: LeaseHeartbeat | None = None
_fence: LeaseFence | None = None


class AttemptFailed(Exception):  # noqa: N818 - it says what happened to the attempt
    """The attempt ended FAILED, and the row already says so: raised for Celery's events (task-failed) only."""

    attempt_outcome = "failed"  # what the executor recorded (read by tracing.traced_attempt)


class AttemptCancelled(AttemptFailed):
    """The attempt ended CANCELLED (its cancel was requested), and the row already says so."""

    attempt_outcome = "cancelled"


class LongTimeTaskCeleryTask(Task):  # type: ignore[type-arg]
    # Expected: Celery logs them on one INFO line ("raised expected"), without a traceback; the executor has
    # logged the failure itself, with its fields.
    throws = (AttemptFailed,)

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
                fields = {"task_id": row_id, "attempt": attempt, "outcome": "failed", "error_code": "timeout"}
                logger.error("Task %s killed by its hard time limit (%ss)", row_id, limit, extra=fields)


@shared_task(
    bind=True,
    base=LongTimeTaskCeleryTask,
    name=EXECUTOR_TASK,
    # acks_late follows the project's CELERY_TASK_ACKS_LATE (True in the demo, as in the seed). Either way
    # the row, not the message, is what recovery trusts: a message acknowledged early whose worker dies
    # before the claim leaves the row waiting, and the sweeper publishes it again.
    ignore_result=True,
)
@traced_attempt
def execute_long_time_task(self: Task, task_id: int, attempt: int = 1) -> str:  # type: ignore[type-arg]
    """Run attempt ``attempt`` of the LongTimeTask row ``task_id``.

    Returns "finished" or "skipped" (the message found nothing to claim: a duplicate, a stale attempt, a task
    cancelled before it started): task-succeeded. Raises, once the row is written, ``AttemptFailed`` (task-failed),
    ``AttemptCancelled`` (task-failed) or ``Retry`` (task-retried). The message is acknowledged as before: Celery
    acknowledges a failed task (acks_late) unless ``task_acks_on_failure_or_timeout`` is off, and then rejects it
    without requeueing; a redelivered or dead-lettered copy finds the row terminal and is skipped.
    """
    maybe_refresh_connection()
    executor = Executor(worker=str(self.request.hostname or ""))
    try:
        outcome = executor.run(int(task_id), int(attempt))
    finally:
        if connection.errors_occurred or not connection.get_autocommit():
            close_old_connections()  # checks the connection now, and drops a broken or left-in-a-transaction one
    reason = f"{executor.error_code}: {executor.error_message}"
    if outcome == "failed":
        raise AttemptFailed(reason)
    if outcome == "cancelled":
        raise AttemptCancelled(reason)
    if outcome == "retrying":
        retry = Retry(reason)
        retry.attempt_outcome = outcome  # type: ignore[attr-defined]
        raise retry
    return outcome


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


# The maintenance tasks run every few seconds on every deployment: with events on (``-E``, or Flower, which turns
# them on), three events a run would be ~35,000 a day, more than Flower's default history of 10,000 tasks holds.
# They send none; what they do is in the worker's log (and in the rows).
@shared_task(name=recovery.REAPER_TASK, ignore_result=True, send_events=False)
def reap_expired_leases() -> dict[str, int]:
    """Run by Celery beat: recover the tasks whose worker stopped renewing their lease."""
    close_old_connections()
    return recovery.reap_expired_leases()


@shared_task(name=recovery.SWEEPER_TASK, ignore_result=True, send_events=False)
def dispatch_due_tasks() -> int:
    """Run by Celery beat: publish waiting tasks whose message never went out or was lost."""
    close_old_connections()
    return recovery.dispatch_due_tasks()


@shared_task(name=SCHEDULER_TASK, ignore_result=True, send_events=False)
def run_schedules() -> dict[str, int]:
    """Run by Celery beat: create the runs of the due schedules, one per due time (docs/schedules.md)."""
    close_old_connections()
    return tick()


@shared_task(name="long_time_task.purge_expired_tasks", ignore_result=True, send_events=False)
def purge_expired_tasks() -> int:
    """Run by Celery beat: delete finished tasks past their retention (and their result files)."""
    from ..retention import purge_expired_tasks as purge

    close_old_connections()
    return purge().tasks


@signals.worker_ready.connect(dispatch_uid="long_time_task.worker.heartbeat.start")
def _start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    global _heartbeat
    if _heartbeat is None:
        # The same name the executor writes into the row's ``worker`` (the task request's hostname). The
        # sender is the worker's consumer (documented in Celery's "Extensions and Bootsteps": ``controller``
        # is the worker, ``task_consumer`` the consumer of task messages).
        controller = getattr(sender, "controller", None)
        concurrency = getattr(controller, "concurrency", None)
        _heartbeat = LeaseHeartbeat(
            worker=str(getattr(sender, "hostname", "") or ""),
            queues=consumed_queues(sender),
            concurrency=concurrency if isinstance(concurrency, int) else None,
        )
        _heartbeat.start()
        global _fence
        if conf.LEASE_FENCE:
            _fence = LeaseFence(_heartbeat)
            _fence.start()


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
    if _fence is not None:
        _fence.stop()
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat.join(timeout=conf.HEARTBEAT_INTERVAL)  # its last beat must not write "alive" after "stopped"
        _heartbeat.gone()


@signals.task_failure.connect(dispatch_uid="long_time_task.worker_lost")
def _on_worker_lost(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **kwargs: Any
) -> None:
    # A child process died mid-task (OOM killer, SIGKILL, segfault). The main process learns it at once:
    # recover now instead of waiting for the lease to expire. ``sender`` is the task object, whose name is the
    # registered one (the message's ``shadow`` renames only what logs and events show).
    if getattr(sender, "name", None) != EXECUTOR_TASK or not isinstance(exception, WorkerLostError) or not args:
        return
    close_old_connections()
    attempt = int(args[1]) if len(args) > 1 else 1
    outcome = recovery.recover_attempt(int(args[0]), attempt, AttemptCause.WORKER_LOST)
    logger.warning("Task %s lost its worker process (attempt %s): %s", args[0], attempt, outcome)


@signals.task_revoked.connect(dispatch_uid="long_time_task.revoked")
def _on_revoked(
    sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False, **kwargs: Any
) -> None:
    # In the worker's main process: a revoke (``celery control revoke``, Flower's button) reached this worker, and it
    # discarded the message (its id is in the worker's revoked set) or killed the process running it
    # (``terminate=True``). Every attempt of a row carries the same Celery id, so each later message of the row would
    # be discarded too: the row is cancelled rather than left waiting for republishes that never run.
    if getattr(sender, "name", None) != EXECUTOR_TASK or request is None or not request.args:
        return
    attempt = request_attempt(request)
    try:
        task_id = int(request.args[0])
    except (TypeError, ValueError):
        return
    if expired and not terminated:
        # Past an ``expires`` the project gave its messages (publish sets none): not a cancel. The row stays
        # waiting, and the sweeper publishes it again.
        logger.warning("Task %s: its message (attempt %s) expired unrun; the sweeper republishes it", task_id, attempt)
        return
    close_old_connections()
    note = f"celery revoke ({'terminated' if terminated else 'message discarded'}, attempt {attempt})"
    fields = {"task_id": task_id, "attempt": attempt, "worker": getattr(request, "hostname", None)}
    try:
        outcome = services.cancel_task(task_id, note=note)
    except (services.TaskNotFound, services.ActionNotAllowed) as refused:
        logger.info("Task %s: %s; nothing to cancel: %s", task_id, note, refused, extra=fields)
        return
    if terminated and not outcome.cancelled and attempt is not None:
        # Its process was killed: that attempt is over, whatever its handler would have done. (If it had just
        # finished, or another attempt holds the row, the guarded write does nothing.)
        message = "The task was cancelled: a Celery revoke terminated it while it ran."
        if LongTimeTask.objects.finish_cancelled(task_id, attempt=attempt, message=message):
            labels = LongTimeTask.objects.filter(id=task_id).values_list("task_type", "queue").first() or ("", "")
            ended(task_id, *labels, TaskState.CANCELLED, "cancelled", attempt=attempt)
            logger.warning("Task %s cancelled: %s", task_id, note, extra={**fields, "outcome": "cancelled"})
            return
    state = "cancelled" if outcome.cancelled else "cancel requested (it is running)"
    logger.warning("Task %s %s: %s", task_id, state, note, extra=fields)

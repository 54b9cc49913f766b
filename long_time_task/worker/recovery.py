"""Nothing lost, nothing stuck: the reaper (expired leases) and the dispatch sweeper (unpublished rows).

Both run from Celery beat (see ``beat_schedule``) and are safe to run concurrently and repeatedly: every
change is a guarded write, and a message for a row that already moved on does nothing when it arrives.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models.functions import Now

from .. import metrics, signals
from ..conf import conf
from ..dispatch import publish
from ..models import AttemptCause, LongTimeTask, TaskState
from ..registry import LongTimeTaskRegister
from .executor import ErrorCode

logger = logging.getLogger(__name__)

REAPER_TASK = "long_time_task.reap_expired_leases"
SWEEPER_TASK = "long_time_task.dispatch_due_tasks"
# How each recovery learnt that an attempt's worker is gone, in the row's message.
REASONS = {AttemptCause.WORKER_LOST: "the worker process died", AttemptCause.LEASE_EXPIRED: "its lease expired"}


def recover_attempt(task_id: int, attempt: int, cause: str) -> str:
    """The worker running attempt ``attempt`` is gone: retry the task, or fail it for good. ``cause``
    (``AttemptCause``, the same words as ``metrics.WORKER_LOST`` and ``LEASE_EXPIRED``) says how that was found:
    the attempt is recorded in the history with it, and it labels the recovery in the metrics.

    Returns "requeued", "failed", "timeout", "cancelled" (its cancel was requested) or "skipped" (the row
    had already moved on). ``cause`` (``metrics.WORKER_LOST`` or ``LEASE_EXPIRED``) labels the recovery in
    the metrics; every outcome but "skipped" counts as one, and a terminal one also as a finished task.
    """
    # The database's clock, not this host's: the claim and the lease were stamped by it (a host whose clock is
    # off would otherwise see time limits passed, or not, that are not).
    rows = LongTimeTask.objects.filter(id=task_id, state=TaskState.RUNNING, attempts=attempt)
    row = rows.annotate(db_now=Now()).first()
    if row is None:
        return "skipped"
    outcome = _recover(row, attempt, cause)
    if outcome != "skipped":
        metrics.recovered(row.task_type, row.queue, cause)
        if outcome in TERMINAL_OUTCOMES:
            state, code = TERMINAL_OUTCOMES[outcome]
            signals.ended(task_id, row.task_type, row.queue, state, code, attempt=attempt)
    return outcome


TERMINAL_OUTCOMES = {
    "cancelled": (TaskState.CANCELLED, ErrorCode.CANCELLED),
    "timeout": (TaskState.FAILED, ErrorCode.TIMEOUT),
    "failed": (TaskState.FAILED, ErrorCode.WORKER_LOST),
}


def _recover(row: LongTimeTask, attempt: int, cause: str) -> str:
    tasks = LongTimeTask.objects
    task_id = row.id
    reason = REASONS[AttemptCause(cause)]
    if row.cancel_requested_at is not None:
        # It was being cancelled: the cancel is the outcome, never a retry.
        message = f"The task was cancelled while it ran ({reason})."
        cancelled = tasks.finish_cancelled(task_id, attempt=attempt, message=message, cause=cause)
        return "cancelled" if cancelled else "skipped"
    config = LongTimeTaskRegister.get_task(row.task_type)
    now = row.db_now  # type: ignore[attr-defined]  # annotated by recover_attempt
    if config is not None and row.claimed_at and row.claimed_at + timedelta(seconds=config.timeout) <= now:
        # Killed by its hard time limit (or as good as): never retried silently.
        message = f"Time limit exceeded: the task was killed after its hard limit of {config.timeout}s"
        timed_out = tasks.fail(task_id, attempt=attempt, message=message, code=ErrorCode.TIMEOUT, cause=cause)
        return "timeout" if timed_out else "skipped"
    if config is None or attempt >= config.max_attempts:
        message = f"Worker lost: {reason} during attempt {attempt} of {config.max_attempts if config else attempt}"
        if tasks.fail(task_id, attempt=attempt, message=message, code=ErrorCode.WORKER_LOST, cause=cause):
            logger.error("Task %s failed: %s", task_id, message)
            return "failed"
        return "skipped"
    message = f"Worker lost: {reason} during attempt {attempt}; retrying"
    redispatch_at = now + timedelta(seconds=conf.REDISPATCH_AFTER)
    if not tasks.schedule_retry(
        task_id,
        attempt=attempt,
        retry_at=now,
        redispatch_at=redispatch_at,
        message=message,
        code=ErrorCode.WORKER_LOST,
        cause=cause,
    ):
        return "skipped"
    logger.warning("Task %s: %s", task_id, message)
    row.state, row.attempts = TaskState.RETRYING, attempt
    publish(row, attempt=attempt + 1)
    return "requeued"


def reap_expired_leases() -> dict[str, int]:
    """Requeue (or fail) every RUNNING row whose worker stopped renewing its lease."""
    expired = list(
        LongTimeTask.objects.lease_expired()
        .order_by("lease_expires_at")
        .values_list("id", "attempts")[: conf.MAINTENANCE_BATCH]
    )
    counts: dict[str, int] = {}
    for task_id, attempt in expired:
        outcome = recover_attempt(task_id, attempt, AttemptCause.LEASE_EXPIRED)
        counts[outcome] = counts.get(outcome, 0) + 1
    if expired:
        logger.warning("Reaper: %s", counts)
    return counts


def dispatch_due_tasks() -> int:
    """Publish waiting rows whose message never went out (or was lost with the broker)."""
    # Due, and postponed, by the database's clock: every redispatch time is compared with the same clock,
    # whichever host wrote it or sweeps it.
    due = LongTimeTask.objects.dispatch_due().annotate(db_now=Now()).order_by("redispatch_at")[: conf.MAINTENANCE_BATCH]
    published = 0
    fields = (
        "id",
        "task_type",
        "celery_task_id",
        "queue",
        "priority",
        "state",
        "attempts",
        "redispatch_at",
        "run_after",
    )
    tracing = ("traceparent",)  # the publish continues the submit's trace
    for task in due.only(*fields, *tracing, "dispatch_count"):
        if task.redispatch_at is None:  # narrowed by the query; for the type checker
            continue
        if LongTimeTaskRegister.get_task(task.task_type) is None:
            # No worker can run it (the type was renamed or removed): fail it rather than wait forever.
            message = f"Task type {task.task_type!r} is not registered"
            code = ErrorCode.UNKNOWN_TASK_TYPE
            if LongTimeTask.objects.fail(task.id, attempt=None, message=message, code=code):
                signals.ended(task.id, task.task_type, task.queue, TaskState.FAILED, code)
            continue
        backoff = conf.REDISPATCH_AFTER * 2 ** min(task.dispatch_count, 6)
        if not LongTimeTask.objects.postpone_dispatch(
            task.id,
            state=task.state,
            attempts=task.attempts,
            seen=task.redispatch_at,
            until=task.db_now + timedelta(seconds=backoff),  # type: ignore[attr-defined]  # annotated above
        ):
            continue  # another sweeper took it, or the row moved on
        # A delayed task held in the database (never published: its first publish is due at its start) is
        # not a recovery; any other row here lost its message, or never had one.
        held = task.dispatch_count == 0 and task.run_after is not None and task.redispatch_at == task.run_after
        if not publish(task, attempt=task.attempts + 1):
            break  # the broker is down: the rest waits for the next sweep
        if not held:
            metrics.recovered(task.task_type, task.queue, metrics.REPUBLISHED)
        published += 1
    if published:
        logger.warning("Sweeper: published %s waiting task(s) again", published)
    return published

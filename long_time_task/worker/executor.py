"""What a worker does with one message: claim the row, run the handler, record one outcome."""

from __future__ import annotations

import json
import logging
import time
import traceback as tb
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DataError, InterfaceError, OperationalError, connection
from django.utils import timezone

from .. import metrics, signals
from ..conf import conf
from ..context import TaskCancelled, TaskContext, activate, deactivate
from ..dispatch import publish
from ..exceptions import TaskError
from ..models import LongTimeTask, TaskState
from ..models.querysets import ClaimedTask
from ..registry import LongTimeTaskRegister, TaskConfig
from ..tracing import step

logger = logging.getLogger(__name__)


class ErrorCode:
    HANDLER_ERROR = "handler_error"
    TEMPORARY_ERROR = "temporary_error"
    RETRIES_EXHAUSTED = "retries_exhausted"
    SOFT_TIMEOUT = "soft_timeout"
    TIMEOUT = "timeout"
    UNKNOWN_TASK_TYPE = "unknown_task_type"
    INVALID_RESULT = "invalid_result"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def check_result(result: Any) -> None:
    """A result must be storable as JSON on every database (no NaN, no NUL character)."""
    text = json.dumps(result, allow_nan=False, ensure_ascii=False)
    if "\\u0000" in text or "\x00" in text:
        raise ValueError("result contains a NUL character")
    text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate


class Executor:
    """Runs one attempt of one task. ``worker`` names the worker in the row.

    Every line it logs carries the fields of the attempt (``extra=``, see ``observability/logs.py``): ``task_id``,
    ``task_type``, ``attempt``, ``worker``, ``queue``, and on the lines that end it, ``outcome`` and ``duration_ms``
    (since the run began). After a run, ``error_code`` and ``error_message`` hold what a failure recorded."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.fields: dict[str, Any] = {}
        self.started = time.monotonic()
        self.error_code = self.error_message = ""
        # The claimed attempt's type and queue (the metrics' labels) and when it was claimed (monotonic).
        self.labels = ("", "")
        self.claimed_at = 0.0

    def log_fields(self, outcome: str | None = None) -> dict[str, Any]:
        """The fields of a log line; ``outcome`` on the line that records how the attempt ended."""
        duration = round((time.monotonic() - self.started) * 1000, 1) if outcome is not None else None
        return {**self.fields, "outcome": outcome, "duration_ms": duration}

    def run(self, task_id: int, attempt: int) -> str:
        """Returns what happened: claimed-and-finished, failed, retrying, or skipped."""
        step("claim")
        tasks = LongTimeTask.objects
        self.started = time.monotonic()
        self.fields = {
            "task_id": task_id,
            "task_type": None,
            "attempt": attempt,
            "worker": self.worker,
            "queue": None,
        }
        timed = conf.METRICS
        try:
            claimed = tasks.claim(task_id, attempt=attempt, worker=self.worker, lease=conf.LEASE_SECONDS, timed=timed)
        except (OperationalError, InterfaceError):
            # The connection broke (the database restarted since the last task): once more, on a new one.
            connection.close()
            claimed = tasks.claim(task_id, attempt=attempt, worker=self.worker, lease=conf.LEASE_SECONDS, timed=timed)
            if claimed is None:
                # If the first claim committed before its reply was lost, this attempt now holds the row
                # without running: its lease runs out and the reaper retries it (it never runs twice).
                logger.warning(
                    "Task %s attempt %s: the claim was retried on a new connection and lost; if the first "
                    "claim had committed, the lease (%ss) hands the task back",
                    task_id,
                    attempt,
                    conf.LEASE_SECONDS,
                    extra=self.log_fields(),
                )
        if claimed is None:
            logger.info(
                "Task %s attempt %s not claimed: already claimed, finished, cancelled, not due yet or gone",
                task_id,
                attempt,
                extra=self.log_fields("skipped"),
            )
            return "skipped"
        self.claimed_at = time.monotonic()
        task_type, params = claimed.task_type, claimed.task_params
        self.fields.update(task_type=task_type, queue=claimed.queue)
        self.labels = (task_type, claimed.queue)
        metrics.started(task_type, claimed.queue, claimed.waited)
        config = LongTimeTaskRegister.get_task(task_type)
        if config is None:
            message = f"Task type {task_type!r} is not registered in this worker"
            return self._fail(task_id, attempt, message, ErrorCode.UNKNOWN_TASK_TYPE)

        logger.info("Running task %s (%s), attempt %s", task_id, task_type, attempt, extra=self.log_fields())
        context = TaskContext(task_id, attempt, owner_id=claimed.owner_id, claimed=claimed)
        step("run", task_type=task_type)
        token = activate(context)
        try:
            if config.wants_context:
                result = config.handler(task_id, params, context=context)  # type: ignore[call-arg]
            else:
                result = config.handler(task_id, params)
        except TaskCancelled:
            return self._cancelled(task_id, attempt)
        except SoftTimeLimitExceeded:
            message = f"Time limit exceeded: the task ran longer than its soft limit of {config.soft_timeout}s"
            return self._fail(task_id, attempt, message, ErrorCode.SOFT_TIMEOUT, tb.format_exc(), context)
        except Exception as exc:
            return self._handle_error(claimed, attempt, config, exc, context)
        finally:
            deactivate(token)
        report = context.take_report()  # the last progress the throttle held back: written with the finish
        try:
            return self._record_result(task_id, attempt, result, report)
        except SoftTimeLimitExceeded:
            # The soft limit fired after the handler had returned, while its result was being recorded:
            # the work is done, so record it (the signal fires once) rather than leave the row RUNNING for
            # the reaper, which would run the handler again.
            logger.warning(
                "Task %s: soft time limit while recording its result; recording it again",
                task_id,
                extra=self.log_fields(),
            )
            return self._record_result(task_id, attempt, result, report)

    def _record_result(self, task_id: int, attempt: int, result: Any, report: dict[str, Any] | None = None) -> str:
        step("finish")
        tasks = LongTimeTask.objects
        try:
            check_result(result)
        except (TypeError, ValueError):
            message = "The task returned a result that cannot be stored as JSON."
            return self._fail(task_id, attempt, message, ErrorCode.INVALID_RESULT, tb.format_exc())
        try:
            finished = tasks.finish(task_id, attempt=attempt, result=result, report=report)
        except DataError:  # a value this database refuses, which check_result did not foresee
            message = "The task returned a result that the database cannot store."
            return self._fail(task_id, attempt, message, ErrorCode.INVALID_RESULT, tb.format_exc())
        if finished:
            extra = self.log_fields("finished")
            logger.info(
                "Task %s (%s) attempt %s finished in %.0f ms",
                task_id,
                extra["task_type"],
                attempt,
                extra["duration_ms"],
                extra=extra,
            )
            signals.ended(task_id, *self.labels, TaskState.FINISHED, attempt=attempt, runtime=self.runtime())
            return "finished"
        logger.warning(
            "Task %s finished, but its row had already left RUNNING; result dropped",
            task_id,
            extra=self.log_fields("skipped"),
        )
        return "skipped"

    def _cancelled(self, task_id: int, attempt: int) -> str:
        step("finish")
        message = "The task was cancelled while it ran."
        if LongTimeTask.objects.finish_cancelled(task_id, attempt=attempt, message=message):
            self.error_code, self.error_message = ErrorCode.CANCELLED, message
            logger.warning(
                "Task %s cancelled while running (attempt %s)", task_id, attempt, extra=self.log_fields("cancelled")
            )
            signals.ended(
                task_id, *self.labels, TaskState.CANCELLED, ErrorCode.CANCELLED, attempt=attempt, runtime=self.runtime()
            )
            return "cancelled"
        logger.warning(
            "Task %s attempt %s stopped: its row had already moved on",
            task_id,
            attempt,
            extra=self.log_fields("skipped"),
        )
        return "skipped"

    def _handle_error(
        self, claimed: ClaimedTask, attempt: int, config: TaskConfig, exc: Exception, context: TaskContext
    ) -> str:
        # The owner sees error_message and error_code; the exception's own text (which may hold internal
        # details) is in the traceback, shown to staff only. A TaskError's message is meant for the owner.
        step("finish", error=ErrorCode.TEMPORARY_ERROR)  # if it is retried; _fail names the code otherwise
        tasks = LongTimeTask.objects
        task_id = claimed.id
        trace = tb.format_exc()
        retryable = config.is_retryable(exc)
        if retryable and attempt < config.max_attempts:
            delay = config.retry_countdown(attempt)
            retry_at = timezone.now() + timedelta(seconds=delay)
            if tasks.schedule_retry(
                task_id,
                attempt=attempt,
                retry_at=retry_at,
                redispatch_at=retry_at + timedelta(seconds=conf.REDISPATCH_AFTER),
                message=f"Attempt {attempt} failed with a temporary error; retrying.",
                code=ErrorCode.TEMPORARY_ERROR,
                traceback=trace,
            ):
                self.error_code = ErrorCode.TEMPORARY_ERROR
                self.error_message = f"Attempt {attempt} failed with a temporary error; retrying."
                logger.warning(
                    "Task %s attempt %s failed (%s); retrying in %.1fs",
                    task_id,
                    attempt,
                    describe(exc),
                    delay,
                    extra=self.log_fields("retrying"),
                )
                task = LongTimeTask(
                    id=task_id,
                    task_type=claimed.task_type,
                    celery_task_id=claimed.celery_task_id,
                    queue=claimed.queue,
                    priority=claimed.priority,
                )
                metrics.retried(*self.labels, runtime=self.runtime())
                publish(task, attempt=attempt + 1, countdown=delay)
                return "retrying"
            # Not retried: a cancel was requested meanwhile (or the row moved on).
            return self._cancelled(task_id, attempt)
        if isinstance(exc, TaskError):
            message, code = exc.message, exc.code
        elif retryable:
            message = f"The task failed with a temporary error {attempt} times and was given up."
            code = ErrorCode.RETRIES_EXHAUSTED
        else:
            message, code = "The task failed with an unexpected error.", ErrorCode.HANDLER_ERROR
        logger.error("Task %s attempt %s raised %s", task_id, attempt, describe(exc), extra=self.log_fields())
        return self._fail(task_id, attempt, message, code, trace, context)

    def _fail(
        self,
        task_id: int,
        attempt: int,
        message: str,
        code: str,
        traceback: str = "",
        context: TaskContext | None = None,
    ) -> str:
        step("finish", error=code)
        if context is not None:
            if context.cancel_requested:  # it failed while stopping for a cancel: the cancel is the outcome
                return self._cancelled(task_id, attempt)
            try:
                context.flush()  # the last progress reported before the failure shows where it stopped
            except Exception:
                logger.exception("Could not write the last progress of task %s", task_id, extra=self.log_fields())
        if LongTimeTask.objects.fail(task_id, attempt=attempt, message=message, code=code, traceback=traceback):
            self.error_code, self.error_message = code, message
            extra = self.log_fields("failed")
            logger.error(
                "Task %s (%s) attempt %s failed (%s) after %.0f ms: %s",
                task_id,
                extra["task_type"],
                attempt,
                code,
                extra["duration_ms"],
                message,
                extra={**extra, "error_code": code},
            )
            signals.ended(task_id, *self.labels, TaskState.FAILED, code, attempt=attempt, runtime=self.runtime())
            return "failed"
        logger.warning(
            "Task %s failed, but its row had already left RUNNING", task_id, extra=self.log_fields("skipped")
        )
        return "skipped"

    def runtime(self) -> float:
        """Seconds since the claim."""
        return time.monotonic() - self.claimed_at

    @staticmethod
    def fail_on_hard_time_limit(task_id: int, attempt: int, timeout: float) -> bool:
        """Called in the worker's main process after a hard time limit killed the child."""
        failed = LongTimeTask.objects.fail(
            task_id,
            attempt=attempt,
            message=f"Time limit exceeded: the task was killed after its hard limit of {timeout:g}s",
            code=ErrorCode.TIMEOUT,
        )
        if failed:
            count_terminal(task_id, TaskState.FAILED, ErrorCode.TIMEOUT, attempt=attempt)
        return bool(failed)


def count_terminal(task_id: int, state: str, error_code: str, *, attempt: int | None = None) -> None:
    """Count and announce (``signals.ended``) a terminal transition made outside the executor's run, where the
    row's type and queue are not at hand: one more read, on these rare paths only (a hard time limit, an enforced
    cancel), and only when metrics are on or something listens to ``task_ended``."""
    if not conf.METRICS and not signals.task_ended.has_listeners(LongTimeTask):
        return
    labels = LongTimeTask.objects.filter(id=task_id).values_list("task_type", "queue").first()
    if labels is not None:
        signals.ended(task_id, labels[0], labels[1], state, error_code, attempt=attempt)

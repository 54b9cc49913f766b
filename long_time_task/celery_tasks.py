"""The one Celery task: it carries a row id and an attempt number, nothing else."""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from django.db import close_old_connections

from .executor import Executor

logger = logging.getLogger(__name__)


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
    name="long_time_task.celery_tasks.execute_long_time_task",
    acks_late=True,
    ignore_result=True,
)
def execute_long_time_task(self: Task, task_id: int, attempt: int = 1) -> str:  # type: ignore[type-arg]
    """Run attempt ``attempt`` of the LongTimeTask row ``task_id``."""
    # The connection is kept across tasks (CELERY_DB_REUSE_MAX), but CONN_MAX_AGE is honoured and a
    # connection that broke (e.g. the database restarted) is replaced, before and after every task.
    close_old_connections()
    try:
        return Executor(worker=str(self.request.hostname or "")).run(int(task_id), int(attempt))
    finally:
        close_old_connections()

"""The workload of the django.tasks comparison: two standard ``@task`` functions, run by whichever backend ``TASKS``
names (``bench.django_tasks_settings``), and the receivers of Django's task signals that time them.

Every system reports the same way, through Django's own signals, in the process that runs the task:
``task_started`` (before the function runs) records the submit-to-start latency, and ``task_finished`` (after
the backend has written the outcome, for this project and django-tasks-db; for django-tasks-celery just before
Celery stores it) counts the task and its finish time. One Redis round trip each.

``report_progress`` is what each system offers a task for reporting progress:
- this project: ``context.progress(percent, message)`` (written at most once per
  ``LONG_TIME_TASK_PROGRESS_INTERVAL``, the latest report kept for the next write or the end of the task);
- django-tasks-celery: Celery's ``update_state(state="PROGRESS", meta=...)`` on the result backend, every call;
- django-tasks-db has no progress API: one ``UPDATE`` of the task's own row per call (its ``return_value``
  column, overwritten by the outcome), the cheapest a project could add to it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.dispatch import receiver
from django.tasks import TaskContext, TaskResultStatus, task
from django.tasks.signals import task_finished, task_started

from .marks import DONE_KEY, FINISHED_KEY, LATENCY_KEY, client

FAILED_KEY = "bench:failed"
SYSTEM = os.environ.get("BENCH_SYSTEM", "ltt")


@task
def noop(sent_at: float) -> None:
    """Nothing: the framework's own cost."""


@task(takes_context=True)
def with_progress(context: TaskContext, sent_at: float, steps: int) -> None:
    """Report progress ``steps`` times, from 1/steps to done."""
    for step in range(1, steps + 1):
        report_progress(context, 100.0 * step / steps, f"step {step} of {steps}")


def report_progress(context: Any, percent: float, message: str) -> None:
    if SYSTEM == "ltt":
        context.progress(percent, message)
    elif SYSTEM == "dtc":
        from celery import current_task

        current_task.update_state(state="PROGRESS", meta={"percent": percent, "message": message})
    elif SYSTEM == "dtdb":
        from django_tasks_db.models import DBTaskResult

        DBTaskResult.objects.filter(id=context.task_result.id).update(
            return_value={"percent": percent, "message": message}
        )
    else:
        raise RuntimeError(f"no progress for {SYSTEM!r}")


def ours(task_result: Any) -> bool:
    return str(task_result.task.module_path).startswith(__name__ + ".")


@receiver(task_started, dispatch_uid="bench.django_tasks.started")
def _started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if ours(task_result):
        client().rpush(LATENCY_KEY, time.time() - float(task_result.args[0]))


@receiver(task_finished, dispatch_uid="bench.django_tasks.finished")
def _finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if ours(task_result):
        pipe = client().pipeline(transaction=False)
        pipe.incr(DONE_KEY if task_result.status == TaskResultStatus.SUCCESSFUL else FAILED_KEY)
        pipe.rpush(FINISHED_KEY, time.time())
        pipe.execute()

"""The library's own signal: ``task_ended``, sent once per task when its row reaches its terminal state.

Whichever write ends a task (the executor's finish or failure, a recovery that gives up, a hard time limit in
the worker's main process, an enforced or revoked cancel, a cancel of a task that never started, the sweeper
failing a task whose type is gone), it is a guarded write that only one process wins; that process, and only
it, sends ``task_ended`` once the write is committed. The Prometheus ``finished`` counter is counted in the
same call, so the signal and the metric can never disagree.

Keyword arguments: ``task_id``, ``task_type``, ``queue``, ``state`` (FINISHED, FAILED or CANCELLED),
``error_code`` ("" when it finished) and ``attempt`` (the attempt the write ended; None when no attempt was
running: a cancel before it started, a type that no worker knows). The sender is the ``LongTimeTask`` model.
A receiver that raises is logged and ignored: it never changes a task's outcome.

The django.tasks backend sends Django's ``task_finished`` from here.
"""

from __future__ import annotations

import logging

from django.apps import apps
from django.dispatch import Signal

from . import metrics

logger = logging.getLogger(__name__)

task_ended = Signal()


def ended(
    task_id: int,
    task_type: str,
    queue: str,
    state: str,
    error_code: str = "",
    *,
    attempt: int | None = None,
    runtime: float | None = None,
) -> None:
    """A terminal transition of ``task_id`` was won (and committed) here: count it, and send ``task_ended``.
    ``runtime``: the attempt's seconds, when the executor ended it."""
    metrics.finished(task_type, queue, state, error_code, runtime=runtime)
    sender = apps.get_model("long_time_task", "LongTimeTask")
    if not task_ended.has_listeners(sender):
        return
    responses = task_ended.send_robust(
        sender,
        task_id=task_id,
        task_type=task_type,
        queue=queue,
        state=str(state),
        error_code=error_code,
        attempt=attempt,
    )
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                "A task_ended receiver (%s) failed for task %s",
                getattr(receiver, "__qualname__", receiver),
                task_id,
                exc_info=response,
            )

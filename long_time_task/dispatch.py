"""Publishing a task row to the broker: the only place that calls ``apply_async``.

The message is the contract between the web side and the worker side: the executor task's name
(``EXECUTOR_TASK``) and two positional arguments, the row's id and the attempt number. Nothing else
travels; the worker reads everything from the row. The task object is looked up by that name in the
current Celery app's registry (``app.tasks``), so this module does not import the worker side.

For monitoring only, the message is named after its task type (Celery's ``shadow``: the name the worker's logs,
its events, Flower and ``celery inspect`` show) and its arguments are shown as ``(task_id=12, attempt=1)``
(``argsrepr``); the worker still runs ``EXECUTOR_TASK``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import current_app

from .conf import conf
from .registry import LongTimeTaskRegister
from .tracing import publishing

if TYPE_CHECKING:
    from .models import LongTimeTask

logger = logging.getLogger(__name__)

EXECUTOR_TASK = "long_time_task.celery_tasks.execute_long_time_task"  # kept across releases: messages in flight


def broker_priority(priority: int, broker_url: str | None = None) -> int | None:
    """Map the registry's priority (1..10, 10 highest) onto what the broker understands.

    Redis orders 0 first, so 10 becomes 0 and 1 becomes 9. RabbitMQ orders the highest number first
    (queues are declared with ``x-max-priority=10``). Other transports have no priorities.
    """
    url = broker_url if broker_url is not None else str(current_app.conf.broker_url or "")
    scheme = url.split("://", 1)[0].lower()
    if scheme in {"redis", "rediss", "redis+socket", "sentinel"}:
        return 10 - priority
    if scheme in {"amqp", "amqps", "pyamqp"}:
        return priority
    return None


def publish(task: LongTimeTask, *, attempt: int, countdown: float | None = None) -> bool:
    """Send one message for attempt ``attempt`` of ``task``. Returns False if the broker refused it.

    A failed publish never raises into the caller: the row is already committed and stays in its waiting
    state, where it can be published again; the failure is logged.
    """
    config = LongTimeTaskRegister.get_task(task.task_type)
    if config is None:
        logger.error("Not publishing task %s: task type %r is not registered", task.id, task.task_type)
        return False
    budget = conf.PUBLISH_TIMEOUT
    try:
        options: dict[str, Any] = {
            "queue": task.queue or config.queue,
            "priority": broker_priority(task.priority),  # None: the transport has none
            "time_limit": config.timeout,
            "soft_time_limit": config.soft_timeout,
            "countdown": countdown,  # None: now
            "shadow": task.task_type,
            "argsrepr": f"(task_id={task.id}, attempt={attempt})",
            "retry": True,
            "retry_policy": {
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": budget / 4,
                "interval_max": budget / 4,
            },
        }
        with publishing(task, attempt=attempt, queue=options["queue"]) as headers:
            executor = current_app.tasks[EXECUTOR_TASK]
            executor.apply_async(args=(task.id, attempt), task_id=task.celery_task_id, headers=headers, **options)
    except Exception:
        # Broker down or unreachable: never turn a committed submit into an error. The row stays waiting,
        # due for the next sweep, which publishes it again.
        logger.exception("Could not publish task %s (attempt %s); the sweeper will retry", task.id, attempt)
        try:
            type(task).objects.dispatch_failed(task.id)
        except Exception:
            logger.exception("Could not mark task %s for the sweeper; it is due at its redispatch time", task.id)
        return False
    return True

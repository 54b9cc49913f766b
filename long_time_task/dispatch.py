"""Publishing a task row to the broker: the only place that calls ``apply_async``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from celery import current_app

from .conf import conf
from .registry import LongTimeTaskRegister

if TYPE_CHECKING:
    from .models import LongTimeTask

logger = logging.getLogger(__name__)


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
        send(
            args=(task.id, attempt),
            task_id=task.celery_task_id,
            queue=task.queue or config.queue,
            priority=broker_priority(task.priority),
            time_limit=config.timeout,
            soft_time_limit=config.soft_timeout,
            countdown=countdown,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": budget / 4,
                "interval_max": budget / 4,
            },
        )
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


def send(
    *,
    args: tuple[int, int],
    task_id: str,
    queue: str,
    priority: int | None,
    time_limit: int,
    soft_time_limit: int,
    countdown: float | None,
    retry_policy: dict[str, float],
) -> None:
    """Publish the executor's message: ``apply_async``, or the same message built and sent through Celery's
    ``app.amqp`` directly (``Direct``) when nothing in it needs ``apply_async``'s generality."""
    from .celery_tasks import execute_long_time_task

    options: dict[str, Any] = {"queue": queue, "priority": priority, "retry": True, "retry_policy": retry_policy}
    if countdown is None and Direct.send(execute_long_time_task, args, task_id, time_limit, soft_time_limit, options):
        return
    execute_long_time_task.apply_async(
        args=args,
        task_id=task_id,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
        countdown=countdown,  # type: ignore[arg-type] # None: now
        **options,
    )


class Direct:
    """The message ``apply_async`` would send, without the work it does on every call for the general case.

    Every submit publishes the same shape of message: one task name, two positional arguments, a Celery id,
    a queue, a priority, time limits, no ETA, no parent task, no result. ``apply_async`` (through
    ``send_task``) works out, on every call, the task's execution options, the route of the queue, eager
    mode, a result object and several settings read through Django's settings; on a 2-core machine that is
    about a third of the publish's CPU. Here the routed options are worked out once per queue and priority,
    and the message is built with ``app.amqp.create_task_message`` and sent with
    ``app.amqp.send_task_message``, the two calls ``send_task`` itself ends with: the same headers, body,
    properties and publish retry, and Celery's ``before_task_publish`` / ``after_task_publish`` signals.

    Falls back to ``apply_async`` (``send`` returns False) with an ETA or countdown (native delayed delivery
    on quorum queues), in eager mode, inside a running Celery task (parent and root ids), and while
    ``task_routes`` could route by arguments (routes are then worked out on every call). A test compares
    the two messages as they arrive in Redis.
    """

    _routes: ClassVar[dict[tuple[int, str, int | None], dict[str, Any]]] = {}

    @classmethod
    def send(
        cls,
        task: Any,
        args: tuple[int, int],
        task_id: str,
        time_limit: int,
        soft_time_limit: int,
        options: dict[str, Any],
    ) -> bool:
        app = task.app
        settings = app.conf
        if settings.task_always_eager or app.current_worker_task is not None:
            return False
        amqp = app.amqp
        routed = cls.route(task, amqp, args, options["queue"], options["priority"])
        if routed is None:
            return False
        options = {**routed, "retry": options["retry"], "retry_policy": options["retry_policy"]}
        message = amqp.create_task_message(
            task_id,
            task.name,
            args,
            None,
            reply_to=app.thread_oid,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            create_sent_event=settings.task_send_sent_event,
            ignore_result=task.ignore_result,
            **options,
        )
        with app.producer_or_acquire(None) as producer, producer.connection._reraise_as_library_errors():
            amqp.send_task_message(producer, task.name, message, **options)
        return True

    @classmethod
    def route(cls, task: Any, amqp: Any, args: Any, queue: str, priority: int | None) -> dict[str, Any] | None:
        """``send_task``'s options after the router, as it works them out (None: not cacheable)."""
        key = (id(amqp), queue, priority)
        routed = cls._routes.get(key)
        if routed is None:
            if amqp.router.routes:
                return None
            options = {**task._get_exec_options(), "queue": queue, "priority": priority}
            for name in ("time_limit", "soft_time_limit", "expires", "ignore_result"):
                options.pop(name, None)  # passed to create_task_message on their own, as send_task does
            routed = cls._routes[key] = amqp.router.route(options, task.name, args, None, task)
        return routed

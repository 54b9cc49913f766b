"""Publishing a task row to the broker: the only place that calls ``apply_async``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import current_app
from celery.app import base as celery_base
from celery.app import task as celery_task_module

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


def _is_celerys_own(function: Any, module: Any) -> bool:
    """Whether ``function`` is Celery's own (defined in ``module``), not a wrapper around it."""
    code = getattr(function, "__code__", None)
    return code is not None and not hasattr(function, "__wrapped__") and code.co_filename == module.__file__


class Direct:
    """The message ``apply_async`` would send, without the work it does on every call for the general case.

    Every submit publishes the same shape of message: one task name, two positional arguments, a Celery id,
    a queue, a priority, time limits, no ETA, no parent task, no result. ``apply_async`` (through
    ``send_task``) works out, on every call, the task's execution options, the route of the queue, eager
    mode, a result object and several settings read through Django's settings. Here the routed options are
    worked out once per queue and priority (and again whenever Celery rebuilds its router), and the message
    is built with ``app.amqp.create_task_message`` and sent with ``app.amqp.send_task_message``, the two
    calls ``send_task`` itself ends with: the same headers, body, properties and publish retry, and
    Celery's ``before_task_publish`` / ``after_task_publish`` signals (where OpenTelemetry and ddtrace
    add their headers). About 9 % fewer instructions per publish, 7 % per submit (``bench.instructions``).

    Falls back to ``apply_async`` (``send`` returns False) with an ETA or countdown (native delayed delivery
    on quorum queues), in eager mode, inside a running Celery task (parent and root ids), with
    ``task_routes`` (which may route by arguments), with a task-level ``expires``, and when ``apply_async``
    or ``send_task`` has been wrapped or replaced (Sentry's Celery integration wraps both to add its trace
    headers; tests mock them). ``tests/test_dispatch.py`` compares the two messages as they arrive in
    Redis and in RabbitMQ, under several Celery settings.
    """

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
        task = task._get_current_object() if hasattr(task, "_get_current_object") else task  # a shared task's proxy
        app = task.app
        if not cls.applies(task, app):
            return False
        amqp = app.amqp
        routed = cls.route(task, amqp.router, args, options["queue"], options["priority"])
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
            create_sent_event=app.conf.task_send_sent_event,
            ignore_result=task.ignore_result,
            **options,
        )
        with app.producer_or_acquire(None) as producer, producer.connection._reraise_as_library_errors():
            amqp.send_task_message(producer, task.name, message, **options)
        return True

    @staticmethod
    def applies(task: Any, app: Any) -> bool:
        if "apply_async" in vars(task) or "send_task" in vars(app) or task.expires is not None:
            return False
        if not _is_celerys_own(type(task).apply_async, celery_task_module):
            return False
        if not _is_celerys_own(type(app).send_task, celery_base):
            return False
        return not app.conf.task_always_eager and app.current_worker_task is None

    @staticmethod
    def route(task: Any, router: Any, args: Any, queue: str, priority: int | None) -> dict[str, Any] | None:
        """``send_task``'s options after the router, worked out as it does (None: not cacheable). Kept on the
        router, so a router Celery rebuilds (its routes or queues changed) starts afresh."""
        if router.routes:
            return None
        routes: dict[tuple[str, int | None], dict[str, Any]] = vars(router).setdefault("_long_time_task_routes", {})
        routed = routes.get((queue, priority))
        if routed is None:
            options = {**task._get_exec_options(), "queue": queue, "priority": priority}
            for name in ("time_limit", "soft_time_limit", "expires", "ignore_result"):
                options.pop(name, None)  # passed to create_task_message on their own, as send_task does
            routed = routes[(queue, priority)] = router.route(options, task.name, args, None, task)
        return routed

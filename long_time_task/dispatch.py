"""Publishing a task row to the broker: the only place that calls ``apply_async``."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from celery import current_app, signals
from celery.app import amqp as celery_amqp
from celery.app import base as celery_base
from celery.app import task as celery_task_module
from kombu import messaging as kombu_messaging
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as serialize
from kombu.transport.virtual import base as kombu_virtual

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


def _is_own(function: Any, module: Any) -> bool:
    """Whether ``function`` is the library's own (defined in ``module``), not a wrapper around it."""
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

    On kombu's Redis transport the last stretch, kombu's publish, is shortened too (``RedisLane``).
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
        route = cls.route(task, amqp.router, args, options["queue"], options["priority"])
        if route is None:
            return False
        routed = {**route.options, "retry": options["retry"], "retry_policy": options["retry_policy"]}
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
            # What saferepr makes of two integers and no keyword arguments, without its two settings lookups.
            argsrepr=f"({args[0]!r}, {args[1]!r})",
            kwargsrepr="{}",
            **routed,
        )
        with app.producer_or_acquire(None) as producer:
            if route.lane is not None:
                sent = route.lane.send(amqp, producer, message, options["retry_policy"])
                if sent is True:
                    return True
                if sent is False:  # the LPUSH was an attempt: kombu's publish makes the rest of them
                    policy = {**route.lane.retry_policy, **options["retry_policy"]}
                    policy["max_retries"] = max(0, int(policy.get("max_retries") or 0) - 1)
                    routed["retry_policy"] = policy
            with producer.connection._reraise_as_library_errors():
                amqp.send_task_message(producer, task.name, message, **routed)
        return True

    @staticmethod
    def applies(task: Any, app: Any) -> bool:
        if "apply_async" in vars(task) or "send_task" in vars(app) or task.expires is not None:
            return False
        if not _is_own(type(task).apply_async, celery_task_module):
            return False
        if not _is_own(type(app).send_task, celery_base):
            return False
        return not app.conf.task_always_eager and app.current_worker_task is None

    @staticmethod
    def route(task: Any, router: Any, args: Any, queue: str, priority: int | None) -> Route | None:
        """``send_task``'s options after the router, worked out as it does (None: not cacheable), and the
        Redis lane's plan for them. Kept on the router, so a router Celery rebuilds (its routes or queues
        changed) starts afresh."""
        if router.routes:
            return None
        routes: dict[tuple[str, int | None], Route] = vars(router).setdefault("_long_time_task_routes", {})
        route = routes.get((queue, priority))
        if route is None:
            options = {**task._get_exec_options(), "queue": queue, "priority": priority}
            for name in ("time_limit", "soft_time_limit", "expires", "ignore_result"):
                options.pop(name, None)  # passed to create_task_message on their own, as send_task does
            routed = router.route(options, task.name, args, None, task)
            route = routes[(queue, priority)] = Route(routed, RedisLane.plan(task.app, routed))
        return route


class Route(NamedTuple):
    options: dict[str, Any]
    lane: RedisLane | None


@dataclass(frozen=True)
class RedisLane:
    """The end of a publish on kombu's Redis transport, without kombu's general machinery around it.

    From the message ``create_task_message`` built, ``send_task_message`` and kombu's ``Producer.publish``
    make a dict, and kombu's Redis channel LPUSHes its JSON onto the queue's list for the priority. On
    the way they work out, on every call, the exchange, delivery mode, serializer and retry policy, declare
    the queue (cached after the first time), wrap the publish in ``Connection.ensure`` for retries, and
    kombu builds a new ``redis.Redis`` client for the LPUSH (about a fifth of a publish: redis-py fills
    its table of response callbacks each time). Here the first four are worked out once per route, the
    dict is made by the channel's own methods (``prepare_message``, ``_inplace_augment_message``,
    ``_q_for_pri``) and the JSON by the transport's own ``dumps``, and the LPUSH goes through one client
    kept on the channel: a publish costs about half the CPU. ``tests/test_dispatch.py`` compares the
    messages in Redis with ``apply_async``'s.

    Only where none of that machinery has anything to do: kombu's own Redis channel and producer with
    nothing wrapped around their publish (monitoring agents hook kombu's ``Producer.publish``), a queue on a
    direct exchange whose declaration this connection has cached (the first publish on a connection takes
    the general path, which declares it), no exchange and routing key of the task's own, no compression, no
    expiring queue, no publish batch, no receivers of Celery's publish signals and no task-sent event. A
    failed LPUSH counts as the first attempt: kombu's publish makes the rest, with one retry fewer and its
    reconnection. Should the failed LPUSH have reached Redis after all, the worker's claim lets only one of
    the two messages run the task.
    """

    queue: Any
    priority: int | None
    delivery_mode: int | None
    serializer: str
    retry_policy: dict[str, Any]

    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"queue", "exchange", "routing_key", "priority", "serializer", "delivery_mode", "compression"}
        | {"mandatory", "immediate"}  # ignored by kombu's virtual transports
    )
    CLIENT: ClassVar[str] = "_long_time_task_client"

    @classmethod
    def plan(cls, app: Any, routed: dict[str, Any]) -> RedisLane | None:
        """What ``send_task_message`` and ``Producer.publish`` work out from the routed options, or None where
        they would do more than this lane does."""
        queue: Any = routed.get("queue")
        if set(routed) - cls.OPTIONS or not hasattr(queue, "exchange") or not hasattr(queue, "can_cache_declaration"):
            return None
        conf = app.conf
        if queue.exchange is None or queue.exchange.type != "direct" or not queue.can_cache_declaration:
            return None  # send_task_message sends to the anonymous exchange only for a direct one
        if routed.get("compression") or conf.task_compression:
            return None
        if routed.get("exchange") and routed.get("routing_key"):
            return None  # delivered through the exchange's bindings, not onto the queue's list
        delivery_mode = routed.get("delivery_mode") or queue.exchange.delivery_mode or conf.task_default_delivery_mode
        return cls(
            queue=queue,
            priority=routed.get("priority"),
            delivery_mode=maybe_delivery_mode(delivery_mode),
            serializer=routed.get("serializer") or conf.task_serializer,
            retry_policy=dict(conf.task_publish_retry_policy or {}),
        )

    def send(self, amqp: Any, producer: Any, message: Any, retry_policy: dict[str, Any]) -> bool | None:
        """LPUSH the message: True if it was sent, None if the lane does not apply (nothing was tried), False
        if the LPUSH failed (one attempt made)."""
        headers, properties, body, sent_event = message
        # Before the channel is touched: an unconnected connection would connect with kombu's defaults, not
        # with the publish's retry policy (kombu clears declared_entities whenever it reconnects).
        if sent_event is not None or hash(self.queue) not in producer.connection.declared_entities:
            return None
        producer.connection.transport_options.update(self.retry_policy, **retry_policy)  # as Producer.publish does
        if not self.applies(amqp, producer):
            return None
        channel = producer.channel
        name = self.queue.name
        expires = getattr(channel, "_expires", None)  # queues declared with x-expires, where kombu keeps them
        if expires and name in expires:
            return None
        redis_transport = sys.modules["kombu.transport.redis"]
        content_type, content_encoding, data = serialize(body, serializer=self.serializer)
        payload = channel.prepare_message(
            data,
            self.priority,
            content_type,
            content_encoding,
            headers,
            {**properties, "delivery_mode": self.delivery_mode},
        )
        channel._inplace_augment_message(payload, "", name)
        key = channel._q_for_pri(name, channel._get_message_priority(payload, reverse=False))
        client = vars(channel).get(self.CLIENT)
        if client is None or client.connection_pool is not channel._pool:  # kombu drops its pool after a fork
            client = vars(channel)[self.CLIENT] = channel._create_client()
        try:
            client.lpush(key, redis_transport.dumps(payload))
        except Exception:
            logger.warning("LPUSH of task %s failed; publishing it through kombu", headers.get("id"), exc_info=True)
            return False
        return True

    @staticmethod
    def applies(amqp: Any, producer: Any) -> bool:
        """kombu's own Redis channel and producer, with nothing wrapped around the publish (monitoring agents
        hook ``Producer.publish`` or ``_publish``; tests replace ``send_task_message``), and nothing that
        makes a publish do more: publish-signal receivers, a publish batch, a worker's callback retry."""
        redis_transport = sys.modules.get("kombu.transport.redis")
        if redis_transport is None or type(producer.channel) is not redis_transport.Channel:
            return False
        if producer.exchange.name or producer.compression:  # Producer.publish would use its own
            return False
        if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
            return False
        if signals.task_sent.receivers or getattr(getattr(producer, "_batch_local", None), "current", None):
            return False
        callback_retry = getattr(celery_amqp, "_callback_publish_retry", None)
        if callback_retry is not None and callback_retry.get():
            return False
        producer_class, channel_class = type(producer), redis_transport.Channel
        return (
            _is_own(amqp.send_task_message, celery_amqp)
            and not {"publish", "_publish"} & vars(producer).keys()
            and _is_own(producer_class.publish, kombu_messaging)
            and _is_own(producer_class._publish, kombu_messaging)
            and _is_own(channel_class.basic_publish, kombu_virtual)
            and _is_own(channel_class._put, redis_transport)
        )

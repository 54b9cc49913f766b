"""The executor's message, as it arrives in a real Redis and a real RabbitMQ: the direct path
(``dispatch.Direct``, and on Redis its ``RedisLane``) sends what ``apply_async`` sends, byte for byte apart
from kombu's random delivery tag, under several Celery settings, and falls back to ``apply_async`` (or to
kombu's publish) when the message needs their generality."""

from __future__ import annotations

import base64
import functools
import json
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery, signals
from celery import _state as celery_state
from kombu import Exchange, Queue

from long_time_task import dispatch
from long_time_task.celery_tasks import execute_long_time_task
from long_time_task.models import LongTimeTask
from long_time_task.registry import LongTimeTaskRegister

from .conftest import require_rabbitmq, require_services

QUEUE = "dispatch_test"  # no worker of the tests consumes it


def noop(task_id: int, params: dict[str, Any]) -> None:
    return None


@pytest.fixture
def redis_broker(broker: Any) -> Any:
    require_services()
    for key in broker.keys(f"{QUEUE}*"):
        broker.delete(key)
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="dispatch_noop", queue=QUEUE, priority=7, timeout=90, soft_timeout=80)(
            noop
        )
        yield broker
    for key in broker.keys(f"{QUEUE}*"):
        broker.delete(key)


@pytest.fixture
def lane(monkeypatch: Any) -> list[bool | None]:
    """What each publish through Direct did with the Redis lane: True (sent), None (not applicable) or
    False (its LPUSH failed); kombu's publish sent the message in the last two cases."""
    uses: list[bool | None] = []
    send = dispatch.RedisLane.send

    def counted(self: Any, *args: Any) -> bool | None:
        uses.append(send(self, *args))
        return uses[-1]

    monkeypatch.setattr(dispatch.RedisLane, "send", counted)
    return uses


def row(task_id: int = 41) -> LongTimeTask:
    # Not saved: publishing reads only these fields.
    return LongTimeTask(id=task_id, task_type="dispatch_noop", queue=QUEUE, priority=7)


def received(broker: Any) -> list[dict[str, Any]]:
    """Every message waiting in the test queues' lists (one per queue and priority), decoded: list by list in
    key order, oldest first within each."""
    messages = []
    for key in sorted(k.decode() for k in broker.keys(f"{QUEUE}*")):
        for raw in reversed(broker.lrange(key, 0, -1)):  # LPUSH, consumed from the right
            message = json.loads(raw)
            message["key"] = key
            body = base64.b64decode(message["body"])
            if message["headers"].get("compression"):
                body = zlib.decompress(body)
            if message["content-type"] == "application/json":
                message["decoded_body"] = json.loads(body)
            messages.append(message)
    return messages


def without_delivery_tag(message: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in message["properties"].items() if k != "delivery_tag"}
    return {**message, "properties": properties}


def test_the_direct_message_is_the_one_apply_async_sends(redis_broker, monkeypatch, lane):
    published: list[tuple[Any, ...]] = []

    def before(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        published.append(("before", sender, headers["id"], kwargs["routing_key"]))

    def after(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        published.append(("after", sender, headers["id"], kwargs["routing_key"]))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    calls: list[str] = []
    direct_send = dispatch.Direct.send

    def counted(*args: Any, **kwargs: Any) -> bool:
        sent = direct_send(*args, **kwargs)
        calls.append("direct" if sent else "fallback")
        return sent

    try:
        task = row()
        monkeypatch.setattr(dispatch.Direct, "send", counted)
        assert dispatch.publish(task, attempt=2) is True
        monkeypatch.setattr(dispatch.Direct, "send", lambda *args, **kwargs: False)  # apply_async
        assert dispatch.publish(task, attempt=2) is True
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)

    assert calls == ["direct"]
    assert lane in ([], [None])  # Celery's signals have receivers: kombu's publish, which sends them
    monkeypatch.setattr(dispatch.Direct, "send", direct_send)
    assert dispatch.publish(task, attempt=2) is True  # no receivers: the lane, once the queue is declared
    assert dispatch.publish(task, attempt=2) is True
    assert lane[-1] is True
    direct, general, *laned = received(redis_broker)
    assert len(laned) == 2
    for message in (general, *laned):
        assert without_delivery_tag(direct) == without_delivery_tag(message)
    # What the worker relies on, spelled out: the row id and attempt, the Celery id, the task's time limits,
    # the registry's priority as Redis orders it (10 - 7), on the type's queue.
    assert direct["decoded_body"][0] == [41, 2]
    assert direct["headers"]["id"] == task.celery_task_id
    assert direct["headers"]["task"] == execute_long_time_task.name
    assert direct["headers"]["timelimit"] == [90, 80]
    assert direct["headers"]["eta"] is None
    assert direct["properties"]["priority"] == 3
    assert direct["properties"]["delivery_info"]["routing_key"] == QUEUE
    assert direct["key"] == f"{QUEUE}:3"
    # Celery's publish signals, for instrumentation, once per message on both paths.
    expected = [("before", execute_long_time_task.name, task.celery_task_id, QUEUE)]
    expected.append(("after", *expected[0][1:]))
    assert published == expected * 2


def test_a_countdown_goes_through_apply_async_with_its_eta(redis_broker):
    assert dispatch.publish(row(42), attempt=1, countdown=30) is True
    (message,) = received(redis_broker)
    assert message["decoded_body"][0] == [42, 1]
    assert message["headers"]["eta"] is not None


def test_no_direct_path_in_eager_mode_or_inside_a_task(redis_broker, settings):
    options = {"queue": QUEUE, "priority": 3, "retry": True, "retry_policy": {}}
    send = dispatch.Direct.send
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert send(execute_long_time_task, (1, 1), "id-1", 90, 80, options) is False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    execute_long_time_task.push_request(id="parent", called_directly=False)
    task_stack: Any = celery_state._task_stack  # type: ignore[attr-defined]
    task_stack.push(execute_long_time_task)  # what a worker does around a running task
    try:
        assert execute_long_time_task.app.current_worker_task is not None
        assert send(execute_long_time_task, (1, 1), "id-1", 90, 80, options) is False
    finally:
        task_stack.pop()
        execute_long_time_task.pop_request()
    assert received(redis_broker) == []
    assert send(execute_long_time_task, (1, 1), "id-1", 90, 80, options) is True
    assert [m["headers"]["id"] for m in received(redis_broker)] == ["id-1"]


# Each with whether the Redis lane sends the message (True) or leaves it to kombu's publish (False).
CONFIGURATIONS = {
    "defaults": ({}, True),
    "protocol 1": ({"task_protocol": 1}, True),
    "sent events": ({"task_send_sent_event": True}, False),
    "transient delivery": ({"task_default_delivery_mode": "transient"}, True),
    "pickle": ({"task_serializer": "pickle", "accept_content": ["json", "pickle"]}, True),
    "compression": ({"task_compression": "gzip"}, False),
    # Queue names of their own: kombu's producer pool is shared by apps with the same broker URL, and
    # remembers which queues it declared by name.
    "topic exchange": (
        {"task_queues": (Queue(f"{QUEUE}_topic", Exchange("dispatch_topic", type="topic"), routing_key="ltt.#"),)},
        False,
    ),
    "expiring queue": (
        {"task_queues": (Queue(f"{QUEUE}_expiring", Exchange(f"{QUEUE}_expiring"), expires=600),)},
        False,
    ),
    "queue created on the fly": ({"task_queues": (), "task_create_missing_queues": True}, True),
    # Both set: kombu delivers through the exchange's bindings (here the queue's own), not to the queue's list.
    "task-level exchange and routing key": (
        {"task_annotations": {execute_long_time_task.name: {"exchange": QUEUE, "routing_key": QUEUE}}},
        False,
    ),
}


@contextmanager
def celery_app(broker_url: str, **config: Any) -> Iterator[Any]:
    """A Celery app of its own (not the demo's), configured like the demo's broker, then ``config``."""
    from django.conf import settings

    app = Celery("dispatch-test", broker=broker_url, set_as_current=False)
    app.conf.broker_transport_options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    app.conf.task_queues = (Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE),)
    app.conf.update(config)
    try:
        yield app
    finally:
        app.close()


def both_ways(app: Any, *, direct_expected: bool = True, times: int = 1) -> None:
    """Publish the same message through Direct (if it applies) ``times`` times, then through apply_async."""
    task = app.tasks[execute_long_time_task.name]
    queue = app.conf.task_queues[0].name if app.conf.task_queues else QUEUE
    options: dict[str, Any] = {"queue": queue, "priority": 3, "retry": True, "retry_policy": {"max_retries": 1}}
    for _ in range(times):
        assert dispatch.Direct.send(task, (44, 1), "celery-id-44", 90, 80, options) is direct_expected
    task.apply_async(args=(44, 1), task_id="celery-id-44", time_limit=90, soft_time_limit=80, **options)


@pytest.mark.parametrize(("config", "lane_expected"), CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_under_other_celery_settings_the_direct_message_is_still_apply_asyncs(
    redis_broker, lane, config, lane_expected
):
    from django.conf import settings

    with celery_app(settings.CELERY_BROKER_URL, **config) as app:
        # The first publish on a connection may be the one that declares the queue (kombu's publish).
        both_ways(app, times=2)
    # The lane is asked only where its plan applies; the second publish takes it, or neither does.
    assert (lane[-1:] == [True]) is lane_expected and (True in lane) is lane_expected
    *direct, general = received(redis_broker)
    assert len(direct) == 2
    for message in direct:
        assert without_delivery_tag(message) == without_delivery_tag(general)
    assert len({message["properties"]["delivery_tag"] for message in [*direct, general]}) == 3


def test_the_lane_publishes_again_through_kombu_when_its_lpush_fails(redis_broker, lane, monkeypatch):
    from django.conf import settings
    from redis.exceptions import ConnectionError as RedisConnectionError

    with celery_app(settings.CELERY_BROKER_URL) as app:
        both_ways(app, times=2)
        assert lane[-1] is True
        with app.producer_pool.acquire(block=True) as producer:
            client = vars(producer.channel)[dispatch.RedisLane.CLIENT]  # the lane's own, kept on the channel

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RedisConnectionError("connection reset")

        monkeypatch.setattr(client, "lpush", broken)
        task = app.tasks[execute_long_time_task.name]
        options: dict[str, Any] = {"queue": QUEUE, "priority": 3, "retry": True, "retry_policy": {"max_retries": 1}}
        assert dispatch.Direct.send(task, (44, 1), "celery-id-44", 90, 80, options) is True
        assert lane[-1] is False  # the same channel (the pool gives it back), whose LPUSH failed
        # kombu's publish made the rest of the attempts: one fewer than the policy's (what it writes into the
        # connection's transport options, as every retrying publish does).
        with app.producer_pool.acquire(block=True) as producer:
            assert producer.connection.transport_options["max_retries"] == 0
        both_ways(app, times=0)
    messages = received(redis_broker)
    assert len(messages) == 5  # nothing lost, nothing doubled
    assert len({json.dumps(without_delivery_tag(message), sort_keys=True) for message in messages}) == 1


def test_the_lane_makes_a_new_client_when_kombu_drops_its_pool(redis_broker, lane):
    from django.conf import settings

    with celery_app(settings.CELERY_BROKER_URL) as app:
        both_ways(app, times=2)
        with app.producer_pool.acquire(block=True) as producer:
            channel = producer.channel
            old = vars(channel)[dispatch.RedisLane.CLIENT]
            channel._disconnect_pools()  # what kombu does in a forked child
        both_ways(app)
        assert lane[-1] is True
        assert vars(channel)[dispatch.RedisLane.CLIENT] is not old
        assert vars(channel)[dispatch.RedisLane.CLIENT].connection_pool is channel._pool is not None
    assert len(received(redis_broker)) == 5


def test_the_lane_steps_aside_for_anything_wrapped_around_the_publish(redis_broker, lane, monkeypatch):
    from django.conf import settings
    from kombu import Producer

    calls: list[str] = []
    original = Producer.publish

    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:  # as monitoring agents hook kombu's publish
        calls.append("publish")
        return original(self, *args, **kwargs)

    with celery_app(settings.CELERY_BROKER_URL) as app:
        both_ways(app, times=2)
        assert lane[-1] is True
        with monkeypatch.context() as patched:
            patched.setattr(Producer, "publish", traced)
            both_ways(app, times=2)
        assert True not in lane[-2:] and calls == ["publish"] * 3  # both of Direct's publishes, apply_async's
        send_task_message = app.amqp.send_task_message
        with monkeypatch.context() as patched:
            patched.setattr(app.amqp, "send_task_message", lambda *args, **kwargs: calls.append("replaced"))
            both_ways(app, times=1)  # apply_async's publish goes through the replacement too
        assert lane[-1] is not True and calls[-2:] == ["replaced"] * 2
        assert app.amqp.send_task_message is send_task_message
    assert len(received(redis_broker)) == 3 + 3


def test_task_routes_a_task_level_expiry_or_a_wrapped_apply_async_go_through_apply_async(redis_broker, monkeypatch):
    from celery.app.task import Task
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    with celery_app(url, task_routes={execute_long_time_task.name: {"queue": QUEUE}}) as app:
        both_ways(app, direct_expected=False)
    with celery_app(url, task_annotations={execute_long_time_task.name: {"expires": 60}}) as app:
        both_ways(app, direct_expected=False)
    expiring = received(redis_broker)[-1]
    assert expiring["headers"]["expires"] is not None  # what Direct would have dropped
    original = Task.apply_async

    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:  # as Sentry's Celery integration wraps it
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patched, celery_app(url) as app:
        patched.setattr(Task, "apply_async", traced)
        both_ways(app, direct_expected=False)
    with celery_app(url) as app:
        both_ways(app)  # unwrapped again: the direct path
    assert len(received(redis_broker)) == 5  # one message from each fallback, two from the last


def test_routes_added_later_are_followed(redis_broker):
    from django.conf import settings

    with celery_app(settings.CELERY_BROKER_URL) as app:
        both_ways(app)  # the route of QUEUE is now cached
        app.conf.update(task_routes={execute_long_time_task.name: {"queue": f"{QUEUE}_routed"}})
        both_ways(app, direct_expected=False)
    assert len(received(redis_broker)) == 3  # the explicit queue wins over the route, on both paths


def next_message(queue: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while (message := queue.get(no_ack=True)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no message in {queue.name} after {timeout}s")
        time.sleep(0.01)
    return message


def test_on_rabbitmq_too_the_direct_message_is_the_one_apply_async_sends():
    # The demo's priority queue declaration on RabbitMQ.
    queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, queue_arguments={"x-max-priority": 10})
    with celery_app(require_rabbitmq(), task_queues=(queue,)) as app:
        task = app.tasks[execute_long_time_task.name]
        options: dict[str, Any] = {"queue": QUEUE, "priority": 7, "retry": True, "retry_policy": {"max_retries": 1}}
        with app.connection_for_write() as connection:
            bound = queue(connection.default_channel)
            bound.declare()
            bound.purge()
            try:
                assert dispatch.Direct.send(task, (43, 1), "celery-id-43", 90, 80, options) is True
                task.apply_async(args=(43, 1), task_id="celery-id-43", time_limit=90, soft_time_limit=80, **options)
                # AMQP publishes are asynchronous: wait (bounded) for each to reach the queue.
                direct: Any = next_message(bound)
                general: Any = next_message(bound)
                assert bound.get(no_ack=True) is None  # nothing else: a duplicate would have come before
            finally:
                bound.delete()
    assert direct.body == general.body
    assert direct.headers == general.headers
    assert direct.properties == general.properties
    assert direct.delivery_info["routing_key"] == general.delivery_info["routing_key"] == QUEUE
    assert direct.properties["priority"] == 7  # RabbitMQ: the registry's priority as is
    assert json.loads(direct.body)[0] == [43, 1]
    assert direct.headers["timelimit"] == [90, 80]

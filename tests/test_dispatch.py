"""The executor's message, as it arrives in a real Redis and a real RabbitMQ. ``dispatch.publish`` sends it
with Celery's public ``apply_async``: the row id and attempt, the Celery id, the type's time limits, the
registry's priority as the broker orders it, on the type's queue, with Celery's publish signals (where
OpenTelemetry, ddtrace and Sentry add their headers)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery, signals
from kombu import Exchange, Queue

from long_time_task import dispatch
from long_time_task.models import LongTimeTask
from long_time_task.registry import LongTimeTaskRegister

from .conftest import require_rabbitmq, require_services

QUEUE = "dispatch_test"  # no worker of the tests consumes it


def noop(task_id: int, params: dict[str, Any]) -> None:
    return None


@contextmanager
def registered() -> Iterator[None]:
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="dispatch_noop", queue=QUEUE, priority=7, timeout=90, soft_timeout=80)(
            noop
        )
        yield


@pytest.fixture
def redis_broker(broker: Any) -> Any:
    require_services()
    for key in broker.keys(f"{QUEUE}*"):
        broker.delete(key)
    with registered():
        yield broker
    for key in broker.keys(f"{QUEUE}*"):
        broker.delete(key)


def row(task_id: int = 41) -> LongTimeTask:
    # Not saved: publishing reads only these fields.
    return LongTimeTask(id=task_id, task_type="dispatch_noop", queue=QUEUE, priority=7)


def received(broker: Any) -> list[dict[str, Any]]:
    """Every message waiting in the test queue's lists (one per priority), decoded, oldest first."""
    messages = []
    for key in sorted(k.decode() for k in broker.keys(f"{QUEUE}*")):
        for raw in reversed(broker.lrange(key, 0, -1)):  # LPUSH, consumed from the right
            message = json.loads(raw)
            message["key"] = key
            message["decoded_body"] = json.loads(base64.b64decode(message["body"]))
            messages.append(message)
    return messages


def test_a_publish_carries_what_the_worker_relies_on_with_celerys_publish_signals(redis_broker):
    published: list[tuple[Any, ...]] = []

    def before(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        published.append(("before", sender, headers["id"], kwargs["routing_key"]))

    def after(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        published.append(("after", sender, headers["id"], kwargs["routing_key"]))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        task = row()
        assert dispatch.publish(task, attempt=2) is True
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)

    (message,) = received(redis_broker)
    # The row id and attempt, the Celery id, the task's time limits, the registry's priority as Redis orders
    # it (10 - 7), on the type's queue.
    assert message["decoded_body"][0] == [41, 2]
    assert message["headers"]["id"] == task.celery_task_id
    assert message["headers"]["task"] == dispatch.EXECUTOR_TASK
    # What logs, events and Flower show: the task type, and arguments that say what they are.
    assert message["headers"]["shadow"] == task.task_type
    assert message["headers"]["argsrepr"] == f"(task_id={task.id}, attempt=2)"
    assert message["headers"]["timelimit"] == [90, 80]
    assert message["headers"]["eta"] is None
    assert message["properties"]["priority"] == 3
    assert message["properties"]["delivery_info"]["routing_key"] == QUEUE
    assert message["key"] == f"{QUEUE}:3"
    assert published == [
        ("before", dispatch.EXECUTOR_TASK, task.celery_task_id, QUEUE),
        ("after", dispatch.EXECUTOR_TASK, task.celery_task_id, QUEUE),
    ]


def test_a_countdown_becomes_the_messages_eta(redis_broker):
    assert dispatch.publish(row(42), attempt=1, countdown=30) is True
    (message,) = received(redis_broker)
    assert message["decoded_body"][0] == [42, 1]
    assert message["headers"]["eta"] is not None


def test_the_executor_task_is_registered_under_the_name_the_messages_carry():
    from long_time_task.worker.tasks import execute_long_time_task

    assert execute_long_time_task.name == dispatch.EXECUTOR_TASK


def next_message(queue: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while (message := queue.get(no_ack=True)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no message in {queue.name} after {timeout}s")
        time.sleep(0.01)
    return message


def test_on_rabbitmq_the_message_reaches_the_priority_queue_with_the_registrys_priority(monkeypatch):
    # The demo's priority queue declaration on RabbitMQ, on a Celery app of its own (the shared executor task
    # is registered on every app).
    queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, queue_arguments={"x-max-priority": 10})
    app = Celery("dispatch-test", broker=require_rabbitmq(), set_as_current=False)
    app.conf.task_queues = (queue,)
    monkeypatch.setattr(dispatch, "current_app", app)
    try:
        with registered(), app.connection_for_write() as connection:
            bound = queue(connection.default_channel)
            bound.declare()
            bound.purge()
            try:
                task = row(43)
                assert dispatch.publish(task, attempt=1) is True
                message: Any = next_message(bound)  # AMQP publishes are asynchronous: wait (bounded)
            finally:
                bound.delete()
    finally:
        app.close()
    assert message.delivery_info["routing_key"] == QUEUE
    assert message.properties["priority"] == 7  # RabbitMQ: the registry's priority as is
    assert json.loads(message.body)[0] == [43, 1]
    assert message.headers["timelimit"] == [90, 80]
    assert message.headers["id"] == task.celery_task_id

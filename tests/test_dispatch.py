"""The executor's message, as it arrives in a real Redis: the direct path (``dispatch.Direct``) sends what
``apply_async`` sends, byte for byte apart from kombu's random delivery tag, and falls back to it when the
message needs ``apply_async``'s generality."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from celery import Celery, signals
from celery import _state as celery_state
from kombu import Exchange, Queue

from long_time_task import dispatch
from long_time_task.celery_tasks import execute_long_time_task
from long_time_task.models import LongTimeTask
from long_time_task.registry import LongTimeTaskRegister

from .conftest import require_services

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


def row(task_id: int = 41) -> LongTimeTask:
    # Not saved: publishing reads only these fields.
    return LongTimeTask(id=task_id, task_type="dispatch_noop", queue=QUEUE, priority=7)


def received(broker: Any) -> list[dict[str, Any]]:
    """Every message waiting in the test queue's lists (one per priority), oldest first, decoded."""
    messages = []
    for key in sorted(k.decode() for k in broker.keys(f"{QUEUE}*")):
        for raw in reversed(broker.lrange(key, 0, -1)):  # LPUSH, consumed from the right
            message = json.loads(raw)
            message["key"] = key
            message["decoded_body"] = json.loads(base64.b64decode(message["body"]))
            messages.append(message)
    return messages


def without_delivery_tag(message: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in message["properties"].items() if k != "delivery_tag"}
    return {**message, "properties": properties}


def test_the_direct_message_is_the_one_apply_async_sends(redis_broker, monkeypatch):
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
    direct, general = received(redis_broker)
    assert without_delivery_tag(direct) == without_delivery_tag(general)
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


def rabbitmq_url() -> str:
    """The RabbitMQ of the tests (``TEST_AMQP_URL``): fails under CI=true, skips elsewhere, if it does not answer."""
    from django.conf import settings

    from tests.settings import answers

    url = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    if not answers(url, 5672):
        if settings.CI:
            pytest.fail(f"CI=true and RabbitMQ ({url}) is not reachable")
        pytest.skip(f"needs RabbitMQ at {url}")
    return url


def test_on_rabbitmq_too_the_direct_message_is_the_one_apply_async_sends():
    # A Celery app of its own on RabbitMQ, with the demo's priority queue declaration; the executor task is a
    # shared task, so this app has its own instance of it.
    app = Celery("dispatch-amqp", broker=rabbitmq_url(), set_as_current=False)
    queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, queue_arguments={"x-max-priority": 10})
    app.conf.task_queues = (queue,)
    task = app.tasks[execute_long_time_task.name]
    options: dict[str, Any] = {"queue": QUEUE, "priority": 7, "retry": True, "retry_policy": {"max_retries": 1}}
    with app.connection_for_write() as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        bound.purge()
        try:
            assert dispatch.Direct.send(task, (43, 1), "celery-id-43", 90, 80, options) is True
            task.apply_async(args=(43, 1), task_id="celery-id-43", time_limit=90, soft_time_limit=80, **options)
            direct: Any = bound.get(no_ack=True)
            general: Any = bound.get(no_ack=True)
            assert bound.get(no_ack=True) is None
        finally:
            bound.delete()
    assert direct is not None and general is not None
    assert direct.body == general.body
    assert direct.headers == general.headers
    assert direct.properties == general.properties
    assert direct.delivery_info["routing_key"] == general.delivery_info["routing_key"] == QUEUE
    assert direct.properties["priority"] == 7  # RabbitMQ: the registry's priority as is
    assert json.loads(direct.body)[0] == [43, 1]
    assert direct.headers["timelimit"] == [90, 80]

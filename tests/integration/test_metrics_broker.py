"""Broker queue lengths, as ``/metrics`` reads them (kombu's passive ``queue_declare``), on a real RabbitMQ and a real
Redis: messages that no worker consumes are counted, a queue the broker does not know is 0, and on Redis every
priority list of a queue is counted."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery import current_app
from django.conf import settings
from kombu import Connection, Exchange, Producer, Queue

from long_time_task.metrics.collector import read_queue_lengths
from tests.conftest import require_rabbitmq, require_services
from tests.workers import wait_for


def publish(url: str, queue: Queue, priorities: list[int], transport_options: dict[str, Any]) -> None:
    with Connection(url, transport_options=transport_options) as connection:
        producer = Producer(connection)
        for priority in priorities:
            producer.publish({"n": priority}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], priority=priority, serializer="json")  # fmt: skip


def use_broker(monkeypatch: Any, url: str, transport_options: dict[str, Any]) -> None:
    monkeypatch.setitem(current_app.conf, "broker_url", url)
    monkeypatch.setitem(current_app.conf, "broker_read_url", None)
    monkeypatch.setitem(current_app.conf, "broker_transport_options", transport_options)


def test_rabbitmq_queue_lengths(monkeypatch: Any) -> None:
    url = require_rabbitmq()
    name = f"ltt-metrics-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name, queue_arguments={"x-max-priority": 10})
    publish(url, queue, [1, 5, 9], {})
    use_broker(monkeypatch, url, {})
    try:
        # Published without confirms: RabbitMQ may count the last messages a moment later.
        expected = {name: 3, f"{name}-unknown": 0}
        wait_for(lambda: read_queue_lengths([name, f"{name}-unknown"], timeout=5) == expected, timeout=10,
                 what="RabbitMQ to count the three messages")  # fmt: skip
    finally:
        with Connection(url) as connection:
            queue.bind(connection.default_channel).delete()


@pytest.mark.django_db
def test_redis_queue_lengths_count_every_priority_list(monkeypatch: Any) -> None:
    require_services()
    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)  # ten priority lists, as the demo configures
    name = f"ltt-metrics-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    publish(settings.CELERY_BROKER_URL, queue, [0, 3, 3, 9], options)
    use_broker(monkeypatch, settings.CELERY_BROKER_URL, options)
    try:
        assert read_queue_lengths([name, f"{name}-unknown"], timeout=5) == {name: 4, f"{name}-unknown": 0}
    finally:
        with Connection(settings.CELERY_BROKER_URL, transport_options=options) as connection:
            queue.bind(connection.default_channel).purge()

"""A real worker's row: written at start with the queues it reads, following ``celery control add_consumer``,
marked stopped by a clean shutdown, and no longer alive once a killed worker's heartbeats stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

from long_time_task.models import WorkerHeartbeat
from long_time_task.observability.consumers import queue_consumers
from tests.workers import ROOT, wait_for, worker_env

# The rows the workers write are committed by them and stay (like the task rows of the other integration tests);
# the unit tests of tests/test_consumers.py empty the table for themselves.
pytestmark = pytest.mark.django_db

BEAT = {"LONG_TIME_TASK_HEARTBEAT_INTERVAL": "0.3"}


def row(hostname: str) -> WorkerHeartbeat | None:
    return WorkerHeartbeat.objects.filter(hostname=hostname).first()


def alive(hostname: str) -> bool:
    return WorkerHeartbeat.objects.alive(30).filter(hostname=hostname).exists()


def test_a_worker_reports_its_queues_follows_add_consumer_and_says_when_it_stops(
    start_worker: Any, worker_database: str
) -> None:
    worker = start_worker(queues="priority,maintenance", name="presence", **BEAT)
    hostname = f"{worker.name}@{socket.gethostname()}"
    first = wait_for(lambda: row(hostname), timeout=30, what="the worker's row")
    assert first.queues == ["maintenance", "priority"] and first.pid and first.concurrency == 1
    assert alive(hostname)
    consumers = {queue.name: queue.consumers for queue in queue_consumers()}
    assert consumers["maintenance"] >= 1 and consumers["priority"] >= 1

    command = [sys.executable, "-m", "celery", "-A", "demo", "control", "add_consumer", "heavy", "-d", hostname]
    subprocess.run(command, cwd=ROOT, env=worker_env(worker_database), check=True, capture_output=True, timeout=60)
    wait_for(lambda: "heavy" in (row(hostname) or first).queues, timeout=30, what="the new queue in the worker's row")

    worker.stop()
    stopped = row(hostname)
    assert stopped is not None and stopped.stopped_at is not None
    assert not alive(hostname)


def test_a_killed_worker_stops_counting_once_its_heartbeats_are_older_than_the_lease(
    start_worker: Any, settings: Any
) -> None:
    # A queue of its own: for a lease after the kill its row still counts as alive, and other tests count the
    # consumers of the registry's queues.
    worker = start_worker(queues="killed-worker-test", name="killed", **BEAT)
    hostname = f"{worker.name}@{socket.gethostname()}"
    wait_for(lambda: alive(hostname), timeout=30, what="the worker alive")
    assert worker.process is not None
    os.killpg(worker.process.pid, signal.SIGKILL)  # no shutdown: its row is never marked stopped
    worker.process.wait(30)
    assert row(hostname).stopped_at is None
    settings.LONG_TIME_TASK_LEASE_SECONDS = 2.0
    wait_for(lambda: not WorkerHeartbeat.objects.alive(2.0).filter(hostname=hostname).exists(), timeout=30,
             what="the killed worker no longer alive")  # fmt: skip
    consumers = {queue.name: queue.consumers for queue in queue_consumers()}
    assert consumers.get("killed-worker-test", 0) == 0


def test_on_rabbitmq_the_worker_rows_agree_with_the_broker_s_own_consumer_count(start_worker: Any) -> None:
    """RabbitMQ knows its consumers (Redis does not): there the rows can be checked against the broker itself."""
    from kombu import Connection

    from tests.conftest import require_rabbitmq

    url = require_rabbitmq()
    queue = f"ltt-consumers-test-{os.getpid()}"

    def broker_consumers() -> int:
        with Connection(url, connect_timeout=5) as connection:
            channel: Any = connection.channel()
            try:
                return int(channel.queue_declare(queue=queue, passive=True).consumer_count)
            finally:
                channel.close()

    worker = start_worker(queues=queue, name="rabbit", LTT_TEST_WORKER_BROKER_URL=url, **BEAT)
    hostname = f"{worker.name}@{socket.gethostname()}"
    try:
        wait_for(lambda: alive(hostname), timeout=30, what="the worker's row")
        ours = {q.name: q.consumers for q in queue_consumers()}
        assert ours[queue] == broker_consumers() == 1
        assert row(hostname).queues == [queue]

        worker.stop()
        assert broker_consumers() == 0
        assert not alive(hostname)
        assert queue not in {q.name for q in queue_consumers()}  # read by nobody, and nothing is sent there
    finally:
        with Connection(url, connect_timeout=5) as connection:
            channel: Any = connection.channel()
            channel.queue_delete(queue=queue)
            channel.close()

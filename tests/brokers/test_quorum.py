"""RabbitMQ quorum queues (``CELERY_QUEUE_TYPE=quorum``): the demo's settings, and a real worker on them.

The settings tests run everywhere. The worker test needs PostgreSQL, Redis (the suite's own) and RabbitMQ with
``rabbitmqctl`` on this machine: it creates a vhost of its own, so that the queues it declares never meet another
test's, and deletes it at the end. Under CI=true a missing RabbitMQ fails it; elsewhere it is skipped.

What it shows (docs/deployment.md, "Quorum queues"): the queues are quorum queues with the delivery limit; tasks
submitted from this process finish; a retry (its delay carried by Celery's native delayed delivery, as every
countdown on quorum queues) goes through; a task that kills its worker every attempt ends FAILED (worker_lost)
after its attempts; and a message whose consumer dies before acknowledging it is delivered at most limit + 1 times,
then dropped by the broker, while its row, the source of truth, is published again by the sweeper and finishes.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from celery import Celery
from django.conf import settings as django_settings
from kombu import Connection, Exchange, Queue

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from tests.faults.conftest import BOUNDS, BeatProcess, judge, rows, settle
from tests.testapp.models import HandlerRun
from tests.workers import ROOT, WorkerProcess, wait_for, worker_env

DELIVERY_LIMIT = 3  # not the default (5): the test shows that CELERY_QUEUE_DELIVERY_LIMIT is what the queues get
QUEUES = ("default", "heavy", "priority", "maintenance")


def demo_settings(monkeypatch: Any, **env: str) -> dict[str, Any]:
    """demo/settings.py run afresh under ``env`` (the module the suite imported is left as it is)."""
    for name in ("CELERY_BROKER_URL", "CELERY_QUEUE_TYPE", "CELERY_QUEUE_DELIVERY_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "demo" / "settings.py"))


# ------------------------------------------------------------------ the settings (no services needed)


def test_classic_is_the_default_with_ten_priority_levels_on_rabbitmq(monkeypatch: Any) -> None:
    demo = demo_settings(monkeypatch, CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//")
    assert [q.name for q in demo["CELERY_TASK_QUEUES"]] == list(QUEUES)
    for queue in demo["CELERY_TASK_QUEUES"]:
        assert queue.queue_arguments == {"x-max-priority": 10} and queue.exchange.type == "direct"
    assert "CELERY_TASK_CREATE_MISSING_QUEUE_TYPE" not in demo


def test_quorum_queues_have_the_delivery_limit_no_priorities_and_topic_exchanges(monkeypatch: Any) -> None:
    url = "amqp://guest:guest@127.0.0.1:5672//"
    demo = demo_settings(monkeypatch, CELERY_BROKER_URL=url, CELERY_QUEUE_TYPE="Quorum")
    for queue in demo["CELERY_TASK_QUEUES"]:
        assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": 5}  # the default limit
        assert queue.durable and queue.exchange.type == "topic"  # topic: Celery's native delayed delivery
    assert demo["CELERY_TASK_CREATE_MISSING_QUEUE_TYPE"] == "quorum"
    assert demo["CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE"] == "topic"
    demo = demo_settings(
        monkeypatch, CELERY_BROKER_URL=url, CELERY_QUEUE_TYPE="quorum", CELERY_QUEUE_DELIVERY_LIMIT="9"
    )
    assert {q.queue_arguments["x-delivery-limit"] for q in demo["CELERY_TASK_QUEUES"]} == {9}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CELERY_QUEUE_TYPE": "stream"}, "is not a queue type"),
        ({"CELERY_QUEUE_TYPE": "quorum", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}, "needs a RabbitMQ"),
        ({"CELERY_QUEUE_TYPE": "quorum"}, "needs a RabbitMQ"),  # the embedded default (sqla+sqlite)
        ({"CELERY_BROKER_URL": "amqp://h//", "CELERY_QUEUE_TYPE": "quorum", "CELERY_QUEUE_DELIVERY_LIMIT": "0"},
         "must be at least 1"),
    ],
)  # fmt: skip
def test_a_queue_type_the_broker_cannot_give_is_refused_at_start(
    monkeypatch: Any, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        demo_settings(monkeypatch, **env)


def quorum_queue(name: str, exchange_type: str = "topic") -> Queue:
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": 5}
    return Queue(name, Exchange(name, type=exchange_type), routing_key=name, queue_arguments=arguments)


def test_the_check_warns_when_types_of_different_priorities_share_a_quorum_queue(settings: Any) -> None:
    from long_time_task.checks import check_quorum_queues
    from long_time_task.registry import LongTimeTaskRegister
    from tests.test_registry import handler

    assert check_quorum_queues() == []  # classic queues: priorities are honoured
    settings.CELERY_TASK_QUEUES = (quorum_queue("q-mixed"), quorum_queue("q-same"), Queue("q-classic"))
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="t_low", queue="q-mixed", priority=2)(handler)
        LongTimeTaskRegister.register(task_type="t_high", queue="q-mixed", priority=9)(handler)
        LongTimeTaskRegister.register(task_type="t_same_a", queue="q-same", priority=3)(handler)
        LongTimeTaskRegister.register(task_type="t_same_b", queue="q-same", priority=3)(handler)
        LongTimeTaskRegister.register(task_type="t_classic_a", queue="q-classic", priority=1)(handler)
        LongTimeTaskRegister.register(task_type="t_classic_b", queue="q-classic", priority=10)(handler)
        warnings = check_quorum_queues()
    assert [w.id for w in warnings] == ["long_time_task.W010"]
    assert "'q-mixed'" in warnings[0].msg and "9: t_high; 2: t_low" in warnings[0].msg


def test_the_check_warns_about_a_quorum_queue_on_a_direct_exchange(settings: Any) -> None:
    from long_time_task.checks import check_quorum_queues

    settings.CELERY_TASK_QUEUES = (quorum_queue("q-direct", "direct"), quorum_queue("q-topic"))
    warnings = check_quorum_queues()
    assert [w.id for w in warnings] == ["long_time_task.W011"] and "'q-direct'" in warnings[0].msg
    # Celery's dict form of task_queues, without an exchange type: direct, Celery's default.
    settings.CELERY_TASK_QUEUES = {"q-dict": {"queue_arguments": {"x-queue-type": "quorum"}}}
    assert [w.id for w in check_quorum_queues()] == ["long_time_task.W011"]


def test_the_demo_on_quorum_queues_is_warned_that_report_generation_no_longer_overtakes(
    monkeypatch: Any, settings: Any
) -> None:
    from long_time_task.checks import check_quorum_queues

    demo = demo_settings(
        monkeypatch, CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//", CELERY_QUEUE_TYPE="quorum"
    )
    settings.CELERY_TASK_QUEUES = demo["CELERY_TASK_QUEUES"]
    warnings = {w.msg.split("'")[1]: w for w in check_quorum_queues()}
    assert {w.id for w in warnings.values()} == {"long_time_task.W010"}  # topic exchanges: no W011
    assert "7: report_generation" in warnings["default"].msg  # its priority 7 is above the others' 5


# ------------------------------------------------------------------ a real worker on quorum queues


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}")
    return result.stdout


@pytest.fixture
def vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test's own (guest may use it), deleted at the end with every queue in it."""
    from tests.conftest import require_rabbitmq, unavailable

    base = require_rabbitmq()  # fails under CI=true, skips elsewhere, when RabbitMQ does not answer
    if shutil.which("rabbitmqctl") is None:
        unavailable(["rabbitmqctl (to create a RabbitMQ vhost of the test's own)"])
    name = f"ltt_quorum_test_{os.getpid()}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120)  # a crashed run's
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        parts = urlsplit(base)
        yield f"{parts.scheme}://{parts.netloc}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def quorum_app(vhost: str, settings: Any, monkeypatch: Any) -> Iterator[Celery]:
    """This process publishes as a worker of the quorum deployment would: the demo's queue declarations under
    CELERY_QUEUE_TYPE=quorum, on the test's vhost, through a Celery app of its own made current for the test."""
    demo = demo_settings(
        monkeypatch,
        CELERY_BROKER_URL=vhost,
        CELERY_QUEUE_TYPE="quorum",
        CELERY_QUEUE_DELIVERY_LIMIT=str(DELIVERY_LIMIT),
    )
    settings.CELERY_BROKER_URL = vhost
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    first = demo["CELERY_TASK_QUEUES"][0]
    operate = Queue(
        "operate", Exchange("operate", type="topic"), routing_key="operate", queue_arguments=first.queue_arguments
    )
    settings.CELERY_TASK_QUEUES = (*demo["CELERY_TASK_QUEUES"], operate)  # as tests/settings.py adds it
    for name, value in BOUNDS.items():  # the rows are written with the bounds the worker and beat run with
        setattr(settings, name, value)
    from demo.celery import app as demo_app

    app = Celery("quorum-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.set_current()
    try:
        yield app
    finally:
        demo_app.set_current()
        app.close()


def message_count(url: str, queue: str) -> int:
    with Connection(url, connect_timeout=5) as connection:
        channel: Any = connection.channel()
        return int(channel.queue_declare(queue=queue, passive=True).message_count)


def deliveries_until_dropped(url: str, queue: Queue, limit: int) -> list[int]:
    """Take the queue's one message without acknowledging it and drop the connection (a consumer that dies), again
    and again until the broker has no message left. Returns each delivery's x-delivery-count."""
    counts: list[int] = []
    for _ in range(limit + 5):  # more than the broker should ever allow
        with Connection(url, connect_timeout=5) as connection:
            channel: Any = connection.channel()

            def take(channel: Any = channel) -> Any:
                message = channel.basic_get(queue.name, no_ack=False)
                if message is not None:
                    return message
                return "gone" if channel.queue_declare(queue=queue.name, passive=True).message_count == 0 else None

            message = wait_for(take, timeout=10, what="the message back in the queue, or gone")
            if message == "gone":
                return counts
            counts.append(int((message.properties.get("application_headers") or {}).get("x-delivery-count") or 0))
            # No ack: closing the connection returns the message to the queue, as a consumer's death does.
    raise AssertionError(f"still delivered after {len(counts)} deliveries: {counts}")


def test_rabbitmq_3_refuses_x_max_priority_on_a_quorum_queue_and_delivers_in_order_of_arrival(vhost: str) -> None:
    """Why the demo drops x-max-priority for quorum queues, and what a task's priority is worth there (RabbitMQ 3.x;
    4.0 added some priority support to quorum queues)."""
    from amqp.exceptions import PreconditionFailed
    from kombu import Producer

    with Connection(vhost, connect_timeout=5) as connection:
        connection.connect()
        version = str(connection.connection.server_properties.get("version", ""))
        if not version.startswith("3."):
            pytest.skip(f"RabbitMQ {version}: quorum queues have priorities from 4.0")
        with pytest.raises(PreconditionFailed, match="invalid arg 'x-max-priority'"):
            Queue("q-max-priority", queue_arguments={"x-queue-type": "quorum", "x-max-priority": 10}).bind(
                connection.channel()
            ).declare()
        queues = {
            "quorum": quorum_queue("q-order"),
            "classic": Queue(
                "q-classic", Exchange("q-classic"), routing_key="q-classic", queue_arguments={"x-max-priority": 10}
            ),
        }
        order = {}
        for kind, queue in queues.items():
            producer = Producer(connection.channel())
            for priority in (1, 1, 10, 10, 5):  # all in the queue before the first get
                producer.publish({"p": priority}, exchange=queue.exchange, routing_key=queue.routing_key,
                                 declare=[queue], priority=priority, serializer="json")  # fmt: skip
            channel: Any = connection.channel()

            def all_five(channel: Any = channel, name: str = queue.name) -> bool:
                return bool(channel.queue_declare(queue=name, passive=True).message_count == 5)

            wait_for(all_five, timeout=10, what=f"the five messages in the {kind} queue")
            got = [channel.basic_get(queue.name, no_ack=True) for _ in range(5)]
            order[kind] = [message.properties["priority"] for message in got]
    assert order == {"quorum": [1, 1, 10, 10, 5], "classic": [10, 10, 5, 1, 1]}


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_quorum_queues(worker_database: str, quorum_app: Celery, vhost: str, tmp_path: Path) -> None:
    env = worker_env(
        worker_database,
        **BOUNDS,
        CELERY_BROKER_URL=vhost,  # for demo/settings.py's queue declarations
        LTT_TEST_WORKER_BROKER_URL=vhost,  # for tests/settings.py's broker
        CELERY_QUEUE_TYPE="quorum",
        CELERY_QUEUE_DELIVERY_LIMIT=DELIVERY_LIMIT,
    )
    default = next(q for q in django_settings.CELERY_TASK_QUEUES if q.name == "default")
    # Every queue of CELERY_TASK_QUEUES declared before a worker starts, as docs/deployment.md asks: each worker binds
    # all of them to Celery's delayed-delivery exchange, and a queue nobody declared yet fails its binding (here
    # "operate", which this worker does not read; Celery then logs "Native delayed delivery will not be available").
    with Connection(vhost, connect_timeout=5) as connection:
        for queue in django_settings.CELERY_TASK_QUEUES:
            queue.bind(connection.default_channel).declare()  # with the arguments the worker declares them with

    # 1. A poison message, before any worker runs: its consumer dies before acknowledging it, every time.
    dropped = services.submit_task("fault_work", {"seconds": 0.2})
    wait_for(lambda: message_count(vhost, "default") == 1, timeout=10, what="the message in the queue")
    counts = deliveries_until_dropped(vhost, default, DELIVERY_LIMIT)
    # Delivered once, then redelivered DELIVERY_LIMIT times (x-delivery-count 1..limit), then dropped.
    assert counts == list(range(DELIVERY_LIMIT + 1)), counts
    assert rows([dropped.id])[0].state == TaskState.PENDING  # the row still waits: the sweeper publishes it again

    processes: list[WorkerProcess] = []
    try:
        worker = WorkerProcess(
            queues=",".join(QUEUES), concurrency=2, name="quorum", log_path=tmp_path / "worker.log", env=env
        )
        processes.append(worker)
        worker.start()
        beat = BeatProcess(queues="", concurrency=0, name="beat", log_path=tmp_path / "beat.log", env=env)
        processes.append(beat)
        beat.start()

        # 2. What the worker declared: quorum queues with the delivery limit, and no x-max-priority.
        listed = rabbitmqctl("list_queues", "-p", vhost.rsplit("/", 1)[1], "name", "type", "arguments")
        declared = {line.split("\t")[0]: line.split("\t")[1:] for line in listed.splitlines() if "\t" in line}
        for name in QUEUES:
            kind, arguments = declared[name]
            assert kind == "quorum", (name, kind)
            assert f'{{"x-delivery-limit",{DELIVERY_LIMIT}}}' in arguments and "x-max-priority" not in arguments
        assert "Global QoS is disabled" in worker.output()  # Celery saw the quorum queues (per-consumer prefetch)
        assert "delayed delivery will not be available" not in worker.output()

        # 3. Tasks submitted from this process: plain ones, a retry, a countdown, and a task that kills its worker.
        started = time.monotonic()
        plain = [services.submit_task("fault_work", {"seconds": 0.2}).id for _ in range(6)]
        flaky = services.submit_task("test_flaky", {"failures": 2}).id  # fails twice (retry_delay 1 s), then succeeds
        later = services.submit_task("test_echo", {"n": 1}, countdown=2).id
        poison = services.submit_task("fault_kill_worker", {}).id
        ids = [dropped.id, *plain, flaky, later, poison]
        outcome = judge("quorum queues (RabbitMQ 3.10)", ids, "1 message dropped by the delivery limit; 3 children "
                        "killed by a poison task", settle(ids, started))  # fmt: skip
        assert (outcome.lost, outcome.stuck, outcome.duplicated) == (0, 0, 0), outcome
        assert outcome.states == {TaskState.FAILED: 1, TaskState.FINISHED: len(ids) - 1}, outcome

        # The retries: attempts 2 and 3 came through Celery's native delayed delivery (a routing key with the delay's
        # bits), twice through the same delay queues without being dropped as a dead-letter cycle (each attempt is a
        # new message, with none of the x-death headers of celery/celery#9867).
        task = LongTimeTask.objects.get(id=flaky)
        assert (task.state, task.attempts) == (TaskState.FINISHED, 3)
        for run in HandlerRun.objects.filter(task_id=flaky, attempt__gt=1):
            bits, _, target = run.routing_key.rpartition(".")
            assert target == "default" and len(bits.split(".")) == 28 and set(bits.split(".")) <= {"0", "1"}, run
        # The countdown: not started before its time.
        task = LongTimeTask.objects.get(id=later)
        assert task.state == TaskState.FINISHED and task.start_at is not None and task.start_at >= task.run_after
        # The poison task: one run per attempt, then FAILED; nothing loops.
        task = LongTimeTask.objects.get(id=poison)
        assert (task.state, task.error_code, task.attempts) == (TaskState.FAILED, "worker_lost", 3)
        assert sorted(HandlerRun.objects.filter(task_id=poison).values_list("attempt", flat=True)) == [1, 2, 3]
        # The dropped message's row: published again by the sweeper, run once.
        assert list(HandlerRun.objects.filter(task_id=dropped.id).values_list("attempt", flat=True)) == [1]

        # Nothing is left in the task queues (beat keeps sending to "maintenance"): no message goes round and round.
        assert [message_count(vhost, name) for name in ("default", "heavy", "priority")] == [0, 0, 0]
    finally:
        for process in reversed(processes):
            process.stop()

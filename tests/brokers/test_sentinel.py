"""Redis behind Sentinel: the master is killed (SIGKILL) under a steady submit load, the Sentinels promote its replica,
and every task still reaches exactly one terminal state.

The broker is a master, one replica and three Sentinels of the test's own (tests/brokers/sentinel.py), the worker and
beat real processes, the submits this process's own, through the same ``sentinel://`` URL. While no master answers, a
submit gives up on its publish within the bound and leaves its row PENDING; the sweeper publishes it once the replica
is the master. Judged as the fault suite judges (tests/faults/conftest.py), and reported with it in docs/reliability.md.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import current_app
from django.core.cache import cache

from long_time_task import services
from long_time_task.dashboard.overview import queue_depths
from long_time_task.metrics.collector import read_queue_lengths
from long_time_task.models import TaskState
from long_time_task.observability.health import broker_answers
from tests.faults.conftest import judge, rows, settle
from tests.testapp.models import HandlerRun
from tests.workers import wait_for

from .sentinel import MASTER_NAME, SentinelSet, client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services, pytest.mark.once]

INTERVAL = 0.1  # seconds between submits: a steady 10 a second
BEFORE_KILL, AFTER_PROMOTION = 15, 15  # submits before the kill and after the promotion, plus every one in between
SUBMIT_BOUND = 5.0  # seconds a submit may take while the master is gone (connect timeout 2 s, publish budget 2 s)
# A frozen master (or a host cut off) resets nothing: the publish waits for its reply until the socket timeout (10 s),
# then goes to the new master; the publish budget is for the retries after that.
FROZEN_SUBMIT_BOUND = 10 + 2 + 1
PROMOTION_BOUND = 20.0  # seconds from the kill until the Sentinels name the replica (down-after 1 s, quorum 2)
TASK_SECONDS = 0.2


class Restarter(threading.Thread):
    """What systemd's ``Restart=always`` and Supervisor's ``autorestart`` do: a worker that exits is started again.
    kombu's Sentinel channel sometimes dies on the lost connection itself ("Unrecoverable error: AttributeError:
    'NoneType' object has no attribute 'hostname'", in ``_connparams`` while Celery closes the broken connection),
    and the worker exits: counted, and reported with the figures."""

    def __init__(self, worker: Any) -> None:
        super().__init__(name="worker-restarter", daemon=True)
        self.worker, self.restarts = worker, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            if self.worker.process.poll() is not None:
                self.worker.log.close()
                self.restarts += 1
                self.worker.log_path = self.worker.log_path.with_name(f"worker-restart{self.restarts}.log")
                self.worker.start()


class PromotionWatch(threading.Thread):
    """Polls the Sentinels (``SENTINEL get-master-addr-by-name``) until a majority names the replica."""

    def __init__(self, brokers: SentinelSet) -> None:
        super().__init__(name="sentinel-promotion-watch", daemon=True)
        self.brokers = brokers
        self.promoted_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.promoted_at = self.brokers.wait_for_promotion(timeout=PROMOTION_BOUND)
        except BaseException as exc:  # reported by the test, in its own thread
            self.error = exc


class Load:
    """Submits ``fault_work`` tasks at a steady pace, timing each submit and noting those whose publish failed."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.ids: list[int] = []
        self.slowest = 0.0
        self.unpublished: list[int] = []  # submits whose publish the broker refused: left PENDING for the sweeper
        self.next_at = time.monotonic()

    def submit(self) -> int:
        time.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at = max(self.next_at + INTERVAL, time.monotonic())
        refused = len(self.refusals())
        started = time.monotonic()
        task_id = services.submit_task("fault_work", {"seconds": TASK_SECONDS}).id
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.ids.append(task_id)
        if len(self.refusals()) > refused:
            self.unpublished.append(task_id)
            row = rows([task_id])[0]
            # The submit succeeded all the same: the row waits, due for the next sweep.
            assert row.state == TaskState.PENDING and row.redispatch_at is not None, row
        return task_id

    def refusals(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.getMessage().startswith("Could not publish task")]


def first_run_after(ids: list[int], since: datetime) -> float | None:
    """Seconds from ``since`` to the first handler run of one of ``ids`` (tasks submitted after it: their messages
    were fetched from the new master)."""
    run = HandlerRun.objects.filter(task_id__in=ids).order_by("at").first()
    return None if run is None else round((run.at - since).total_seconds(), 1)


FAULTS = {
    # A crash: the port closes at once, every connection is reset.
    "killed": (signal.SIGKILL, "master SIGKILLed", SUBMIT_BOUND),
    # A freeze: connections stay open and nothing answers, as when the master's host is cut off by the network.
    "frozen": (signal.SIGSTOP, "master frozen (SIGSTOP, as a host cut off)", FROZEN_SUBMIT_BOUND),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_master_lost_under_load_fails_over_to_the_replica(sentinel_cluster, sentinel_broker, caplog, fault):
    sig, what, submit_bound = FAULTS[fault]
    caplog.set_level(logging.ERROR, logger="long_time_task.dispatch")
    restarter = Restarter(sentinel_cluster.worker(concurrency=2))
    sentinel_cluster.beat()
    restarter.start()
    load = Load(caplog)
    before = [load.submit() for _ in range(BEFORE_KILL)]
    wait_for(lambda: HandlerRun.objects.filter(task_id__in=before).exists(), timeout=30,
             what="the worker to consume from the master")  # fmt: skip
    assert load.unpublished == [], "a publish failed before the master was lost"

    assert sentinel_broker.master is not None
    lost_at, lost_wall = time.monotonic(), datetime.now(UTC)
    sentinel_broker.master.kill(sig)
    watch = PromotionWatch(sentinel_broker)
    watch.start()
    during = []
    while watch.is_alive():  # keep submitting while there is no master
        during.append(load.submit())
    assert watch.error is None and watch.promoted_at is not None, watch.error
    promotion = round(watch.promoted_at - lost_at, 1)
    after = [load.submit() for _ in range(AFTER_PROMOTION)]

    all_terminal = settle(load.ids, lost_at)
    restarter.done.set()
    restarter.join(timeout=90)
    consuming_again = first_run_after(during + after, lost_wall)
    faults = (
        f"{what} under load; replica promoted after {promotion} s; {len(during)} submits during the failover "
        f"(slowest submit {load.slowest:.1f} s), {len(load.unpublished)} publishes left to the sweeper; the worker "
        f"ran a new task {consuming_again} s after the fault"
        + (
            f" (restarted {restarter.restarts}x after kombu's crash on the lost connection)"
            if restarter.restarts
            else ""
        )
    )
    outcome = judge(f"Redis Sentinel: {what}, replica promoted", load.ids, faults, all_terminal)

    assert (outcome.lost, outcome.stuck, outcome.duplicated) == (0, 0, 0), outcome
    assert outcome.states == {TaskState.FINISHED: len(load.ids)}, outcome
    assert load.slowest < submit_bound, load.slowest  # no submit hung on the lost master
    assert during, "no submit happened while the Sentinels were failing over"
    if sig == signal.SIGKILL:
        assert load.unpublished, "no publish failed while there was no master: the failover was not exercised"
    # Every row whose publish failed was published by the sweeper, once the replica was the master.
    assert all(task.dispatch_count >= 1 for task in rows(load.unpublished))


def test_every_door_to_the_broker_works_through_the_sentinels(worker_database, sentinel_settings, caplog):
    """The publish, /readyz's broker check, the /metrics queue lengths and the dashboard's queue depths, on a
    ``sentinel://`` URL: before the master dies, while no master answers (each fails fast, none hangs), and after
    the promotion. Messages the replica had acknowledged survive the failover."""
    brokers = sentinel_settings  # worker_database: PostgreSQL and Redis are required, as for the fault suite
    ids = [services.submit_task("fault_work", {"seconds": 0.1}).id for _ in range(3)]  # no worker: they wait
    assert not [r for r in caplog.records if r.getMessage().startswith("Could not publish task")]
    broker_answers()
    assert read_queue_lengths(["default", "heavy"], timeout=5) == {"default": 3, "heavy": 0}
    assert {d.name: d.depth for d in queue_depths()}["default"] == 3
    with current_app.connection_for_write() as connection:  # the options reach kombu's channel and redis-py
        channel: Any = connection.default_channel
        assert (channel.master_name, channel.sep, channel.priority_steps) == (MASTER_NAME, ":", list(range(10)))
        pool = channel.client.connection_pool
        assert (pool.service_name, pool.connection_kwargs["socket_timeout"]) == (MASTER_NAME, 10)
        sentinel_pool = pool.sentinel_manager.sentinels[0].connection_pool
        assert sentinel_pool.connection_kwargs["socket_connect_timeout"] == 2  # the Sentinels' connections too
    with client(brokers.master_port) as master:
        assert master.wait(1, 5000) == 1  # the replica has every message: asynchronous replication, made sure

    assert brokers.master is not None
    brokers.master.kill()
    cache.clear()  # the dashboard's cached depths
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017, PT011 - refused, or no master found: whatever kombu says
        broker_answers()
    with pytest.raises(Exception):  # noqa: B017, PT011
        read_queue_lengths(["default"], timeout=2)
    assert {d.name: d.depth for d in queue_depths()}["default"] is None  # "unknown", not an error page
    pending = services.submit_task("fault_work", {"seconds": 0.1})
    assert rows([pending.id])[0].state == TaskState.PENDING
    assert time.monotonic() - started < SUBMIT_BOUND  # all four together: nothing waited on the dead master

    brokers.wait_for_promotion(timeout=PROMOTION_BOUND)
    cache.clear()
    broker_answers()
    assert read_queue_lengths(["default"], timeout=5) == {"default": 3}  # the publish that failed is the sweeper's
    assert {d.name: d.depth for d in queue_depths()}["default"] == 3
    assert services.submit_task("fault_work", {"seconds": 0.1}).id > max(ids)
    assert read_queue_lengths(["default"], timeout=5) == {"default": 4}

"""The system spread over hosts, under the faults that only a network makes (``make test-hosts``).

Each test builds its hosts (``network.py``: network namespaces joined by veth links to the root namespace, which
holds PostgreSQL and Redis): a web host running gunicorn, and worker hosts each consuming some of the queues, so
that every queue has consumers on two hosts. Then it submits, injects a fault, and judges from the database with
the fault suite's judge (tests/faults/conftest.py): lost, stuck, duplicated, and the time to recover, which
``make reliability`` writes to docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Q

from long_time_task import services
from long_time_task.models import ApiToken, LongTimeTask, TaskAttempt, TaskState
from long_time_task.models.querysets import database_now
from long_time_task.schedules.service import create_schedule
from tests.faults.conftest import assert_clean, judge, rows, settle
from tests.testapp.models import HandlerRun
from tests.workers import wait_for

from .network import Host, Network

pytestmark = pytest.mark.django_db(transaction=True)

# Every queue on two hosts: any one host may go without stranding a queue. w3 is also the "ops" host (beat).
LAYOUT = {
    "w1": "default,heavy",
    "w2": "default,priority,maintenance",
    "w3": "heavy,priority,maintenance",
}


def fleet(network: Network, *, web: bool = False, **env: Any) -> dict[str, Host]:
    hosts = {name: network.host(name) for name in LAYOUT}
    for name, queues in LAYOUT.items():
        hosts[name].worker(queues, **env)
    hosts["w3"].beat()
    if web:
        hosts["web"] = network.host("web")
    return hosts


def api(base: str, token: str, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - http, to the test's own hosts
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the test's own hosts
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def submit(n: int, seconds: float, *, ticks: Path | None = None) -> list[int]:
    params: dict[str, Any] = {"seconds": seconds}
    if ticks is not None:
        params["ticks"] = str(ticks)
    return [services.submit_task("host_work", params).id for _ in range(n)]


def running_on(ids: list[int], host: str, at_least: int) -> list[LongTimeTask]:
    def found() -> list[LongTimeTask] | None:
        running = [t for t in rows(ids) if t.state == TaskState.RUNNING and t.worker.startswith(f"{host}@")]
        return running if len(running) >= at_least else None

    return wait_for(found, timeout=60, what=f"{at_least} tasks running on {host}")


def worker_host(worker: str) -> str:
    return worker.split("@", 1)[0]


def test_each_queue_runs_only_on_the_hosts_that_consume_it(network, user):
    hosts = fleet(network, web=True)
    base = hosts["web"].web()
    _, token = ApiToken.issue(user)
    ids = []
    for task_type in ("host_work", "host_work_heavy", "host_work_priority") * 4:
        status, body = api(base, token, "POST", "/api/tasks/", {"task_type": task_type, "params": {"seconds": 0.3}})
        assert status == 201, body
        ids.append(body["task_id"])
    started = time.monotonic()
    outcome = judge("per-queue routing across 3 worker hosts (no fault)", ids, "none", settle(ids, started))
    assert_clean(outcome, finished=len(ids))
    ran_on: dict[str, set[str]] = {}
    for task in rows(ids):
        ran_on.setdefault(task.queue, set()).add(worker_host(task.worker))
    for queue, names in ran_on.items():
        consumers = {name for name, queues in LAYOUT.items() if queue in queues.split(",")}
        assert names <= consumers, (queue, names, consumers)
    # The API reads back what the hosts wrote.
    status, body = api(base, token, "GET", f"/api/tasks/{ids[0]}/")
    assert status == 200 and body["task"]["state"] == TaskState.FINISHED, body


# ------------------------------------------------------------------ a worker host cut off from the network


def ready_to_cut(ids: list[int], host: str, ticks: Path, at_least: int) -> list[LongTimeTask]:
    """``at_least`` tasks running on ``host`` whose handlers have started (their run recorded, ticking)."""

    def found() -> list[LongTimeTask] | None:
        running = [t for t in rows(ids) if t.state == TaskState.RUNNING and t.worker.startswith(f"{host}@")]
        started = [
            t
            for t in running
            if (run := HandlerRun.objects.filter(task_id=t.id, attempt=t.attempts).first()) is not None
            and (ticks / str(run.id)).exists()
        ]
        return started if len(started) >= at_least else None

    return wait_for(found, timeout=60, what=f"{at_least} started tasks on {host}")


def moved_on(tasks: list[LongTimeTask]) -> bool:
    return all(t.attempts > before.attempts or t.is_terminal for t, before in zip(rows_of(tasks), tasks, strict=True))


def rows_of(tasks: list[LongTimeTask]) -> list[LongTimeTask]:
    found = {t.id: t for t in rows([t.id for t in tasks])}
    return [found[t.id] for t in tasks]


def last_tick(ticks: Path, run: HandlerRun) -> float:
    return float((ticks / str(run.id)).read_text().split()[-1])


def stopped_ticking(ticks: Path, runs: list[HandlerRun], quiet: float = 0.5) -> bool:
    return all(time.time() - last_tick(ticks, run) > quiet for run in runs)


def cut_off_runs(tasks: list[LongTimeTask]) -> list[HandlerRun]:
    return [HandlerRun.objects.get(task_id=t.id, attempt=t.attempts) for t in tasks]


def assert_recovered_by_the_lease(tasks: list[LongTimeTask], host: str) -> None:
    """Each attempt cut off on ``host`` is in the history as handed back by the reaper, and the task ended once,
    FINISHED by a later attempt on another host."""
    for before, after in zip(tasks, rows_of(tasks), strict=True):
        assert after.state == TaskState.FINISHED and after.attempts > before.attempts, after
        assert worker_host(after.worker) != host
        history = TaskAttempt.objects.get(task_id=after.id, number=before.attempts)
        assert (history.outcome, history.cause, worker_host(history.worker)) == ("retry", "lease_expired", host)


@dataclass
class Partition:
    hosts: dict[str, Host]
    ids: list[int]
    cut_off: list[LongTimeTask]  # as they were when w1's link went down
    runs: list[HandlerRun]  # their attempts' runs on w1
    ticks: Path
    cut_at: float


def partition(network: Network, tmp_path: Path, *, tasks: int, seconds: float, **w1_env: Any) -> Partition:
    """The fleet; ``tasks`` tasks of ``seconds`` each; w1's link down once two of them run there; back up once each
    of those has been handed to another host."""
    hosts = {name: network.host(name) for name in LAYOUT}
    for name, queues in LAYOUT.items():
        hosts[name].worker(queues, **(w1_env if name == "w1" else {}))
    hosts["w3"].beat()
    ticks = tmp_path / "ticks"
    ticks.mkdir()
    ids = submit(tasks, seconds=seconds, ticks=ticks)
    cut_off = ready_to_cut(ids, "w1", ticks, at_least=2)
    runs = cut_off_runs(cut_off)
    hosts["w1"].cut()
    cut_at = time.monotonic()
    # Once their leases run out, the reaper (on w2 or w3, which still reach the database) hands them back.
    wait_for(lambda: moved_on(cut_off), timeout=60, what="the cut-off tasks to be retried elsewhere")
    return Partition(hosts, ids, cut_off, runs, ticks, cut_at)


def test_a_partitioned_worker_host_is_fenced_and_its_tasks_run_elsewhere(network, tmp_path):
    # Unable to renew, w1 kills its attempts at two thirds of the lease, before the leases run out.
    cut = partition(network, tmp_path, tasks=6, seconds=6)
    cut.hosts["w1"].restore()
    fault_end = time.monotonic()
    faults = f"w1's link down {fault_end - cut.cut_at:.1f} s, {len(cut.cut_off)} tasks running on it"
    outcome = judge("worker host cut off mid-task (link down), lease fence on", cut.ids, faults,
                    settle(cut.ids, fault_end))  # fmt: skip
    assert_clean(outcome, finished=len(cut.ids))
    assert_recovered_by_the_lease(cut.cut_off, "w1")
    # Never two attempts at once: each cut-off attempt's last sign of life came before its retry started.
    for run, task in zip(cut.runs, rows_of(cut.cut_off), strict=True):
        retry = HandlerRun.objects.filter(task_id=task.id, attempt__gt=run.attempt).order_by("at").first()
        assert retry is not None
        assert last_tick(cut.ticks, run) < retry.at.timestamp(), (task.id, last_tick(cut.ticks, run), retry.at)
    assert cut.hosts["w1"].processes[0].output().count("Lease fence:") >= len(cut.cut_off)


def test_without_the_fence_a_partitioned_host_runs_on_and_its_late_finish_loses(network, tmp_path):
    cut = partition(network, tmp_path, tasks=4, seconds=8, LONG_TIME_TASK_LEASE_FENCE="false")
    hosts, ids, cut_off, runs, ticks, cut_at = cut.hosts, cut.ids, cut.cut_off, cut.runs, cut.ticks, cut.cut_at
    # w1's handlers run to their end, cut off; their finishes wait for the network.
    wait_for(lambda: stopped_ticking(ticks, runs), timeout=60, what="w1's handlers to end")
    hosts["w1"].restore()
    fault_end = time.monotonic()
    faults = f"w1's link down {fault_end - cut_at:.1f} s, {len(cut_off)} tasks running on it, fence off"
    outcome = judge("worker host cut off mid-task, lease fence off", ids, faults, settle(ids, fault_end))
    # Still exactly one outcome each, and nothing lost or stuck; but each cut-off attempt ran on while its retry
    # ran elsewhere: the overlaps counted as duplicated are what the fence prevents.
    assert (outcome.lost, outcome.stuck) == (0, 0), outcome
    assert outcome.states == {TaskState.FINISHED: len(ids)}
    assert outcome.duplicated == len(cut_off), outcome
    assert_recovered_by_the_lease(cut_off, "w1")
    # The late finishes reached the database once the link was back, and lost the guard.
    log = hosts["w1"].processes[0]
    wait_for(
        lambda: log.output().count("its row had already left RUNNING; result dropped") >= len(cut_off),
        timeout=60,
        what="w1's late finishes to be refused",
    )
    for task in rows_of(cut_off):  # the history holds the attempts before the last, and nothing the late one wrote
        history = TaskAttempt.objects.filter(task_id=task.id)
        assert [(a.number, a.outcome, worker_host(a.worker)) for a in history] == [(1, "retry", "w1")], task.id


# ------------------------------------------------------------------ a worker host lost


def test_a_killed_worker_host_loses_nothing(network):
    hosts = fleet(network)
    ids = submit(8, seconds=3)
    lost = running_on(ids, "w1", at_least=2)
    hosts["w1"].kill()
    fault_end = time.monotonic()
    faults = f"w1 killed (link down, all its processes SIGKILL), {len(lost)} tasks running on it"
    outcome = judge("worker host killed", ids, faults, settle(ids, fault_end))
    assert_clean(outcome, finished=len(ids))
    assert_recovered_by_the_lease(lost, "w1")


# ------------------------------------------------------------------ clocks


def test_a_clock_30_seconds_off_changes_nothing(network, settings, user):
    """Time limits, leases and redispatch times are the database's clock: a worker 30 s behind and a maintenance
    host (reaper and sweeper) 30 s ahead see the same times as everyone else."""
    # A waiting row is due for the sweeper 20 s after its submit: by a clock 30 s ahead, at once.
    settings.LONG_TIME_TASK_REDISPATCH_AFTER = 20
    behind, ahead, exact = network.host("w1", clock=-30), network.host("w2", clock=30), network.host("w3")
    ops = network.host("ops", clock=30)
    behind.worker("default")
    ahead.worker("default")
    ops.worker("maintenance", concurrency=1)  # the reaper, the sweeper and the scheduler's tick, every second
    exact.beat()
    # The sweeper, 30 s ahead, republishes nothing that waits less than its redispatch time: 16 tasks of 1 s on
    # 4 processes, the last waiting 3 s.
    first = submit(16, seconds=1)
    outcome = judge("clocks 30 s off: normal load", first, "w1 30 s behind; w2, and ops (reaper, sweeper, scheduler) "
                    "30 s ahead", settle(first, time.monotonic()))  # fmt: skip
    assert_clean(outcome, finished=len(first))
    assert [t.dispatch_count for t in rows(first)] == [0] * len(first)
    assert not LongTimeTask.objects.filter(id__in=first, attempts__gt=1).exists()
    # The clocks were off: each handler's record of its start (its host's clock) against the claim (the database's).
    skew = {worker_host(t.worker): (HandlerRun.objects.get(task_id=t.id).at - t.start_at).total_seconds()
            for t in rows(first)}  # fmt: skip
    assert 25 < skew["w2"] < 35 and -35 < skew["w1"] < -25, skew
    # The scheduler's tick (on ops, 30 s ahead): a one-off schedule 5 s ahead runs at its time, not at once.
    run_at = database_now() + timedelta(seconds=5)
    create_schedule(user=user, name="skew", task_type="fault_work", params={"seconds": 0.1}, run_at=run_at)
    scheduled = wait_for(lambda: LongTimeTask.objects.filter(schedule__name="skew", state=TaskState.FINISHED).first(),
                         timeout=60, what="the scheduled run")  # fmt: skip
    assert scheduled.scheduled_for == run_at and scheduled.start_at >= run_at, (scheduled.start_at, run_at)
    # A worker 30 s behind dies with its tasks: the reaper, 30 s ahead, must retry them. fault_work's time limit is
    # 30 s: by the reaper's own clock, a task claimed a few seconds ago has run 30 s longer, past it.
    second = [services.submit_task("fault_work", {"seconds": 3}).id for _ in range(4)]
    victims = running_on(second, "w1", at_least=2)
    worker = behind.processes[0]
    assert worker.process is not None
    os.killpg(worker.process.pid, signal.SIGKILL)
    fault_end = time.monotonic()
    outcome = judge("clocks 30 s off: the worker behind killed", second, "w1 (30 s behind) killed with 2 tasks",
                    settle(second, fault_end))  # fmt: skip
    assert_clean(outcome, finished=len(second))
    assert_recovered_by_the_lease(victims, "w1")
    everything = rows(first + second)
    assert all(t.finish_at is not None and t.start_at is not None and t.finish_at >= t.start_at for t in everything)
    assert not LongTimeTask.objects.filter(Q(id__in=first + second) & ~Q(error_code="")).exists()


# ------------------------------------------------------------------ the web host cut off from the broker


def test_a_web_host_cut_off_from_the_broker_loses_no_submit(network, user):
    hosts = fleet(network, web=True)
    base = hosts["web"].web()
    _, token = ApiToken.issue(user)
    body = {"task_type": "host_work", "params": {"seconds": 0.3}}
    status, answer = api(base, token, "POST", "/api/tasks/", body)  # the web process now holds a broker connection
    assert status == 201, answer
    ids = [answer["task_id"]]
    settle(ids, time.monotonic())
    hosts["web"].cut_broker()
    slowest = 0.0
    try:
        for _ in range(10):
            started = time.monotonic()
            status, answer = api(base, token, "POST", "/api/tasks/", body)
            slowest = max(slowest, time.monotonic() - started)
            assert status == 201, answer
            ids.append(answer["task_id"])
        # Committed, whatever the broker: the sweeper (on w2 and w3, which reach the broker) publishes them.
        assert len(rows(ids)) == len(ids)
    finally:
        hosts["web"].restore_broker()
    fault_end = time.monotonic()
    faults = f"web's route to Redis blackholed for 10 submits (slowest submit {slowest:.1f} s)"
    outcome = judge("web host cut off from the broker during submits", ids, faults, settle(ids, fault_end))
    assert_clean(outcome, finished=len(ids))
    assert slowest < 15, slowest  # the broker's socket timeout (10 s) and the publish's retries bound a submit

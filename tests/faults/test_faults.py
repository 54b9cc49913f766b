"""Real faults against real worker processes, Redis and PostgreSQL.

Every scenario submits a batch under load, injects a fault, and then judges from the database: every task
reaches exactly one terminal state within the bound (none lost, none stuck), and the handler's own record
of its runs shows at most one run per claimed attempt (no duplicates). The figures go to
docs/reliability.md (``make reliability``).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.db.models import Count

from long_time_task import services
from long_time_task.models import ApiToken, LongTimeTask, TaskAttempt, TaskState
from tests.test_e2e_embedded import call
from tests.testapp.models import HandlerRun
from tests.workers import ROOT, WebServer, wait_for

from .conftest import (
    assert_clean,
    judge,
    kill,
    restart_postgres,
    rows,
    service_control_allowed,
    settle,
    start_redis,
    stop_redis,
)

pytestmark = pytest.mark.django_db(transaction=True)


def submit(n: int, seconds: float = 1.0, task_type: str = "fault_work") -> list[int]:
    return [services.submit_task(task_type, {"seconds": seconds}).id for _ in range(n)]


def running_runs(ids: list[int], at_least: int) -> list[HandlerRun]:
    """Wait until ``at_least`` tasks are RUNNING; return their handler runs (with the pids running them)."""

    def running() -> list[HandlerRun] | None:
        live = [t.id for t in rows(ids) if t.state == TaskState.RUNNING]
        found = list(HandlerRun.objects.filter(task_id__in=live).order_by("-id"))
        return found if len({r.task_id for r in found}) >= at_least else None

    return wait_for(running, timeout=30, what=f"{at_least} running tasks")


def moved_on(run: HandlerRun) -> bool:
    task = rows([run.task_id])[0]
    return task.attempts > run.attempt or task.is_terminal


def test_sigkill_of_a_worker_child_mid_task_is_recovered(cluster):
    cluster.worker(concurrency=2)
    cluster.beat()
    ids = submit(20, seconds=0.5)
    killed = 0
    for _ in range(3):  # three times, each time a child in the middle of a task
        run = running_runs(ids, at_least=1)[0]
        kill(run.pid)
        killed += 1
        wait_for(functools.partial(moved_on, run), timeout=30, what="the killed task to be recovered")
    fault_end = time.monotonic()
    outcome = judge("SIGKILL a worker child mid-task", ids, f"{killed} child processes killed", settle(ids, fault_end))
    assert_clean(outcome, finished=20)
    assert LongTimeTask.objects.filter(id__in=ids, attempts__gt=1).count() >= 1  # the killed ones ran again


def test_sigkill_of_the_whole_worker_is_recovered_by_the_lease(cluster):
    first = cluster.worker(concurrency=2)
    cluster.beat()
    ids = submit(12, seconds=1.0)
    running_runs(ids, at_least=2)
    assert first.process is not None
    os.killpg(first.process.pid, signal.SIGKILL)  # main process and children: nobody renews the leases
    fault_end = time.monotonic()
    cluster.worker(concurrency=2)
    outcome = judge("SIGKILL the whole worker, start another", ids, "1 worker (main + 2 children) killed",
                    settle(ids, fault_end))  # fmt: skip
    assert_clean(outcome, finished=12)
    recovered = LongTimeTask.objects.filter(id__in=ids, attempts__gt=1)
    assert recovered.count() >= 2 and all(t.error_code == "" for t in recovered)
    # Nobody saw the children die: the reaper recovered each lost attempt, and the history says so.
    lost = TaskAttempt.objects.filter(task__in=recovered)
    assert {(a.outcome, a.cause, a.worker.split("@")[0]) for a in lost} == {("retry", "lease_expired", first.name)}
    assert lost.count() == sum(t.attempts - 1 for t in recovered)


def test_hard_time_limit_fails_the_task_and_never_retries_it(cluster):
    cluster.worker(concurrency=2)
    cluster.beat()
    slow = submit(3, task_type="test_hard_timeout")
    normal = submit(10, seconds=0.2)
    ids = slow + normal
    outcome = judge("hard time limit", ids, "3 tasks killed by their 2 s hard limit", settle(ids, time.monotonic()))
    assert_clean(outcome, finished=10)
    for task in rows(slow):
        assert (task.state, task.error_code, task.attempts) == (TaskState.FAILED, "timeout", 1)


def test_broker_down_at_submit_then_back(cluster):
    cluster.worker(concurrency=2)
    cluster.beat()
    stop_redis()
    try:
        slowest = 0.0
        ids = []
        for _ in range(10):
            started = time.monotonic()
            ids.append(services.submit_task("fault_work", {"seconds": 0.2}).id)
            slowest = max(slowest, time.monotonic() - started)
        assert all(t.state == TaskState.PENDING for t in rows(ids))
        # A submit never hangs on a dead broker: it gives up after the connection timeout and a short retry.
        assert slowest < 5, slowest
    finally:
        start_redis()
    fault_end = time.monotonic()
    faults = f"Redis down for 10 submits (slowest submit {slowest:.1f} s)"
    outcome = judge("Redis stopped during submits, then started", ids, faults, settle(ids, fault_end))
    assert_clean(outcome, finished=10)


def test_redis_emptied_with_tasks_queued(cluster, broker):
    ids = submit(15, seconds=0.2)  # no worker yet: the messages wait in Redis
    queued = sum(broker.llen(key) for key in broker.keys("default*"))  # one list per priority level
    assert queued == len(ids)
    # Every queued message is gone. FLUSHALL where the services are ours to break, else our database only.
    command = "FLUSHALL" if service_control_allowed() else "FLUSHDB"
    broker.flushall() if command == "FLUSHALL" else broker.flushdb()
    fault_end = time.monotonic()
    cluster.worker(concurrency=2)
    cluster.beat()
    outcome = judge(f"Redis emptied ({command}) with tasks queued", ids, f"{len(ids)} queued messages deleted",
                    settle(ids, fault_end))  # fmt: skip
    assert_clean(outcome, finished=15)


def test_postgres_restart_mid_run(cluster, user, tmp_path):
    cluster.worker(concurrency=2)
    cluster.beat()
    _, token = ApiToken.issue(user)
    body = {"task_type": "fault_work", "params": {"seconds": 0.2}}
    with WebServer(cluster.env(), tmp_path / "web.log") as web:
        ids = submit(16, seconds=0.5)
        ids.append(call(web.port, token, "POST", "/api/tasks/", body)[1]["task_id"])  # the web process is connected
        running_runs(ids, at_least=2)
        restart_postgres()
        connection.close()  # this test process's own connection died with the restart
        # The web process replaces its broken connection on the next request (CONN_HEALTH_CHECKS).
        status, answer = call(web.port, token, "POST", "/api/tasks/", body)
        assert status == 201, answer
        ids.append(answer["task_id"])
    fault_end = time.monotonic()
    faults = "1 fast restart, under 2 workers and a web server"
    outcome = judge("PostgreSQL restarted mid-run", ids, faults, settle(ids, fault_end))
    assert_clean(outcome, finished=18)


def test_web_process_killed_between_commit_and_publish(cluster):
    # A web process commits three rows, then dies before its on-commit publish runs.
    script = (
        "import os\n"
        "from django.db import transaction\n"
        "from long_time_task import services\n"
        "with transaction.atomic():\n"
        "    transaction.on_commit(lambda: os._exit(0))  # runs first: right after COMMIT, before the publishes\n"
        "    ids = [services.submit_task('fault_work', {'seconds': 0.2}).id for _ in range(3)]\n"
        "    print(','.join(map(str, ids)), flush=True)\n"
    )
    env = cluster.env()
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ids = [int(i) for i in result.stdout.strip().splitlines()[-1].split(",")]
    fault_end = time.monotonic()
    assert [t.state for t in rows(ids)] == [TaskState.PENDING] * 3
    cluster.worker(concurrency=2)
    cluster.beat()
    outcome = judge("web process killed between commit and publish", ids, "1 web process exited after COMMIT",
                    settle(ids, fault_end))  # fmt: skip
    assert_clean(outcome, finished=3)


def test_duplicate_delivery_runs_each_attempt_once(cluster):
    # Redis redelivers any message unacknowledged for 1 s, while each task takes 3 s: every message is
    # delivered again, to the other worker, while its first delivery is still running.
    cluster.worker(concurrency=2, TEST_VISIBILITY_TIMEOUT=1)
    cluster.worker(concurrency=2, TEST_VISIBILITY_TIMEOUT=1)
    cluster.beat()
    ids = submit(6, seconds=3)
    outcome = judge("duplicate delivery (visibility timeout 1 s, runs 3 s, 2 workers)", ids,
                    "every message redelivered while running", settle(ids, time.monotonic()))  # fmt: skip
    assert_clean(outcome, finished=6)
    assert all(t.attempts == 1 for t in rows(ids))
    redelivered = sum(
        p.output().count("not claimed") for p in cluster.processes if p.name.startswith("fault")
    )  # the duplicates reached a worker, and lost the claim
    assert redelivered >= 1


def test_sigterm_lets_running_tasks_finish(cluster):
    worker = cluster.worker(concurrency=2)
    ids = submit(2, seconds=2)
    running_runs(ids, at_least=2)
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)  # a deploy: warm shutdown
    worker.process.wait(30)
    outcome = judge(
        "SIGTERM (warm shutdown) mid-task", ids, "1 worker stopped with SIGTERM", settle(ids, time.monotonic(), 1)
    )
    assert_clean(outcome, finished=2)
    assert all(t.attempts == 1 for t in rows(ids))


def test_a_task_that_kills_its_worker_every_time_fails_instead_of_looping(cluster):
    cluster.worker(concurrency=2)
    cluster.beat()
    poison = submit(1, task_type="fault_kill_worker")
    normal = submit(6, seconds=0.2)
    ids = poison + normal
    outcome = judge("poison task (kills its worker every attempt)", ids, "3 worker children killed by the task",
                    settle(ids, time.monotonic()))  # fmt: skip
    assert_clean(outcome, finished=6)
    task = rows(poison)[0]
    assert (task.state, task.error_code, task.attempts) == (TaskState.FAILED, "worker_lost", 3)
    assert "Worker lost" in task.error_message
    runs = HandlerRun.objects.filter(task_id=task.id).values("attempt").annotate(n=Count("id"))
    assert sorted((r["attempt"], r["n"]) for r in runs) == [(1, 1), (2, 1), (3, 1)]

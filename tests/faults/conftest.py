"""The fault-injection suite's harness: workers and beat with tight reliability bounds, service control,
and the figures that ``make reliability`` writes to docs/reliability.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Count

from long_time_task.models import TERMINAL_STATES, LongTimeTask, TaskState
from tests.testapp.models import HandlerRun
from tests.workers import ROOT, WorkerProcess, wait_for, worker_env

# Seconds. Tight, so that every recovery happens within a few seconds of a fault.
BOUNDS = {
    "LONG_TIME_TASK_LEASE_SECONDS": 3,
    "LONG_TIME_TASK_HEARTBEAT_INTERVAL": 0.5,
    "LONG_TIME_TASK_REAPER_INTERVAL": 1,
    "LONG_TIME_TASK_SWEEP_INTERVAL": 1,
    "LONG_TIME_TASK_REDISPATCH_AFTER": 4,
}
# A task reaches a terminal state within this many seconds of the end of the fault, or it counts as stuck.
SETTLE_BOUND = 60

RESULTS: list[dict[str, Any]] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "faults" in str(item.path):
            item.add_marker(pytest.mark.services)


def write_results() -> None:
    """The figures of every judged scenario (faults, hosts, brokers), for ``make reliability``; called at the end of
    the session by tests/conftest.py, whichever suites ran."""
    target = os.environ.get("LTT_RELIABILITY_RESULTS")
    if target and RESULTS:
        report = {"bounds": BOUNDS, "settle_bound": SETTLE_BOUND, "results": RESULTS}
        Path(target).write_text(json.dumps(report, indent=2))


def suite_of_current_test() -> str:
    """``faults``, ``hosts`` or ``brokers``: the directory of the test running now (pytest names it)."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    parts = current.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "faults"


@dataclass
class Outcome:
    suite: str
    scenario: str
    submitted: int
    faults: str
    lost: int
    stuck: int
    duplicated: int
    recover_seconds: float
    states: dict[str, int]


class BeatProcess(WorkerProcess):
    def start(self, ready_timeout: float = 60) -> BeatProcess:
        args = [*self.prefix, sys.executable, "-m", "celery", "-A", "demo", "beat", "-l", "INFO",
                "-s", str(self.log_path.with_suffix(".schedule"))]  # fmt: skip
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: b"beat: Starting" in self.log_path.read_bytes(), timeout=ready_timeout, what="beat")
        return self


class Cluster:
    def __init__(self, database: str, tmp_path: Path, broker: redis.Redis) -> None:
        self.database, self.tmp_path, self.broker = database, tmp_path, broker
        self.processes: list[WorkerProcess] = []

    def env(self, **extra: Any) -> dict[str, str]:
        return worker_env(self.database, **BOUNDS, **extra)

    def worker(
        self, *, concurrency: int = 2, queues: str = "default,heavy,priority,maintenance", **extra: Any
    ) -> WorkerProcess:
        n = len(self.processes)
        worker = WorkerProcess(
            queues=queues,
            concurrency=concurrency,
            name=f"fault{n}",
            log_path=self.tmp_path / f"worker{n}.log",
            env=self.env(**extra),
        )
        self.processes.append(worker)
        return worker.start()

    def beat(self) -> BeatProcess:
        beat = BeatProcess(queues="", concurrency=0, name="beat", log_path=self.tmp_path / "beat.log", env=self.env())
        self.processes.append(beat)
        return beat.start()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture
def cluster(worker_database: str, broker: redis.Redis, tmp_path: Path, settings: Any) -> Iterator[Cluster]:
    for name, value in BOUNDS.items():
        setattr(settings, name, value)  # the test process submits with the same bounds
    cluster = Cluster(worker_database, tmp_path, broker)
    try:
        yield cluster
    finally:
        cluster.stop()
        start_redis()  # whatever a scenario did to Redis, leave it running and empty
        broker.flushdb()


# ------------------------------------------------------------------ service control


def redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def service_control_allowed() -> bool:
    """Stopping Redis and restarting PostgreSQL is fine on CI's machine, not on a developer's laptop."""
    return bool(settings.CI or os.environ.get("LTT_FAULTS_CONTROL_SERVICES") == "1")


def require_service_control() -> None:
    if not service_control_allowed():
        pytest.skip("stops or restarts a shared service: runs under CI=true or LTT_FAULTS_CONTROL_SERVICES=1")


def stop_redis() -> None:
    require_service_control()
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # shutting down closes the connection
    wait_for(lambda: not redis_answers(), timeout=20, what="Redis to stop")


def start_redis() -> None:
    if redis_answers():
        return
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
         "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"],
        check=True, timeout=30,
    )  # fmt: skip
    wait_for(redis_answers, timeout=30, what="Redis to start")


def restart_postgres() -> None:
    """Restart PostgreSQL under everyone's feet (this process's open connection included)."""
    require_service_control()
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        timeout=120,
    )


# ------------------------------------------------------------------ waiting and judging


def rows(ids: list[int]) -> list[LongTimeTask]:
    for _ in range(50):  # the database may be restarting
        try:
            close_old_connections()
            return list(LongTimeTask.objects.filter(id__in=ids))
        except Exception:
            connection.close()
            time.sleep(0.2)
    raise AssertionError("the database did not come back")


def settle(ids: list[int], since: float, bound: float = SETTLE_BOUND) -> float:
    """Wait until every task is terminal (or ``bound`` passes); returns seconds since ``since``."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if all(t.state in TERMINAL_STATES for t in rows(ids)):
            break
        time.sleep(0.1)
    return round(time.monotonic() - since, 1)


def judge(scenario: str, ids: list[int], faults: str, recover_seconds: float) -> Outcome:
    tasks = rows(ids)
    runs = HandlerRun.objects.filter(task_id__in=ids)
    duplicated = runs.values("task_id", "attempt").annotate(n=Count("id")).filter(n__gt=1).count()
    # Two attempts of one task running at the same time: a later attempt started before an earlier one ended.
    timeline: dict[int, list[HandlerRun]] = {}
    for run in runs.order_by("attempt"):
        timeline.setdefault(run.task_id, []).append(run)
    duplicated += sum(
        1
        for task_runs in timeline.values()
        for earlier, later in zip(task_runs, task_runs[1:], strict=False)
        if earlier.ended is not None and later.at < earlier.ended
    )
    ran = set(runs.values_list("task_id", flat=True))
    states: dict[str, int] = {}
    for task in tasks:
        states[task.state] = states.get(task.state, 0) + 1
    outcome = Outcome(
        suite=suite_of_current_test(),
        scenario=scenario,
        submitted=len(ids),
        faults=faults,
        lost=len(ids) - len(tasks) + sum(1 for t in tasks if t.state not in TERMINAL_STATES and t.id not in ran),
        stuck=sum(1 for t in tasks if t.state not in TERMINAL_STATES),
        duplicated=duplicated,
        recover_seconds=recover_seconds,
        states=dict(sorted(states.items())),
    )
    RESULTS.append(asdict(outcome))
    # More runs recorded than attempts claimed would mean a handler ran without a claim.
    for task in tasks:
        attempts_run = set(runs.filter(task_id=task.id).values_list("attempt", flat=True))
        assert max(attempts_run, default=0) <= task.attempts, (task.id, attempts_run, task.attempts)
    return outcome


def assert_clean(outcome: Outcome, finished: int | None = None) -> None:
    """None lost, stuck or duplicated; and ``finished`` of them FINISHED."""
    assert (outcome.lost, outcome.stuck, outcome.duplicated) == (0, 0, 0), outcome
    if finished is not None:
        assert outcome.states.get(TaskState.FINISHED, 0) == finished, outcome


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass

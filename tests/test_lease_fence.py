"""The lease fence's arithmetic (the worker side of "never two attempts at once"): which child processes it kills,
and when. Real processes stand in for the pool's children; the requests are Celery's shape. The fence across a
real network partition is in tests/hosts."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.checks import run_checks

from long_time_task.dispatch import EXECUTOR_TASK
from long_time_task.worker import heartbeat
from long_time_task.worker.heartbeat import LeaseFence, request_started


def child() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def request(celery_id: str, pid: int, started_ago: float | None, attempt: int = 1) -> Any:
    started = None if started_ago is None else time.time() - started_ago
    return SimpleNamespace(id=celery_id, args=[0, attempt], worker_pid=pid, type=EXECUTOR_TASK, time_start=started)


@pytest.fixture
def children():
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = child()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(5)


def fence(monkeypatch: pytest.MonkeyPatch, requests: list[Any], renewed_ago: float, after: float = 20) -> LeaseFence:
    monkeypatch.setattr(heartbeat, "active_requests", lambda: requests)
    beat = SimpleNamespace(renewed_at=time.monotonic() - renewed_ago)
    return LeaseFence(beat, after=after)  # type: ignore[arg-type]


def test_an_attempt_unrenewed_for_two_thirds_of_the_lease_is_killed(monkeypatch, children):
    overdue, fresh = children(), children()
    requests = [request("a", overdue.pid, started_ago=60), request("b", fresh.pid, started_ago=5)]
    # The last renewal that succeeded was sent 25 s ago: "a" (running for a minute) is past 20 s; "b" claimed
    # 5 s ago, after that renewal, so its own lease is 5 s old.
    assert fence(monkeypatch, requests, renewed_ago=25).check(time.monotonic()) == [overdue.pid]
    assert overdue.wait(5) == -9
    assert fresh.poll() is None


def test_a_renewed_lease_keeps_its_process(monkeypatch, children):
    process = children()
    requests = [request("a", process.pid, started_ago=600)]
    assert fence(monkeypatch, requests, renewed_ago=1).check(time.monotonic()) == []
    assert process.poll() is None


def test_each_process_is_killed_once_and_unstarted_or_in_process_requests_never(monkeypatch, children):
    import os

    process = children()
    requests = [
        request("a", process.pid, started_ago=60),
        request("b", 0, started_ago=60),  # accepted by no child yet
        request("c", process.pid, started_ago=None),  # not started
        request("d", os.getpid(), started_ago=60),  # runs in this very process (solo or threads pool)
    ]
    lease_fence = fence(monkeypatch, requests, renewed_ago=60)
    assert lease_fence.check(time.monotonic()) == [process.pid]
    assert lease_fence.check(time.monotonic()) == []  # already done: no second signal to a reused pid


def test_the_fence_defaults_to_two_thirds_of_the_lease(settings):
    settings.LONG_TIME_TASK_LEASE_SECONDS = 30
    assert LeaseFence(SimpleNamespace(renewed_at=0.0)).after == 20  # type: ignore[arg-type]


def test_request_start_is_read_on_the_monotonic_clock():
    now = time.monotonic()
    assert request_started(SimpleNamespace(time_start=time.time() - 10), now) == pytest.approx(now - 10, abs=0.5)
    assert request_started(SimpleNamespace(time_start=None), now) is None


@pytest.mark.parametrize(
    ("interval", "lease", "fence_on", "expected"),
    [
        (10, 30, True, set()),
        (12, 30, True, {"long_time_task.W009"}),
        (20, 30, True, {"long_time_task.E005"}),
        (20, 30, False, {"long_time_task.W009"}),
    ],
)
def test_the_heartbeat_must_renew_well_within_the_lease(settings, interval, lease, fence_on, expected):
    settings.LONG_TIME_TASK_HEARTBEAT_INTERVAL = interval
    settings.LONG_TIME_TASK_LEASE_SECONDS = lease
    settings.LONG_TIME_TASK_LEASE_FENCE = fence_on
    found = {m.id for m in run_checks() if m.id in {"long_time_task.W009", "long_time_task.E005"}}
    assert found == expected

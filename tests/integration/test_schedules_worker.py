"""Schedules with real processes: three Celery beats and three workers running the scheduler's tick at once on
PostgreSQL and Redis make exactly one run per due time; a worker SIGKILLed in the middle of a tick (its runs
inserted, not committed) loses and duplicates nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from long_time_task.models import LongTimeTask, Schedule
from long_time_task.schedules.timing import timing_of
from tests.workers import ROOT, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

INTERVAL = 2  # seconds between due times
TICKS = {"LONG_TIME_TASK_SCHEDULER_INTERVAL": "0.5"}  # each beat sends a tick every half second


@pytest.fixture
def start_beat(worker_database: str, tmp_path: Path) -> Any:
    """Start Celery beat processes (the demo's schedule, ticks every half second); stopped when the test ends."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        n = len(started)
        with (tmp_path / f"beat{n}.log").open("wb") as log:
            beat = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "demo", "beat", "-l", "INFO",
                 "--schedule", str(tmp_path / f"celerybeat-schedule-{n}")],
                cwd=ROOT, env=worker_env(worker_database, **TICKS), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.terminate()
    for beat in started:
        try:
            beat.wait(15)
        except subprocess.TimeoutExpired:
            beat.kill()
            beat.wait(15)


def every(seconds: int, **fields: Any) -> Schedule:
    """An interval schedule whose first due time is a second from now."""
    now = timezone.now()
    schedule = Schedule(
        name=f"every {seconds}s",
        task_type="test_echo",  # on the default queue, which no worker here consumes: the runs wait there
        params={"from": "schedule"},
        interval_seconds=seconds,
        timezone="UTC",
        start_at=now.replace(microsecond=0) + timedelta(seconds=1),
        **fields,
    )
    schedule.next_run_at = timing_of(schedule).after(now)
    schedule.save()
    return schedule


def due_times(schedule: Schedule) -> list[Any]:
    runs = LongTimeTask.objects.filter(schedule=schedule).order_by("scheduled_for")
    return list(runs.values_list("scheduled_for", flat=True))


def assert_one_run_per_due_time(schedule: Schedule, at_least: int) -> list[Any]:
    """Stop the schedule, let the ticks in flight finish, and check its runs: one per due time, no gap."""
    Schedule.objects.filter(id=schedule.id).update(enabled=False)
    settled = wait_for(lambda: settle(schedule), timeout=30, interval=0.5, what="the ticks in flight to finish")
    times = due_times(schedule)
    assert times == settled
    assert len(times) >= at_least, times
    assert len(set(times)) == len(times)  # the constraint says so too; the count proves it
    assert {b - a for a, b in zip(times, times[1:], strict=False)} == {timedelta(seconds=INTERVAL)}  # no gap
    assert times[0] == schedule.start_at
    return times


_last: dict[int, tuple[int, float]] = {}


def settle(schedule: Schedule) -> list[Any] | None:
    """The runs, once their number has not changed for two seconds."""
    count = LongTimeTask.objects.filter(schedule=schedule).count()
    seen = _last.get(schedule.id)
    if seen is None or seen[0] != count:
        _last[schedule.id] = (count, time.monotonic())
        return None
    return due_times(schedule) if time.monotonic() - seen[1] >= 2 else None


def test_three_schedulers_racing_for_a_minute_make_exactly_one_run_per_due_time(start_worker, start_beat):
    """Three beats each send a tick every half second; three workers with two processes each run them, so up to six
    ticks run at once, on a schedule due every 2 seconds, for a minute."""
    for n in range(3):
        start_worker(queues="maintenance", concurrency=2, name=f"scheduler{n}")
    schedule = every(INTERVAL)
    for _ in range(3):
        start_beat()
    wait_for(lambda: len(due_times(schedule)) >= 2, timeout=60, what="the first runs")
    deadline = time.monotonic() + 60
    wait_for(lambda: time.monotonic() >= deadline, timeout=70, interval=1, what="a minute of racing ticks")
    assert_one_run_per_due_time(schedule, at_least=25)


def test_a_scheduler_killed_in_the_middle_of_a_tick_loses_and_duplicates_nothing(start_worker, start_beat, tmp_path):
    """The first tick with runs to make is SIGKILLed after inserting them, before its commit: its transaction is
    rolled back, the pool replaces the process, and the next tick makes those runs, once."""
    marker = tmp_path / "killed"
    worker = start_worker(queues="maintenance", concurrency=1, name="scheduler", LTT_TEST_KILL_IN_TICK=str(marker))
    schedule = every(INTERVAL)
    start_beat()
    wait_for(marker.exists, timeout=60, what="a tick to be killed")
    wait_for(lambda: len(due_times(schedule)) >= 5, timeout=60, what="the runs after the kill")
    times = assert_one_run_per_due_time(schedule, at_least=5)
    killed = int(marker.read_text())
    assert killed != worker.process.pid  # a pool process: the worker itself carried on
    assert b"exited with 'signal 9 (SIGKILL)'" in worker.log_path.read_bytes()
    assert times[0] == schedule.start_at  # the killed tick's due time was made by the next one

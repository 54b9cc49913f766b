"""The worker's and beat's liveness probe against real processes: ``python -m long_time_task.observability.probe``
exits 0 while the process runs (its file keeps being touched), and 1 once it stopped and ``--max-age`` passed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.workers import ROOT, wait_for, worker_env

# The mark makes worker_database the test database's name (without it, the name in the settings).
pytestmark = pytest.mark.django_db

MAX_AGE = 3.0


def probe(process: str, path: Path) -> subprocess.CompletedProcess[str]:
    command = ["-m", "long_time_task.observability.probe", process, "--file", str(path), "--max-age", str(MAX_AGE)]
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=30)


def passes(process: str, path: Path) -> bool:
    return probe(process, path).returncode == 0


def fails(process: str, path: Path) -> subprocess.CompletedProcess[str] | None:
    result = probe(process, path)
    return result if result.returncode == 1 else None


def touched_again(path: Path) -> Any:
    first = path.stat().st_mtime
    return lambda: path.stat().st_mtime > first


def test_the_worker_probe_passes_while_the_worker_runs_and_fails_once_it_stopped(
    start_worker: Any, tmp_path: Path
) -> None:
    alive = tmp_path / "run" / "worker.alive"  # the directory does not exist yet: the worker creates it
    worker = start_worker(
        queues="liveness-probe",  # a queue nothing is sent to
        name="alive",
        LONG_TIME_TASK_HEARTBEAT_INTERVAL="0.5",
        LONG_TIME_TASK_WORKER_LIVENESS_FILE=str(alive),
    )
    wait_for(lambda: passes("worker", alive), timeout=30, interval=0.2, what="the worker's probe to pass")
    wait_for(touched_again(alive), timeout=10, interval=0.1, what="the heartbeat to touch the file again")
    assert passes("worker", alive)

    worker.stop()
    result = wait_for(
        lambda: fails("worker", alive), timeout=MAX_AGE + 20, interval=0.2, what="the stopped worker's probe to fail"
    )
    assert "worker: not alive" in result.stdout


def test_the_beat_probe_passes_while_beat_runs_and_fails_once_it_stopped(
    worker_database: str, broker: redis.Redis, tmp_path: Path
) -> None:
    alive = tmp_path / "beat.alive"
    env = worker_env(
        worker_database,
        LONG_TIME_TASK_BEAT_LIVENESS_FILE=str(alive),
        # The demo's schedule sends the reaper and the sweeper every second (to the maintenance queue, which no
        # worker of this test consumes; their messages expire after a second).
        LONG_TIME_TASK_REAPER_INTERVAL="1",
        LONG_TIME_TASK_SWEEP_INTERVAL="1",
    )
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "demo", "beat", "-l", "INFO",
                "--schedule", str(tmp_path / "celerybeat-schedule"), "--pidfile", str(tmp_path / "beat.pid"),
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def started() -> bool:
            if beat.poll() is not None:
                raise AssertionError(f"beat exited:\n{(tmp_path / 'beat.log').read_text(errors='replace')}")
            return passes("beat", alive)

        wait_for(started, timeout=60, interval=0.2, what="beat's probe to pass")
        # Touched again by the scheduler's publishes, not only once at start-up.
        wait_for(touched_again(alive), timeout=15, interval=0.1, what="beat to touch its file again")
        assert passes("beat", alive)
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        try:
            beat.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(beat.pid, signal.SIGKILL)
            beat.wait(15)

    result = wait_for(
        lambda: fails("beat", alive), timeout=MAX_AGE + 20, interval=0.2, what="the stopped beat's probe to fail"
    )
    assert "beat: not alive" in result.stdout

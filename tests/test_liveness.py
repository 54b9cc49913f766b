"""The liveness probe of the worker and beat (long_time_task.observability.probe) and the files it reads
(long_time_task.observability.liveness).

The operator's only worker probe was ``celery inspect ping``: a Django start-up and a broker round trip, 1.2-1.4 s
a call. The probe here imports the standard library only and reads one file's modification time.
tests/integration/test_liveness_probes.py runs it against a real worker and a real beat.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery import signals

from long_time_task.observability import liveness
from long_time_task.observability.liveness import LivenessFile
from long_time_task.observability.probe import main
from long_time_task.worker.heartbeat import LeaseHeartbeat
from tests.workers import ROOT

HEAVY = ("django", "celery", "kombu", "billiard", "redis", "psycopg", "rest_framework", "long_time_task.conf")


def run_probe(*args: str, importtime: bool = False) -> tuple[subprocess.CompletedProcess[str], float]:
    options = ["-X", "importtime"] if importtime else []
    command = [sys.executable, *options, "-m", "long_time_task.observability.probe"]
    started = time.monotonic()
    result = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    return result, time.monotonic() - started


def imported_modules(importtime_log: str) -> list[str]:
    """The modules ``python -X importtime`` reports importing, one per line: ``import time: 12 | 34 | name``."""
    return [line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")]


def test_the_probe_starts_without_django_or_celery_and_answers_in_well_under_a_second(tmp_path: Path) -> None:
    alive = tmp_path / "worker.alive"
    alive.touch()
    result, took = run_probe("worker", "--file", str(alive), "--max-age", "60", importtime=True)
    assert result.returncode == 0, result
    assert result.stdout.startswith("worker: alive:")
    modules = imported_modules(result.stderr)
    assert "long_time_task.observability" in modules  # the probe itself runs as __main__
    assert [name for name in modules if name.split(".")[0] in HEAVY or name in HEAVY] == []
    assert took < 1.0, f"the probe took {took:.2f} s"


def test_a_stale_file_fails_the_probe(tmp_path: Path) -> None:
    alive = tmp_path / "beat.alive"
    alive.touch()
    old = time.time() - 100
    os.utime(alive, (old, old))
    result, _ = run_probe("beat", "--file", str(alive), "--max-age", "30")
    assert result.returncode == 1, result
    assert "beat: not alive" in result.stdout and "(max 30 s)" in result.stdout


def test_a_missing_file_fails_the_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--file", str(tmp_path / "nothing"), "--max-age", "5"]) == 1
    assert "does not exist" in capsys.readouterr().out


@pytest.mark.parametrize("max_age", ["0", "-1", "soon"])
def test_a_max_age_that_is_not_a_positive_number_is_refused(max_age: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--file", str(tmp_path / "x"), "--max-age", max_age])
    assert exited.value.code == 2


def test_the_heartbeat_touches_the_worker_file_when_set(settings: Any, tmp_path: Path) -> None:
    settings.LONG_TIME_TASK_WORKER_LIVENESS_FILE = str(tmp_path / "run" / "worker.alive")
    LeaseHeartbeat(worker="w@host", interval=60).alive()  # what run() does at start and after every beat
    assert (tmp_path / "run" / "worker.alive").exists()
    settings.LONG_TIME_TASK_WORKER_LIVENESS_FILE = None
    assert LeaseHeartbeat(worker="w@host", interval=60).liveness is None


def test_a_file_that_cannot_be_written_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-directory").write_text("")
    file = LivenessFile(tmp_path / "not-a-directory" / "worker.alive")
    with caplog.at_level(logging.WARNING, logger="long_time_task.observability.liveness"):
        file.touch()
        file.touch()
    assert len([r for r in caplog.records if "Cannot touch the liveness file" in r.getMessage()]) == 1


@pytest.fixture
def beat_file(settings: Any, tmp_path: Path) -> Any:
    path = tmp_path / "beat" / "beat.alive"
    settings.LONG_TIME_TASK_BEAT_LIVENESS_FILE = str(path)
    yield path
    signals.before_task_publish.disconnect(dispatch_uid="long_time_task.observability.beat_published")
    liveness.beat = None


def test_beat_touches_its_file_when_it_starts_and_when_its_scheduler_publishes(beat_file: Path) -> None:
    signals.beat_init.send(sender=None)  # what Celery sends in the scheduler's thread, before its loop
    assert beat_file.exists()
    os.utime(beat_file, (0, 0))

    # With `celery worker -B`, other threads of the process publish too: they say nothing about beat.
    other = threading.Thread(target=lambda: signals.before_task_publish.send(sender="long_time_task.some_task"))
    other.start()
    other.join()
    assert beat_file.stat().st_mtime == 0

    signals.before_task_publish.send(sender="long_time_task.reap_expired_leases")
    assert beat_file.stat().st_mtime > 0


def test_without_a_beat_file_nothing_listens_to_publishes(settings: Any) -> None:
    settings.LONG_TIME_TASK_BEAT_LIVENESS_FILE = None
    before = len(signals.before_task_publish.receivers)
    signals.beat_init.send(sender=None)
    assert len(signals.before_task_publish.receivers) == before and liveness.beat is None

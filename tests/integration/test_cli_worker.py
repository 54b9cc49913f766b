"""``manage.py tasks submit --wait`` as a user runs it: a separate process, a real worker, real services."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from long_time_task.models import LongTimeTask, TaskState
from tests.workers import ROOT, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_submit_wait_prints_progress_lines_and_exits_0_when_the_task_finishes(celery_worker, worker_database):
    command = [sys.executable, "manage.py", "tasks", "submit", "test_echo", "--params", '{"n":1}', "--wait",
               "--interval", "0.1", "--timeout", "30"]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env=worker_env(worker_database), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    task = LongTimeTask.objects.get()
    assert task.state == TaskState.FINISHED and task.result == {"echo": {"n": 1}, "task_id": task.id}
    lines = result.stdout.splitlines()
    # Not a terminal: plain lines, one per change. The worker may be quick enough to skip PENDING or RUNNING.
    assert lines[0] == f"Task {task.id} submitted: test_echo (PENDING)."
    assert set(lines[1:-2]) <= {f"Task {task.id} PENDING", f"Task {task.id} RUNNING"}
    assert lines[-2] == f"Task {task.id} FINISHED 100%"
    assert re.fullmatch(rf"Task {task.id} finished in \d+\.\d+s\.", lines[-1])

"""Attempt history with a real worker process over real Redis and PostgreSQL: a retry, a child killed
mid-run, a task that kills its worker on every attempt; and what the API detail shows staff and owners."""

from __future__ import annotations

import os
import signal

import pytest

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskAttempt, TaskState
from long_time_task.models.attempts import attempt_history
from tests.conftest import token_client
from tests.testapp.models import HandlerRun
from tests.workers import wait_for

from .test_worker import wait_until_state

pytestmark = pytest.mark.django_db(transaction=True)


def ran_on(celery_worker, worker: str) -> bool:
    """Whether ``worker`` (a row's worker column) names the session's worker (``-n main@%h``)."""
    return worker.startswith(f"{celery_worker.name}@")


def test_a_retry_is_recorded_and_the_finishing_attempt_comes_from_the_row(celery_worker, user, staff_user):
    task = services.submit_task("test_flaky", {"failures": 1}, owner=user)
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED})
    assert (done.state, done.attempts) == (TaskState.FINISHED, 2), done.error_message
    first, second = attempt_history(done)
    assert (first.recorded, first.number, first.outcome, first.cause) == (True, 1, "retry", "")
    assert first.worker == done.worker and ran_on(celery_worker, first.worker)
    assert first.error_code == "temporary_error" and "ConnectionError: transient failure" in first.error_traceback
    assert first.started_at is not None and first.ended_at is not None
    assert done.start_at == first.started_at < first.ended_at <= done.claimed_at
    assert (second.recorded, second.number, second.outcome, second.error_code) == (False, 2, "finished", "")
    assert (second.started_at, second.ended_at) == (done.claimed_at, done.finish_at)
    assert TaskAttempt.objects.filter(task_id=task.id).count() == 1  # the last attempt costs no row

    staff_view = token_client(staff_user).get(f"/api/tasks/{task.id}/").json()["task"]
    assert [(a["number"], a["outcome"], a["worker"]) for a in staff_view["attempt_history"]] == [
        (1, "retry", done.worker),
        (2, "finished", done.worker),
    ]
    owner_view = token_client(user).get(f"/api/tasks/{task.id}/").json()["task"]
    assert "attempt_history" not in owner_view and owner_view["attempts"] == 2


def test_a_child_killed_mid_run_is_recorded_as_worker_lost(celery_worker):
    task = services.submit_task("fault_work", {"seconds": 5})  # killed long before it ends
    run = wait_for(
        lambda: HandlerRun.objects.filter(task_id=task.id, attempt=1).first(), timeout=30, what="the handler to start"
    )
    os.kill(run.pid, signal.SIGKILL)  # the child process running it, not the worker
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}, timeout=60)
    assert (done.state, done.attempts) == (TaskState.FINISHED, 2), done.error_message
    lost, finished = attempt_history(done)
    assert (lost.number, lost.outcome, lost.cause, lost.error_code) == (1, "retry", "worker_lost", "worker_lost")
    assert lost.worker == done.worker and ran_on(celery_worker, lost.worker)
    assert lost.error_message == "Worker lost: the worker process died during attempt 1; retrying"
    assert lost.started_at is not None and lost.ended_at is not None
    assert run.at <= lost.ended_at <= done.claimed_at  # ended when the main process saw the child die
    assert (finished.number, finished.outcome, finished.recorded) == (2, "finished", False)


def test_a_task_that_kills_its_worker_every_time_has_every_attempt_recorded(celery_worker):
    task = services.submit_task("fault_kill_worker", {})  # max_retries=2: three attempts, each one killed
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}, timeout=60)
    assert (done.state, done.error_code, done.attempts) == (TaskState.FAILED, "worker_lost", 3)
    history = attempt_history(done)
    assert [(a.number, a.outcome, a.cause, a.recorded) for a in history] == [
        (1, "retry", "worker_lost", True),
        (2, "retry", "worker_lost", True),
        (3, "failed", "worker_lost", True),  # recovery ended the task: recorded, with its cause
    ]
    assert all(ran_on(celery_worker, a.worker) for a in history)
    assert history[2].ended_at == LongTimeTask.objects.get(id=task.id).finish_at

"""The executor's decisions, run in-process against the test database (no broker: retries are captured)."""

from __future__ import annotations

from typing import Any

import pytest

from long_time_task.models import LongTimeTask, TaskState
from long_time_task.worker import executor as executor_module
from long_time_task.worker.executor import Executor
from tests.testapp.models import HandlerRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    calls: list[tuple[int, int, float | None]] = []

    def capture(task, *, attempt, countdown=None):
        calls.append((task.id, attempt, countdown))
        return True

    monkeypatch.setattr(executor_module, "publish", capture)
    return calls


def run(task: LongTimeTask, attempt: int = 1) -> str:
    return Executor(worker="unit@test").run(task.id, attempt)


def new(task_type: str, params: dict | None = None, **kwargs) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type=task_type, task_params=params or {}, **kwargs)


def test_success_stores_the_result_and_the_worker():
    task = new("test_echo", {"a": 1})
    assert run(task) == "finished"
    task.refresh_from_db()
    assert (task.state, task.attempts, task.worker) == (TaskState.FINISHED, 1, "unit@test")
    assert task.result == {"echo": {"a": 1}, "task_id": task.id}
    assert task.start_at <= task.finish_at


def test_a_second_delivery_of_the_same_attempt_does_not_run_the_handler():
    task = new("test_echo")
    assert run(task) == "finished"
    assert run(task) == "skipped"
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1


def test_non_retryable_error_fails_with_a_safe_message_and_the_traceback_for_staff(published):
    task = new("test_fail", {"message": "password=hunter2 in the DSN"})
    assert run(task) == "failed"
    task.refresh_from_db()
    assert (task.state, task.error_code) == (TaskState.FAILED, "handler_error")
    assert task.error_message == "The task failed with an unexpected error."  # no internal text
    assert "Traceback" in task.error_traceback and "ValueError: password=hunter2 in the DSN" in task.error_traceback
    assert published == []


def test_retryable_error_waits_in_retrying_and_publishes_the_next_attempt(published):
    task = new("test_flaky", {"failures": 1})
    assert run(task) == "retrying"
    task.refresh_from_db()
    assert (task.state, task.attempts, task.error_code) == (TaskState.RETRYING, 1, "temporary_error")
    assert task.retry_at is not None and task.error_message == "Attempt 1 failed with a temporary error; retrying."
    assert "ConnectionError: transient failure 1" in task.error_traceback
    assert published == [(task.id, 2, 1.0)]
    assert run(task, attempt=2) == "finished"
    task.refresh_from_db()
    assert (task.state, task.attempts, task.result) == (TaskState.FINISHED, 2, {"succeeded_on_run": 2})
    assert task.error_message is None


def test_retries_stop_after_max_retries(published):
    task = new("test_flaky", {"failures": 10})  # max_retries=3: four attempts in all
    outcomes = [run(task, attempt) for attempt in (1, 2, 3, 4)]
    assert outcomes == ["retrying", "retrying", "retrying", "failed"]
    task.refresh_from_db()
    assert (task.state, task.attempts, task.error_code) == (TaskState.FAILED, 4, "retries_exhausted")
    assert task.error_message == "The task failed with a temporary error 4 times and was given up."
    assert [attempt for _, attempt, _ in published] == [2, 3, 4]


def test_a_task_error_shows_its_own_message_and_code(published):
    from long_time_task.registry import LongTimeTaskRegister

    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="t_task_error")(raises_task_error)
        task = new("t_task_error")
        assert run(task) == "failed"
    task.refresh_from_db()
    assert (task.error_message, task.error_code) == ("Dataset 42 is empty", "empty_dataset")


def raises_task_error(task_id: int, params: dict) -> None:
    from long_time_task.exceptions import TaskError

    raise TaskError("Dataset 42 is empty", code="empty_dataset")


def test_unregistered_task_type_fails_clearly():
    task = new("no_longer_registered")
    assert run(task) == "failed"
    task.refresh_from_db()
    assert task.error_code == "unknown_task_type" and "not registered" in task.error_message


def test_a_result_that_is_not_json_fails_the_task(monkeypatch):
    from long_time_task.registry import LongTimeTaskRegister

    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="t_nan")(returns_nan)
        task = new("t_nan")
        assert run(task) == "failed"
    task.refresh_from_db()
    assert task.error_code == "invalid_result"


def returns_nan(task_id: int, params: dict) -> float:
    return float("nan")


def test_hard_time_limit_marks_the_row_failed():
    task = new("test_echo", state=TaskState.RUNNING, attempts=1)
    assert Executor.fail_on_hard_time_limit(task.id, 1, 2.0)
    task.refresh_from_db()
    assert (task.state, task.error_code) == (TaskState.FAILED, "timeout")
    assert "hard limit of 2s" in task.error_message


def test_a_soft_time_limit_while_the_result_is_written_still_records_it(monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    task = new("test_echo", {"n": 5})
    real_finish = LongTimeTask.objects.finish
    calls = []

    def finish_interrupted_once(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise SoftTimeLimitExceeded()  # the signal, arriving just as the result is being written
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(type(LongTimeTask.objects), "finish", lambda self, *a, **k: finish_interrupted_once(*a, **k))
    assert run(task) == "finished"
    done = LongTimeTask.objects.get(id=task.id)
    assert (done.state, done.result["echo"], len(calls)) == (TaskState.FINISHED, {"n": 5}, 2)
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1  # the handler ran once

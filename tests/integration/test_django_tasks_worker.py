"""The django.tasks backend's conformance suite, against a real Celery worker with PostgreSQL and Redis.

Each test names, in its docstring, the tests of Django's own ``tests/tasks/`` (django/django) whose behaviour it
checks for this backend: a task enqueued here runs in another process, so what Django checks on a result returned
by ``enqueue()`` is checked on the result read back once the worker is done.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.utils import timezone

from long_time_task import services
from long_time_task.django_tasks.compat import TaskContext, TaskResultStatus
from long_time_task.models import LongTimeTask, TaskState
from tests.testapp import jobs
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def finished(result, timeout: float = 30) -> Any:
    """``result`` refreshed until it is SUCCESSFUL or FAILED."""

    def done():
        result.refresh()
        return result.is_finished

    wait_for(done, timeout=timeout, what=f"django task {result.id} to finish")
    return result


def test_enqueue_runs_on_the_worker_and_the_result_reads_back(celery_worker):
    """Django: test_immediate_backend.ImmediateBackendTestCase.test_enqueue_task, .test_result;
    test_tasks.TaskTestCase.test_enqueue_task, .test_get_result."""
    for task in (jobs.noop_task, jobs.noop_task_async):
        result = task.enqueue(1, two=3)
        assert result.status == TaskResultStatus.READY
        assert (result.args, result.kwargs, result.task) == ([1], {"two": 3}, task)
        result = finished(result)  # the same object, refreshed
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.is_finished is True
        assert result.return_value is None
        assert result.enqueued_at <= result.started_at <= result.last_attempted_at <= result.finished_at
        assert result.attempts == 1 and result.worker_ids[0].startswith("main@")
        assert result.errors == []
        again = task.get_result(result.id)
        assert again == result
        row = LongTimeTask.objects.get(id=int(result.id))
        assert (row.task_type, row.state, row.queue) == (task.module_path, TaskState.FINISHED, "default")
        assert row.task_params == {"args": [1], "kwargs": {"two": 3}}

    assert finished(jobs.calculate_meaning_of_life.enqueue()).return_value == 42


async def refreshed_until_finished(result: Any) -> Any:
    for _ in range(600):  # bounded: 30 s
        await result.arefresh()
        if result.is_finished:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"django task {result.id} did not finish")


def close_connection():
    connection.close()


def test_aenqueue_and_aget_result(celery_worker):
    """Django: test_immediate_backend.ImmediateBackendTestCase.test_enqueue_task_async, .test_result_async;
    test_tasks.TaskTestCase.test_enqueue_task_async, .test_get_result_async, .test_refresh_result."""

    async def scenario() -> None:
        result = await jobs.async_echo.aenqueue("a", b=[1, 2])
        assert result.status == TaskResultStatus.READY
        result = await refreshed_until_finished(result)
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == {"args": ["a"], "kwargs": {"b": [1, 2]}, "async": True}
        fetched = await jobs.async_echo.aget_result(result.id)
        assert fetched == result
        await sync_to_async(close_connection)()  # in the thread that ran the queries

    run_in_a_thread_of_its_own(scenario)


def run_in_a_thread_of_its_own(scenario: Any) -> None:
    """``asyncio.run(scenario())`` in a new thread: the browser tests' Playwright (its sync API, session-scoped)
    keeps an event loop running in the main thread, where neither ``asyncio.run`` nor asgiref's
    ``async_to_sync`` will start another. The rows are committed (``transaction=True``), so the ORM calls, run
    by asgiref in a thread of its own, see them."""
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="async-scenario")
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the async scenario did not end within 120 s"
    if errors:
        raise errors[0]


def test_a_failing_task_records_its_exception_class_and_traceback(celery_worker):
    """Django: test_immediate_backend.ImmediateBackendTestCase.test_catches_exception (ValueError and
    SystemExit), .test_complex_exception; test_tasks.TaskTestCase.test_task_error_invalid_exception,
    .test_task_error_unknown_module (exception_class resolves the stored class path)."""
    cases = [
        (jobs.failing_task_value_error, ValueError, "This task failed due to ValueError"),
        (jobs.complex_exception, ValueError, "This task failed"),
    ]
    for task, exception, message in cases:
        result = finished(task.enqueue())
        assert result.status == TaskResultStatus.FAILED
        with pytest.raises(ValueError, match="Task failed"):
            result.return_value  # noqa: B018
        assert result.is_finished is True
        assert result.enqueued_at <= result.started_at <= result.finished_at
        assert len(result.errors) == 1
        assert result.errors[0].exception_class is exception
        assert message in result.errors[0].traceback

    exited = finished(jobs.failing_task_system_exit.enqueue())
    assert exited.status == TaskResultStatus.FAILED
    # SystemExit would end the worker's process: the executor records it as a failure caused by it.
    assert "SystemExit: This task failed due to SystemExit" in exited.errors[0].traceback
    assert LongTimeTask.objects.get(id=int(exited.id)).state == TaskState.FAILED


def test_a_return_value_that_is_not_json_fails_the_task(celery_worker):
    """Django: test_immediate_backend.ImmediateBackendTestCase.test_complex_return_value."""
    result = finished(jobs.complex_return_value.enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_takes_context_gets_djangos_context_with_the_attempt(celery_worker):
    """Django: test_immediate_backend.ImmediateBackendTestCase.test_takes_context, .test_context."""
    result = finished(jobs.get_task_id.enqueue())
    assert result.return_value == result.id
    context_result = finished(jobs.context_attempt.enqueue(1))
    assert context_result.status == TaskResultStatus.SUCCESSFUL, context_result.errors
    assert context_result.return_value["attempt"] == 1
    assert issubclass(type(jobs.context_attempt), type(jobs.noop_task)) and TaskContext


def test_progress_from_the_context_reaches_the_row(celery_worker):
    """This project's context: progress reported through Django's TaskContext is the row's progress."""
    result = finished(jobs.report_progress.enqueue(4))
    assert result.return_value == 4
    row = LongTimeTask.objects.get(id=int(result.id))
    # The first report is written at once; a finished task's progress is 100 (later reports inside the progress
    # interval are not written: LONG_TIME_TASK_PROGRESS_INTERVAL).
    assert (row.progress, row.progress_total, row.progress_message.startswith("step ")) == (100.0, 4, True)


def test_a_retry_on_a_named_exception_counts_attempts_and_workers(celery_worker):
    """Django: test_tasks.TaskTestCase (TaskResult.attempts is len(worker_ids)); per-task options (retry_on)."""
    result = finished(jobs.flaky.enqueue(1), timeout=60)
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == {"attempt": 2, "workers": 2}
    assert result.attempts == 2 and len(result.worker_ids) == 2
    assert [e.exception_class for e in result.errors] == [ConnectionError]  # the failed first attempt

    given_up = finished(jobs.flaky.enqueue(5), timeout=60)
    assert given_up.status == TaskResultStatus.FAILED
    assert given_up.attempts == 3 and [e.exception_class for e in given_up.errors] == [ConnectionError] * 3


def test_a_soft_time_limit_fails_the_task(celery_worker):
    """Per-task options: timeout and soft_timeout are Celery's time limits for the task."""
    result = finished(jobs.sleeps_too_long.enqueue(10), timeout=30)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is SoftTimeLimitExceeded
    assert LongTimeTask.objects.get(id=int(result.id)).error_code == "soft_timeout"


def test_run_after_waits_until_its_time(celery_worker):
    """Django: test_tasks.TaskTestCase.test_using_run_after; supports_defer."""
    start = timezone.now() + timedelta(seconds=2)
    result = jobs.noop_task.using(run_after=start).enqueue()
    assert result.task.run_after == start
    finished(result)
    assert result.started_at >= start - timedelta(seconds=1)  # the database's clock tolerance
    assert result.task.run_after == start  # read back from the row


def test_signals_fire_in_order_from_the_processes_where_things_happen(start_worker, tmp_path):
    """Django: test_immediate_backend.ImmediateBackendTestCase.test_enqueue_logs, .test_failed_logs (enqueued,
    then started, then finished, each with the result's id and status)."""
    signals = tmp_path / "signals.log"
    start_worker(queues="operate", LTT_TEST_SIGNALS_FILE=str(signals))
    enqueued = []

    def on_enqueued(sender, task_result, **kwargs):
        enqueued.append((task_result.id, task_result.status))

    from long_time_task.django_tasks.compat import task_enqueued

    task_enqueued.connect(on_enqueued)
    try:
        ok = jobs.noop_task.using(queue_name="operate").enqueue()
        failed = jobs.failing_task_value_error.using(queue_name="operate").enqueue()
    finally:
        task_enqueued.disconnect(on_enqueued)
    assert enqueued == [(ok.id, TaskResultStatus.READY), (failed.id, TaskResultStatus.READY)]
    finished(ok), finished(failed)

    def lines():
        text = signals.read_text() if signals.exists() else ""
        return text.splitlines() if text.count("task_finished") == 2 else None

    logged = [line.rsplit(" ", 1)[0] for line in wait_for(lines, timeout=30, what="the worker's signals")]
    assert [line for line in logged if f" {ok.id} " in line] == [
        f"task_started {ok.id} RUNNING 1 -",
        f"task_finished {ok.id} SUCCESSFUL 1 -",
    ]
    assert [line for line in logged if f" {failed.id} " in line] == [
        f"task_started {failed.id} RUNNING 1 -",
        f"task_finished {failed.id} FAILED 1 builtins.ValueError",
    ]


def signals_of(path: Any, result: Any, count: int) -> list[tuple[str, str, str, str, int]]:
    """The django.tasks signals a worker sent for ``result`` (``LTT_TEST_SIGNALS_FILE``): (signal, status,
    attempts, errors, pid), once ``count`` of them are there."""

    def lines() -> list[list[str]] | None:
        text = path.read_text() if path.exists() else ""
        found = [line.split() for line in text.splitlines() if line.split()[1] == result.id]
        return found if len(found) >= count else None

    found = wait_for(lines, timeout=30, what=f"{count} signals of task {result.id}")
    return [(name, status, attempts, errors, int(pid)) for name, _, status, attempts, errors, pid in found]


@pytest.mark.parametrize(
    ("job", "error"),
    [
        (jobs.ignores_its_soft_limit, "celery.exceptions.TimeLimitExceeded"),
        (jobs.kills_its_process, "billiard.exceptions.WorkerLostError"),
    ],
    ids=["hard-time-limit", "worker-lost"],
)
def test_an_attempt_ended_by_the_workers_main_process_sends_task_finished_from_there(
    start_worker, tmp_path, job, error
):
    """The child process running the function is killed (its hard time limit; the OOM killer): the worker's main
    process writes the outcome, and sends ``task_finished`` itself, once, after the child's ``task_started``.
    Django: test_immediate_backend.ImmediateBackendTestCase.test_failed_logs (started, then finished FAILED)."""
    path = tmp_path / "signals.log"
    worker = start_worker(queues="operate", LTT_TEST_SIGNALS_FILE=str(path))
    result = job.using(queue_name="operate").enqueue(*([30] if job is jobs.ignores_its_soft_limit else []))
    finished(result)
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == [error]
    sent = signals_of(path, result, 2)
    assert [sent[0][:4], sent[1][:4]] == [
        ("task_started", "RUNNING", "1", "-"),
        ("task_finished", "FAILED", "1", error),
    ]
    assert sent[1][4] == worker.process.pid != sent[0][4]  # the main process; the child sent task_started
    worker.stop()  # every signal it would send is in the file: still exactly two
    assert len(signals_of(path, result, 2)) == 2


def test_cancel_through_the_service_door_fails_the_result(celery_worker, tmp_path):
    """This project's cancel (API, dashboard, CLI: services.cancel_task) on a running django task: FAILED, with
    TaskCancelled as its error."""
    marker = tmp_path / "started"
    result = jobs.wait_for_cancel.enqueue(str(marker))
    wait_for(marker.exists, timeout=30, what="the task to start")
    services.cancel_task(int(result.id))
    finished(result)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "long_time_task.context.TaskCancelled"
    assert LongTimeTask.objects.get(id=int(result.id)).state == TaskState.CANCELLED


def test_priority_orders_the_queue(start_worker):
    """Django: test_tasks.TaskTestCase.test_using_priority; supports_priority: with one worker process and the
    queue filled before it starts, a higher Django priority runs first."""
    low = [jobs.noop_task.using(queue_name="operate", priority=-100).enqueue() for _ in range(3)]
    high = [jobs.noop_task.using(queue_name="operate", priority=100).enqueue() for _ in range(3)]
    start_worker(queues="operate", concurrency=1, CELERY_WORKER_PREFETCH_MULTIPLIER="1")
    for result in low + high:
        finished(result)
    assert max(r.started_at for r in high) < min(r.started_at for r in low)

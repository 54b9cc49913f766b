"""Submit through the service layer, run on a real Celery worker process, over real Redis and PostgreSQL."""

from __future__ import annotations

import pytest

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from tests.testapp.models import HandlerRun
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until_state(task_id: int, states: set[str], timeout: float = 30) -> LongTimeTask:
    def reached() -> LongTimeTask | None:
        task = LongTimeTask.objects.get(id=task_id)
        return task if task.state in states else None

    return wait_for(reached, timeout=timeout, what=f"task {task_id} to reach {sorted(states)}")


def test_task_goes_pending_running_finished_with_its_result(celery_worker, user):
    task = services.submit_task("test_echo", {"n": 1}, owner=user)
    assert task.state == TaskState.PENDING
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED})
    assert done.state == TaskState.FINISHED, done.error_message
    assert done.result == {"echo": {"n": 1}, "task_id": task.id}
    assert (done.attempts, done.worker) == (1, celery_worker.name + "@" + done.worker.split("@", 1)[1])
    assert done.create_at <= done.start_at <= done.finish_at
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1


def test_running_state_is_visible_while_the_handler_works(celery_worker):
    task = services.submit_task("test_soft_timeout", {})
    running = wait_until_state(task.id, {TaskState.RUNNING, TaskState.FAILED})
    assert running.state == TaskState.RUNNING and running.start_at is not None and running.finish_at is None


def test_failing_handler_ends_failed_with_the_error(celery_worker):
    task = services.submit_task("test_fail", {"message": "no such dataset"})
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED})
    assert (done.state, done.error_code, done.attempts) == (TaskState.FAILED, "handler_error", 1)
    assert done.error_message == "The task failed with an unexpected error."
    assert "ValueError: no such dataset" in done.error_traceback
    assert "raise ValueError" in done.error_traceback
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1  # not retryable: one attempt


def test_retryable_error_is_retried_then_finishes_with_attempts_counted(celery_worker):
    task = services.submit_task("test_flaky", {"failures": 2})
    retrying = wait_until_state(task.id, {TaskState.RETRYING, TaskState.FINISHED, TaskState.FAILED})
    assert retrying.state == TaskState.RETRYING and retrying.retry_at is not None
    assert retrying.error_code == "temporary_error"
    assert "ConnectionError: transient failure" in retrying.error_traceback
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED})
    assert (done.state, done.attempts, done.result) == (TaskState.FINISHED, 3, {"succeeded_on_run": 3})
    runs = list(HandlerRun.objects.filter(task_id=task.id).values_list("attempt", flat=True))
    assert runs == [1, 2, 3]  # the handler ran once per attempt


def test_soft_time_limit_fails_the_task_with_a_clear_message_and_no_retry(celery_worker):
    task = services.submit_task("test_soft_timeout", {})
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}, timeout=20)
    assert (done.state, done.error_code, done.attempts) == (TaskState.FAILED, "soft_timeout", 1)
    assert done.error_message == "Time limit exceeded: the task ran longer than its soft limit of 1s"


def test_hard_time_limit_fails_the_task_instead_of_leaving_it_running(celery_worker):
    task = services.submit_task("test_hard_timeout", {})
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}, timeout=20)
    assert (done.state, done.error_code, done.attempts) == (TaskState.FAILED, "timeout", 1)
    assert "hard limit of 2s" in done.error_message
    # The worker replaced the killed child and goes on working.
    after = services.submit_task("test_echo", {})
    assert wait_until_state(after.id, {TaskState.FINISHED, TaskState.FAILED}).state == TaskState.FINISHED


def test_heavy_task_types_are_routed_to_the_heavy_queue(celery_worker):
    task = services.submit_task("test_heavy", {})
    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED})
    assert done.state == TaskState.FINISHED and done.queue == "heavy"
    assert HandlerRun.objects.get(task_id=task.id).routing_key == "heavy"


def test_worker_keeps_its_database_connection_across_tasks(celery_worker):
    tasks = [services.submit_task("test_echo", {"i": i}) for i in range(12)]
    for task in tasks:
        assert wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}).state == TaskState.FINISHED
    runs = HandlerRun.objects.filter(task_id__in=[t.id for t in tasks])
    pids = set(runs.values_list("pid", flat=True))
    backends = set(runs.values_list("db_backend_pid", flat=True))
    # One connection per worker process, however many tasks it ran (without reuse: one per task).
    assert len(backends) == len(pids) <= 2


def test_priority_10_runs_before_priority_1_on_redis(start_worker):
    # Fill the priority queue while no worker consumes it: low-priority tasks first, then high.
    low = [services.submit_task("test_priority_low", {}) for _ in range(5)]
    high = [services.submit_task("test_priority_high", {}) for _ in range(5)]
    start_worker(queues="priority", concurrency=1, name="prio")
    ids = [t.id for t in low + high]
    wait_for(
        lambda: LongTimeTask.objects.filter(id__in=ids, state=TaskState.FINISHED).count() == len(ids),
        timeout=30,
        what="all priority tasks to finish",
    )
    order = list(HandlerRun.objects.filter(task_id__in=ids).order_by("id").values_list("task_type", flat=True))
    assert order == ["test_priority_high"] * 5 + ["test_priority_low"] * 5

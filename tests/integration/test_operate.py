"""Operating tasks on real workers: progress, cancel (waiting, cooperative, hard), retry and re-run, delayed
starts, idempotent submits. Real Celery worker processes, real Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from long_time_task import services
from long_time_task.models import AuditAction, LongTimeTask, TaskState
from long_time_task.worker import recovery
from tests.integration.test_worker import wait_until_state
from tests.testapp.models import HandlerRun
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

DONE: set[str] = {TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED}


def queued(broker, queue: str) -> int:
    """Messages waiting in a Redis queue (every priority step of it)."""
    names = [queue] + [f"{queue}:{step}" for step in range(1, 10)]
    return sum(int(broker.llen(name)) for name in names)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_progress_is_seen_mid_run_and_ends_at_100(celery_worker):
    task = services.submit_task("test_progress", {"steps": 8, "delay": 0.4})
    seen: set[float] = set()

    def progressed_twice() -> bool:
        row = LongTimeTask.objects.get(id=task.id)
        if row.state == TaskState.RUNNING and row.progress is not None:
            seen.add(row.progress)
            assert 0 <= row.progress < 100 and row.progress_message.startswith("step ")
            assert row.progress_total == 8 and row.progress_current is not None
        return len(seen) >= 2

    wait_for(progressed_twice, timeout=30, what="two different progress values while RUNNING")
    done = wait_until_state(task.id, DONE)
    assert (done.state, done.progress, done.result) == (TaskState.FINISHED, 100.0, {"steps": 8})


def test_cancel_before_the_run_even_with_the_message_queued_and_a_worker_started_later(broker, start_worker):
    # The priority queue has no consumer yet: the message waits in Redis while the task is cancelled.
    task = services.submit_task("test_priority_low", {})
    wait_for(lambda: queued(broker, "priority") == 1, timeout=10, what="the message to be queued")
    outcome = services.cancel_task(task.id)
    assert outcome.cancelled and outcome.task.state == TaskState.CANCELLED
    worker = start_worker(queues="priority", concurrency=1, name="late")
    wait_for(
        lambda: f"Task {task.id} attempt 1 not claimed" in worker.output(),
        timeout=30,
        what="the worker to receive the message and refuse it",
    )
    row = LongTimeTask.objects.get(id=task.id)
    assert row.state == TaskState.CANCELLED and row.start_at is None and row.attempts == 0
    assert not HandlerRun.objects.filter(task_id=task.id).exists()  # the handler never ran
    assert list(row.audit_events.values_list("action", "actor_name")) == [(AuditAction.CANCELLED, "system")]


@pytest.mark.parametrize("task_type", ["test_progress", "test_progress_helper"])
def test_cooperative_cancel_stops_a_running_handler(celery_worker, user, task_type):
    params = {"steps": 200, "delay": 0.1} if task_type == "test_progress" else {"seconds": 60}
    task = services.submit_task(task_type, params, owner=user)
    wait_until_state(task.id, {TaskState.RUNNING, *DONE})
    outcome = services.cancel_task(task.id, user=user)
    assert not outcome.cancelled and outcome.task.cancel_requested_at is not None
    done = wait_until_state(task.id, DONE, timeout=15)
    assert (done.state, done.error_code) == (TaskState.CANCELLED, "cancelled")
    assert done.finish_at is not None and done.result is None
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1
    assert list(done.audit_events.values_list("action", "actor_name")) == [
        (AuditAction.CANCEL_REQUESTED, user.username)
    ]


def test_a_handler_that_never_checks_is_killed_after_the_grace_period_and_only_it(start_worker):
    worker = start_worker(
        queues="operate",
        concurrency=2,
        name="hard",
        LONG_TIME_TASK_CANCEL_GRACE_SECONDS=1,
        LONG_TIME_TASK_HEARTBEAT_INTERVAL=0.3,
    )
    target = services.submit_task("test_uncooperative", {"seconds": 60})
    neighbour = services.submit_task("test_uncooperative", {"seconds": 4})
    runs = wait_for(
        lambda: (
            {r.task_id: r for r in HandlerRun.objects.filter(task_id__in=[target.id, neighbour.id])}
            if HandlerRun.objects.filter(task_id__in=[target.id, neighbour.id]).count() == 2
            else None
        ),
        timeout=30,
        what="both tasks to run, side by side",
    )
    target_pid, neighbour_pid = runs[target.id].pid, runs[neighbour.id].pid
    assert target_pid != neighbour_pid
    services.cancel_task(target.id)
    done = wait_until_state(target.id, DONE, timeout=20)
    assert (done.state, done.error_code) == (TaskState.CANCELLED, "cancelled")
    assert "did not stop within 1s" in done.error_message
    wait_for(lambda: not process_alive(target_pid), timeout=10, what="the target's process to be gone")
    assert process_alive(neighbour_pid)
    # The neighbour was not touched: it finishes normally, in the same process.
    assert wait_until_state(neighbour.id, DONE, timeout=20).state == TaskState.FINISHED
    assert [r.pid for r in HandlerRun.objects.filter(task_id=neighbour.id)] == [neighbour_pid]
    actions = list(done.audit_events.values_list("action", flat=True))
    assert actions == [AuditAction.CANCEL_REQUESTED, AuditAction.CANCEL_ENFORCED]
    # Never retried, and the worker goes on with new work.
    assert HandlerRun.objects.filter(task_id=target.id).count() == 1
    after = services.submit_task("test_uncooperative", {"seconds": 0})
    assert wait_until_state(after.id, DONE, timeout=20).state == TaskState.FINISHED
    assert f"Task {target.id} did not stop within 1s of its cancel request: killed its process {target_pid}" in (
        worker.output()
    )


def test_a_cancel_request_survives_the_loss_of_the_worker(start_worker):
    # The worker dies (SIGKILL of every process) while the cancel is pending: the recovery ends the task
    # CANCELLED instead of running it again.
    worker = start_worker(
        queues="operate",
        concurrency=1,
        name="doomed",
        LONG_TIME_TASK_LEASE_SECONDS=2,
        LONG_TIME_TASK_HEARTBEAT_INTERVAL=0.5,
        LONG_TIME_TASK_CANCEL_GRACE_SECONDS=600,
    )
    task = services.submit_task("test_uncooperative", {"seconds": 60})
    wait_until_state(task.id, {TaskState.RUNNING, *DONE})
    services.cancel_task(task.id)
    os.killpg(worker.process.pid, signal.SIGKILL)  # main process and child: nobody renews the lease
    worker.process.wait(10)

    def reaped() -> LongTimeTask | None:
        recovery.reap_expired_leases()
        row = LongTimeTask.objects.get(id=task.id)
        return row if row.state in DONE else None

    done = wait_for(reaped, timeout=30, interval=0.3, what="the reaper to settle the task")
    assert (done.state, done.error_code) == (TaskState.CANCELLED, "cancelled")
    # A new worker on the same queue does not run it again.
    again = start_worker(queues="operate", concurrency=1, name="after")
    probe = services.submit_task("test_uncooperative", {"seconds": 0})
    assert wait_until_state(probe.id, DONE, timeout=30).state == TaskState.FINISHED
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1
    assert f"Running task {task.id} " not in again.output()


def test_retry_and_rerun_make_linked_tasks_that_run(celery_worker, user):
    failed = wait_until_state(services.submit_task("test_fail", {"message": "x"}, owner=user).id, DONE)
    assert failed.state == TaskState.FAILED
    retry = services.retry_task(failed.id, user=user)
    assert (retry.retry_of_id, retry.owner_id, retry.task_params) == (failed.id, user.id, {"message": "x"})
    assert wait_until_state(retry.id, DONE).state == TaskState.FAILED  # it ran (and failed) again

    finished = wait_until_state(services.submit_task("test_echo", {"n": 7}, owner=user).id, DONE)
    rerun = services.retry_task(finished.id, user=user, rerun=True)
    done = wait_until_state(rerun.id, DONE)
    assert (done.state, done.result["echo"], done.retry_of_id) == (TaskState.FINISHED, {"n": 7}, finished.id)
    original = LongTimeTask.objects.get(id=finished.id)
    assert (original.state, original.result["task_id"]) == (TaskState.FINISHED, finished.id)  # history kept
    events = list(original.audit_events.values_list("action", "actor_name", "new_task_id"))
    assert events == [(AuditAction.RERUN, user.username, rerun.id)]


def still_waiting_until(task: LongTimeTask, *, sweep: bool = False) -> None:
    """Until just before ``task.run_after``: the row stays PENDING, its handler has not run, and (``sweep``)
    the sweeper finds nothing to publish. Bounded by the task's start time."""
    assert task.run_after is not None
    while timezone.now() < task.run_after - timedelta(seconds=0.2):
        assert LongTimeTask.objects.get(id=task.id).state == TaskState.PENDING
        assert not HandlerRun.objects.filter(task_id=task.id).exists()
        if sweep:
            assert recovery.dispatch_due_tasks() == 0, "the sweeper published a task before its time"
        time.sleep(0.1)


def test_a_short_delay_waits_for_its_time_then_runs_once(celery_worker):
    task = services.submit_task("test_echo", {}, countdown=2)  # published at once, with a broker ETA
    still_waiting_until(task)
    done = wait_until_state(task.id, DONE, timeout=20)
    assert done.state == TaskState.FINISHED and done.start_at >= task.run_after
    assert recovery.dispatch_due_tasks() == 0  # nothing left to publish
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1


def test_a_long_delay_waits_in_the_database_and_the_sweeper_publishes_it_once(celery_worker, broker, settings):
    settings.LONG_TIME_TASK_ETA_MAX_SECONDS = 0  # every delay waits in the database
    task = services.submit_task("test_echo", {}, countdown=2)
    assert task.redispatch_at == task.run_after
    assert queued(broker, "default") == 0  # nothing was published at submit
    still_waiting_until(task, sweep=True)
    assert wait_for(recovery.dispatch_due_tasks, timeout=10, what="the sweeper to publish the due task") == 1
    done = wait_until_state(task.id, DONE, timeout=20)
    assert done.state == TaskState.FINISHED and done.start_at >= task.run_after
    for _ in range(3):
        assert recovery.dispatch_due_tasks() == 0
    assert HandlerRun.objects.filter(task_id=task.id).count() == 1


def test_concurrent_duplicate_submits_with_one_key_make_one_row_and_one_publish(broker, user):
    # The priority queue has no consumer here, so the published messages can be counted in Redis.
    barrier = threading.Barrier(2)
    results: list[object] = []

    def submit() -> None:
        try:
            barrier.wait(5)
            results.append(services.submit("test_priority_low", {"a": 1}, owner=user, idempotency_key="k-1"))
        except Exception as exc:  # reported below
            results.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(r, services.Submission) for r in results), results
    submissions = [r for r in results if isinstance(r, services.Submission)]
    assert len({s.task.id for s in submissions}) == 1
    assert sorted(s.created for s in submissions) == [False, True]
    assert LongTimeTask.objects.filter(idempotency_key="k-1").count() == 1
    assert queued(broker, "priority") == 1
    for name in ["priority"] + [f"priority:{step}" for step in range(1, 10)]:
        broker.delete(name)

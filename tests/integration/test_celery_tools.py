"""Celery's own tools tell the truth about tracked tasks: what `celery events` and Flower show (task names, failures,
retries, revokes, no maintenance noise), read with Celery's event receiver from a real worker started with -E; and the
library's JSON log lines from a real worker. Real Redis and PostgreSQL."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import states

from demo.celery import app
from long_time_task import dispatch, services
from long_time_task.models import AuditAction, LongTimeTask, TaskState
from long_time_task.worker import recovery
from tests.celery_events import EventCapture
from tests.integration.test_operate import process_alive, queued
from tests.integration.test_worker import wait_until_state
from tests.testapp.models import HandlerRun
from tests.workers import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

DONE: set[str] = {TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED}
EXECUTOR_FIELDS = {"task_id", "task_type", "attempt", "worker", "queue", "outcome", "duration_ms"}


class EventsWorker(WorkerProcess):
    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"


@pytest.fixture
def start(worker_database: str, broker: Any, tmp_path: Any) -> Iterator[Any]:
    """Start a worker with task events on (-E), on the "operate" queue unless told otherwise."""
    started: list[EventsWorker] = []

    def start_worker(*, queues: str = "operate", concurrency: int = 1, **env: Any) -> EventsWorker:
        name = f"tools{len(started)}"
        worker = EventsWorker(
            queues=queues,
            concurrency=concurrency,
            name=name,
            log_path=tmp_path / f"{name}.log",
            env=worker_env(worker_database, **env),
            extra_args=["-E"],
        )
        started.append(worker)
        return worker.start()  # type: ignore[return-value]

    yield start_worker
    for worker in started:
        worker.stop()


@pytest.fixture
def events() -> Iterator[EventCapture]:
    with EventCapture(app) as capture:
        yield capture


def unacked_ids(broker: Any) -> set[str]:
    """Celery ids of the messages Redis holds as delivered but not acknowledged (kombu's ``unacked`` hash)."""
    return {json.loads(value)[0]["headers"]["id"] for value in broker.hvals("unacked")}


def runs(task: LongTimeTask) -> int:
    return HandlerRun.objects.filter(task_id=task.id).count()


# ---------------------------------------------------------------- names and outcomes


def test_events_name_each_task_by_its_type_and_show_failures_retries_and_successes(start, events, broker):
    worker = start()
    events.sync(worker.hostname)
    ok = services.submit_task("tools_ok", {})
    failing = services.submit_task("tools_fail", {})
    overrun = services.submit_task("tools_soft_timeout", {})
    flaky = services.submit_task("tools_flaky", {})
    rows = {t.id: wait_until_state(t.id, DONE) for t in (ok, failing, overrun, flaky)}
    assert [rows[t.id].state for t in (ok, failing, overrun, flaky)] == [
        TaskState.FINISHED,
        TaskState.FAILED,
        TaskState.FAILED,
        TaskState.FINISHED,
    ]
    events.sync(worker.hostname)  # every event the worker sent before this heartbeat has arrived

    for task in (ok, failing, overrun, flaky):
        shown = events.shown(task.celery_task_id)
        assert shown.name == task.task_type  # not execute_long_time_task
        assert {e["name"] for e in events.of_task(task.celery_task_id) if e["type"] == "task-received"} == {
            task.task_type
        }
    assert events.shown(ok.celery_task_id).args == f"(task_id={ok.id}, attempt=1)"

    assert events.task_types(ok.celery_task_id) == ["task-received", "task-started", "task-succeeded"]
    assert events.shown(ok.celery_task_id).state == states.SUCCESS

    # A handler that raised: the row first, then task-failed (not SUCCESS, as the executor's return used to say).
    assert events.task_types(failing.celery_task_id) == ["task-received", "task-started", "task-failed"]
    shown = events.shown(failing.celery_task_id)
    assert shown.state == states.FAILURE
    assert "AttemptFailed" in shown.exception and "handler_error" in shown.exception
    assert "tools_fail always fails" not in shown.exception  # the handler's own text stays in the row, for staff
    assert rows[failing.id].error_code == "handler_error"

    shown = events.shown(overrun.celery_task_id)
    assert (shown.state, rows[overrun.id].error_code) == (states.FAILURE, "soft_timeout")
    assert "AttemptFailed" in shown.exception and "soft_timeout" in shown.exception

    # A retried attempt: task-retried, then the next attempt (same Celery id) runs and succeeds.
    flaky_types = events.task_types(flaky.celery_task_id)
    assert flaky_types.count("task-retried") == 1 and flaky_types.count("task-started") == 2
    assert flaky_types[-1] == "task-succeeded" and "task-failed" not in flaky_types
    assert events.shown(flaky.celery_task_id).state == states.SUCCESS
    assert (rows[flaky.id].attempts, runs(flaky)) == (2, 2)

    # Acknowledged as before: nothing left queued or unacknowledged; every handler ran once per attempt.
    assert queued(broker, "operate") == 0
    assert not unacked_ids(broker) & {t.celery_task_id for t in (ok, failing, overrun, flaky)}
    assert [runs(t) for t in (ok, failing, overrun)] == [1, 1, 1]
    # Expected failures: one INFO line from Celery each, no traceback logged as an unexpected error.
    output = worker.output()
    assert f"tools_fail[{failing.celery_task_id}] raised expected: AttemptFailed" in output
    assert "raised unexpected" not in output and "Traceback" not in output


def test_a_failed_task_rejected_instead_of_acknowledged_is_never_run_again(start, events, broker):
    # task_acks_on_failure_or_timeout=False (acks_late): Celery rejects a failed task's message without requeueing
    # it (for a dead-letter queue). A copy delivered again anyway finds the row terminal and is skipped.
    worker = start(LTT_TEST_ACKS_ON_FAILURE="false")
    events.sync(worker.hostname)
    task = services.submit_task("tools_fail", {})
    row = wait_until_state(task.id, DONE)
    assert row.state == TaskState.FAILED
    wait_for(lambda: "task-failed" in events.task_types(task.celery_task_id), timeout=10, what="the task-failed event")
    wait_for(lambda: task.celery_task_id not in unacked_ids(broker), timeout=10, what="the message to be settled")
    assert queued(broker, "operate") == 0  # rejected, not requeued

    assert dispatch.publish(row, attempt=1)  # the same message once more, as a dead-letter consumer might
    wait_for(
        lambda: f"Task {task.id} attempt 1 not claimed" in worker.output(), timeout=20, what="the copy to be skipped"
    )
    assert runs(task) == 1
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.FAILED


# ---------------------------------------------------------------- revoke


def test_a_revoke_before_the_run_cancels_the_row_and_the_message_is_discarded(start, events):
    worker = start()
    events.sync(worker.hostname)
    task = services.submit_task("tools_ok", {}, countdown=5)  # published now, with a broker ETA: held by the worker
    app.control.revoke(task.celery_task_id)
    row = wait_until_state(task.id, DONE, timeout=20)
    assert (row.state, row.attempts, runs(task)) == (TaskState.CANCELLED, 0, 0)
    ((action, actor, note),) = row.audit_events.values_list("action", "actor_name", "note")
    assert (action, actor) == (AuditAction.CANCELLED, "system")
    assert note == "celery revoke (message discarded, attempt 1)"
    events.sync(worker.hostname)
    assert "task-revoked" in events.task_types(task.celery_task_id)
    assert events.shown(task.celery_task_id).state == states.REVOKED
    assert f"Discarding revoked task: tools_ok[{task.celery_task_id}]" in worker.output()


def test_a_revoke_with_terminate_cancels_the_running_task_at_once(start, events):
    worker = start()
    events.sync(worker.hostname)
    task = services.submit_task("tools_sleep", {"seconds": 60})
    run = wait_for(lambda: HandlerRun.objects.filter(task_id=task.id).first(), timeout=30, what="the handler to run")
    app.control.revoke(task.celery_task_id, terminate=True)
    # At once: well within the lease (30 s), so not by the reaper, which no test worker runs anyway.
    row = wait_until_state(task.id, DONE, timeout=10)
    assert (row.state, row.error_code) == (TaskState.CANCELLED, "cancelled")
    assert row.error_message == "The task was cancelled: a Celery revoke terminated it while it ran."
    wait_for(lambda: not process_alive(run.pid), timeout=10, what="the handler's process to be gone")
    assert list(row.audit_events.values_list("action", "actor_name", "note")) == [
        (AuditAction.CANCEL_REQUESTED, "system", "celery revoke (terminated, attempt 1)")
    ]
    events.sync(worker.hostname)
    assert events.shown(task.celery_task_id).state == states.REVOKED
    assert runs(task) == 1


# ---------------------------------------------------------------- the worker's own filters, with shadow names


def test_leases_are_renewed_and_a_lost_process_is_recovered_with_shadow_names(start):
    start(LONG_TIME_TASK_LEASE_SECONDS=3, LONG_TIME_TASK_HEARTBEAT_INTERVAL=0.3)
    task = services.submit_task("tools_ok", {"seconds": 6})  # runs twice as long as its lease
    first = wait_for(
        lambda: (
            LongTimeTask.objects.filter(id=task.id, state=TaskState.RUNNING)
            .values_list("lease_expires_at", flat=True)
            .first()
        ),
        timeout=30,
        what="the task to run",
    )
    wait_for(
        lambda: LongTimeTask.objects.filter(id=task.id, lease_expires_at__gt=first + timedelta(seconds=2)).exists(),
        timeout=10,
        what="the heartbeat to renew the lease",
    )
    assert wait_until_state(task.id, DONE).state == TaskState.FINISHED

    killed = services.submit_task("tools_kill_once", {})
    row = wait_until_state(killed.id, DONE, timeout=30)
    # Recovered by the worker's main process when the child died (the task_failure signal), then run again.
    assert (row.state, row.attempts, runs(killed)) == (TaskState.FINISHED, 2, 2)


# ---------------------------------------------------------------- maintenance


def test_maintenance_tasks_send_no_events(start, events):
    worker = start(queues="operate,maintenance")
    events.sync(worker.hostname)
    names = [recovery.REAPER_TASK, recovery.SWEEPER_TASK, "long_time_task.purge_expired_tasks"]
    ids = [app.send_task(name, queue="maintenance").id for name in names for _ in range(2)]
    tracked = services.submit_task("tools_ok", {})
    wait_for(
        lambda: all(f"[{i}] succeeded in" in worker.output() for i in ids), timeout=30, what="every maintenance run"
    )
    wait_until_state(tracked.id, DONE)
    events.sync(worker.hostname)
    assert events.task_types(tracked.celery_task_id)[-1] == "task-succeeded"  # the capture does see task events
    assert [e for i in ids for e in events.of_task(i)] == []


# ---------------------------------------------------------------- JSON logs


def test_a_worker_with_json_logs_writes_each_executor_line_as_json_with_the_tasks_fields(start):
    worker = start(LONG_TIME_TASK_LOG_FORMAT="json")
    ok = services.submit_task("tools_ok", {})
    failing = services.submit_task("tools_fail", {})
    for task in (ok, failing):
        wait_until_state(task.id, DONE)

    def executor_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
        return [line for line in lines if line["logger"] == "long_time_task.worker.executor"]

    def ending(task: LongTimeTask, outcome: str) -> dict[str, Any] | None:
        return next((e for e in executor_lines() if e["task_id"] == task.id and e["outcome"] == outcome), None)

    finished = wait_for(lambda: ending(ok, "finished"), timeout=10, what="the finish line")
    failed = wait_for(lambda: ending(failing, "failed"), timeout=10, what="the failure line")
    lines = executor_lines()
    assert {line["task_id"] for line in lines} >= {ok.id, failing.id}
    for line in lines:
        assert EXECUTOR_FIELDS <= line.keys(), line
        moment = datetime.fromisoformat(line["timestamp"])
        assert moment.utcoffset() == timedelta(0), line["timestamp"]
    for line, task in ((finished, ok), (failed, failing)):
        assert line["task_type"] == task.task_type and line["attempt"] == 1
        assert line["worker"] == worker.hostname and line["queue"] == "operate"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert (finished["level"], failed["level"], failed["error_code"]) == ("INFO", "ERROR", "handler_error")
    assert failed["message"].startswith(f"Task {failing.id} (tools_fail) attempt 1 failed (handler_error) after ")
    # Once each: the library's lines do not also go through the root logger's handler.
    assert sum(f"Task {ok.id} (tools_ok) attempt 1 finished" in line for line in worker.output().splitlines()) == 1

"""Every queue has a consumer: the workers' rows, the queues that must be read, the check, the overview."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from long_time_task.models import WorkerHeartbeat
from long_time_task.observability.consumers import (
    maintenance_queues,
    queue_consumers,
    task_queues,
    unconsumed_queues,
)
from long_time_task.retention import FORGET_WORKERS_AFTER, purge_expired_tasks
from long_time_task.worker.heartbeat import LeaseHeartbeat, consumed_queues

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_other_workers() -> None:
    """Each test starts from an empty table (the session's real worker writes its row there too; the deletion is
    rolled back with the test)."""
    WorkerHeartbeat.objects.all().delete()


SCHEDULE = {
    "reaper": {"task": "long_time_task.reap_expired_leases", "schedule": 10, "options": {"queue": "maintenance"}},
    "sweeper": {"task": "long_time_task.dispatch_due_tasks", "schedule": 10},  # no queue: the default queue
    "other": {"task": "someone.else", "schedule": 10, "options": {"queue": "elsewhere"}},
}


def seen(hostname: str, queues: list[str], *, ago: float = 0, stopped: bool = False) -> WorkerHeartbeat:
    WorkerHeartbeat.objects.beat(hostname, queues=queues, pid=123, concurrency=2)
    at = timezone.now() - timedelta(seconds=ago)
    WorkerHeartbeat.objects.filter(hostname=hostname).update(
        last_seen_at=at, started_at=at, stopped_at=at if stopped else None
    )
    return WorkerHeartbeat.objects.get(hostname=hostname)


def names(rows: list[Any]) -> set[str]:
    return {row.name for row in rows}


def test_a_beat_inserts_the_row_once_then_updates_it() -> None:
    WorkerHeartbeat.objects.beat("w1@h", queues=["b", "a", "a"], pid=10, concurrency=4)
    WorkerHeartbeat.objects.beat("w1@h", queues=["a"], pid=11, concurrency=4)
    (row,) = WorkerHeartbeat.objects.all()
    assert (row.hostname, row.queues, row.pid, row.concurrency) == ("w1@h", ["a"], 11, 4)
    assert row.stopped_at is None and row.started_at <= row.last_seen_at


def test_alive_means_heard_from_within_the_window_and_not_stopped() -> None:
    seen("fresh@h", ["a"], ago=1)
    seen("late@h", ["a"], ago=40)
    seen("stopped@h", ["a"], ago=1, stopped=True)
    alive = {row.hostname for row in WorkerHeartbeat.objects.alive(30)}
    assert alive == {"fresh@h"}
    WorkerHeartbeat.objects.stopped("fresh@h")
    assert not WorkerHeartbeat.objects.alive(30).exists()
    # A stopped worker that starts again is alive again.
    WorkerHeartbeat.objects.started("stopped@h", queues=["a"], pid=1, concurrency=1)
    assert {row.hostname for row in WorkerHeartbeat.objects.alive(30)} == {"stopped@h"}


def test_the_queues_that_must_be_read_are_the_registry_s_and_the_maintenance_jobs(settings: Any) -> None:
    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    settings.CELERY_TASK_DEFAULT_QUEUE = "default"
    assert maintenance_queues() == {"maintenance", "default"}
    assert {"default", "heavy", "priority"} <= task_queues()
    assert "elsewhere" not in task_queues() | maintenance_queues()


def test_queue_consumers_counts_live_workers_per_queue(settings: Any) -> None:
    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    seen("a@h", ["default", "maintenance", "extra"])
    seen("b@h", ["default"])
    seen("dead@h", ["heavy"], ago=3600)
    rows = {row.name: row for row in queue_consumers()}
    assert rows["default"].consumers == 2 and rows["default"].purpose == "tasks + maintenance"
    assert rows["maintenance"].consumers == 1 and rows["maintenance"].purpose == "maintenance"
    assert rows["heavy"].consumers == 0 and rows["heavy"].purpose == "tasks"
    assert rows["extra"].consumers == 1 and rows["extra"].purpose == ""  # read, but nothing is sent there
    unconsumed = names(unconsumed_queues())
    assert "heavy" in unconsumed and not unconsumed & {"default", "maintenance", "extra"}


def check_messages(settings: Any, databases: list[str] | None = ("default",)) -> dict[str, str]:  # type: ignore[assignment]
    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    issues = run_checks(databases=list(databases) if databases else None)
    return {issue.msg: issue.hint or "" for issue in issues if issue.id == "long_time_task.W006"}


def test_the_check_names_each_queue_nobody_reads(settings: Any) -> None:
    seen("a@h", ["default", "heavy"])
    seen("gone@h", ["maintenance", "priority"], ago=3600)
    messages = check_messages(settings)
    assert any("'maintenance'" in msg and "lost tasks are not recovered" in msg for msg in messages)
    assert any("'priority'" in msg and "wait until a worker reads it" in msg for msg in messages)
    assert not any("'default'" in msg or "'heavy'" in msg for msg in messages)
    assert any("-Q maintenance" in hint for hint in messages.values())


def test_the_check_is_a_database_check_and_quiet_on_a_new_installation(settings: Any) -> None:
    assert check_messages(settings) == {}  # no worker ever started: nothing to say yet
    seen("gone@h", ["default"], ago=3600)
    assert check_messages(settings, databases=None) == {}  # plain `manage.py check`: no database queries
    assert check_messages(settings)


def test_the_heartbeat_writes_the_row_with_what_the_consumer_reads_now() -> None:
    class Queue:
        def __init__(self, name: str) -> None:
            self.name = name

    class Consumer:
        task_consumer: Any = type("TaskConsumer", (), {"queues": [Queue("default"), Queue("maintenance")]})()

    consumer = Consumer()
    heartbeat = LeaseHeartbeat("w@h", interval=60, lease=30, queues=consumed_queues(consumer), concurrency=3)
    heartbeat.present(started=True)
    row = WorkerHeartbeat.objects.get(hostname="w@h")
    assert row.queues == ["default", "maintenance"] and row.concurrency == 3
    consumer.task_consumer.queues.append(Queue("heavy"))  # `celery control add_consumer heavy`
    heartbeat.beat()
    assert WorkerHeartbeat.objects.get(hostname="w@h").queues == ["default", "heavy", "maintenance"]
    consumer.task_consumer = None  # reconnecting to the broker: the last queues seen stand
    heartbeat.beat()
    assert WorkerHeartbeat.objects.get(hostname="w@h").queues == ["default", "heavy", "maintenance"]
    heartbeat.gone()
    assert not WorkerHeartbeat.objects.alive(30).exists()


def test_the_purge_forgets_workers_not_seen_for_a_week() -> None:
    seen("old@h", ["default"], ago=FORGET_WORKERS_AFTER + 60)
    seen("recent@h", ["default"], ago=FORGET_WORKERS_AFTER - 3600, stopped=True)
    purge_expired_tasks()
    assert list(WorkerHeartbeat.objects.values_list("hostname", flat=True)) == ["recent@h"]


def test_the_overview_shows_consumers_and_flags_unread_queues(staff_user: Any, settings: Any) -> None:
    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    seen("a@h", ["default", "heavy", "priority"])
    seen("old@h", ["maintenance"], ago=600)
    browser = Client()
    browser.force_login(staff_user)
    response = browser.get(reverse("ltt_dashboard:overview"))
    queues = {q.name: q for q in response.context["queues"]}
    assert queues["default"].consumers == 1 and not queues["default"].unconsumed
    assert queues["maintenance"].unconsumed
    workers = {w.name: w for w in response.context["workers"]}
    assert workers["a@h"].alive and workers["a@h"].queues == ["default", "heavy", "priority"]
    assert not workers["old@h"].alive
    assert [w.name for w in response.context["workers"]] == ["a@h", "old@h"]  # alive first
    page = response.content.decode()
    assert "the reaper and the sweeper do not run" in page


def test_the_cli_lists_queues_and_workers_and_fails_when_one_is_unread(settings: Any) -> None:
    import json
    from io import StringIO

    from django.core.management import CommandError, call_command

    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    seen("a@h", ["default", "heavy", "maintenance"])
    out = StringIO()
    with pytest.raises(CommandError, match="No live worker consumes: .*priority"):
        call_command("tasks", "queues", stdout=out)
    text = out.getvalue()
    assert "NONE" in text and "a@h" in text and "default,heavy,maintenance" in text
    seen("b@h", sorted(task_queues() | maintenance_queues()))
    out = StringIO()
    call_command("tasks", "queues", "--json", stdout=out)  # every queue read: no error
    data = json.loads(out.getvalue())
    assert {w["hostname"] for w in data["workers"]} == {"a@h", "b@h"}
    assert {q["name"]: q["consumers"] for q in data["queues"]}["default"] == 2
    assert all(q["consumers"] for q in data["queues"] if q["purpose"])


def test_the_metrics_count_live_workers_and_the_consumers_of_each_queue(settings: Any) -> None:
    from long_time_task.metrics.collector import worker_gauges

    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    seen("a@h", ["default", "maintenance"])
    seen("b@h", ["default"])
    seen("dead@h", ["heavy"], ago=3600)
    alive, consumers = worker_gauges()
    assert [sample.value for sample in alive.samples] == [2]
    by_queue = {sample.labels["queue_name"]: sample.value for sample in consumers.samples}
    assert by_queue["default"] == 2 and by_queue["maintenance"] == 1
    assert by_queue["heavy"] == 0 and by_queue["priority"] == 0  # sent there, read by nobody alive

"""Reaper, sweeper, heartbeat and the reliability checks, in-process (publishes are captured).

The same mechanisms are proved against real faults in tests/faults/.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import current_app
from django.test import override_settings
from django.utils import timezone

from long_time_task import dispatch
from long_time_task.checks import check_maintenance_scheduled, check_visibility_timeout
from long_time_task.models import AttemptCause, LongTimeTask, TaskState
from long_time_task.worker import heartbeat, recovery

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    calls: list[tuple[int, int]] = []

    def capture(task, *, attempt, countdown=None):
        calls.append((task.id, attempt))
        return True

    monkeypatch.setattr(recovery, "publish", capture)
    return calls


def running(attempts: int = 1, *, lease_ago: float = 5, started_ago: float = 10, **kwargs) -> LongTimeTask:
    now = timezone.now()
    return LongTimeTask.objects.create(
        task_type=kwargs.pop("task_type", "test_echo"),
        state=TaskState.RUNNING,
        attempts=attempts,
        claimed_at=now - timedelta(seconds=started_ago),
        lease_expires_at=now - timedelta(seconds=lease_ago),
        **kwargs,
    )


def test_reaper_requeues_a_task_whose_lease_expired(published):
    task = running(attempts=1)
    assert recovery.reap_expired_leases() == {"requeued": 1}
    task.refresh_from_db()
    assert (task.state, task.attempts, task.error_code) == (TaskState.RETRYING, 1, "worker_lost")
    assert "lease expired during attempt 1" in task.error_message and task.lease_expires_at is None
    assert published == [(task.id, 2)]
    assert recovery.reap_expired_leases() == {}  # a second reaper finds nothing to do


def test_reaper_fails_a_task_whose_attempts_are_used_up(published):
    task = running(attempts=4)  # test_echo: max_retries=3, so 4 attempts in all
    assert recovery.reap_expired_leases() == {"failed": 1}
    task.refresh_from_db()
    assert (task.state, task.error_code) == (TaskState.FAILED, "worker_lost")
    assert task.error_message == "Worker lost: its lease expired during attempt 4 of 4"
    assert published == []


def test_reaper_fails_a_task_past_its_hard_time_limit_without_retrying(published):
    task = running(attempts=1, started_ago=31)  # test_echo: timeout=30
    assert recovery.reap_expired_leases() == {"timeout": 1}
    task.refresh_from_db()
    assert (task.state, task.error_code) == (TaskState.FAILED, "timeout")
    assert published == []


def test_reaper_leaves_live_leases_and_other_states_alone(published):
    live = running(lease_ago=-30)
    waiting = LongTimeTask.objects.create(task_type="test_echo", lease_expires_at=timezone.now() - timedelta(hours=1))
    assert recovery.reap_expired_leases() == {}
    assert LongTimeTask.objects.get(id=live.id).state == TaskState.RUNNING
    assert LongTimeTask.objects.get(id=waiting.id).state == TaskState.PENDING


def test_a_lost_child_is_recovered_only_for_its_own_attempt(published):
    task = running(attempts=2, lease_ago=-30)
    assert recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST) == "skipped"  # a stale report
    assert recovery.recover_attempt(task.id, 2, AttemptCause.WORKER_LOST) == "requeued"
    assert published == [(task.id, 3)]


def test_sweeper_publishes_due_rows_once_and_backs_off(published):
    now = timezone.now()
    due = LongTimeTask.objects.create(task_type="test_echo", redispatch_at=now - timedelta(seconds=1))
    retry_due = LongTimeTask.objects.create(
        task_type="test_echo", state=TaskState.RETRYING, attempts=2, redispatch_at=now - timedelta(seconds=1)
    )
    LongTimeTask.objects.create(task_type="test_echo", redispatch_at=now + timedelta(minutes=5))  # not yet
    LongTimeTask.objects.create(task_type="test_echo", state=TaskState.FINISHED, redispatch_at=now)  # done
    assert recovery.dispatch_due_tasks() == 2
    assert sorted(published) == sorted([(due.id, 1), (retry_due.id, 3)])
    assert recovery.dispatch_due_tasks() == 0  # postponed, not published again at once
    due.refresh_from_db()
    assert due.dispatch_count == 1 and due.redispatch_at > now + timedelta(seconds=100)


def test_sweeper_fails_rows_of_a_type_no_worker_knows(published):
    past = timezone.now() - timedelta(seconds=1)
    gone = LongTimeTask.objects.create(task_type="renamed_away", redispatch_at=past)
    due = LongTimeTask.objects.create(task_type="test_echo", redispatch_at=past)
    assert recovery.dispatch_due_tasks() == 1
    gone.refresh_from_db()
    assert (gone.state, gone.error_code) == (TaskState.FAILED, "unknown_task_type")
    assert published == [(due.id, 1)]


def test_a_failed_publish_keeps_a_waiting_retry_due_at_its_retry_time(monkeypatch):

    later = timezone.now() + timedelta(minutes=5)
    task = LongTimeTask.objects.create(
        task_type="test_echo", state=TaskState.RETRYING, attempts=1, retry_at=later, redispatch_at=later
    )

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(current_app.tasks[dispatch.EXECUTOR_TASK], "apply_async", refuse)
    assert dispatch.publish(task, attempt=2, countdown=300) is False
    task.refresh_from_db()
    assert task.redispatch_at == later


def test_failure_text_is_made_storable():
    task = running(attempts=1)
    code = "c" * 80
    assert LongTimeTask.objects.fail(task.id, attempt=1, message="a\x00b \ud800", code=code, traceback="t\x00")
    task.refresh_from_db()
    assert task.error_message == "a\\x00b \\ud800" and task.error_code == "c" * 50
    assert task.error_traceback == "t\\x00"


def test_sweeper_stops_at_the_first_failed_publish(monkeypatch):
    attempts: list[int] = []

    def broker_down(task, *, attempt, countdown=None):
        attempts.append(task.id)
        return False

    monkeypatch.setattr(recovery, "publish", broker_down)
    past = timezone.now() - timedelta(seconds=1)
    for _ in range(3):
        LongTimeTask.objects.create(task_type="test_echo", redispatch_at=past)
    assert recovery.dispatch_due_tasks() == 0
    assert len(attempts) == 1


def test_submit_schedules_the_safety_net_and_a_failed_publish_makes_the_row_due(monkeypatch, settings):
    from long_time_task import services

    settings.LONG_TIME_TASK_REDISPATCH_AFTER = 120
    task = LongTimeTask.objects.create(task_type="test_echo", redispatch_at=timezone.now() + timedelta(minutes=2))

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(current_app.tasks[dispatch.EXECUTOR_TASK], "apply_async", refuse)
    assert dispatch.publish(task, attempt=1) is False
    task.refresh_from_db()
    assert task.redispatch_at <= timezone.now()
    fresh = services.submit_task("test_echo", {})
    assert fresh.redispatch_at > timezone.now() + timedelta(seconds=100)


def test_heartbeat_renews_only_the_running_rows_of_this_worker(monkeypatch):
    mine = running(lease_ago=-1, worker="w1@host")
    not_active = running(lease_ago=-1, worker="w1@host")
    taken_over = running(lease_ago=-1, worker="w2@host")  # requeued and claimed by another worker since
    finished = LongTimeTask.objects.create(task_type="test_echo", state=TaskState.FINISHED, worker="w1@host")
    ids = [mine.celery_task_id, taken_over.celery_task_id, finished.celery_task_id]
    monkeypatch.setattr(heartbeat, "active_celery_ids", lambda: ids)
    assert heartbeat.LeaseHeartbeat(worker="w1@host", interval=1, lease=60).beat() == 1
    for task in (mine, not_active, taken_over):
        task.refresh_from_db()
    assert mine.lease_expires_at > timezone.now() + timedelta(seconds=50)
    assert not_active.lease_expires_at < timezone.now() + timedelta(seconds=5)
    assert taken_over.lease_expires_at < timezone.now() + timedelta(seconds=5)


def test_visibility_timeout_check():
    redis = "redis://127.0.0.1:6379/0"
    with override_settings(CELERY_BROKER_URL=redis, CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 60}):
        warnings = check_visibility_timeout()
    assert [w.id for w in warnings] == ["long_time_task.W002"] and "7800s" in warnings[0].msg
    with override_settings(CELERY_BROKER_URL=redis, CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 43200}):
        assert check_visibility_timeout() == []
    with override_settings(CELERY_BROKER_URL="sqla+sqlite:///x", CELERY_BROKER_TRANSPORT_OPTIONS={}):
        assert check_visibility_timeout() == []


def test_maintenance_schedule_check(settings):
    assert check_maintenance_scheduled() == []
    settings.CELERY_BEAT_SCHEDULE = {}
    warnings = check_maintenance_scheduled()
    assert [w.id for w in warnings] == ["long_time_task.W008", "long_time_task.W003"]  # W008: the scheduler's tick
    assert "long_time_task.reap_expired_leases" in warnings[1].msg

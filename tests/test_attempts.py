"""Attempt history: which attempts are recorded, what each row says, and what staff and owners see.

The recording runs against the test database (PostgreSQL in CI); publishes are captured. The same paths with a
real worker (a retry, a killed child) are in tests/integration/test_attempts_worker.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from long_time_task import retention
from long_time_task.models import ApiToken, AttemptCause, AttemptOutcome, LongTimeTask, TaskAttempt, TaskState
from long_time_task.models import attempts as attempts_module
from long_time_task.models.attempts import attempt_history
from long_time_task.registry import LongTimeTaskRegister
from long_time_task.worker import executor as executor_module
from long_time_task.worker import recovery
from long_time_task.worker.executor import Executor

from .conftest import token_client

pytestmark = pytest.mark.django_db


def succeeds(task_id: int, params: dict) -> dict:
    return {"ok": True}


def fails_then_succeeds(task_id: int, params: dict) -> dict:
    if not TaskAttempt.objects.filter(task_id=task_id).exists():
        raise ConnectionError("the service blinked")
    return {"ok": True}


def breaks(task_id: int, params: dict) -> None:
    raise ValueError("bad input")


@pytest.fixture(autouse=True)
def types():
    with LongTimeTaskRegister.isolated():
        register = LongTimeTaskRegister.register
        register(task_type="at_ok", timeout=30, soft_timeout=20)(succeeds)
        register(task_type="at_flaky", timeout=30, soft_timeout=20, retry_delay=1, retry_backoff=False)(
            fails_then_succeeds
        )
        register(task_type="at_broken", timeout=30, soft_timeout=20)(breaks)
        register(task_type="at_lost", timeout=30, soft_timeout=20, max_retries=1)(succeeds)
        yield


@pytest.fixture
def published(monkeypatch):
    calls: list[tuple[int, int]] = []

    def capture(task, *, attempt, countdown=None):
        calls.append((task.id, attempt))
        return True

    monkeypatch.setattr(recovery, "publish", capture)
    monkeypatch.setattr(executor_module, "publish", capture)
    return calls


def running(task_type: str = "at_lost", *, attempts: int = 1, worker: str = "celery@host-a", **kwargs) -> LongTimeTask:
    """A RUNNING row whose lease ran out 5 s ago, claimed 10 s ago by ``worker``."""
    now = timezone.now()
    return LongTimeTask.objects.create(
        task_type=task_type,
        state=TaskState.RUNNING,
        attempts=attempts,
        worker=worker,
        start_at=now - timedelta(seconds=60),
        claimed_at=kwargs.pop("claimed_at", now - timedelta(seconds=10)),
        lease_expires_at=now - timedelta(seconds=5),
        **kwargs,
    )


def recorded(task: LongTimeTask) -> list[TaskAttempt]:
    return list(TaskAttempt.objects.filter(task=task).order_by("number"))


# ---------------------------------------------------------------- what is recorded, and when


def test_a_task_that_runs_once_records_nothing_and_its_history_is_the_row():
    task = LongTimeTask.objects.create(task_type="at_ok")
    assert Executor(worker="celery@host-a").run(task.id, 1) == "finished"
    task.refresh_from_db()
    assert recorded(task) == []
    [only] = attempt_history(task)
    assert not only.recorded
    assert (only.number, only.worker, only.outcome, only.cause) == (1, "celery@host-a", "finished", "")
    assert (only.started_at, only.ended_at) == (task.claimed_at, task.finish_at)
    assert (only.error_code, only.error_message, only.error_traceback) == ("", "", "")


def test_a_handler_failure_that_ends_the_task_records_nothing():
    task = LongTimeTask.objects.create(task_type="at_broken")
    assert Executor(worker="w").run(task.id, 1) == "failed"
    task.refresh_from_db()
    assert recorded(task) == []
    [only] = attempt_history(task)
    assert (only.outcome, only.error_code) == ("failed", "handler_error")
    assert "ValueError: bad input" in only.error_traceback


def test_a_scheduled_retry_records_the_attempt_it_ended(published):
    task = LongTimeTask.objects.create(task_type="at_flaky")
    assert Executor(worker="celery@host-a").run(task.id, 1) == "retrying"
    waiting = LongTimeTask.objects.get(id=task.id)
    [first] = recorded(task)
    assert (first.number, first.worker, first.outcome, first.cause) == (1, "celery@host-a", "retry", "")
    assert first.started_at == waiting.claimed_at and first.started_at <= first.ended_at
    assert first.error_code == "temporary_error"
    assert first.error_message == "Attempt 1 failed with a temporary error; retrying."
    assert "ConnectionError: the service blinked" in first.error_traceback
    assert attempt_history(waiting) == [first]  # waiting for attempt 2: nothing more to show

    assert Executor(worker="celery@host-b").run(task.id, 2) == "finished"
    done = LongTimeTask.objects.get(id=task.id)
    history = attempt_history(done)
    assert [(a.number, a.worker, a.outcome, a.recorded) for a in history] == [
        (1, "celery@host-a", "retry", True),
        (2, "celery@host-b", "finished", False),
    ]
    assert history[1].started_at == done.claimed_at > first.ended_at
    assert published == [(task.id, 2)]


def test_a_running_attempt_does_not_show_the_error_of_the_one_before(published):
    task = LongTimeTask.objects.create(task_type="at_flaky")
    Executor(worker="w").run(task.id, 1)
    assert LongTimeTask.objects.claim(task.id, attempt=2, worker="w2", lease=30)
    current = attempt_history(LongTimeTask.objects.get(id=task.id))[-1]
    assert (current.number, current.outcome, current.error_code, current.ended_at) == (2, "running", "", None)


def test_a_dead_worker_process_is_recorded_as_worker_lost(published):
    task = running(worker="celery@host-a")
    claimed_at = task.claimed_at
    assert recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST) == "requeued"
    [lost] = recorded(task)
    assert (lost.number, lost.worker, lost.started_at) == (1, "celery@host-a", claimed_at)
    assert (lost.outcome, lost.cause, lost.error_code) == ("retry", "worker_lost", "worker_lost")
    assert lost.error_message == "Worker lost: the worker process died during attempt 1; retrying"
    assert lost.ended_at is not None and lost.ended_at > claimed_at
    assert published == [(task.id, 2)]


def test_an_expired_lease_is_recorded_by_the_reaper_as_lease_expired(published):
    task = running(worker="celery@host-a")
    assert recovery.reap_expired_leases() == {"requeued": 1}
    [expired] = recorded(task)
    assert (expired.number, expired.worker, expired.outcome, expired.cause) == (
        1,
        "celery@host-a",
        "retry",
        "lease_expired",
    )
    assert "its lease expired during attempt 1" in expired.error_message


def test_recoveries_that_end_the_task_are_recorded_with_their_cause(published):
    exhausted = running(attempts=2)  # at_lost: max_retries=1, 2 attempts in all
    too_long = running(claimed_at=timezone.now() - timedelta(seconds=31))  # timeout=30
    cancelling = running(cancel_requested_at=timezone.now())
    assert recovery.reap_expired_leases() == {"failed": 1, "timeout": 1, "cancelled": 1}
    assert [(a.number, a.outcome, a.cause, a.error_code) for a in recorded(exhausted)] == [
        (2, "failed", "lease_expired", "worker_lost")
    ]
    assert [(a.outcome, a.cause, a.error_code) for a in recorded(too_long)] == [("failed", "lease_expired", "timeout")]
    assert [(a.outcome, a.cause, a.error_code) for a in recorded(cancelling)] == [
        ("cancelled", "lease_expired", "cancelled")
    ]
    # The task row says the same as its last attempt; the history shows the recorded row, not a copy.
    history = attempt_history(LongTimeTask.objects.get(id=exhausted.id))
    assert [(a.number, a.recorded) for a in history] == [(2, True)]
    assert published == []


def test_a_recovery_that_loses_records_nothing(published):
    task = running(attempts=2)
    assert recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST) == "skipped"  # a stale report
    now = timezone.now()
    assert not LongTimeTask.objects.schedule_retry(
        task.id, attempt=1, retry_at=now, redispatch_at=now, message="m", code="c"
    )
    assert recorded(task) == []


def test_the_row_and_its_attempt_are_one_transaction(monkeypatch, published):
    task = running()

    def broken(*args, **kwargs):
        raise RuntimeError("the insert failed")

    monkeypatch.setattr(attempts_module, "record_attempt", broken)
    with pytest.raises(RuntimeError):
        recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST)
    task.refresh_from_db()
    assert (task.state, task.attempts, recorded(task)) == (TaskState.RUNNING, 1, [])
    assert published == []


def test_an_attempt_recorded_already_does_not_stop_the_transition(published):
    task = running(worker="celery@host-a")
    TaskAttempt.objects.create(task=task, number=1, worker="loaded", ended_at=timezone.now(), outcome="retry")
    assert recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST) == "requeued"
    assert [(a.number, a.worker) for a in recorded(task)] == [(1, "loaded")]


def test_attempt_numbers_are_unique_per_task():
    from django.db import IntegrityError, transaction

    task = running()
    TaskAttempt.objects.create(task=task, number=1, ended_at=timezone.now(), outcome="retry")
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskAttempt.objects.create(task=task, number=1, ended_at=timezone.now(), outcome="retry")


def test_the_history_of_a_task_that_never_started_is_empty():
    assert attempt_history(LongTimeTask.objects.create(task_type="at_ok")) == []
    cancelled = LongTimeTask.objects.create(task_type="at_ok", state=TaskState.CANCELLED, finish_at=timezone.now())
    assert attempt_history(cancelled) == []


def test_the_history_costs_one_query(published, django_assert_num_queries):
    task = running()
    recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST)
    LongTimeTask.objects.claim(task.id, attempt=2, worker="w", lease=30)
    task = LongTimeTask.objects.get(id=task.id)
    with django_assert_num_queries(1):
        assert [a.number for a in attempt_history(task)] == [1, 2]


def test_purging_a_task_deletes_its_attempts(published):
    task = running()
    recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST)
    LongTimeTask.objects.filter(id=task.id).update(
        state=TaskState.FAILED, finish_at=timezone.now() - timedelta(days=40)
    )
    LongTimeTask.objects.filter(id=task.id).update(create_at=timezone.now() - timedelta(days=41))
    assert retention.purge(retention.expired(timedelta(days=30), now=timezone.now())).tasks == 1
    assert not TaskAttempt.objects.filter(task_id=task.id).exists()


def test_the_cause_is_a_field_with_a_fixed_vocabulary():
    assert {c.value for c in AttemptCause} == {"", "worker_lost", "lease_expired"}
    assert {o.value for o in AttemptOutcome} == {"retry", "failed", "cancelled", "finished", "running"}


# ---------------------------------------------------------------- who sees it: the API detail


def recovered_then_finished(owner) -> LongTimeTask:
    """A task of ``owner`` whose attempt 1 lost its worker process on host-a and attempt 2 finished on host-b."""
    task = running(worker="celery@host-a", owner=owner)
    assert recovery.recover_attempt(task.id, 1, AttemptCause.WORKER_LOST) == "requeued"
    assert Executor(worker="celery@host-b").run(task.id, 2) == "finished"
    return LongTimeTask.objects.get(id=task.id)


def test_staff_see_the_attempt_history_in_the_api_detail(staff_user, user, published):
    task = recovered_then_finished(user)
    detail = token_client(staff_user).get(f"/api/tasks/{task.id}/").json()["task"]
    first, second = detail["attempt_history"]
    assert {k: first[k] for k in ("number", "worker", "outcome", "cause", "error_code")} == {
        "number": 1,
        "worker": "celery@host-a",
        "outcome": "retry",
        "cause": "worker_lost",
        "error_code": "worker_lost",
    }
    assert first["started_at"] and first["ended_at"] and "worker process died" in first["error_message"]
    assert {k: second[k] for k in ("number", "worker", "outcome", "cause", "error_code", "error_message")} == {
        "number": 2,
        "worker": "celery@host-b",
        "outcome": "finished",
        "cause": None,
        "error_code": "",
        "error_message": "",
    }
    assert second["started_at"] and second["ended_at"]


def test_owners_and_viewers_who_are_not_staff_do_not_see_it(user, django_user_model, published):
    from django.contrib.auth.models import Permission

    task = recovered_then_finished(user)
    viewer = django_user_model.objects.create_user(username="viewer", password="viewer-password")
    viewer.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
    for who in (user, viewer):
        response = token_client(who).get(f"/api/tasks/{task.id}/")
        assert response.status_code == 200
        assert "attempt_history" not in response.json()["task"]
        assert "host-a" not in response.content.decode() and "host-b" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_staff_detail_with_its_history_matches_the_openapi_schema(staff_user, user, live_server, published):
    import requests
    import schemathesis

    task = recovered_then_finished(user)
    LongTimeTask.objects.filter(id=task.id).update(state=TaskState.RUNNING, finish_at=None)  # ended_at: null
    _, raw = ApiToken.issue(staff_user)
    headers = {"Authorization": f"Bearer {raw}"}
    schema = requests.get(f"{live_server.url}/api/schema/?format=json", headers=headers, timeout=10).json()
    assert schema["components"]["schemas"]["TaskDetailDoc"]["properties"]["attempt_history"]["type"] == "array"
    response = requests.get(f"{live_server.url}/api/tasks/{task.id}/", headers=headers, timeout=10)
    history = response.json()["task"]["attempt_history"]
    assert [(a["outcome"], a["cause"], a["ended_at"] is None) for a in history] == [
        ("retry", "worker_lost", False),
        ("running", None, True),
    ]
    operation = schemathesis.openapi.from_dict(schema)["/api/tasks/{task_id}/"]["GET"]
    operation.validate_response(response)  # raises if the response does not conform


# ---------------------------------------------------------------- the dashboard's timeline and the admin


def dashboard(task_id: int) -> str:
    return reverse("ltt_dashboard:task_detail", kwargs={"task_id": task_id})


def client_for(who) -> Client:
    client = Client()
    client.force_login(who)
    return client


def page_of(who, path: str) -> str:
    response = client_for(who).get(path)
    assert response.status_code == 200
    return response.content.decode()


def a_flaky_task_that_retried_and_finished(owner, published) -> LongTimeTask:
    task = LongTimeTask.objects.create(task_type="at_flaky", owner=owner)
    assert Executor(worker="celery@host-a").run(task.id, 1) == "retrying"
    assert Executor(worker="celery@host-b").run(task.id, 2) == "finished"
    return LongTimeTask.objects.get(id=task.id)


def test_staff_see_each_attempt_in_the_dashboard_timeline(staff_user, user, published):
    lost = recovered_then_finished(user)
    labels = [str(i["label"]) for i in client_for(staff_user).get(dashboard(lost.id)).context["timeline"]]
    assert "Attempt 1 started on celery@host-a" in labels
    assert "Attempt 1 ended by recovery (Worker lost): Retry scheduled" in labels
    assert "Attempt 2 started on celery@host-b" in labels
    assert labels.index("Attempt 1 ended by recovery (Worker lost): Retry scheduled") < labels.index(
        "Attempt 2 started on celery@host-b"
    )
    retried = a_flaky_task_that_retried_and_finished(user, published)
    page = page_of(staff_user, dashboard(retried.id))
    assert "Attempt 1 ended: Retry scheduled" in page
    assert "temporary_error" in page and "ConnectionError: the service blinked" in page  # the attempt's traceback


def test_owners_see_the_timeline_without_other_workers_or_tracebacks(user, published):
    retried = a_flaky_task_that_retried_and_finished(user, published)
    page = page_of(user, dashboard(retried.id))
    assert "Attempt 2 started" in page
    assert "host-a" not in page and "ended by recovery" not in page and "Retry scheduled" not in page
    assert "ConnectionError" not in page


def test_the_admin_shows_recorded_attempts_read_only(admin_user, user, published):
    task = recovered_then_finished(user)
    page = page_of(admin_user, f"/admin/long_time_task/longtimetask/{task.id}/change/")
    assert "Attempt history (earlier attempts)" in page
    assert "celery@host-a" in page and "Worker lost" in page and "Retry scheduled" in page
    assert 'name="recorded_attempts-0-number"' not in page  # no form fields: read-only
    assert "recorded_attempts-TOTAL_FORMS" in page  # the inline is there

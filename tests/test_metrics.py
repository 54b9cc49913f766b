"""Prometheus metrics in one process: what each door and the executor count, the gauges a scrape reads from the
database, and who may read ``/metrics``. (Across processes, with a real worker and gunicorn, and with a real
Prometheus: tests/integration/test_metrics_*.py.)"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from rest_framework.test import APIClient

from long_time_task import metrics, services
from long_time_task.metrics import collector
from long_time_task.metrics.collector import GaugeCollector, Source, oldest_waiting
from long_time_task.metrics.exposition import render
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.worker import executor as executor_module
from long_time_task.worker import recovery
from long_time_task.worker.executor import Executor
from tests.conftest import token_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_publish(monkeypatch):
    # No broker: messages are not sent (the rows are what the counters are checked against).
    monkeypatch.setattr(executor_module, "publish", lambda *a, **k: True)
    monkeypatch.setattr(recovery, "publish", lambda *a, **k: True)
    monkeypatch.setattr(services, "publish", lambda *a, **k: True)


def value(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


class Counts:
    """The change of every series of one family across a test (the registry is the process's, shared by all
    tests)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.before = self.read()

    def read(self) -> dict[tuple[tuple[str, str], ...], float]:
        found = {}
        for family in REGISTRY.collect():
            for sample in family.samples:
                if sample.name == self.name:
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    def delta(self) -> dict[tuple[tuple[str, str], ...], float]:
        after = self.read()
        changes = {key: value - self.before.get(key, 0.0) for key, value in after.items()}
        return {key: change for key, change in changes.items() if change}


def labels(**kwargs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kwargs.items()))


def run(task: LongTimeTask, attempt: int = 1) -> str:
    return Executor(worker="unit@test").run(task.id, attempt)


def test_a_submit_counts_once_its_row_is_committed(user, django_capture_on_commit_callbacks):
    submitted = Counts("long_time_task_tasks_submitted_total")
    with django_capture_on_commit_callbacks(execute=True):
        services.submit("test_echo", {}, owner=user)
        services.submit("test_heavy", {}, owner=user)
    assert submitted.delta() == {
        labels(name="test_echo", queue_name="default"): 1.0,
        labels(name="test_heavy", queue_name="heavy"): 1.0,
    }


def test_a_submit_whose_transaction_rolls_back_counts_nothing(user, django_capture_on_commit_callbacks):
    submitted = Counts("long_time_task_tasks_submitted_total")
    with django_capture_on_commit_callbacks(execute=False):  # the caller's transaction never commits
        services.submit("test_echo", {}, owner=user)
    assert submitted.delta() == {}


def test_each_outcome_is_counted_once_with_the_rows_state_and_error_code():
    finished = Counts("long_time_task_tasks_finished_total")
    started = Counts("long_time_task_tasks_started_total")
    retried = Counts("long_time_task_tasks_retried_total")
    ok = LongTimeTask.objects.create(task_type="test_echo", queue="default")
    bad = LongTimeTask.objects.create(task_type="test_fail", queue="default")
    flaky = LongTimeTask.objects.create(task_type="test_flaky", queue="default", task_params={"failures": 1})
    assert run(ok) == "finished" and run(ok) == "skipped"  # a duplicate delivery counts nothing
    assert run(bad) == "failed"
    assert run(flaky) == "retrying"
    LongTimeTask.objects.filter(id=flaky.id).update(retry_at=timezone.now())
    assert run(flaky, attempt=2) == "finished"
    assert finished.delta() == {
        labels(name="test_echo", queue_name="default", state="FINISHED", error_code=""): 1.0,
        labels(name="test_fail", queue_name="default", state="FAILED", error_code="handler_error"): 1.0,
        labels(name="test_flaky", queue_name="default", state="FINISHED", error_code=""): 1.0,
    }
    assert started.delta() == {
        labels(name="test_echo", queue_name="default"): 1.0,
        labels(name="test_fail", queue_name="default"): 1.0,
        labels(name="test_flaky", queue_name="default"): 2.0,
    }
    assert retried.delta() == {labels(name="test_flaky", queue_name="default"): 1.0}
    for row in LongTimeTask.objects.filter(id__in=[ok.id, bad.id, flaky.id]):
        assert row.state in (TaskState.FINISHED, TaskState.FAILED)


def test_the_queue_wait_is_measured_from_when_the_attempt_was_due():
    wait = "long_time_task_queue_wait_seconds"
    before_sum = value(wait + "_sum", name="test_echo", queue_name="default")
    before_fast = value(wait + "_bucket", name="test_echo", queue_name="default", le="1.0")
    task = LongTimeTask.objects.create(task_type="test_echo", queue="default")
    LongTimeTask.objects.filter(id=task.id).update(create_at=timezone.now() - timedelta(seconds=100))
    assert run(task) == "finished"
    waited = value(wait + "_sum", name="test_echo", queue_name="default") - before_sum
    assert 99 < waited < 160
    # A retry waits from its retry time, not from the task's creation (an hour ago): read before the claim
    # cleared it.
    flaky = LongTimeTask.objects.create(task_type="test_flaky", queue="default", task_params={"failures": 1})
    LongTimeTask.objects.filter(id=flaky.id).update(create_at=timezone.now() - timedelta(hours=1))
    assert run(flaky) == "retrying"
    fast = value(wait + "_bucket", name="test_flaky", queue_name="default", le="1.0")
    LongTimeTask.objects.filter(id=flaky.id).update(retry_at=timezone.now())
    assert run(flaky, attempt=2) == "finished"
    assert value(wait + "_bucket", name="test_flaky", queue_name="default", le="1.0") == fast + 1
    assert before_fast == value(wait + "_bucket", name="test_echo", queue_name="default", le="1.0")


def test_the_timed_claim_is_still_one_statement():
    task = LongTimeTask.objects.create(task_type="test_echo", queue="default")
    with CaptureQueriesContext(connection) as queries:
        claimed = LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30, timed=True)
    assert claimed is not None and claimed.waited is not None and claimed.waited >= 0
    assert len(queries) == 1


def test_cancelling_a_waiting_task_counts_it_cancelled(user, django_capture_on_commit_callbacks):
    finished = Counts("long_time_task_tasks_finished_total")
    with django_capture_on_commit_callbacks(execute=True):
        task = services.submit("test_echo", {}, owner=user, countdown=3600).task
        services.cancel_task(task.id, user=user)
    assert finished.delta() == {
        labels(name="test_echo", queue_name="default", state="CANCELLED", error_code="cancelled"): 1.0
    }


def test_recoveries_are_counted_by_cause(settings):
    recovered = Counts("long_time_task_tasks_recovered_total")
    finished = Counts("long_time_task_tasks_finished_total")
    now = timezone.now()
    lost = LongTimeTask.objects.create(
        task_type="test_echo", queue="default", state=TaskState.RUNNING, attempts=1, claimed_at=now
    )
    LongTimeTask.objects.create(  # lease expired on its last attempt
        task_type="test_fail",
        queue="default",
        state=TaskState.RUNNING,
        attempts=4,  # its last attempt: failed for good
        claimed_at=now,
        lease_expires_at=now - timedelta(seconds=5),
    )
    unpublished = LongTimeTask.objects.create(
        task_type="test_heavy", queue="heavy", redispatch_at=now - timedelta(seconds=1)
    )
    due = now - timedelta(seconds=1)
    # A delayed start held in the database (redispatch_at is its start): its first publish is no recovery.
    held = LongTimeTask.objects.create(task_type="test_heavy", queue="heavy", run_after=due, redispatch_at=due)
    assert recovery.recover_attempt(lost.id, 1, metrics.WORKER_LOST) == "requeued"
    assert recovery.reap_expired_leases() == {"failed": 1}
    assert recovery.dispatch_due_tasks() == 2
    assert recovered.delta() == {
        labels(name="test_echo", queue_name="default", cause="worker_lost"): 1.0,
        labels(name="test_fail", queue_name="default", cause="lease_expired"): 1.0,
        labels(name="test_heavy", queue_name="heavy", cause="republished"): 1.0,
    }
    assert finished.delta() == {
        labels(name="test_fail", queue_name="default", state="FAILED", error_code="worker_lost"): 1.0
    }
    assert unpublished.id != held.id


def test_the_hard_time_limit_counts_a_failure_once():
    finished = Counts("long_time_task_tasks_finished_total")
    task = LongTimeTask.objects.create(task_type="test_echo", queue="default", state=TaskState.RUNNING, attempts=1)
    assert Executor.fail_on_hard_time_limit(task.id, 1, 30)
    assert not Executor.fail_on_hard_time_limit(task.id, 1, 30)
    assert finished.delta() == {
        labels(name="test_echo", queue_name="default", state="FAILED", error_code="timeout"): 1.0
    }


def test_nothing_is_counted_when_metrics_are_off(settings, user, django_capture_on_commit_callbacks):
    settings.LONG_TIME_TASK_METRICS = False
    submitted = Counts("long_time_task_tasks_submitted_total")
    started = Counts("long_time_task_tasks_started_total")
    with django_capture_on_commit_callbacks(execute=True):
        task = services.submit("test_echo", {}, owner=user).task
    assert run(task) == "finished"
    assert submitted.delta() == {} and started.delta() == {}


def test_a_missing_multiprocess_directory_turns_metrics_off_without_breaking_a_submit(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "_instruments", None)
    monkeypatch.setattr(metrics, "_broken", False)

    def refuse() -> None:
        raise FileNotFoundError(tmp_path / "missing" / "counter_1.db")

    monkeypatch.setattr(metrics, "Instruments", refuse)
    assert metrics.instruments() is None
    metrics.submitted("test_echo", "default")  # a no-op, no exception


# ---------------------------------------------------------------- the gauges


def gauges(*names: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {name: {} for name in names}
    for family in GaugeCollector().collect():
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_tasks_by_state_are_exact_below_the_cap(monkeypatch):
    monkeypatch.setattr(collector, "SOURCES", [Source("database", collector.database_gauges)])
    LongTimeTask.objects.create(task_type="test_echo", queue="default")
    LongTimeTask.objects.create(task_type="test_echo", queue="default", state=TaskState.FINISHED)
    LongTimeTask.objects.create(task_type="test_echo", queue="default", state=TaskState.FINISHED)
    found = gauges("long_time_task_tasks", "long_time_task_tasks_estimated", "long_time_task_metrics_source_up")
    assert found["long_time_task_tasks"][labels(state="PENDING")] == 1
    assert found["long_time_task_tasks"][labels(state="FINISHED")] == 2
    assert found["long_time_task_tasks"][labels(state="RUNNING")] == 0
    assert set(found["long_time_task_tasks_estimated"].values()) == {0}
    assert found["long_time_task_metrics_source_up"] == {labels(source="database"): 1}


def test_oldest_waiting_age_per_queue_counts_from_when_the_task_was_due():
    now = timezone.now()
    old = LongTimeTask.objects.create(task_type="test_echo", queue="default")
    LongTimeTask.objects.filter(id=old.id).update(create_at=now - timedelta(seconds=300))
    delayed = LongTimeTask.objects.create(task_type="test_heavy", queue="heavy", run_after=now - timedelta(seconds=20))
    LongTimeTask.objects.filter(id=delayed.id).update(create_at=now - timedelta(hours=2))
    future = LongTimeTask.objects.create(task_type="test_heavy", queue="heavy", run_after=now + timedelta(hours=1))
    LongTimeTask.objects.filter(id=future.id).update(create_at=now - timedelta(hours=3))
    retrying = LongTimeTask.objects.create(
        task_type="test_priority_low", queue="priority", state=TaskState.RETRYING, retry_at=now - timedelta(seconds=7)
    )
    LongTimeTask.objects.filter(id=retrying.id).update(create_at=now - timedelta(hours=1))
    ages = oldest_waiting(now)
    assert ages["default"] == pytest.approx(300, abs=1)
    assert ages["heavy"] == pytest.approx(20, abs=1)  # due since its start, not its creation
    assert ages["priority"] == pytest.approx(7, abs=1)  # due since its retry time
    assert ages["operate"] == 0  # a queue with no waiting task


def test_past_the_sample_an_unseen_queue_is_left_out_not_reported_empty(monkeypatch):
    monkeypatch.setattr(collector, "WAITING_SAMPLE", 2)
    now = timezone.now()
    for _ in range(2):
        row = LongTimeTask.objects.create(task_type="test_echo", queue="default")
        LongTimeTask.objects.filter(id=row.id).update(create_at=now - timedelta(seconds=60))
    LongTimeTask.objects.create(task_type="test_heavy", queue="heavy")
    ages = oldest_waiting(now)
    assert ages["default"] == pytest.approx(60, abs=1)
    assert "heavy" not in ages and "operate" not in ages


def test_a_source_that_fails_is_reported_down_and_the_others_still_answer():
    def broken() -> list[Any]:
        raise TimeoutError("no answer")

    sources = [Source("broker", broken), Source("database", collector.database_gauges)]
    collected = list(GaugeCollector(sources).collect())
    up = {tuple(s.labels.items()): s.value for f in collected for s in f.samples if f.name.endswith("source_up")}
    assert up == {(("source", "broker"),): 0, (("source", "database"),): 1}
    assert any(f.name == "long_time_task_tasks" for f in collected)


def test_a_broker_that_never_answers_costs_a_scrape_the_timeout_and_is_asked_once(settings):
    import threading
    import time

    settings.LONG_TIME_TASK_METRICS_QUERY_TIMEOUT = 0.2
    release = threading.Event()
    calls = []

    def hang() -> dict[str, int]:
        calls.append(1)
        release.wait(10)
        return {"default": 1}

    reading = collector.CachedReading(hang, ttl=60)
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(TimeoutError):
            reading.get(0.2)
    assert time.monotonic() - started < 2
    assert len(calls) == 1  # one reading in flight, shared
    release.set()
    assert reading.get(5) == {"default": 1}


# ---------------------------------------------------------------- the endpoint

METRIC_LINE = re.compile(r"^long_time_task_[a-z_]+(\{[^}]*\})? [0-9.e+-]+$|^# (HELP|TYPE) ", re.M)


@pytest.fixture
def no_broker(monkeypatch):
    monkeypatch.setattr(collector, "SOURCES", [Source("database", collector.database_gauges)])


def test_metrics_answer_the_scraper_token_in_prometheus_text(client, settings, no_broker):
    settings.LONG_TIME_TASK_METRICS_TOKEN = "s3cret-scraper-token"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scraper-token", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200, response.content  # the pod's IP as Host: not refused by ALLOWED_HOSTS
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    text = response.content.decode()
    assert "long_time_task_tasks_submitted_total" in text and 'long_time_task_tasks{state="PENDING"}' in text
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_metrics_answer_a_staff_api_token(staff_user, no_broker):
    response = token_client(staff_user).get("/metrics")
    assert response.status_code == 200
    assert b"long_time_task_oldest_waiting_seconds" in response.content


@pytest.mark.parametrize(
    ("who", "status"),
    [("nobody", 401), ("wrong scraper token", 401), ("user token", 403), ("staff session", 401)],
)
def test_metrics_refuse_everyone_else_with_a_json_error(who, status, settings, user, staff_user, client):
    settings.LONG_TIME_TASK_METRICS_TOKEN = "s3cret-scraper-token"
    if who == "user token":
        response = token_client(user).get("/metrics")
    elif who == "wrong scraper token":
        response = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scraper-tokeN")
    elif who == "staff session":
        client.force_login(staff_user)
        response = client.get("/metrics")
    else:
        response = APIClient().get("/metrics", HTTP_ACCEPT="text/plain")
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False and body["code"]


def test_without_a_scraper_token_configured_a_bearer_is_an_api_token(settings):
    settings.LONG_TIME_TASK_METRICS_TOKEN = None
    response = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 401


def test_render_is_valid_prometheus_text(no_broker):
    from prometheus_client.parser import text_string_to_metric_families

    families = {family.name for family in text_string_to_metric_families(render().decode())}
    assert {
        "long_time_task_tasks_submitted",
        "long_time_task_tasks_started",
        "long_time_task_tasks_finished",
        "long_time_task_tasks_retried",
        "long_time_task_tasks_recovered",
        "long_time_task_queue_wait_seconds",
        "long_time_task_runtime_seconds",
        "long_time_task_tasks",
        "long_time_task_oldest_waiting_seconds",
        "long_time_task_metrics_source_up",
    } <= families

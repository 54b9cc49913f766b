"""Round trips per task, pinned: one INSERT and one publish per submit, two statements per task on a worker."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.registry import LongTimeTaskRegister
from long_time_task.worker import executor as executor_module
from long_time_task.worker.executor import Executor

pytestmark = pytest.mark.django_db


def noop(task_id: int, params: dict) -> dict:
    return {"ok": True}


def flaky(task_id: int, params: dict) -> None:
    raise ConnectionError("try again")


@pytest.fixture(autouse=True)
def types():
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="rt_noop", param_schema={"type": "object"})(noop)
        LongTimeTaskRegister.register(task_type="rt_flaky", retry_delay=1, retry_backoff=False)(flaky)
        yield


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split()[0].upper() for q in captured.captured_queries]


def test_submit_is_one_insert_and_one_publish(settings, django_capture_on_commit_callbacks):
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = None
    with CaptureQueriesContext(connection) as captured, django_capture_on_commit_callbacks() as publishes:
        services.submit_task("rt_noop", {"x": 1})
    assert statements(captured) == ["INSERT"]
    assert len(publishes) == 1


def test_submit_with_the_unfinished_cap_adds_one_count(user, django_capture_on_commit_callbacks):
    with CaptureQueriesContext(connection) as captured, django_capture_on_commit_callbacks() as publishes:
        services.submit_task("rt_noop", {}, owner=user)
    assert statements(captured) == ["SELECT", "INSERT"]
    assert len(publishes) == 1


def test_a_task_costs_two_statements_on_the_worker_claim_and_finish():
    task = LongTimeTask.objects.create(task_type="rt_noop")
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w").run(task.id, 1) == "finished"
    assert statements(captured) == ["UPDATE", "UPDATE"]
    assert "RETURNING" in captured.captured_queries[0]["sql"].upper()


def test_a_retry_costs_two_statements_and_one_publish(monkeypatch):
    published: list[dict] = []

    def capture(task, **kwargs):
        published.append(kwargs)
        return True

    monkeypatch.setattr(executor_module, "publish", capture)
    task = LongTimeTask.objects.create(task_type="rt_flaky")
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w").run(task.id, 1) == "retrying"
    assert statements(captured) == ["UPDATE", "UPDATE"]
    assert published == [{"attempt": 2, "countdown": 1.0}]


def test_a_duplicate_message_costs_one_statement():
    task = LongTimeTask.objects.create(task_type="rt_noop", state=TaskState.RUNNING, attempts=1)
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w").run(task.id, 1) == "skipped"
    assert statements(captured) == ["UPDATE"]


@pytest.mark.django_db(transaction=True)  # each half on a new session
def test_the_hot_statements_are_prepared_once_per_connection_on_postgresql(settings):
    from .conftest import require_services

    require_services()

    def cycle_and_list_prepared() -> list[str]:
        connection.close()  # a new session: no prepared statement yet
        for _ in range(3):
            task = services.submit_task("test_echo", {})
            claimed = LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30)
            assert claimed is not None
            LongTimeTask.objects.report_progress(task.id, attempt=1, percent=1.0, message="", current=None, total=None)
            assert LongTimeTask.objects.finish(task.id, attempt=1, result={"ok": True})
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall()]

    prepared = cycle_and_list_prepared()
    assert any(s.startswith('INSERT INTO "long_time_task"') for s in prepared), prepared
    assert sum(s.startswith('UPDATE "long_time_task"') for s in prepared) == 3, prepared  # claim, progress, finish
    settings.LONG_TIME_TASK_PREPARED_STATEMENTS = False
    assert cycle_and_list_prepared() == []  # Django's own cursor, when turned off

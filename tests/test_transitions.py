from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from long_time_task.models import LongTimeTask, TaskState

pytestmark = pytest.mark.django_db


def make_task(**kwargs) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="test_echo", **kwargs)


def state_of(task: LongTimeTask) -> tuple[str, int]:
    task.refresh_from_db()
    return task.state, task.attempts


def test_celery_id_is_generated_before_the_insert_and_unique():
    first, second = make_task(), make_task()
    assert len(first.celery_task_id) == 36 and first.celery_task_id != second.celery_task_id


def test_claim_moves_pending_to_running_once():
    task = make_task()
    assert LongTimeTask.objects.claim(task.id, attempt=1, worker="w1", lease=30)
    assert not LongTimeTask.objects.claim(task.id, attempt=1, worker="w2", lease=30)  # a duplicate delivery
    task.refresh_from_db()
    assert (task.state, task.attempts, task.worker) == (TaskState.RUNNING, 1, "w1")
    assert task.start_at is not None


def test_claim_of_a_stale_attempt_loses():
    task = make_task(state=TaskState.RETRYING, attempts=2)
    assert not LongTimeTask.objects.claim(task.id, attempt=2, worker="w", lease=30)  # the message of attempt 2, again
    assert LongTimeTask.objects.claim(task.id, attempt=3, worker="w", lease=30)
    assert state_of(task) == (TaskState.RUNNING, 3)


def test_start_at_keeps_the_first_attempts_time():
    first_start = timezone.now() - timedelta(minutes=5)
    task = make_task(state=TaskState.RETRYING, attempts=1, start_at=first_start)
    assert LongTimeTask.objects.claim(task.id, attempt=2, worker="w", lease=30)
    task.refresh_from_db()
    assert task.start_at == first_start


def test_finish_and_fail_only_from_running_of_the_same_attempt():
    task = make_task(state=TaskState.RUNNING, attempts=2)
    assert not LongTimeTask.objects.finish(task.id, attempt=1, result={"x": 1})
    assert LongTimeTask.objects.finish(task.id, attempt=2, result={"x": 1})
    assert not LongTimeTask.objects.fail(task.id, attempt=2, message="late", code="handler_error")
    task.refresh_from_db()
    assert (task.state, task.result, task.error_message) == (TaskState.FINISHED, {"x": 1}, None)


@pytest.mark.parametrize("terminal", [TaskState.FINISHED, TaskState.FAILED])
def test_terminal_states_never_change(terminal):
    task = make_task(state=terminal, attempts=1)
    objects = LongTimeTask.objects
    assert not objects.claim(task.id, attempt=2, worker="w", lease=30)
    assert not objects.finish(task.id, attempt=1, result=1)
    assert not objects.fail(task.id, attempt=1, message="m", code="c")
    assert not objects.fail(task.id, attempt=None, message="m", code="c")
    now = timezone.now()
    assert not objects.schedule_retry(task.id, attempt=1, retry_at=now, redispatch_at=now, message="m", code="c")
    assert state_of(task) == (terminal, 1)


def test_schedule_retry_shows_the_wait_and_the_last_error():
    task = make_task(state=TaskState.RUNNING, attempts=1)
    when = timezone.now() + timedelta(seconds=30)
    assert LongTimeTask.objects.schedule_retry(
        task.id, attempt=1, retry_at=when, redispatch_at=when, message="ConnectionError: x", code="handler_error"
    )
    task.refresh_from_db()
    assert (task.state, task.attempts, task.retry_at, task.error_message) == (
        TaskState.RETRYING,
        1,
        when,
        "ConnectionError: x",
    )


def test_visible_to_limits_users_to_their_own_tasks(user, other_user, staff_user):
    mine, theirs = make_task(owner=user), make_task(owner=other_user)
    assert list(LongTimeTask.objects.visible_to(user)) == [mine]
    assert set(LongTimeTask.objects.visible_to(staff_user)) == {mine, theirs}
    assert not LongTimeTask.objects.visible_to(None).exists()


class ReadsElsewhere:
    """A primary/replica router: reads go to "replica", writes to "default"."""

    def db_for_read(self, model, **hints):
        return "replica"

    def db_for_write(self, model, **hints):
        return "default"


def test_transitions_write_through_the_routers_write_alias(settings):
    from long_time_task.models import LongTimeTask

    settings.DATABASE_ROUTERS = [f"{__name__}.ReadsElsewhere"]
    tasks = LongTimeTask.objects.all()
    assert (tasks.db, tasks.write_db) == ("replica", "default")
    assert LongTimeTask.objects.using("other").write_db == "other"  # an explicit alias wins


def test_update_returning_is_chosen_by_feature_not_by_name():
    from types import SimpleNamespace

    from long_time_task.models.statements import update_returning

    def sqlite(version: tuple[int, ...]) -> SimpleNamespace:
        return SimpleNamespace(vendor="sqlite", Database=SimpleNamespace(sqlite_version_info=version))

    assert update_returning(SimpleNamespace(vendor="postgresql"))
    assert update_returning(sqlite((3, 35, 0))) and not update_returning(sqlite((3, 34, 1)))
    assert not update_returning(SimpleNamespace(vendor="mysql"))


@pytest.mark.django_db
def test_the_fallback_without_update_returning_claims_and_reports_progress_too(monkeypatch):
    from long_time_task import services
    from long_time_task.models import LongTimeTask, querysets

    monkeypatch.setattr(querysets, "update_returning", lambda connection: False)
    task = services.submit_task("test_echo", {"n": 1})
    claimed = LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30)
    assert claimed is not None and (claimed.task_type, claimed.task_params) == ("test_echo", {"n": 1})
    assert LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30) is None
    owned = LongTimeTask.objects.report_progress(task.id, attempt=1, percent=5.0, message="m", current=None, total=None)
    assert owned == (True, False)
    assert LongTimeTask.objects.get(id=task.id).progress == 5.0


@pytest.mark.django_db
def test_every_column_added_to_the_seed_s_table_has_a_database_default_or_accepts_null() -> None:
    """A row inserted by older code during a rolling deploy, or by a bulk load, names only the columns it knows:
    every later column must be nullable or carry a database default (``db_default``), or that INSERT fails
    (as a NOT NULL ``traceparent`` column did, for every submit of the previous release)."""
    from django.db import connection

    from long_time_task.models import LongTimeTask

    seed = {"id", "celery_task_id", "task_type", "task_params", "state", "result", "create_at", "start_at",
            "finish_at", "error_message"}  # fmt: skip
    # Added before the database defaults existed, always written by every release since (the executor's and the
    # submit's own columns); each is named by the INSERT of any release that can run against this schema.
    written_by_every_release = {"owner_id", "attempts", "worker", "queue", "priority", "error_code",
                                "error_traceback", "dispatch_count"}  # fmt: skip
    with connection.cursor() as cursor:  # Django's introspection: PostgreSQL and SQLite alike
        columns = connection.introspection.get_table_description(cursor, LongTimeTask._meta.db_table)
    required = {column.name for column in columns if not column.null_ok and column.default is None}
    assert "traceparent" in {column.name for column in columns} and "id" in required  # the reading works
    assert required - seed - written_by_every_release == set()

"""A tick with many due schedules submits their runs in batches (``services.submit_many``): the same statements
whatever the number due, a run that exists already counted as a duplicate and not published again, refusals
handled per schedule inside one batch, and ticks racing on PostgreSQL making one row per due time.

The per-schedule behaviour (misfire policies, skip-if-running, self-pausing) is in tests/test_schedules.py; real
beats and workers racing, and a tick killed before its commit, in tests/integration/test_schedules_worker.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, router, transaction
from django.test.utils import CaptureQueriesContext

from long_time_task import services
from long_time_task.models import LongTimeTask, MisfirePolicy, Schedule, TaskState
from long_time_task.schedules import scheduler
from long_time_task.schedules.timing import timing_of
from tests.conftest import require_services

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def due_at(now: datetime, n: int = 1, **fields: Any) -> list[Schedule]:
    """``n`` schedules due every minute, the first due time ``now``."""
    made = []
    for i in range(n):
        defaults: dict[str, Any] = {
            "task_type": "test_echo",
            "params": {"i": i},
            "timezone": "UTC",
            "cron": "* * * * *",
        }
        schedule = Schedule(name=f"s{i}", **{**defaults, **fields})
        schedule.next_run_at = timing_of(schedule).after(now - timedelta(microseconds=1))
        schedule.save()
        made.append(schedule)
    return made


def runs_of(schedule: Schedule) -> list[datetime]:
    runs = LongTimeTask.objects.filter(schedule=schedule).order_by("scheduled_for")
    return list(runs.values_list("scheduled_for", flat=True))


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the tasks published after a commit (nothing reaches a broker)."""
    sent: list[int] = []
    lock = threading.Lock()

    def capture(task: LongTimeTask, *, attempt: int, countdown: float | None = None) -> bool:
        with lock:
            sent.append(task.id)
        return True

    monkeypatch.setattr(services, "publish", capture)
    return sent


# ---------------------------------------------------------------- statements


def statements_of_a_tick(n: int, user: Any) -> list[str]:
    """The statements of the second tick of ``n`` schedules owned by ``user`` (a quota to count), a third of them
    skip-if-running (their last runs to read): each makes one run."""
    Schedule.objects.all().delete()
    schedules = due_at(T0, n, owner=user)
    Schedule.objects.filter(id__in=[s.id for s in schedules[::3]]).update(skip_if_running=True)
    assert scheduler.tick(T0)["created"] == n
    LongTimeTask.objects.filter(schedule__in=schedules).update(state=TaskState.FINISHED)
    with CaptureQueriesContext(connection) as captured:
        assert scheduler.tick(T0 + timedelta(minutes=1)) == {"schedules": n, "created": n}
    kinds = [q["sql"].split()[0] for q in captured.captured_queries]
    if connection.vendor == "sqlite":
        # Django splits an INSERT into statements of at most 999 parameters on SQLite (about 27 rows here).
        kinds = [k for k in kinds if k != "INSERT"] + ["INSERT"]
    return kinds


@pytest.mark.django_db
def test_a_tick_runs_the_same_statements_for_50_due_schedules_as_for_5(user, settings):
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 1000
    few, many = statements_of_a_tick(5, user), statements_of_a_tick(50, user)
    assert few == many
    # The due read, the owners' unfinished tasks (the quota), the skip-if-running schedules' last runs, the runs'
    # INSERT and the read of the ids it created, the move of every schedule: one statement each.
    assert sorted(k for k in many if k not in ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT")) == sorted(
        ["SELECT", "SELECT", "SELECT", "INSERT", "SELECT", "UPDATE"]
    )


# ---------------------------------------------------------------- duplicates


@pytest.mark.django_db
def test_a_run_that_exists_already_is_counted_as_a_duplicate_and_not_published_again(
    published, django_capture_on_commit_callbacks
):
    """A concurrent tick made the run of ``taken`` for T0 (committed before this one inserted): this tick's insert
    of it does nothing, and the run is neither published again nor made the schedule's last run; the other
    schedule's run is made and published once."""
    taken, free = due_at(T0, 2)
    existing = services.submit("test_echo", {"i": 0}, schedule=taken, scheduled_for=T0).task
    with django_capture_on_commit_callbacks(execute=True):
        counts = scheduler.tick(T0 + timedelta(seconds=1))
    assert counts == {"schedules": 2, "created": 1, "duplicate": 1}
    assert LongTimeTask.objects.filter(schedule=taken).get() == existing
    made = LongTimeTask.objects.get(schedule=free)
    assert published == [made.id]
    taken.refresh_from_db()
    free.refresh_from_db()
    assert taken.next_run_at == free.next_run_at == T0 + timedelta(minutes=1)  # both moved on
    assert (taken.last_run_at, taken.last_task_id) == (T0, None)
    assert (free.last_run_at, free.last_task_id) == (T0, made.id)


@pytest.mark.django_db
def test_submit_many_says_what_became_of_each_task_in_order(user, published, django_capture_on_commit_callbacks):
    (schedule,) = due_at(T0)
    services.submit("test_echo", {}, schedule=schedule, scheduled_for=T0)
    new = [
        services.NewTask("test_echo", {"a": 1}, owner=user, schedule=schedule, scheduled_for=T0),  # exists
        services.NewTask("no_such_type", {}, owner=user),
        services.NewTask("test_echo", {"a": 2}, owner=user, schedule=schedule, scheduled_for=T0 + timedelta(1)),
        services.NewTask("test_restricted", {}, owner=user),
        services.NewTask("test_echo", {"a": 3}),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = services.submit_many(new)
    assert [o.duplicate for o in outcomes] == [True, False, False, False, False]
    assert [type(o.refused).__name__ for o in outcomes] == [
        "NoneType",
        "UnknownTaskType",
        "NoneType",
        "NotPermitted",
        "NoneType",
    ]
    made = [o.task for o in outcomes if o.task is not None]
    assert [(t.task_params, t.owner, t.state) for t in made] == [
        ({"a": 2}, user, TaskState.PENDING),
        ({"a": 3}, None, TaskState.PENDING),
    ]
    assert published == [t.id for t in made]
    stored = LongTimeTask.objects.get(id=made[0].id)
    assert (stored.celery_task_id, stored.queue, stored.schedule_id) == (made[0].celery_task_id, "default", schedule.id)
    assert stored.redispatch_at is not None  # the sweeper publishes it if the publish after the commit is lost


# ---------------------------------------------------------------- refusals inside one batch


@pytest.mark.django_db
def test_one_batch_runs_some_schedules_pauses_the_refused_and_skips_the_one_over_quota(
    user, other_user, django_user_model, settings, caplog
):
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 1
    gone = django_user_model.objects.create_user("carol", password="x", is_active=False)
    (runs,) = due_at(T0, owner=user)
    (refused,) = due_at(T0, owner=user, task_type="test_restricted")
    (over_quota,) = due_at(T0, owner=other_user)
    (deactivated,) = due_at(T0, owner=gone)
    services.submit("test_echo", {}, owner=other_user)  # other_user's one unfinished task: at the cap
    with caplog.at_level(logging.WARNING, logger="long_time_task.schedules.scheduler"):
        counts = scheduler.tick(T0 + timedelta(seconds=1))
    assert counts == {"schedules": 4, "created": 1, "paused": 2, "skipped": 1}
    for schedule in (runs, refused, over_quota, deactivated):
        schedule.refresh_from_db()
    assert runs_of(runs) == [T0] and runs.next_run_at == T0 + timedelta(minutes=1)
    assert not refused.enabled and "may not submit tasks of type test_restricted" in refused.paused_reason
    assert refused.next_run_at == T0 and runs_of(refused) == []
    assert not deactivated.enabled and deactivated.paused_reason == "Its owner carol is deactivated."
    assert over_quota.enabled and over_quota.next_run_at == T0 + timedelta(minutes=1) and runs_of(over_quota) == []
    assert f"Schedule {over_quota.id}: the run of {T0.isoformat()} was skipped" in caplog.text


@pytest.mark.django_db
def test_the_quota_counts_the_runs_the_tick_itself_adds(user, settings):
    """Three due times on time in one tick (every 20 s, 45 s after the first), an owner allowed two unfinished
    tasks: the first two are made, the third is skipped."""
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 2
    (schedule,) = due_at(T0, owner=user, cron="", interval_seconds=20, start_at=T0, misfire=MisfirePolicy.SKIP)
    assert scheduler.tick(T0 + timedelta(seconds=45)) == {"schedules": 1, "created": 2, "skipped": 1}
    assert runs_of(schedule) == [T0, T0 + timedelta(seconds=20)]


# ---------------------------------------------------------------- ticks racing (PostgreSQL)


def in_threads(*targets: Callable[[], Any]) -> list[Any]:
    """Run each target in a thread of its own (a connection of its own); their results, in order."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(index: int, target: Callable[[], Any]) -> None:
        try:
            results[index] = target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_ticks_racing_in_four_threads_make_one_run_per_due_time(published):
    require_services()
    schedules = due_at(T0, 40)
    barrier = threading.Barrier(4)

    def tick() -> dict[str, int]:
        barrier.wait(timeout=30)
        return scheduler.tick(T0 + timedelta(seconds=1))

    results = in_threads(tick, tick, tick, tick)
    assert sum(r.get("created", 0) for r in results) == 40
    runs = LongTimeTask.objects.filter(schedule__in=schedules)
    assert sorted(runs.values_list("schedule_id", flat=True)) == sorted(s.id for s in schedules)
    assert sorted(published) == sorted(runs.values_list("id", flat=True))  # each published once


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_tick_that_read_the_schedules_while_another_inserted_their_runs_waits_for_it_and_makes_none(published):
    """Tick A has inserted the runs of 20 due schedules and not committed yet; B read the same schedules (no lock
    keeps them apart: SQLite, or a read just before A's) and inserts the same runs: PostgreSQL makes B's insert
    wait for A's transaction, and once A commits, B's runs are duplicates: no second row, no second publish, and
    B's guarded move changes nothing."""
    require_services()
    schedules = due_at(T0, 20)
    now = T0 + timedelta(seconds=1)
    inserted, go = threading.Event(), threading.Event()

    def hold_before_the_move(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith('UPDATE "long_time_task_schedule"'):
            inserted.set()
            assert go.wait(timeout=30)
        return execute(sql, params, many, context)

    def tick_a() -> dict[str, int]:
        with connection.execute_wrapper(hold_before_the_move):
            return scheduler.tick(now)

    def tick_b() -> dict[str, int]:
        assert inserted.wait(timeout=30)
        stale = list(Schedule.objects.filter(id__in=[s.id for s in schedules]).select_related("owner"))
        with transaction.atomic():
            return dict(scheduler.run_batch(stale, now, router.db_for_write(Schedule)))

    def release_when_b_waits() -> bool:
        deadline = time.monotonic() + 30
        while not lock_waits() and time.monotonic() < deadline:
            time.sleep(0.05)
        waited = lock_waits() > 0
        go.set()
        return waited

    a, b, b_waited = in_threads(tick_a, tick_b, release_when_b_waits)
    assert b_waited  # on A's uncommitted rows
    assert a == {"schedules": 20, "created": 20}
    assert b == {"duplicate": 20}
    assert LongTimeTask.objects.filter(schedule__in=schedules).count() == 20
    assert len(published) == len(set(published)) == 20
    assert set(Schedule.objects.values_list("next_run_at", flat=True)) == {T0 + timedelta(minutes=1)}


def lock_waits() -> int:
    """Sessions of the test database waiting for a lock (B's insert, behind A's uncommitted rows)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])

"""Schedules: due times through daylight saving changes (a frozen clock, no database), and the scheduler's tick
against the database: one run per due time, the misfire policies, skip-if-running, self-pausing.

The race of several schedulers and a scheduler killed mid-tick, with real beat and worker processes, are in
tests/integration/test_schedules_worker.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, router
from django.test.utils import CaptureQueriesContext

from long_time_task.models import LongTimeTask, MisfirePolicy, Schedule, TaskState
from long_time_task.schedules import scheduler
from long_time_task.schedules.timing import InvalidSchedule, Timing, check_cron, timing_of, upcoming, zone

NY, LONDON, SHANGHAI = ZoneInfo("America/New_York"), ZoneInfo("Europe/London"), ZoneInfo("Asia/Shanghai")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(zone_: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int, *, fold: int = 0) -> datetime:
    """A wall-clock time in ``zone_`` (``fold=1``: the second of a repeated time), in UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=zone_, fold=fold).astimezone(UTC)


def cron(expression: str, zone_: ZoneInfo) -> Timing:
    return Timing(zone=zone_, cron=check_cron(expression))


# ---------------------------------------------------------------- daylight saving (frozen clock)


def test_spring_forward_a_fixed_time_that_does_not_exist_runs_once_right_after_the_gap():
    """New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist. Debian's cron (and this
    scheduler) runs the job at 03:00 that day, once; the days around it run at 02:30."""
    runs = upcoming(cron("30 2 * * *", NY), local(NY, 2026, 3, 7, 12, 0), 3)
    assert runs == [local(NY, 2026, 3, 8, 3, 0), local(NY, 2026, 3, 9, 2, 30), local(NY, 2026, 3, 10, 2, 30)]
    assert runs[0] == utc(2026, 3, 8, 7, 0)  # 03:00 EDT


def test_fall_back_a_fixed_time_that_happens_twice_runs_once_at_its_first_occurrence():
    """New York, 1 November 2026: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice. The job runs once,
    at the first 01:30 (EDT, 05:30 UTC), not again an hour later."""
    runs = upcoming(cron("30 1 * * *", NY), local(NY, 2026, 10, 31, 12, 0), 3)
    assert runs == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]


def test_fall_back_a_wildcard_hour_runs_in_both_occurrences_of_the_hour():
    """Every 30 minutes through the repeated hour: the runs stay 30 real minutes apart (01:00 and 01:30 EDT, then
    01:00 and 01:30 EST), as the hour happens twice."""
    runs = upcoming(cron("*/30 * * * *", NY), local(NY, 2026, 11, 1, 0, 45), 5)
    assert runs == [utc(2026, 11, 1, 5, 0) + timedelta(minutes=30 * i) for i in range(5)]
    assert [r.astimezone(NY).strftime("%H:%M %Z") for r in runs] == [
        "01:00 EDT",
        "01:30 EDT",
        "01:00 EST",
        "01:30 EST",
        "02:00 EST",
    ]


def test_spring_forward_a_wildcard_hour_has_no_run_in_the_missing_hour():
    runs = upcoming(cron("*/30 * * * *", NY), local(NY, 2026, 3, 8, 1, 15), 3)
    assert [r.astimezone(NY).strftime("%H:%M %Z") for r in runs] == ["01:30 EST", "03:00 EDT", "03:30 EDT"]
    assert runs[1] - runs[0] == timedelta(minutes=30)  # 02:00 EST is 03:00 EDT: no gap in real time


def test_london_spring_forward_and_fall_back():
    """Europe/London: 29 March 2026 01:00 GMT jumps to 02:00 BST; 25 October 2026 02:00 BST falls back to 01:00 GMT."""
    spring = upcoming(cron("30 1 * * *", LONDON), local(LONDON, 2026, 3, 28, 12, 0), 2)
    assert spring == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]  # 02:00 BST (the gap's end), then 01:30 BST
    fall = upcoming(cron("30 1 * * *", LONDON), local(LONDON, 2026, 10, 24, 12, 0), 2)
    assert fall == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]  # the first 01:30 (BST) only


def test_a_zone_without_daylight_saving_runs_every_24_hours_all_year():
    runs = upcoming(cron("0 3 * * *", SHANGHAI), local(SHANGHAI, 2026, 1, 1, 12, 0), 365)
    assert runs[0] == utc(2026, 1, 1, 19, 0)  # 03:00 CST is 19:00 UTC the day before
    assert {b - a for a, b in zip(runs, runs[1:], strict=False)} == {timedelta(hours=24)}


def test_an_interval_counts_real_seconds_through_a_change():
    timing = Timing(zone=NY, interval=3600, anchor=local(NY, 2026, 3, 8, 0, 0))
    runs = upcoming(timing, local(NY, 2026, 3, 7, 23, 0), 5)
    assert {b - a for a, b in zip(runs, runs[1:], strict=False)} == {timedelta(hours=1)}
    assert [r.astimezone(NY).hour for r in runs] == [0, 1, 3, 4, 5]  # wall clock skips 2: real time does not


@pytest.mark.parametrize(
    "timing",
    [
        cron("*/30 * * * *", NY),
        cron("30 1 * * *", NY),
        cron("15 9 * * MON-FRI", LONDON),
        Timing(zone=SHANGHAI, interval=5400, anchor=utc(2026, 10, 31, 0, 7)),
    ],
    ids=["ny-every-30", "ny-daily", "london-weekdays", "interval"],
)
def test_newest_first_is_upcoming_reversed(timing: Timing):
    since, until = utc(2026, 10, 30, 0, 0), utc(2026, 11, 4, 0, 0)
    forward = [t for t in upcoming(timing, since - timedelta(microseconds=1), 500) if t <= until]
    assert list(timing.newest_first(until=until, since=since)) == forward[::-1]


def test_start_and_end_bound_the_due_times():
    timing = Timing(zone=SHANGHAI, cron="0 * * * *", start=utc(2026, 1, 1, 10, 30), end=utc(2026, 1, 1, 13, 0))
    assert upcoming(timing, utc(2026, 1, 1, 0, 0), 10) == [utc(2026, 1, 1, h, 0) for h in (11, 12, 13)]


def test_bad_expressions_and_zones_are_refused_with_the_field():
    for expression in ("* * * *", "61 * * * *", "* * * * * *", "a b c d e"):
        with pytest.raises(InvalidSchedule) as refused:
            check_cron(expression)
        assert refused.value.field == "cron"
    for name in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(InvalidSchedule) as refused:
            zone(name)
        assert refused.value.field == "timezone"
    assert check_cron("0  3 * *   *") == "0 3 * * *"


# ---------------------------------------------------------------- the tick (PostgreSQL, or SQLite on a laptop)

pytestmark_db = pytest.mark.django_db


def make(now: datetime, **fields: Any) -> Schedule:
    defaults: dict[str, Any] = {"name": "nightly", "task_type": "test_echo", "params": {"x": 1}, "timezone": "UTC"}
    schedule = Schedule(**{**defaults, **fields})
    schedule.next_run_at = timing_of(schedule).after(now - timedelta(microseconds=1))
    schedule.save()
    Schedule.objects.filter(id=schedule.id).update(created_at=now)  # the interval's anchor: a known creation
    schedule.refresh_from_db()
    return schedule


def runs_of(schedule: Schedule) -> list[datetime]:
    return list(
        LongTimeTask.objects.filter(schedule=schedule).order_by("scheduled_for").values_list("scheduled_for", flat=True)
    )


T0 = utc(2026, 6, 1, 12, 0)


@pytestmark_db
def test_a_tick_makes_one_run_per_due_time_and_a_second_tick_at_the_same_moment_none():
    schedule = make(T0, cron="*/5 * * * *")
    assert schedule.next_run_at == T0
    assert scheduler.tick(T0 + timedelta(seconds=2))["created"] == 1
    assert scheduler.tick(T0 + timedelta(seconds=3)).get("created", 0) == 0
    assert scheduler.tick(T0 + timedelta(minutes=5, seconds=1))["created"] == 1
    assert runs_of(schedule) == [T0, T0 + timedelta(minutes=5)]
    run = LongTimeTask.objects.get(schedule=schedule, scheduled_for=T0)
    assert (run.task_type, run.task_params, run.state) == ("test_echo", {"x": 1}, TaskState.PENDING)
    schedule.refresh_from_db()
    assert (schedule.next_run_at, schedule.last_run_at) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=5))
    assert schedule.last_task_id == LongTimeTask.objects.get(schedule=schedule, scheduled_for=schedule.last_run_at).id


@pytestmark_db
def test_a_tick_that_read_the_schedule_before_another_committed_creates_nothing_twice():
    """Two schedulers that both read the schedule as due (no SKIP LOCKED to keep them apart, as on SQLite, or a
    tick that read it just before the other committed): the unique constraint on (schedule, due time) refuses
    the second run, and the guarded move of next_run_at leaves the first tick's."""
    schedule = make(T0, cron="* * * * *")
    stale = Schedule.objects.get(id=schedule.id)
    now = T0 + timedelta(seconds=1)
    assert scheduler.tick(now)["created"] == 1
    db = router.db_for_write(Schedule)
    assert scheduler.run_due(stale, now, db) == {"duplicate": 1}
    assert runs_of(schedule) == [T0]
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=1)


@pytestmark_db
@pytest.mark.parametrize(
    ("policy", "limit", "expected"),
    [(MisfirePolicy.SKIP, 0, 0), (MisfirePolicy.RUN_ONCE, 0, 1), (MisfirePolicy.CATCH_UP, 3, 3)],
)
def test_a_scheduler_down_for_an_hour_applies_the_misfire_policy(policy, limit, expected):
    """Every 10 minutes, the scheduler down from 12:00 to 13:05: six due times are missed (12:00 to 12:50; 13:00 is
    five minutes late, past the 60 s grace, so missed too): skip runs none, run_once the newest, catch_up the newest
    ``misfire_limit``; the next run is 13:10 in every case."""
    schedule = make(T0, interval_seconds=600, start_at=T0, misfire=policy, misfire_limit=limit)
    now = T0 + timedelta(hours=1, minutes=5)
    counts = scheduler.tick(now)
    assert counts.get("created", 0) == expected
    newest = [T0 + timedelta(minutes=60 - 10 * i) for i in range(expected)][::-1]
    assert runs_of(schedule) == newest
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(hours=1, minutes=10)


@pytestmark_db
def test_on_time_due_times_all_run_within_the_grace():
    schedule = make(T0, interval_seconds=20, start_at=T0, misfire=MisfirePolicy.SKIP)
    assert scheduler.tick(T0 + timedelta(seconds=45))["created"] == 3  # 0, 20 and 40 s: each under 60 s late
    assert runs_of(schedule) == [T0 + timedelta(seconds=s) for s in (0, 20, 40)]


@pytestmark_db
def test_skip_if_running_skips_while_the_last_run_is_unfinished():
    schedule = make(T0, cron="* * * * *", skip_if_running=True)
    assert scheduler.tick(T0)["created"] == 1
    counts = scheduler.tick(T0 + timedelta(minutes=1))
    assert counts.get("created", 0) == 0 and counts["skipped"] == 1  # the first run is still PENDING
    LongTimeTask.objects.filter(schedule=schedule).update(state=TaskState.FINISHED)
    assert scheduler.tick(T0 + timedelta(minutes=2))["created"] == 1
    assert runs_of(schedule) == [T0, T0 + timedelta(minutes=2)]


@pytestmark_db
def test_a_single_time_runs_once_then_has_no_next_run():
    schedule = make(T0, run_at=T0 + timedelta(minutes=1))
    assert scheduler.tick(T0 + timedelta(minutes=1, seconds=1))["created"] == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and schedule.enabled
    assert scheduler.tick(T0 + timedelta(days=1)).get("created", 0) == 0


@pytestmark_db
def test_a_schedule_whose_owner_may_no_longer_submit_its_type_pauses_itself(user):
    schedule = make(T0, cron="* * * * *", task_type="test_restricted", owner=user)
    counts = scheduler.tick(T0)
    assert counts == {"schedules": 1, "paused": 1}
    schedule.refresh_from_db()
    assert not schedule.enabled and "may not submit" in schedule.paused_reason
    assert runs_of(schedule) == []


@pytestmark_db
def test_a_schedule_whose_owner_was_deactivated_pauses_itself(user):
    schedule = make(T0, cron="* * * * *", owner=user)
    user.is_active = False
    user.save()
    assert scheduler.tick(T0) == {"schedules": 1, "paused": 1}
    schedule.refresh_from_db()
    assert not schedule.enabled and "deactivated" in schedule.paused_reason


@pytestmark_db
def test_a_paused_schedule_is_not_read_by_a_tick():
    make(T0, cron="* * * * *", enabled=False)
    with CaptureQueriesContext(connection) as captured:
        assert scheduler.tick(T0 + timedelta(minutes=5)) == {}
    selects = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 1 and "long_time_task_schedule" in selects[0]  # the due read, which finds nothing


# ---------------------------------------------------------------- the service door (API, dashboard, CLI share it)


@pytestmark_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_seconds": 5}, "interval_seconds"),
        ({"cron": "0 3 * * *", "interval_seconds": 600}, "cron"),
        ({}, "cron"),
        ({"run_at": datetime(2020, 1, 1, tzinfo=UTC)}, "run_at"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at"),  # naive
        ({"cron": "0 3 * * *", "start_at": T0, "end_at": T0}, "end_at"),
        ({"cron": "0 3 * * *", "misfire": "sometimes"}, "misfire"),
        ({"cron": "0 3 * * *", "name": ""}, "name"),
        ({"cron": "0 3 * * *", "colour": "blue"}, "colour"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_field_and_nothing_is_written(user, fields, field):
    from long_time_task.schedules import service

    fields = {"name": "nightly", "task_type": "test_echo", **fields}
    with pytest.raises(InvalidSchedule) as refused:
        service.create_schedule(user=user, **fields)
    assert refused.value.field == field
    assert not Schedule.objects.exists()


@pytestmark_db
def test_a_type_or_params_a_submit_would_refuse_are_refused_here_too(user):
    from long_time_task import services
    from long_time_task.registry import InvalidParams, UnknownTaskType
    from long_time_task.schedules import service

    with pytest.raises(UnknownTaskType):
        service.create_schedule(user=user, name="x", task_type="no_such_type", cron="0 3 * * *")
    with pytest.raises(InvalidParams):
        service.create_schedule(user=user, name="x", task_type="test_echo", params=[1], cron="0 3 * * *")
    with pytest.raises(services.NotPermitted):
        service.create_schedule(user=user, name="x", task_type="test_restricted", cron="0 3 * * *")
    assert not Schedule.objects.exists()


@pytestmark_db
def test_create_plans_the_next_run_in_the_zone_and_previews_five(user, settings):
    from long_time_task.schedules import service

    made = service.create_schedule(
        user=user, name="report", task_type="test_echo", cron="0 3 * * *", timezone="Asia/Shanghai"
    )
    schedule = made.schedule
    assert schedule.owner == user and schedule.enabled and schedule.next_run_at is not None
    assert len(made.next_runs) == 5 and made.next_runs[0] == schedule.next_run_at
    assert all(t.astimezone(SHANGHAI).hour == 3 for t in made.next_runs)
    assert {b - a for a, b in zip(made.next_runs, made.next_runs[1:], strict=False)} == {timedelta(days=1)}
    settings.LONG_TIME_TASK_SCHEDULE_MIN_INTERVAL = 2
    every = service.create_schedule(user=user, name="often", task_type="test_echo", interval_seconds=2).schedule
    assert every.next_run_at == every.created_at + timedelta(seconds=2)  # one interval after its creation


@pytestmark_db
def test_owners_see_and_change_only_their_own_and_staff_all(user, staff_user, django_user_model):
    from long_time_task.schedules import service

    other = django_user_model.objects.create_user("other", password="x")
    mine = service.create_schedule(user=user, name="mine", task_type="test_echo", cron="0 3 * * *").schedule
    with pytest.raises(service.ScheduleNotFound):
        service.get_schedule(mine.id, user=other)
    with pytest.raises(service.ScheduleNotFound):
        service.set_enabled(mine.id, False, user=other)
    assert service.get_schedule(mine.id, user=staff_user) == mine
    assert list(service.visible_schedules(other)) == []


@pytestmark_db
def test_pause_resume_retime_and_run_now(user):
    from long_time_task.schedules import service

    schedule = service.create_schedule(user=user, name="s", task_type="test_echo", cron="0 3 * * *").schedule
    Schedule.objects.filter(id=schedule.id).update(enabled=False, paused_reason="Its owner was deactivated.")
    resumed = service.set_enabled(schedule.id, True, user=user).schedule
    assert resumed.enabled and resumed.paused_reason == "" and resumed.next_run_at is not None
    retimed = service.update_schedule(schedule.id, user=user, cron="30 4 * * *", timezone="UTC").schedule
    assert (retimed.cron, retimed.interval_seconds) == ("30 4 * * *", None)
    assert (retimed.next_run_at.hour, retimed.next_run_at.minute) == (4, 30)
    task = service.run_now(schedule.id, user=user)
    assert (task.schedule_id, task.scheduled_for, task.owner) == (schedule.id, None, user)
    service.delete_schedule(schedule.id, user=user)
    task.refresh_from_db()
    assert task.schedule_id is None and not Schedule.objects.exists()  # its runs stay


# ---------------------------------------------------------------- the admin


@pytestmark_db
def test_the_admin_checks_a_schedule_through_the_service_door_and_plans_it(admin_client):
    form = {
        "name": "nightly report",
        "task_type": "test_echo",
        "params": "{}",
        "cron": "99 3 * * *",
        "timezone": "Asia/Shanghai",
        "enabled": "on",
        "misfire": "run_once",
        "misfire_limit": "10",
    }
    refused = admin_client.post("/admin/long_time_task/schedule/add/", form)
    assert refused.status_code == 200 and "Invalid cron expression" in refused.content.decode()
    assert not Schedule.objects.exists()
    made = admin_client.post("/admin/long_time_task/schedule/add/", {**form, "cron": "0 3 * * *"})
    assert made.status_code == 302, made.content.decode()[:2000]
    schedule = Schedule.objects.get()
    assert schedule.next_run_at is not None and schedule.next_run_at.astimezone(SHANGHAI).hour == 3
    listing = admin_client.get("/admin/long_time_task/schedule/").content.decode()
    assert "nightly report" in listing and "0 3 * * *" in listing
    run = admin_client.post(
        "/admin/long_time_task/schedule/", {"action": "run_now", "_selected_action": [schedule.id]}, follow=True
    )
    assert run.status_code == 200
    assert LongTimeTask.objects.filter(schedule=schedule, scheduled_for__isnull=True).count() == 1
    admin_client.post("/admin/long_time_task/schedule/", {"action": "pause", "_selected_action": [schedule.id]})
    schedule.refresh_from_db()
    assert not schedule.enabled


def test_a_beat_schedule_without_the_scheduler_tick_is_warned_about(settings):
    from long_time_task.checks import check_maintenance_scheduled

    assert check_maintenance_scheduled() == []  # the demo's schedule sends it
    settings.CELERY_BEAT_SCHEDULE = {
        k: v for k, v in settings.CELERY_BEAT_SCHEDULE.items() if v["task"] != scheduler.SCHEDULER_TASK
    }
    assert [w.id for w in check_maintenance_scheduled()] == ["long_time_task.W008"]

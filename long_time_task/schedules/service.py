"""The one door to schedules, as ``services`` is to tasks: create, edit, pause, resume, run now, delete.

The API, the dashboard, the admin's actions and the CLI all come through here, so a schedule is validated the same
way everywhere: its task type and params as a submit's (``services.validate_submission``), its owner's permission
to submit that type, exactly one timing (a cron expression, an interval no shorter than
``LONG_TIME_TASK_SCHEDULE_MIN_INTERVAL``, or a single time in the future), a real IANA zone, a start before the
end. Ownership follows the tasks' rules: a user sees and changes their own schedules, staff every schedule;
``user=None`` is trusted server code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import services
from ..conf import conf
from ..models import LongTimeTask, MisfirePolicy, Schedule
from .timing import InvalidSchedule, check_cron, timing_of, upcoming, zone

EDITABLE = (
    "name",
    "task_type",
    "params",
    "cron",
    "interval_seconds",
    "run_at",
    "timezone",
    "enabled",
    "start_at",
    "end_at",
    "misfire",
    "misfire_limit",
    "skip_if_running",
)
TIMING = ("cron", "interval_seconds", "run_at")


class ScheduleNotFound(LookupError):  # noqa: N818 - reads better at the call site
    pass


@dataclass(frozen=True)
class Preview:
    schedule: Schedule
    next_runs: list[datetime]


def visible_schedules(user: Any) -> Any:
    """The schedules ``user`` may see: staff every one, others their own (``None``: every one)."""
    if user is None:
        return Schedule.objects.all()
    if not user.is_authenticated:
        return Schedule.objects.none()
    return Schedule.objects.all() if user.is_staff else Schedule.objects.filter(owner=user)


def get_schedule(schedule_id: int, *, user: Any) -> Schedule:
    found = visible_schedules(user).select_related("owner").filter(id=schedule_id) if 0 < schedule_id < 2**63 else None
    schedule: Schedule | None = found.first() if found is not None else None
    if schedule is None:
        raise ScheduleNotFound(f"Schedule {schedule_id} not found")
    return schedule


def validate(schedule: Schedule, *, user: Any) -> None:
    """Check every field of ``schedule`` (InvalidSchedule, services' InvalidParams/UnknownTaskType, NotPermitted)."""
    if not isinstance(schedule.name, str) or not schedule.name.strip() or len(schedule.name) > 200:
        raise InvalidSchedule("A schedule needs a name of 1 to 200 characters.", field="name")
    config = services.validate_submission(schedule.task_type, schedule.params)
    owner = schedule.owner
    if owner is not None and not config.may_submit(owner):
        raise services.NotPermitted(f"You may not submit tasks of type {config.name}.")
    if user is not None and not user.is_staff and owner != user:
        raise services.NotPermitted("A schedule belongs to the user who makes it.")
    chosen = [name for name in TIMING if getattr(schedule, name) not in (None, "")]
    if len(chosen) != 1:
        raise InvalidSchedule("Give exactly one of cron, interval_seconds or run_at.", field="cron")
    if schedule.cron:
        schedule.cron = check_cron(schedule.cron)
    if schedule.interval_seconds is not None:
        if not isinstance(schedule.interval_seconds, int) or schedule.interval_seconds < conf.SCHEDULE_MIN_INTERVAL:
            raise InvalidSchedule(
                f"interval_seconds must be a whole number of at least {conf.SCHEDULE_MIN_INTERVAL}.",
                field="interval_seconds",
            )
    for name in ("run_at", "start_at", "end_at"):
        value = getattr(schedule, name)
        if value is not None and (not isinstance(value, datetime) or timezone.is_naive(value)):
            raise InvalidSchedule(f"{name} must be a date and time with a UTC offset.", field=name)
    if schedule.start_at and schedule.end_at and schedule.end_at <= schedule.start_at:
        raise InvalidSchedule("end_at must be after start_at.", field="end_at")
    zone(schedule.timezone)
    if schedule.misfire not in MisfirePolicy.values:
        raise InvalidSchedule(f"misfire must be one of {', '.join(MisfirePolicy.values)}.", field="misfire")
    if not isinstance(schedule.misfire_limit, int) or not 0 <= schedule.misfire_limit <= 1000:
        raise InvalidSchedule("misfire_limit must be a whole number from 0 to 1000.", field="misfire_limit")


def plan(schedule: Schedule, now: datetime) -> None:
    """Set ``next_run_at``: the first due time from ``now`` on (None: none left)."""
    schedule.next_run_at = timing_of(schedule).after(now - timedelta(microseconds=1))


def create_schedule(*, user: Any, owner: Any = None, **fields: Any) -> Preview:
    """A new schedule from ``fields`` (``EDITABLE``), owned by ``owner`` (default: ``user``), checked and planned."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise InvalidSchedule(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    fields.setdefault("timezone", settings.TIME_ZONE or "UTC")
    fields.setdefault("params", {})
    schedule = Schedule(owner=owner if owner is not None else user, **fields)
    now = timezone.now()
    validate(schedule, user=user)
    if schedule.run_at is not None and schedule.run_at <= now:
        raise InvalidSchedule("run_at must be in the future.", field="run_at")
    plan(schedule, now)
    schedule.save()
    if schedule.interval_seconds and schedule.start_at is None:
        plan(schedule, now)  # the anchor is the creation time, known once saved
        Schedule.objects.filter(id=schedule.id).update(next_run_at=schedule.next_run_at)
    return preview(schedule)


def update_schedule(schedule_id: int, *, user: Any, **fields: Any) -> Preview:
    """Change ``fields`` of a schedule the user may manage; a change of timing plans it again from now."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise InvalidSchedule(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    with transaction.atomic():
        schedule = get_schedule(schedule_id, user=user)
        schedule = Schedule.objects.select_for_update().get(id=schedule.id)
        if any(name in fields for name in TIMING):
            for name in TIMING:  # a new timing replaces the old one
                setattr(schedule, name, "" if name == "cron" else None)
        for name, value in fields.items():
            setattr(schedule, name, value)
        validate(schedule, user=user)
        if fields.get("enabled"):
            schedule.paused_reason = ""
        if set(fields) & {*TIMING, "timezone", "start_at", "end_at", "enabled"}:
            plan(schedule, timezone.now())
        schedule.save()
    return preview(schedule)


def set_enabled(schedule_id: int, enabled: bool, *, user: Any) -> Preview:
    """Pause or resume; a resumed schedule starts from now (what it missed while paused is not run)."""
    return update_schedule(schedule_id, user=user, enabled=enabled)


def delete_schedule(schedule_id: int, *, user: Any) -> None:
    """Delete it; its past runs stay, no longer linked to it."""
    get_schedule(schedule_id, user=user).delete()


def run_now(schedule_id: int, *, user: Any) -> LongTimeTask:
    """One run now, as its own task outside the due times: linked to the schedule, with no due time (the owner's
    permission checked as for any submit)."""
    schedule = get_schedule(schedule_id, user=user)
    return services.submit(schedule.task_type, schedule.params, owner=schedule.owner, schedule=schedule).task


def preview(schedule: Schedule, count: int = 5) -> Preview:
    """The schedule and its next ``count`` due times."""
    start = schedule.next_run_at
    runs = [] if start is None else [start, *upcoming(timing_of(schedule), start, count - 1)]
    return Preview(schedule, runs)

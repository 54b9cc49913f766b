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
from django.db import router, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

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
MAX_INTERVAL = 2**31 - 1  # the column's range (68 years)
# A change of any of these plans the schedule again from now; other changes keep its pending due time.
REPLANNED_BY = frozenset({*TIMING, "timezone", "start_at", "end_at", "enabled"})


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
        raise ScheduleNotFound(_("Schedule %(id)s not found.") % {"id": schedule_id})
    return schedule


def validate(schedule: Schedule, *, user: Any) -> None:
    """Check every field of ``schedule`` (InvalidSchedule, services' InvalidParams/UnknownTaskType, NotPermitted)."""
    if not isinstance(schedule.name, str) or not schedule.name.strip() or len(schedule.name) > 200:
        raise InvalidSchedule(_("A schedule needs a name of 1 to 200 characters."), field="name")
    if "\x00" in schedule.name or any("\ud800" <= char <= "\udfff" for char in schedule.name):
        raise InvalidSchedule(_("The name holds a NUL character or a lone surrogate."), field="name")
    config = services.validate_submission(schedule.task_type, schedule.params)
    owner = schedule.owner
    if owner is not None and not config.may_submit(owner):
        raise services.NotPermitted(_("You may not submit tasks of type %(type)s.") % {"type": config.name})
    if user is not None and not user.is_staff and owner != user:
        raise services.NotPermitted("A schedule belongs to the user who makes it.")
    validate_timing(schedule)
    if schedule.misfire not in MisfirePolicy.values:
        raise InvalidSchedule(
            _("misfire must be one of %(values)s.") % {"values": ", ".join(MisfirePolicy.values)}, field="misfire"
        )
    if not isinstance(schedule.misfire_limit, int) or not 0 <= schedule.misfire_limit <= 1000:
        raise InvalidSchedule(_("misfire_limit must be a whole number from 0 to 1000."), field="misfire_limit")


def validate_timing(schedule: Schedule) -> None:
    """Check the fields that decide the due times (exactly one timing, the interval's bounds, the times, the zone);
    a cron expression is normalised. A preview of a timing being typed needs only these."""
    chosen = [name for name in TIMING if getattr(schedule, name) not in (None, "")]
    if len(chosen) != 1:
        raise InvalidSchedule(_("Give exactly one of cron, interval_seconds or run_at."), field="cron")
    if schedule.cron:
        schedule.cron = check_cron(schedule.cron)
    interval = schedule.interval_seconds
    if interval is not None and (
        not isinstance(interval, int) or not conf.SCHEDULE_MIN_INTERVAL <= interval <= MAX_INTERVAL
    ):
        raise InvalidSchedule(
            _("interval_seconds must be a whole number from %(min)s to %(max)s.")
            % {"min": conf.SCHEDULE_MIN_INTERVAL, "max": MAX_INTERVAL},
            field="interval_seconds",
        )
    for name in ("run_at", "start_at", "end_at"):
        value = getattr(schedule, name)
        if value is not None and (not isinstance(value, datetime) or timezone.is_naive(value)):
            raise InvalidSchedule(
                _("%(field)s must be a date and time with a UTC offset.") % {"field": name}, field=name
            )
    if schedule.start_at and schedule.end_at and schedule.end_at <= schedule.start_at:
        raise InvalidSchedule(_("end_at must be after start_at."), field="end_at")
    zone(schedule.timezone)


def plan(schedule: Schedule, now: datetime) -> None:
    """Set ``next_run_at``: the first due time from ``now`` on (None: none left)."""
    schedule.next_run_at = timing_of(schedule).after(now - timedelta(microseconds=1))


def save_planned(schedule: Schedule, now: datetime, *, replan: bool = True) -> None:
    """Save ``schedule`` with ``next_run_at`` planned from ``now`` (``replan=False`` keeps a saved schedule's
    pending due time). Every door saves through here, so a schedule is anchored the same way whoever made it:
    an interval without a start counts from its creation time, which exists only once the row is saved (the
    model's ``auto_now_add``), so a new one is planned again then, in the same transaction."""
    new = schedule._state.adding
    if replan or new:
        plan(schedule, now)
    with transaction.atomic(using=router.db_for_write(Schedule)):
        schedule.save()
        if new and schedule.interval_seconds and schedule.start_at is None:
            plan(schedule, now)
            Schedule.objects.filter(id=schedule.id).update(next_run_at=schedule.next_run_at)


def create_schedule(*, user: Any, owner: Any = None, **fields: Any) -> Preview:
    """A new schedule from ``fields`` (``EDITABLE``), owned by ``owner`` (default: ``user``), checked and planned."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise InvalidSchedule(
            _("Unknown field(s): %(fields)s.") % {"fields": ", ".join(sorted(unknown))}, field=sorted(unknown)[0]
        )
    fields.setdefault("timezone", settings.TIME_ZONE or "UTC")
    fields.setdefault("params", {})
    schedule = Schedule(owner=owner if owner is not None else user, **fields)
    now = timezone.now()
    validate(schedule, user=user)
    if schedule.run_at is not None and schedule.run_at <= now:
        raise InvalidSchedule(_("run_at must be in the future."), field="run_at")
    save_planned(schedule, now)
    return preview(schedule)


def update_schedule(schedule_id: int, *, user: Any, **fields: Any) -> Preview:
    """Change ``fields`` of a schedule the user may manage; a new timing replaces the old one, and a change of
    timing, zone, bounds or ``enabled`` plans it again from now. A schedule declared in code only pauses and
    resumes here (the code owns the rest: a deploy would undo the change)."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise InvalidSchedule(
            _("Unknown field(s): %(fields)s.") % {"fields": ", ".join(sorted(unknown))}, field=sorted(unknown)[0]
        )
    with transaction.atomic():
        schedule = get_schedule(schedule_id, user=user)
        schedule = Schedule.objects.select_for_update().get(id=schedule.id)
        changed = {name for name, value in fields.items() if getattr(schedule, name) != value}
        if schedule.code_name and changed - {"enabled"}:
            raise declared_in_code(schedule)
        if changed & set(TIMING):
            for name in TIMING:
                setattr(schedule, name, "" if name == "cron" else None)
        for name, value in fields.items():
            setattr(schedule, name, value)
        if changed != {"enabled"} or schedule.enabled:
            # A pause alone is always allowed, even of a schedule that no longer passes (its type was removed).
            validate(schedule, user=user)
        now = timezone.now()
        if "run_at" in changed and schedule.run_at is not None and schedule.run_at <= now:
            raise InvalidSchedule(_("run_at must be in the future."), field="run_at")
        if "enabled" in changed and schedule.enabled:
            schedule.paused_reason = ""
        pause_only = changed == {"enabled"} and not schedule.enabled  # resuming plans it again
        save_planned(schedule, now, replan=bool(REPLANNED_BY & changed) and not pause_only)
    return preview(schedule)


def declared_in_code(schedule: Schedule) -> services.ActionNotAllowed:
    return services.ActionNotAllowed(
        _("Schedule %(id)s is declared in code (%(name)s): change it there; here it can only be paused or resumed.")
        % {"id": schedule.id, "name": schedule.code_name},
        code="declared_in_code",
    )


def set_enabled(schedule_id: int, enabled: bool, *, user: Any) -> Preview:
    """Pause or resume; a resumed schedule starts from now (what it missed while paused is not run)."""
    return update_schedule(schedule_id, user=user, enabled=enabled)


def delete_schedule(schedule_id: int, *, user: Any) -> None:
    """Delete it; its past runs stay, no longer linked to it. A schedule declared in code is deleted by taking
    its declaration out (the next ``migrate`` pauses it)."""
    schedule = get_schedule(schedule_id, user=user)
    if schedule.code_name:
        raise declared_in_code(schedule)
    schedule.delete()


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

"""When a schedule is due: pure functions of a schedule's timing fields and a clock reading (no database).

Due times are aware datetimes in UTC, the scheduler's and the database's currency. A cron expression is
evaluated in the schedule's IANA zone by cronsim, which follows Debian's cron through daylight saving changes:

- spring forward (a wall-clock time that does not exist that day, 02:30 in New York on the second Sunday of
  March): a job whose hour and minute are fixed runs once, at the first minute after the gap (03:00); a job
  with a wildcard hour simply has no run in the missing hour;
- fall back (a wall-clock time that happens twice, 01:30 in New York on the first Sunday of November): a job
  whose hour is fixed runs once, at the first 01:30 (daylight time); a job with a wildcard hour runs in both
  occurrences of the hour, as the hour happens twice;
- a zone without daylight saving (Asia/Shanghai) has neither.

A fixed interval counts seconds, not wall-clock time: "every 3600 s" stays 3600 s apart through a change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from django.utils.translation import gettext as _

TICK = timedelta(microseconds=1)


class InvalidSchedule(ValueError):  # noqa: N818 - reads better at the call site
    """A schedule's timing cannot be used: a bad cron expression, an unknown zone, a bad interval."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (InvalidSchedule if there is none)."""
    if not isinstance(name, str) or not name or name not in _zones():
        raise InvalidSchedule(
            _("Unknown time zone %(name)r: use an IANA name such as 'Asia/Shanghai'.") % {"name": name},
            field="timezone",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(_("Unknown time zone %(name)r.") % {"name": name}, field="timezone") from exc


_ZONES: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    return _ZONES


def check_cron(expression: str) -> str:
    """``expression`` as a 5-field cron expression (InvalidSchedule if it is not one), whitespace normalised."""
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) != 5:
        raise InvalidSchedule(
            _("A cron expression has 5 fields (minute hour day-of-month month day-of-week), not %(value)r.")
            % {"value": expression},
            field="cron",
        )
    normalised = " ".join(fields)
    try:
        CronSim(normalised, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidSchedule(
            _("Invalid cron expression %(value)r: %(reason)s.") % {"value": expression, "reason": exc}, field="cron"
        ) from exc
    return normalised


@dataclass(frozen=True, slots=True)
class Timing:
    """What decides a schedule's due times: exactly one of ``cron``, ``interval`` (seconds) or ``once``."""

    zone: ZoneInfo
    cron: str = ""
    interval: int | None = None
    once: datetime | None = None
    anchor: datetime | None = None  # an interval's first due time (its start, else its creation)
    start: datetime | None = None
    end: datetime | None = None

    def after(self, moment: datetime) -> datetime | None:
        """The first due time strictly after ``moment`` (None: there is none, or it is past the end)."""
        if self.start is not None and moment < self.start:
            moment = self.start - TICK  # the start itself may be a due time
        try:
            found = self._first_after(moment)
        except OverflowError:  # beyond the year 9999: no more due times
            return None
        if found is None or (self.end is not None and found > self.end):
            return None
        return found

    def newest_first(self, until: datetime, since: datetime) -> Iterator[datetime]:
        """The due times in ``[since, until]``, newest first (lazily: a caller takes what it needs)."""
        low = since if self.start is None else max(since, self.start)
        high = until if self.end is None else min(until, self.end)
        if high < low:
            return
        if self.once is not None:
            if low <= self.once <= high:
                yield self.once
            return
        if self.interval is not None:
            anchor = self.anchor or low
            if high < anchor:
                return
            step = timedelta(seconds=self.interval)
            current = anchor + step * math.floor((high - anchor) / step)
            while current >= max(low, anchor):
                yield current
                current -= step
            return
        for local in CronSim(self.cron, (high + TICK).astimezone(self.zone), reverse=True):
            due = local.astimezone(UTC)
            if due < low:
                return
            yield due

    def _first_after(self, moment: datetime) -> datetime | None:
        if self.once is not None:
            return self.once if self.once > moment else None
        if self.interval is not None:
            step = timedelta(seconds=self.interval)
            anchor = self.anchor or moment + step
            if moment < anchor:
                return anchor
            return anchor + step * (math.floor((moment - anchor) / step) + 1)
        try:
            return next(CronSim(self.cron, moment.astimezone(self.zone))).astimezone(UTC)
        except StopIteration:  # no match in cronsim's 50-year horizon (a 30 February)
            return None


def timing_of(schedule: object) -> Timing:
    """The ``Timing`` of a ``Schedule`` row (or anything with its fields)."""
    interval = getattr(schedule, "interval_seconds", None)
    return Timing(
        zone=zone(getattr(schedule, "timezone", "") or "UTC"),
        cron=getattr(schedule, "cron", "") or "",
        interval=interval,
        once=getattr(schedule, "run_at", None),
        anchor=interval_anchor(schedule, interval) if interval else None,
        start=getattr(schedule, "start_at", None),
        end=getattr(schedule, "end_at", None),
    )


def interval_anchor(schedule: object, interval: int) -> datetime | None:
    """An interval's first due time: its start if it has one, else one interval after its creation (None for a
    schedule not saved yet: one interval from whenever it is asked)."""
    start: datetime | None = getattr(schedule, "start_at", None)
    created: datetime | None = getattr(schedule, "created_at", None)
    if start is not None:
        return start
    return created + timedelta(seconds=interval) if created is not None else None


def upcoming(timing: Timing, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` due times after ``after`` (a preview)."""
    times: list[datetime] = []
    moment: datetime | None = after
    while moment is not None and len(times) < count:
        moment = timing.after(moment)
        if moment is not None:
            times.append(moment)
    return times

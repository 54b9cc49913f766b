"""schemathesis hooks for tests/test_api_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Some rules of the submit endpoint are not the schema's to state, and a request valid by the schema that breaks
one gets a 400 which schemathesis's `positive_data_acceptance` check would report:
- two depend on the server's state: a `file_processing` task needs a file that exists in the files directory,
  and `run_after` may be at most 366 days ahead of now;
- one is about storage: no string in `params` (key or value) may hold a NUL character or a lone surrogate,
  which PostgreSQL cannot store. OpenAPI 3.0 cannot say so of a free-form JSON object (it has no
  `propertyNames`), and the rule is the README's and tested in tests/test_api.py.
So, as schemathesis's docs advise for ids that must exist, a schema-valid `file_path` is pointed at a file the
test created, a `run_after` too far ahead is moved into the past (its format untouched), and NUL characters
and lone surrogates are taken out of `params`. Values the schema refuses are left alone, so the negative
checks still see them; tests/test_datetime_extremes.py covers `run_after` at the ends of the calendar.

A schedule's body (create and change) has the same `params` rules, and a few of its own that a schema cannot
state, each tested in tests/test_api_schedules.py: a cron expression must be one cronsim accepts (its field
ranges, its day-of-month against the month), a time zone must be in the system's tz database, `run_at` must be
in the future (the clock's), and `end_at` after `start_at`. A schema-valid value that breaks one is replaced
by a valid one (`*/5 * * * *`, `UTC`, the same time in the year 2996, no `end_at`), and a change of one bound
alone (checked against the other, stored one) is left out; a name's lone surrogates, which no JSON Schema
pattern can exclude, become `x`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

import schemathesis
from cronsim import CronSim, CronSimError
from django.utils.dateparse import parse_datetime

ZONES = frozenset(available_timezones())
SCHEDULE_WRITES = {"POST /api/schedules/", "PATCH /api/schedules/{schedule_id}/"}


def _utc(value: str) -> datetime | None:
    """``value`` as the server reads it, in UTC; None if it is no time, ``datetime.max`` if out of UTC's range."""
    try:
        when = parse_datetime(value.upper())
    except ValueError:
        return None
    if when is None:
        return None
    try:
        return when.replace(tzinfo=when.tzinfo or UTC).astimezone(UTC)
    except OverflowError:  # year 9999 behind UTC, year 1 ahead of it
        return datetime.max.replace(tzinfo=UTC)


def _too_far(value: str) -> bool:
    when = _utc(value)
    return when is not None and when > datetime.now(UTC) + timedelta(days=365)


def _cron_ok(value: str) -> bool:
    try:
        CronSim(" ".join(value.split()), datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:
        return False
    return len(value.split()) == 5


def _schedule_rules(body: dict[str, Any], *, change: bool) -> None:
    cron, zone, name = body.get("cron"), body.get("timezone"), body.get("name")
    if isinstance(cron, str) and 0 < len(cron) <= 100 and not _cron_ok(cron):
        body["cron"] = "*/5 * * * *"
    if isinstance(zone, str) and 0 < len(zone) <= 64 and zone not in ZONES:
        body["timezone"] = "UTC"
    if isinstance(name, str):
        body["name"] = "".join("x" if "\ud800" <= char <= "\udfff" else char for char in name)
    times = {
        key: _utc(body[key]) if isinstance(body.get(key), str) else None for key in ("run_at", "start_at", "end_at")
    }
    now = datetime.now(UTC) + timedelta(minutes=5)
    for key, when in times.items():
        out_of_range = when == datetime.max.replace(tzinfo=UTC)
        if when is not None and (out_of_range or (key == "run_at" and when <= now)):
            body[key] = "2996" + body[key][4:]  # a leap year, as the year it replaces may be
            times[key] = _utc(body[key])
    start, end = times["start_at"], times["end_at"]
    if start is not None and end is not None and end <= start:
        del body["end_at"]
    if change and ("start_at" in body) != ("end_at" in body):  # the other one is the stored schedule's
        body.pop("start_at", None)
        body.pop("end_at", None)


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "ignore").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    body = case.body
    label = case.operation.label
    if label not in {"POST /api/tasks/", *SCHEDULE_WRITES} or not isinstance(body, dict):
        return case
    if label in SCHEDULE_WRITES:
        _schedule_rules(body, change=label.startswith("PATCH"))
    if isinstance(body.get("params"), dict):
        body["params"] = _storable(body["params"])
    params = body.get("params")
    path = params.get("file_path") if isinstance(params, dict) else None
    if body.get("task_type") == "file_processing" and isinstance(path, str) and 0 < len(path) <= 1024:
        params["file_path"] = os.environ["LTT_FUZZ_INPUT_FILE"]
    when = body.get("run_after")
    if isinstance(when, str) and _too_far(when):
        body["run_after"] = "2000" + when[4:]
    return case

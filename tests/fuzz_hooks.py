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
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from django.utils.dateparse import parse_datetime


def _too_far(value: str) -> bool:
    try:
        when = parse_datetime(value.upper())
    except ValueError:
        return False
    if when is None:
        return False
    try:
        return when.replace(tzinfo=when.tzinfo or UTC).astimezone(UTC) > datetime.now(UTC) + timedelta(days=365)
    except OverflowError:  # year 9999 behind UTC, year 1 ahead of it
        return True


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
    if case.operation.label != "POST /api/tasks/" or not isinstance(body, dict):
        return case
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

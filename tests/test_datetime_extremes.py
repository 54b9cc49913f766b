"""Every door that takes a date or a time, at the ends of the calendar: year 1 and year 9999, naive and aware,
offsets of ±14 hours and beyond (+15:00 exists in no zone but is valid ISO 8601; +24:00 is not). Each value
is accepted or gets a clear 4xx: the API a JSON ``invalid_params``, the dashboard its form error, the admin
its redirect to ``?e=1`` (as for any value it cannot use), the CLI a CommandError. Never a 500.

The conversions that overflowed happen in Python (DRF's field, the admin's date hierarchy) or in the
database adapter: PostgreSQL takes any bound, SQLite converts it to UTC first. So the sweep runs in process
on the test database, and once more over HTTP on a server with the embedded SQLite default.
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from long_time_task.models import LongTimeTask

from .conftest import token_client
from .test_e2e_embedded import embedded_env, manage
from .workers import WebServer

pytestmark = pytest.mark.django_db

TIMES = [
    "0001-01-01T00:00:00",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999",
    "9999-12-31",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "2026-06-01T00:00:00+15:00",
    "2026-06-01T00:00:00-15:00",
    "2026-06-01T00:00:00+24:00",
    "2026-06-01T00:00:00+23:59",
    "2026-02-30T00:00:00",
    "2026-06-01t00:00:00z",  # RFC 3339 allows lower case
]
DATES = ["0001-01-01", "0001-01-02", "9999-12-30", "9999-12-31", "0000-12-31", "10000-01-01"]
# The dashboard's viewer time zone (a cookie): east of UTC, west of it, and the server's default.
ZONES = ["Etc/GMT-14", "Etc/GMT+12", ""]  # Etc/ signs are inverted: GMT-14 is UTC+14
COUNTDOWNS: list[Any] = [True, False, "90", -1, 0, 1.5, 366 * 86400, 366 * 86400 + 1, 10**30, None, [], {}]


def is_clear_api_answer(response: Any) -> bool:
    if response.status_code == 201:
        return True
    body = response.json()
    return response.status_code == 400 and body["code"] == "invalid_params" and body["error"]


@pytest.mark.parametrize("value", TIMES)
def test_api_run_after_at_the_ends_of_the_calendar(user, value):
    response = token_client(user).post("/api/tasks/", {"task_type": "test_echo", "run_after": value}, format="json")
    assert is_clear_api_answer(response), response.content
    if value.startswith("9999") or "+24:" in value or "-02-30" in value:
        assert response.status_code == 400, response.content  # too far ahead, or not a time at all
    elif value.startswith("0001") and ("-14:00" in value or value.endswith("Z")):
        assert response.status_code == 201, response.content  # in the past: it starts now
        assert LongTimeTask.objects.get(id=response.json()["task_id"]).run_after is None


@pytest.mark.parametrize("value", COUNTDOWNS, ids=repr)
def test_api_countdown_takes_a_number_of_seconds_only(user, value):
    response = token_client(user).post("/api/tasks/", {"task_type": "test_echo", "countdown": value}, format="json")
    assert is_clear_api_answer(response), response.content
    number = isinstance(value, int | float) and not isinstance(value, bool)
    assert (response.status_code == 201) == (number and 0 <= value <= 366 * 86400), response.content


@pytest.mark.parametrize("raw", ["1e400", "-1e400", "NaN", "Infinity", "1" * 5000])
def test_api_countdown_out_of_any_range_is_a_parse_error(user, raw):
    body = '{"task_type": "test_echo", "countdown": ' + raw + "}"
    response = token_client(user).post("/api/tasks/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error", response.content


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("field", ["created_from", "created_to"])
@pytest.mark.parametrize("value", DATES)
def test_dashboard_date_filters_at_the_ends_of_the_calendar(user, zone, field, value):
    client = Client()
    client.force_login(user)
    client.cookies["ltt_tz"] = zone
    LongTimeTask.objects.create(task_type="test_echo", owner=user)
    response = client.get("/dashboard/", {field: value})
    assert response.status_code == 200
    form = response.context["form"]
    if value in ("0001-01-02", "9999-12-30"):  # every hour of these days exists in UTC, whatever the zone
        assert form.is_valid(), form.errors
    elif value in ("0000-12-31", "10000-01-01"):
        assert not form.is_valid()
    # Ahead of UTC the first day of year 1 starts before UTC's calendar does; behind it, the last day of 9999
    # ends after it: a form error then. (Whichever, an invalid filter lists nothing.)
    if (zone, field, value) in {
        ("Etc/GMT-14", "created_from", "0001-01-01"),
        ("Etc/GMT+12", "created_to", "9999-12-31"),
    }:
        assert not form.is_valid()
    if not form.is_valid():
        assert form.errors[field] and list(response.context["tasks"]) == []


ADMIN_QUERIES = [
    {"create_at__year": "1"},
    {"create_at__year": "2"},
    {"create_at__year": "9998"},
    {"create_at__year": "9999"},
    {"create_at__year": "9999", "create_at__month": "12"},
    {"create_at__year": "9999", "create_at__month": "12", "create_at__day": "31"},
    {"create_at__year": "1" * 5000},
    {"create_at__gte": "0001-01-01"},
    {"create_at__gte": "0001-01-01 00:00:00+14:00"},
    {"create_at__lt": "9999-12-31 23:59:59-14:00"},
    {"create_at__lt": "9999-12-31 23:59:59+00:00"},
    {"create_at__gte": "2026-01-01 00:00:00+24:00"},
    {"create_at__range": "0001-01-01 00:00:00+14:00,9999-12-31 00:00:00+00:00"},
    # Transforms the admin's own links never make, overflowing while the query is compiled (found in review).
    {"create_at__year__gte": "1"},
    {"create_at__iso_year": "1"},
    {"create_at__iso_year": "9999"},
    {"create_at__year": "2000", "create_at__month": "99999999999999999999"},
    {"create_at__year": "2000", "create_at__month": "2", "create_at__day": "99999999999999999999"},
]


@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime:RuntimeWarning")
@pytest.mark.parametrize("query", ADMIN_QUERIES, ids=lambda q: "&".join(f"{k}={v[:8]}" for k, v in q.items()))
def test_admin_date_filters_at_the_ends_of_the_calendar(staff_user, query):
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    LongTimeTask.objects.create(task_type="test_echo", owner=staff_user)
    response = client.get("/admin/long_time_task/longtimetask/", query)
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 302:
        assert response["Location"].endswith("?e=1")


def run_cli(*args: str) -> str | CommandError:
    try:
        call_command("tasks", "submit", "test_echo", *args, stdout=io.StringIO())
    except CommandError as exc:
        return exc
    return "submitted"


@pytest.mark.parametrize("value", TIMES)
def test_cli_run_after_at_the_ends_of_the_calendar(value):
    outcome = run_cli("--run-after", value)
    assert outcome == "submitted" or isinstance(outcome, CommandError)
    if value.startswith("9999") or "+24:" in value:
        assert isinstance(outcome, CommandError)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e400", "31622401", "1" * 5000, "true"])
def test_cli_countdown_out_of_range_is_a_command_error(value):
    with pytest.raises(CommandError):
        call_command("tasks", "submit", "test_echo", "--countdown", value, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(
    ("older_than", "ok"),
    [("365000d", True), ("52142w", True), ("365001d", False), ("0s", False), ("1" * 5000 + "d", False)],
)
def test_cli_purge_age_at_its_ends(older_than, ok):
    """``purge_tasks --older-than``, the one date filter of the command line: up to 1,000 years back."""
    LongTimeTask.objects.create(task_type="test_echo", state="FINISHED")
    args = ("purge_tasks", "--older-than", older_than, "--dry-run")
    if ok:
        call_command(*args, stdout=io.StringIO())
    else:
        with pytest.raises(CommandError):
            call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())


# ------------------------------------------------------------------ the same doors on SQLite, over HTTP


def test_every_date_door_on_the_embedded_sqlite_default(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "var")
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "setup_demo")
    token = manage(env, "create_api_token", "demo").strip().splitlines()[-1]
    session = manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; from django.contrib.sessions.backends.db import "
        "SessionStore; from long_time_task.models import LongTimeTask; "
        "u = get_user_model().objects.create_superuser('root', password='root-password'); "
        "LongTimeTask.objects.create(task_type='test_echo', owner=u); s = SessionStore(); "
        "s['_auth_user_id'] = str(u.pk); s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'; "
        "s['_auth_user_hash'] = u.get_session_auth_hash(); s.create(); print(s.session_key)",
    )
    session_key = session.strip().splitlines()[-1]
    with WebServer(env, tmp_path / "web.log") as web:
        base = f"http://127.0.0.1:{web.port}"

        def get(path: str, query: dict[str, str], zone: str = "") -> tuple[int, str]:
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))
            cookie = f"sessionid={session_key}" + (f"; ltt_tz={zone}" if zone else "")
            url = f"{base}{path}?{urllib.parse.urlencode(query)}"
            request = urllib.request.Request(url, headers={"Cookie": cookie})  # noqa: S310 - loopback only
            return fetch(opener.open, request)

        def post(body: dict[str, Any]) -> tuple[int, str]:
            request = urllib.request.Request(  # noqa: S310 - loopback only
                f"{base}/api/tasks/",
                data=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            return fetch(urllib.request.urlopen, request)

        bad: dict[str, str] = {}  # door and value -> what it answered, when that is not a clear answer
        for value in TIMES:
            status, text = post({"task_type": "report_generation", "run_after": value})
            if not (status == 201 or (status == 400 and json.loads(text)["code"] == "invalid_params")):
                bad[f"api run_after={value}"] = f"{status} {text[:60]!r}"
        for zone in ZONES:
            for field in ("created_from", "created_to"):
                for value in DATES:
                    status, text = get("/dashboard/", {field: value}, zone)
                    if status != 200:
                        bad[f"dashboard {field}={value} zone={zone}"] = str(status)
        for query in ADMIN_QUERIES:
            status, _text = get("/admin/long_time_task/longtimetask/", query)
            if status not in (200, 302):
                bad[f"admin {query}"] = str(status)
    assert not bad, "\n".join(f"{door}: {answer}" for door, answer in bad.items())


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(opener: Callable[..., Any], request: urllib.request.Request) -> tuple[int, str]:
    try:
        with opener(request, timeout=30) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")

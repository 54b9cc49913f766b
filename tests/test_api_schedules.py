"""The schedules' JSON API: create, list, detail, change, delete and run now, with the tasks' ownership rules, a
clear 400 naming the field for every bad input, and each run listed under its schedule with its due time.

The scheduler's own behaviour (due times, misfires, races) is tested in tests/test_schedules.py and
tests/integration/test_schedules_worker.py; here it is the door.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from long_time_task.models import LongTimeTask, Schedule
from long_time_task.schedules import scheduler, service

from .conftest import token_client
from .test_api import assert_error

pytestmark = pytest.mark.django_db

NIGHTLY = {"name": "nightly", "task_type": "test_echo", "params": {"n": 1}, "cron": "0 3 * * *"}


def create(client: APIClient, **fields: Any) -> Any:
    """POST ``NIGHTLY`` with ``fields`` changed (``None``: left out)."""
    body = {key: value for key, value in {**NIGHTLY, **fields}.items() if value is not None}
    return client.post("/api/schedules/", body, format="json")


def created(client: APIClient, **fields: Any) -> dict[str, Any]:
    response = create(client, **fields)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["success"] is True
    return body["schedule"]


def when(value: str) -> datetime:
    parsed = parse_datetime(value)
    assert parsed is not None and parsed.tzinfo is not None, value
    return parsed


# ---------------------------------------------------------------- create


def test_create_answers_the_schedule_with_its_id_next_run_and_five_next_runs_in_its_zone(api, user):
    before = timezone.now()
    schedule = created(api, timezone="Asia/Shanghai")
    row = Schedule.objects.get(id=schedule["id"])
    assert row.owner == user and row.cron == "0 3 * * *" and row.timezone == "Asia/Shanghai"
    runs = [when(value) for value in schedule["next_runs"]]
    assert len(runs) == 5 and runs == sorted(runs) and runs[0] > before
    assert when(schedule["next_run_at"]) == runs[0] == row.next_run_at
    # 03:00 in Shanghai is 19:00 UTC the day before, every day.
    assert all(run.astimezone(UTC).hour == 19 and run.minute == 0 for run in runs)
    assert [b - a for a, b in zip(runs, runs[1:], strict=False)] == [timedelta(days=1)] * 4
    assert schedule["owner"] == user.username and schedule["enabled"] is True and schedule["paused_reason"] == ""
    assert schedule["interval_seconds"] is None and schedule["run_at"] is None and schedule["declared"] is None


def test_an_interval_counts_from_the_creation_and_a_single_time_runs_once(api):
    schedule = created(api, cron=None, interval_seconds=3600)
    row = Schedule.objects.get(id=schedule["id"])
    assert row.next_run_at == row.created_at + timedelta(hours=1)
    assert [when(v) for v in schedule["next_runs"]] == [row.created_at + timedelta(hours=h) for h in range(1, 6)]
    at = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    once = created(api, cron=None, run_at=at.isoformat())
    assert [when(v) for v in once["next_runs"]] == [at] and once["cron"] is None


def test_the_timezone_defaults_to_the_sites_and_the_misfire_policy_to_run_once(api, settings):
    settings.TIME_ZONE = "Europe/London"
    schedule = created(api)
    assert schedule["timezone"] == "Europe/London" and schedule["misfire"] == "run_once"
    assert schedule["skip_if_running"] is False and schedule["misfire_limit"] == 10


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"cron": "61 * * * *"}, "cron: Invalid cron expression"),
        ({"cron": "0 0 30 2 *"}, "cron: Invalid cron expression"),
        ({"cron": "0 3 * *"}, "cron: A cron expression has 5 fields"),
        ({"timezone": "Mars/Olympus"}, "timezone: Unknown time zone 'Mars/Olympus'"),
        ({"cron": None, "interval_seconds": 59}, "interval_seconds:"),
        ({"cron": None, "run_at": "2001-01-01T00:00:00Z"}, "run_at: run_at must be in the future"),
        ({"cron": None, "run_at": "tomorrow"}, "run_at: must be an ISO 8601 date and time"),
        ({"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "end_at: end_at must be after"),
        ({"misfire": "sometimes"}, "misfire:"),
        ({"misfire_limit": 1001}, "misfire_limit:"),
        ({"name": "   "}, "name: A schedule needs a name"),
    ],
)
def test_a_bad_field_answers_400_naming_it_and_writes_nothing(api, fields, fragment):
    assert_error(create(api, **fields), 400, fragment=fragment)
    assert not Schedule.objects.exists()


def test_the_shortest_interval_is_the_setting(api, settings):
    settings.LONG_TIME_TASK_SCHEDULE_MIN_INTERVAL = 5
    assert created(api, cron=None, interval_seconds=5)["interval_seconds"] == 5
    assert_error(create(api, cron=None, interval_seconds=4), 400, fragment="interval_seconds")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"cron": None}, "invalid_schedule"),  # no timing
        ({"interval_seconds": 3600}, "invalid_schedule"),  # two timings
        ({"queue": "urgent"}, "unknown_field"),
        ({"interval_seconds": "3600", "cron": None}, "invalid_request"),  # a string is not an integer
        ({"enabled": 1}, "invalid_request"),  # 1 is not true
        ({"name": 42}, "invalid_request"),  # a number is not a name
        ({"params": {"n": "\x00"}}, "invalid_params"),
        ({"task_type": "no_such_type"}, "invalid_params"),
    ],
)
def test_json_types_are_strict_and_the_rules_of_a_submit_hold(api, fields, code):
    assert_error(create(api, **fields), 400, code)
    assert not Schedule.objects.exists()


def test_params_are_checked_against_the_types_schema(api):
    assert_error(
        create(api, task_type="test_progress", params={"steps": 0}), 400, "invalid_params", fragment="params.steps"
    )
    assert created(api, task_type="test_progress", params={"steps": 3})["params"] == {"steps": 3}


def test_a_type_the_caller_may_not_submit_is_refused_with_403_and_allowed_with_the_permission(api, user):
    assert_error(create(api, task_type="test_restricted", params={}), 403, "permission_denied")
    user.user_permissions.add(Permission.objects.get(codename="run_restricted"))
    client = token_client(type(user).objects.get(id=user.id))
    assert created(client, task_type="test_restricted", params={})["task_type"] == "test_restricted"


def test_anonymous_requests_get_401(anon):
    assert_error(anon.get("/api/schedules/"), 401, "not_authenticated")
    assert_error(anon.post("/api/schedules/", NIGHTLY, format="json"), 401, "not_authenticated")


# ---------------------------------------------------------------- read, ownership


def test_owners_see_their_own_others_get_404_and_staff_see_all(user, other_user, staff_user):
    mine, theirs, staff = token_client(user), token_client(other_user), token_client(staff_user)
    schedule = created(mine)
    created(theirs, name="theirs")
    assert [s["name"] for s in mine.get("/api/schedules/").json()["schedules"]] == ["nightly"]
    assert mine.get(f"/api/schedules/{schedule['id']}/").json()["schedule"]["id"] == schedule["id"]
    for method, path in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "run/"),
    ]:
        response = getattr(theirs, method)(f"/api/schedules/{schedule['id']}/{path}", {}, format="json")
        assert_error(response, 404, "not_found")
    assert Schedule.objects.filter(id=schedule["id"], enabled=True).exists()
    assert not LongTimeTask.objects.exists()
    listed = staff.get("/api/schedules/").json()
    assert sorted(s["name"] for s in listed["schedules"]) == ["nightly", "theirs"] and listed["total"] == 2
    assert_error(mine.get("/api/schedules/999999999/"), 404, "not_found")


def test_the_list_filters_by_type_and_state_and_pages(api):
    for index in range(3):
        created(api, name=f"echo {index}")
    created(api, name="progress", task_type="test_progress", params={}, enabled=False)
    by_type = api.get("/api/schedules/?task_type=test_progress").json()
    assert [s["name"] for s in by_type["schedules"]] == ["progress"]
    paused = api.get("/api/schedules/?enabled=false").json()
    assert [s["name"] for s in paused["schedules"]] == ["progress"]
    page = api.get("/api/schedules/?page=2&page_size=3").json()
    assert [s["name"] for s in page["schedules"]] == ["progress"] and page["total_pages"] == 2 and page["total"] == 4
    assert_error(api.get("/api/schedules/?page=3&page_size=3"), 404, "page_out_of_range")
    assert_error(api.get("/api/schedules/?enabled=yes"), 400)
    assert_error(api.get("/api/schedules/?task_type="), 400)


# ---------------------------------------------------------------- change, delete


def test_a_new_timing_replaces_the_old_and_plans_again_while_a_new_name_keeps_the_next_run(api):
    schedule = created(api)
    renamed = api.patch(f"/api/schedules/{schedule['id']}/", {"name": "renamed"}, format="json").json()["schedule"]
    assert renamed["name"] == "renamed" and renamed["next_run_at"] == schedule["next_run_at"]
    retimed = api.patch(f"/api/schedules/{schedule['id']}/", {"interval_seconds": 600}, format="json")
    body = retimed.json()["schedule"]
    assert retimed.status_code == 200 and body["cron"] is None and body["interval_seconds"] == 600
    assert when(body["next_run_at"]) - timezone.now() <= timedelta(seconds=600)
    row = Schedule.objects.get(id=schedule["id"])
    assert row.cron == "" and row.interval_seconds == 600 and row.next_run_at == when(body["next_run_at"])


def test_a_change_of_type_brings_its_params_and_is_checked_like_a_create(api):
    schedule = created(api)
    url = f"/api/schedules/{schedule['id']}/"
    assert_error(api.patch(url, {"params": {"steps": 2}}, format="json"), 400, "invalid_schedule", "together")
    assert_error(api.patch(url, {"task_type": "test_progress"}, format="json"), 400, "invalid_schedule", "together")
    bad = api.patch(url, {"task_type": "test_progress", "params": {"steps": -1}}, format="json")
    assert_error(bad, 400, "invalid_params")
    good = api.patch(url, {"task_type": "test_progress", "params": {"steps": 2}}, format="json").json()["schedule"]
    assert good["task_type"] == "test_progress" and good["params"] == {"steps": 2}
    assert_error(api.patch(url, {"cron": "1 2 3 4 5", "run_at": "2099-01-01T00:00:00Z"}, format="json"), 400)
    assert_error(api.patch(url, {"run_at": "2001-01-01T00:00:00Z"}, format="json"), 400, fragment="future")
    assert_error(api.patch(url, {"cron": "* * *"}, format="json"), 400, "invalid_schedule", "cron:")
    assert Schedule.objects.get(id=schedule["id"]).cron == "0 3 * * *"


def test_pause_and_resume_and_resuming_clears_a_self_pause_reason(api):
    schedule = created(api)
    url = f"/api/schedules/{schedule['id']}/"
    paused = api.patch(url, {"enabled": False}, format="json").json()["schedule"]
    assert paused["enabled"] is False
    Schedule.objects.filter(id=schedule["id"]).update(paused_reason="Its owner lost the permission.")
    resumed = api.patch(url, {"enabled": True}, format="json").json()["schedule"]
    assert resumed["enabled"] is True and resumed["paused_reason"] == "" and resumed["next_run_at"]


def test_delete_keeps_the_runs_unlinked(api, user):
    schedule = created(api)
    run = api.post(f"/api/schedules/{schedule['id']}/run/").json()
    response = api.delete(f"/api/schedules/{schedule['id']}/")
    assert response.status_code == 200 and response.json()["success"] is True
    assert not Schedule.objects.exists()
    assert LongTimeTask.objects.get(id=run["task_id"]).schedule_id is None
    assert_error(api.delete(f"/api/schedules/{schedule['id']}/"), 404, "not_found")


def test_a_schedule_declared_in_code_only_pauses_and_resumes(staff_user):
    client = token_client(staff_user)
    row = Schedule.objects.create(
        name="declared", task_type="test_echo", cron="0 4 * * *", timezone="UTC", code_name="settings:declared"
    )
    url = f"/api/schedules/{row.id}/"
    assert client.get(url).json()["schedule"]["declared"] == "settings:declared"
    assert_error(client.patch(url, {"cron": "0 5 * * *"}, format="json"), 409, "declared_in_code")
    assert_error(client.delete(url), 409, "declared_in_code")
    assert client.patch(url, {"enabled": False}, format="json").json()["schedule"]["enabled"] is False
    assert Schedule.objects.get(id=row.id).cron == "0 4 * * *"


# ---------------------------------------------------------------- runs


def test_run_now_makes_a_task_linked_to_the_schedule_and_the_tasks_list_filters_by_schedule(
    api, user, other_user, django_capture_on_commit_callbacks
):
    schedule = created(api)
    with django_capture_on_commit_callbacks(execute=False) as published:
        response = api.post(f"/api/schedules/{schedule['id']}/run/")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["schedule"] == schedule["id"] and body["state"] == "PENDING" and len(published) == 1
    task = LongTimeTask.objects.get(id=body["task_id"])
    assert task.schedule_id == schedule["id"] and task.scheduled_for is None and task.owner == user
    # A due run, made by the scheduler's tick, carries its due time.
    due = Schedule.objects.get(id=schedule["id"]).next_run_at
    scheduler.tick(due + timedelta(seconds=1))
    LongTimeTask.objects.create(task_type="test_echo", owner=user)  # not a run: not listed
    for path in ("/api/tasks/", "/api/tasks/list/"):
        listed = api.get(f"{path}?schedule={schedule['id']}").json()["tasks"]
        assert [(t["schedule"], t["scheduled_for"] and when(t["scheduled_for"])) for t in listed] == [
            (schedule["id"], due),
            (schedule["id"], None),
        ]
    detail = api.get(f"/api/tasks/{task.id}/").json()["task"]
    assert detail["schedule"] == schedule["id"] and detail["scheduled_for"] is None
    assert token_client(other_user).get(f"/api/tasks/?schedule={schedule['id']}").json()["tasks"] == []
    assert_error(api.get("/api/tasks/?schedule=0"), 400)


def test_run_now_is_refused_when_the_owner_may_no_longer_submit_the_type(api, user):
    user.user_permissions.add(Permission.objects.get(codename="run_restricted"))
    client = token_client(type(user).objects.get(id=user.id))
    schedule = created(client, task_type="test_restricted", params={})
    user.user_permissions.clear()
    fresh = token_client(type(user).objects.get(id=user.id))
    assert_error(fresh.post(f"/api/schedules/{schedule['id']}/run/"), 403, "permission_denied")
    assert not LongTimeTask.objects.exists()


# ---------------------------------------------------------------- language, schema


def test_errors_are_in_the_callers_language(api):
    response = api.post(
        "/api/schedules/", {**NIGHTLY, "timezone": "Mars/Olympus"}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    body = assert_error(response, 400, "invalid_schedule")
    assert "时区" in body["error"], body


def test_the_schema_states_the_rules_of_a_create_and_a_change(api):
    schema = api.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    create_body = schema["paths"]["/api/schedules/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    change_body = schema["paths"]["/api/schedules/{schedule_id}/"]["patch"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    full = {**schema, "components": {"schemas": components}}

    def valid(body_schema: dict[str, Any], body: dict[str, Any]) -> bool:
        validator = jsonschema.Draft4Validator({**body_schema, "components": full["components"]})
        return validator.is_valid(body)

    assert valid(create_body, NIGHTLY)
    assert not valid(create_body, {**NIGHTLY, "interval_seconds": 3600})  # two timings
    assert not valid(create_body, {key: v for key, v in NIGHTLY.items() if key != "cron"})  # none
    assert not valid(create_body, {**NIGHTLY, "cron": None, "interval_seconds": 59})  # under the minimum
    assert not valid(create_body, {**NIGHTLY, "task_type": "test_progress", "params": {"steps": 0}})
    assert not valid(create_body, {**NIGHTLY, "name": " "})
    assert valid(change_body, {}) and valid(change_body, {"cron": "0 4 * * *", "name": "x"})
    assert not valid(change_body, {"cron": "0 4 * * *", "interval_seconds": 3600})
    assert not valid(change_body, {"params": {}})  # params without their type
    assert valid(change_body, {"task_type": "test_progress", "params": {"steps": 2}})
    listed = schema["paths"]["/api/tasks/"]["get"]["parameters"]
    assert "schedule" in [p["name"] for p in listed]
    assert {"/api/schedules/{schedule_id}/run/", "/api/schedules/"} <= set(schema["paths"])
    assert service.TIMING == ("cron", "interval_seconds", "run_at")


def test_every_run_has_its_due_time_once_whatever_the_number_of_ticks(api):
    schedule = created(api, cron="*/5 * * * *", timezone="UTC")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    Schedule.objects.filter(id=schedule["id"]).update(next_run_at=start)
    for _ in range(3):
        scheduler.tick(start + timedelta(seconds=30))
    runs = api.get(f"/api/tasks/?schedule={schedule['id']}").json()["tasks"]
    assert [when(t["scheduled_for"]) for t in runs] == [start]

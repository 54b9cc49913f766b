"""The dashboard's schedule pages with Django's test client: the list, a new schedule (its form, the server's
preview and the JSON preview the script asks for), a schedule's page, the actions, who sees what, Chinese."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from long_time_task import services
from long_time_task.models import LongTimeTask, Schedule, TaskState
from long_time_task.registry import InvalidParams
from long_time_task.schedules import service

pytestmark = pytest.mark.django_db

LIST = reverse("ltt_dashboard:schedule_list")
NEW = reverse("ltt_dashboard:schedule_new")
PREVIEW = reverse("ltt_dashboard:schedule_preview")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def detail(schedule_id: int) -> str:
    return reverse("ltt_dashboard:schedule_detail", kwargs={"schedule_id": schedule_id})


def action(name: str, schedule_id: int) -> str:
    return reverse(f"ltt_dashboard:schedule_{name}", kwargs={"schedule_id": schedule_id})


@pytest.fixture
def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_browser(staff_user: Any) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def make(owner: Any, name: str = "nightly", **fields: Any) -> Schedule:
    fields = {"task_type": "test_echo", "params": {"n": 1}, "cron": "0 3 * * *", "timezone": "Asia/Shanghai", **fields}
    return service.create_schedule(user=owner, name=name, **fields).schedule


def form_data(**fields: Any) -> dict[str, Any]:
    """What the new schedule form posts for test_echo (a free-form type: its params are one JSON field)."""
    data = {
        "task_type": "test_echo",
        "name": "nightly report",
        "param-params": '{"n": 7}',
        "timing": "cron",
        "cron": "0 3 * * *",
        "interval_seconds": "",
        "run_at": "",
        "timezone": "Asia/Shanghai",
        "misfire": "run_once",
        "misfire_limit": "10",
        "enabled": "on",
        "action": "save",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def next_daily_3am_shanghai(count: int) -> list[datetime]:
    now = timezone.now().astimezone(SHANGHAI)
    first = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if first <= now:
        first += timedelta(days=1)
    return [first + timedelta(days=i) for i in range(count)]


# ---------------------------------------------------------------- access


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", LIST),
        ("get", NEW),
        ("get", PREVIEW + "?cron=0+3+*+*+*"),
        ("get", "/dashboard/schedules/1/"),
        ("post", "/dashboard/schedules/1/pause/"),
        ("post", "/dashboard/schedules/1/run/"),
        ("post", "/dashboard/schedules/1/delete/"),
    ],
)
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, method: str, url: str) -> None:
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("ltt_dashboard:login") + "?next=")


def test_every_schedule_page_is_private_and_never_cached(browser: Client, user: Any) -> None:
    schedule = make(user)
    for url in (LIST, NEW, f"{NEW}?task_type=test_echo", PREVIEW + "?cron=0+3+*+*+*", detail(schedule.id)):
        response = browser.get(url)
        assert response.status_code == 200, url
        assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"], url


def test_the_nav_links_to_the_schedules(browser: Client) -> None:
    page = browser.get(reverse("ltt_dashboard:task_list")).content.decode()
    assert f'<a href="{LIST}">Schedules</a>' in page
    assert f'<a href="{LIST}" aria-current="page">Schedules</a>' in browser.get(LIST).content.decode()


def test_users_see_only_their_own_schedules(browser: Client, user: Any, other_user: Any) -> None:
    mine, theirs = make(user, "mine"), make(other_user, "theirs")
    page = browser.get(LIST).content.decode()
    assert f'data-schedule-id="{mine.id}"' in page
    assert f'data-schedule-id="{theirs.id}"' not in page and "theirs" not in page
    assert browser.get(detail(mine.id)).status_code == 200
    assert browser.get(detail(theirs.id)).status_code == 404
    assert browser.get(detail(10**6)).status_code == 404  # as a missing one


@pytest.mark.parametrize("name", ["pause", "resume", "run", "delete"])
def test_actions_on_another_users_schedule_are_404_and_change_nothing(
    browser: Client, other_user: Any, name: str
) -> None:
    theirs = make(other_user, "theirs")
    response = browser.post(action(name, theirs.id), {"confirmed": "yes"})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.enabled and not LongTimeTask.objects.exists()
    assert browser.get(action("delete", theirs.id)).status_code == 404  # the confirmation page too


def test_staff_see_every_schedule_with_its_owner(staff_browser: Client, user: Any, other_user: Any) -> None:
    a, b = make(user, "alices"), make(other_user, "bobs")
    page = staff_browser.get(LIST).content.decode()
    assert f'data-schedule-id="{a.id}"' in page and f'data-schedule-id="{b.id}"' in page
    assert ">alice<" in page and ">bob<" in page
    assert staff_browser.get(detail(b.id)).status_code == 200
    response = staff_browser.post(action("pause", b.id))
    assert response.status_code == 303
    b.refresh_from_db()
    assert not b.enabled


def test_actions_need_post_and_a_csrf_token(user: Any) -> None:
    schedule = make(user)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.get(action("pause", schedule.id)).status_code == 405
    assert strict.post(action("pause", schedule.id)).status_code == 403
    assert strict.post(action("delete", schedule.id), {"confirmed": "yes"}).status_code == 403
    assert strict.get(PREVIEW + "?cron=0+3+*+*+*").status_code == 200  # a read: GET only
    assert strict.post(PREVIEW).status_code in (403, 405)
    schedule.refresh_from_db()
    assert schedule.enabled


# ---------------------------------------------------------------- list


def test_the_list_shows_timing_zone_state_next_and_last_run(browser: Client, user: Any) -> None:
    cron = make(user, "a cron", cron="30 2 * * 1-5", timezone="America/New_York")
    every = make(user, "b every ten minutes", cron="", interval_seconds=600, timezone="UTC")
    at = datetime(2031, 5, 1, 1, 0, tzinfo=UTC)
    once = make(user, "c once", cron="", run_at=at, timezone="Asia/Shanghai")
    paused = make(user, "d paused")
    service.set_enabled(paused.id, False, user=user)
    Schedule.objects.filter(id=paused.id).update(paused_reason="The owner may no longer submit this type.")
    run = LongTimeTask.objects.create(task_type="test_echo", owner=user, state=TaskState.FAILED, schedule=cron)
    Schedule.objects.filter(id=cron.id).update(last_task=run, last_run_at=timezone.now())

    response = browser.get(LIST)
    page = response.content.decode()
    rows = {row["schedule"].id: row for row in response.context["rows"]}
    assert [row["schedule"].name for row in response.context["rows"]] == ["a cron", "b every ten minutes", "c once",
                                                                          "d paused"]  # fmt: skip
    assert '<span class="code">30 2 * * 1-5</span>' in page and "America/New_York" in page
    assert rows[every.id]["timing"] == "every 600 s (10 min 0 s)"
    assert rows[once.id]["timing"] == "once at 2031-05-01 09:00:00 UTC+08:00"  # in the schedule's zone
    assert "4 schedules" in page
    row = page.split(f'data-schedule-id="{paused.id}"')[1].split("</tr>")[0]
    assert "Paused" in row and "The owner may no longer submit this type." in row
    assert 'data-field="next-run">–</td>' in row and "Resume" in row and "Pause<" not in row
    row = page.split(f'data-schedule-id="{cron.id}"')[1].split("</tr>")[0]
    assert "Enabled" in row and f'href="/dashboard/tasks/{run.id}/">#{run.id}</a>' in row
    assert 'class="state state-FAILED"' in row
    assert re.search(r'data-field="next-run"><time datetime="[^"]+" data-local>', row)
    assert 'data-confirm="Delete the schedule “a cron”? Its past runs are kept."' in row
    row = page.split(f'data-schedule-id="{every.id}"')[1].split("</tr>")[0]
    assert "none yet" in row


def test_an_empty_list_offers_to_make_one(browser: Client) -> None:
    page = browser.get(LIST).content.decode()
    assert "No schedules yet." in page and f'href="{NEW}"' in page


def test_the_list_pages_by_fifty(browser: Client, user: Any) -> None:
    for i in range(55):
        make(user, f"s{i:02d}")
    first = browser.get(LIST)
    assert len(first.context["rows"]) == 50 and 'rel="next"' in first.content.decode()
    second = browser.get(LIST, {"page": 2})
    assert [r["schedule"].name for r in second.context["rows"]] == [f"s{i}" for i in range(50, 55)]
    assert browser.get(LIST, {"page": "junk"}).status_code == 200


def test_the_list_reads_the_same_few_queries_however_many_schedules(browser: Client, user: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert browser.get(LIST).status_code == 200
        return len(captured)

    def with_a_run(name: str) -> None:
        schedule = make(user, name)
        run = LongTimeTask.objects.create(task_type="test_echo", owner=user, schedule=schedule)
        Schedule.objects.filter(id=schedule.id).update(last_task=run, last_run_at=timezone.now())

    with_a_run("first")
    few = queries()
    for i in range(10):
        with_a_run(f"more {i}")
    assert queries() == few  # the owners joined, the last runs in one read: no query per row


# ---------------------------------------------------------------- new


def test_the_new_page_lists_the_types_the_user_may_submit(browser: Client) -> None:
    response = browser.get(NEW)
    names = [c.name for c in response.context["configs"]]
    assert "test_echo" in names and "test_restricted" not in names
    assert "form" not in response.context
    response = browser.get(NEW, {"task_type": "test_restricted"})
    assert "Unknown task type: test_restricted" in response.content.decode() and "form" not in response.context


def test_the_form_reuses_the_types_params_form_and_defaults_to_the_viewers_zone(browser: Client) -> None:
    page = browser.get(NEW, {"task_type": "test_progress"}).content.decode()
    assert 'name="param-steps"' in page and 'name="param-delay"' in page  # the submit page's generated fields
    assert re.search(r'name="timezone" value="Asia/Shanghai"', page)  # settings.TIME_ZONE, the zone unknown yet
    assert '<option value="Europe/Paris">' in page  # suggestions
    assert 'name="timing" value="cron"' in page and "checked" in page.split('value="cron"')[1].split(">")[0]
    assert f'data-preview-url="{PREVIEW}"' in page
    browser.cookies["ltt_tz"] = "America/Los_Angeles"
    page = browser.get(NEW, {"task_type": "test_echo"}).content.decode()
    assert re.search(r'name="timezone" value="America/Los_Angeles"', page)
    assert 'name="param-params"' in page  # a type without a schema: its params as JSON


def test_creating_a_schedule_goes_through_the_service_and_to_its_page(
    browser: Client, user: Any, monkeypatch: Any
) -> None:
    calls = []
    real = service.create_schedule

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(service, "create_schedule", spy)
    response = browser.post(NEW, form_data(misfire="catch_up", misfire_limit="3", skip_if_running="on"))
    schedule = Schedule.objects.get()
    assert response.status_code == 303 and response["Location"] == detail(schedule.id)
    assert calls and calls[0]["user"] == user
    assert (schedule.name, schedule.task_type, schedule.params, schedule.cron, schedule.timezone) == (
        "nightly report",
        "test_echo",
        {"n": 7},
        "0 3 * * *",
        "Asia/Shanghai",
    )
    assert (schedule.owner, schedule.enabled, schedule.misfire, schedule.misfire_limit, schedule.skip_if_running) == (
        user,
        True,
        "catch_up",
        3,
        True,
    )
    assert schedule.next_run_at == next_daily_3am_shanghai(1)[0]
    page = browser.get(response["Location"]).content.decode()
    assert "Schedule “nightly report” was created." in page


def test_a_schedule_of_a_type_with_a_schema_takes_its_generated_fields(browser: Client, user: Any) -> None:
    fields = {"param-steps": "8", "param-delay": "0.5", "param-params": None, "enabled": None}  # unticked: paused
    data = form_data(task_type="test_progress", **fields)
    assert browser.post(NEW, data).status_code == 303
    schedule = Schedule.objects.get()
    assert schedule.params == {"steps": 8, "delay": 0.5} and not schedule.enabled


def test_an_interval_schedule(browser: Client, user: Any) -> None:
    before = timezone.now()
    response = browser.post(NEW, form_data(timing="interval_seconds", interval_seconds="600", cron="0 3 * * *"))
    assert response.status_code == 303
    schedule = Schedule.objects.get()
    assert (schedule.cron, schedule.interval_seconds, schedule.run_at) == ("", 600, None)  # the chosen timing only
    assert before + timedelta(seconds=600) <= schedule.next_run_at <= timezone.now() + timedelta(seconds=600)


def test_a_once_at_time_is_read_in_the_schedules_zone_not_the_viewers(browser: Client, user: Any) -> None:
    browser.cookies["ltt_tz"] = "Europe/Paris"
    response = browser.post(NEW, form_data(timing="run_at", run_at="2031-05-01T09:00", timezone="Asia/Shanghai"))
    assert response.status_code == 303
    schedule = Schedule.objects.get()
    assert schedule.run_at == datetime(2031, 5, 1, 1, 0, tzinfo=UTC) == schedule.next_run_at
    assert "once at 2031-05-01 09:00:00 UTC+08:00" in browser.get(detail(schedule.id)).content.decode()


def test_the_preview_button_shows_the_next_5_runs_in_the_zone_and_saves_nothing(browser: Client) -> None:
    browser.cookies["ltt_tz"] = "Europe/Paris"
    response = browser.post(NEW, form_data(action="preview"))
    assert response.status_code == 200
    assert not Schedule.objects.exists()
    shown = [run["shown"] for run in response.context["preview"]]
    assert shown == [f"{t:%Y-%m-%d} 03:00:00 UTC+08:00" for t in next_daily_3am_shanghai(5)]
    page = response.content.decode()
    for run in response.context["preview"]:
        assert f'<li><time datetime="{run["iso"]}">{run["shown"]}</time></li>' in page  # no data-local: not redrawn
    assert "data-preview-zone>Asia/Shanghai<" in page
    assert response.context["form"]["name"].value() == "nightly report"  # the form keeps what was typed


def test_the_preview_button_shows_the_runs_even_when_other_fields_are_wrong(browser: Client) -> None:
    response = browser.post(NEW, form_data(action="preview", name="", timezone="Europe/London", cron="0 12 * * *"))
    assert response.status_code == 400
    assert "name" in response.context["form"].errors
    assert len(response.context["preview"]) == 5
    assert all(run["shown"].endswith(("12:00:00 UTC", "12:00:00 UTC+01:00")) for run in response.context["preview"])


def test_the_preview_button_checks_what_the_service_checks(browser: Client, user: Any, monkeypatch: Any) -> None:
    checked = []

    def validate(schedule: Schedule, *, user: Any) -> None:
        checked.append((schedule.pk, schedule.owner, schedule.params, schedule.cron, user))
        raise InvalidParams("n must be below 5", field="params.n")

    monkeypatch.setattr(service, "validate", validate)
    response = browser.post(NEW, form_data(action="preview"))
    assert checked == [(None, user, {"n": 7}, "0 3 * * *", user)]  # the schedule, unsaved
    assert response.status_code == 400
    assert response.context["params_form"].errors["params"] == ["n must be below 5"]
    assert len(response.context["preview"]) == 5  # the timing is fine: its runs show
    assert not Schedule.objects.exists()
    response = browser.post(NEW, form_data(action="preview", **{"param-params": "[1, 2]"}))
    assert "Enter a JSON object." in response.context["params_form"].errors["params"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "Invalid cron expression"),
        ({"cron": "every day"}, "cron", "A cron expression has 5 fields"),
        ({"cron": ""}, "cron", "Enter a value for this timing"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
        ({"timing": "interval_seconds", "interval_seconds": "5"}, "interval_seconds", "from 60 to"),
        ({"timing": "interval_seconds", "interval_seconds": "ten"}, "interval_seconds", "Enter a whole number"),
        ({"timing": "run_at", "run_at": "2020-01-01T00:00"}, "run_at", "in the future"),
        ({"timing": "run_at", "run_at": "not a date"}, "run_at", "Enter a valid date and time"),
        # 02:30 on 8 March 2026 does not exist in New York (the clocks go from 02:00 to 03:00).
        ({"timing": "run_at", "run_at": "2026-03-08T02:30", "timezone": "America/New_York"}, "run_at", "skip it"),
        ({"name": ""}, "name", "This field is required"),
        ({"name": " "}, "name", "This field is required"),
        ({"misfire": "sometimes"}, "misfire", "Select a valid choice"),
        ({"misfire_limit": "5000"}, "misfire_limit", "less than or equal to 1000"),
        ({"timing": "weekly"}, "timing", "Select a valid choice"),
    ],
)
def test_errors_show_on_the_field_they_name_and_save_nothing(
    browser: Client, fields: dict[str, Any], field: str, message: str
) -> None:
    for step in ("save", "preview"):
        response = browser.post(NEW, form_data(action=step, **fields))
        assert response.status_code == 400, step
        errors = response.context["form"].errors
        assert field in errors and message in " ".join(errors[field]), (step, errors)
        page = response.content.decode()
        assert re.search(rf'id="id_{field}_error" role="alert"[^>]*>[^<]*{re.escape(message)}', page) or (
            field == "timing" and message in page
        ), step
    assert not Schedule.objects.exists()


def test_a_params_error_of_the_service_shows_on_its_param(browser: Client, monkeypatch: Any) -> None:
    def refuse(**kwargs: Any) -> Any:
        raise InvalidParams("steps: 7 is not allowed on Sundays", field="params.steps")

    monkeypatch.setattr(service, "create_schedule", refuse)
    data = form_data(task_type="test_progress", **{"param-steps": "7", "param-delay": "0", "param-params": None})
    response = browser.post(NEW, data)
    assert response.status_code == 400
    assert response.context["params_form"].errors["steps"] == ["steps: 7 is not allowed on Sundays"]


def test_a_type_the_user_may_not_submit_cannot_be_scheduled(browser: Client) -> None:
    response = browser.post(NEW, form_data(task_type="test_restricted"))
    assert response.status_code == 200 and "Unknown task type: test_restricted" in response.content.decode()
    assert not Schedule.objects.exists()


# ---------------------------------------------------------------- the JSON preview


def test_the_json_preview_gives_the_next_5_runs_in_the_zone(browser: Client) -> None:
    browser.cookies["ltt_tz"] = "Europe/Paris"  # the viewer's zone does not matter: the schedule's does
    body = browser.get(PREVIEW, {"cron": "0 3 * * *", "timezone": "Asia/Shanghai"}).json()
    expected = next_daily_3am_shanghai(5)
    assert body["error"] is None and body["field"] is None and body["timezone"] == "Asia/Shanghai"
    assert body["runs"] == [t.isoformat() for t in expected]
    assert body["shown"] == [f"{t:%Y-%m-%d} 03:00:00 UTC+08:00" for t in expected]
    assert all(run.endswith("+08:00") for run in body["runs"])


def test_the_json_preview_of_an_interval_and_of_a_single_time(browser: Client) -> None:
    before = timezone.now()
    runs = [datetime.fromisoformat(r) for r in browser.get(PREVIEW, {"interval_seconds": "3600"}).json()["runs"]]
    assert len(runs) == 5 and {b - a for a, b in zip(runs, runs[1:], strict=False)} == {timedelta(hours=1)}
    assert before + timedelta(hours=1) <= runs[0] <= timezone.now() + timedelta(hours=1)
    assert runs[0].utcoffset() == timedelta(hours=8)  # no zone given: the site's (no viewer zone yet)
    body = browser.get(PREVIEW, {"run_at": "2031-05-01T09:00", "timezone": "Europe/Paris"}).json()
    assert body["runs"] == ["2031-05-01T09:00:00+02:00"] and body["shown"] == ["2031-05-01 09:00:00 UTC+02:00"]


def test_the_json_preview_follows_daylight_saving_in_the_zone(browser: Client) -> None:
    # The wall clock of the zone, whichever side of a change: 02:30 New York time, at UTC-05:00 or UTC-04:00
    # (03:00 on the day the clocks skip 02:00-03:00).
    body = browser.get(PREVIEW, {"cron": "30 2 * * *", "timezone": "America/New_York"}).json()
    assert len(body["runs"]) == 5 and all(re.search(r"T0(2:30|3:00):00-0[45]:00$", r) for r in body["runs"])
    assert all(re.search(r" 0(2:30|3:00):00 UTC-0[45]:00$", s) for s in body["shown"])


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "Invalid cron expression"),
        ({"cron": "* * *"}, "cron", "5 fields"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
        ({"interval_seconds": "5"}, "interval_seconds", "from 60 to"),
        ({"interval_seconds": "-5"}, "interval_seconds", "Enter a whole number of seconds."),
        ({"interval_seconds": "²"}, "interval_seconds", "Enter a whole number of seconds."),
        ({"interval_seconds": "999999999999"}, "interval_seconds", "Enter a whole number of seconds."),
        ({"interval_seconds": "9999999999"}, "interval_seconds", "from 60 to 2147483647"),
        ({"run_at": "2020-01-01T00:00"}, "run_at", "in the future"),
        ({"run_at": "yesterday"}, "run_at", "Enter a valid date and time"),
        ({"run_at": "9999-12-31T23:59", "timezone": "Pacific/Kiritimati"}, None, None),  # far, but fine
        ({"cron": "0 3 * * *" + " " * 95 + "x"}, "cron", "at most 100 characters"),
        ({}, "cron", "Give exactly one of"),
        ({"cron": "0 3 * * *", "interval_seconds": "600"}, "cron", "Give exactly one of"),
    ],
)
def test_the_json_preview_names_the_field_at_fault(
    browser: Client, query: dict[str, str], field: str | None, message: str | None
) -> None:
    response = browser.get(PREVIEW, query)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    if field is None:
        assert body["error"] is None and len(body["runs"]) == 1
        return
    assert body["runs"] == [] and body["field"] == field and message in body["error"], body


def test_a_day_that_never_comes_is_an_error_on_the_cron(browser: Client) -> None:
    body = browser.get(PREVIEW, {"cron": "0 0 30 2 *", "timezone": "UTC"}).json()  # 30 February
    assert body["runs"] == [] and body["field"] == "cron" and "Bad day-of-month" in body["error"]


def test_the_json_preview_writes_nothing(browser: Client, django_assert_max_num_queries: Any) -> None:
    browser.get(PREVIEW, {"cron": "0 3 * * *"})  # the session and the user, once warm
    with django_assert_max_num_queries(2):
        assert browser.get(PREVIEW, {"cron": "0 3 * * *"}).json()["error"] is None
    assert not Schedule.objects.exists()


# ---------------------------------------------------------------- detail


def test_the_detail_shows_the_schedule_its_next_runs_in_its_zone_and_its_last_runs(browser: Client, user: Any) -> None:
    schedule = make(user, misfire="catch_up", misfire_limit=4, skip_if_running=True)
    now = timezone.now()
    old = [
        LongTimeTask.objects.create(
            task_type="test_echo", owner=user, state=TaskState.FINISHED, schedule=schedule,
            scheduled_for=now - timedelta(days=30 - i), finish_at=now,
        )
        for i in range(25)
    ]  # fmt: skip
    LongTimeTask.objects.filter(id__in=[t.id for t in old]).update(create_at=now - timedelta(days=1))
    other = LongTimeTask.objects.create(task_type="test_echo", owner=user)  # not a run of it
    task = service.run_now(schedule.id, user=user)

    response = browser.get(detail(schedule.id))
    page = response.content.decode()
    assert "Schedule: nightly" in page and '<span class="code">0 3 * * *</span>' in page
    assert "Asia/Shanghai" in page and "run each missed run, up to a limit (at most 4)" in page
    assert "&quot;n&quot;: 1" in page  # params
    assert [r["shown"] for r in response.context["next_runs"]] == [
        f"{t:%Y-%m-%d} 03:00:00 UTC+08:00" for t in next_daily_3am_shanghai(5)
    ]
    runs = response.context["runs"]
    assert len(runs) == 20 and runs[0].id == task.id and other.id not in {r.id for r in runs}
    assert [r.id for r in runs[1:]] == sorted((t.id for t in old), reverse=True)[:19]
    row = page.split(f'<tr data-task-id="{task.id}"')[1].split("</tr>")[0]
    assert f'href="/dashboard/tasks/{task.id}/"' in row and 'class="state state-PENDING"' in row and "run now" in row
    # The unfinished run's state changes live (the list's event stream, for this run only).
    assert f'data-events-url="/api/tasks/events/?ids={task.id}"' in page
    for label in ("Pause", "Run now", "Delete"):
        assert f">{label}</button>" in page


def test_a_paused_schedule_shows_the_runs_a_resume_would_make(browser: Client, user: Any) -> None:
    schedule = make(user)
    service.set_enabled(schedule.id, False, user=user)
    page = browser.get(detail(schedule.id)).content.decode()
    assert "Next 5 runs, if resumed now" in page and "none while paused" in page
    assert ">Resume</button>" in page and ">Pause</button>" not in page
    assert page.count("03:00:00 UTC+08:00</time>") == 5


def test_times_follow_the_viewer_zone_and_runs_the_schedules(browser: Client, user: Any) -> None:
    schedule = make(user)
    browser.cookies["ltt_tz"] = "America/New_York"
    page = browser.get(detail(schedule.id)).content.decode()
    assert re.search(r'data-field="next-run"><time datetime="[^"]+-0[45]:00" data-local>', page)
    assert "03:00:00 UTC+08:00</time>" in page  # the next runs: the schedule's wall clock


# ---------------------------------------------------------------- actions


def test_pause_resume_and_run_now_go_through_the_service(browser: Client, user: Any, monkeypatch: Any) -> None:
    schedule = make(user)
    called = []

    def spy(name: str) -> Any:
        real = getattr(service, name)

        def door(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            return real(*args, **kwargs)

        return door

    for name in ("set_enabled", "run_now"):
        monkeypatch.setattr(service, name, spy(name))

    response = browser.post(action("pause", schedule.id), {"next": LIST})
    assert response.status_code == 303 and response["Location"] == LIST
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert "Schedule “nightly” was paused." in browser.get(LIST).content.decode()

    response = browser.post(action("resume", schedule.id))
    assert response["Location"] == detail(schedule.id)  # no "next": the schedule's page
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at == next_daily_3am_shanghai(1)[0]
    assert "Schedule “nightly” was resumed; next run: " in browser.get(detail(schedule.id)).content.decode()

    response = browser.post(action("run", schedule.id), {"next": detail(schedule.id)})
    task = LongTimeTask.objects.get(schedule=schedule)
    assert (task.owner, task.task_type, task.task_params, task.scheduled_for) == (user, "test_echo", {"n": 1}, None)
    page = browser.get(response["Location"]).content.decode()
    assert f"Schedule “nightly” started task {task.id}." in page and f'<tr data-task-id="{task.id}"' in page
    assert called == ["set_enabled", "set_enabled", "run_now"]


def test_an_offsite_next_is_ignored(browser: Client, user: Any) -> None:
    schedule = make(user)
    response = browser.post(action("pause", schedule.id), {"next": "https://evil.example/"})
    assert response["Location"] == detail(schedule.id)


def test_a_refused_run_is_a_message_not_an_error(browser: Client, user: Any) -> None:
    # A schedule whose owner may not submit its type (made around the service, as one that lost the right).
    schedule = Schedule.objects.create(name="restricted", task_type="test_restricted", cron="0 3 * * *",
                                       timezone="UTC", owner=user)  # fmt: skip
    response = browser.post(action("run", schedule.id), follow=True)
    assert response.status_code == 200
    assert "Schedule “restricted”: You may not submit tasks of type test_restricted." in response.content.decode()
    assert not LongTimeTask.objects.exists()


def test_a_run_refused_by_the_quota_is_a_message(browser: Client, user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 1
    schedule = make(user)
    services.submit("test_echo", {}, owner=user)
    response = browser.post(action("run", schedule.id), follow=True)
    assert response.status_code == 200 and "Schedule “nightly”: " in response.content.decode()
    assert not LongTimeTask.objects.filter(schedule=schedule).exists()


def test_delete_asks_first_then_keeps_the_past_runs(browser: Client, user: Any) -> None:
    schedule = make(user)
    task = service.run_now(schedule.id, user=user)
    # Without the script, the button posts no confirmation: a page asks.
    response = browser.post(action("delete", schedule.id), {"confirmed": ""})
    assert response.status_code == 200 and "Delete the schedule?" in response.content.decode()
    assert Schedule.objects.filter(id=schedule.id).exists()
    assert browser.get(action("delete", schedule.id)).status_code == 200
    response = browser.post(action("delete", schedule.id), {"confirmed": "yes"})
    assert response.status_code == 303 and response["Location"] == LIST
    assert not Schedule.objects.exists()
    task.refresh_from_db()
    assert task.schedule_id is None
    assert "Schedule “nightly” was deleted; its past runs are kept." in browser.get(LIST).content.decode()
    assert browser.post(action("delete", schedule.id), {"confirmed": "yes"}).status_code == 404


def test_a_schedule_declared_in_code_pauses_but_is_not_deleted_here(staff_browser: Client) -> None:
    schedule = Schedule.objects.create(
        name="nightly-summary", task_type="test_echo", cron="0 3 * * *", timezone="UTC", code_name="settings:nightly"
    )
    page = staff_browser.get(detail(schedule.id)).content.decode()
    assert '<span class="code">settings:nightly</span>' in page
    assert ">Pause</button>" in page and ">Delete</button>" not in page
    page = staff_browser.get(action("delete", schedule.id)).content.decode()
    assert "It is declared in the code" in page and ">Delete</button>" not in page
    response = staff_browser.post(action("delete", schedule.id), {"confirmed": "yes"}, follow=True)
    assert "is declared in code" in response.content.decode()  # the service's refusal, as a message
    assert Schedule.objects.filter(id=schedule.id).exists()
    staff_browser.post(action("pause", schedule.id))
    schedule.refresh_from_db()
    assert not schedule.enabled


# ---------------------------------------------------------------- Chinese


def test_the_schedule_pages_are_in_chinese(browser: Client, user: Any) -> None:
    schedule = make(user)
    service.run_now(schedule.id, user=user)
    zh = {"accept-language": "zh-CN,zh;q=0.9"}
    page = browser.get(LIST, headers=zh).content.decode()
    assert '<html lang="zh-hans">' in page
    for text in ("计划", "新建计划", "时区", "下次运行", "启用", "暂停", "立即运行", "删除"):
        assert text in page, text
    assert "New schedule" not in page and "Run now" not in page
    page = browser.get(NEW, {"task_type": "test_echo"}, headers=zh).content.decode()
    for text in ("cron 表达式", "每隔 N 秒", "创建计划", "预览", "接下来 5 次运行"):
        assert text in page, text
    assert "Create schedule" not in page and "Next 5 runs" not in page
    page = browser.get(detail(schedule.id), headers=zh).content.decode()
    for text in ("最近的运行", "立即运行", "等待执行"):
        assert text in page, text
    assert "Last runs" not in page
    response = browser.post(action("pause", schedule.id), headers=zh, follow=True)
    assert "计划“nightly”已暂停。" in response.content.decode()
    body = browser.get(PREVIEW, {"interval_seconds": "x"}, headers=zh).json()
    assert body["error"] == "请输入整数秒数。"

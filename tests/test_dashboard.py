"""The dashboard's pages with Django's test client: permissions, the generated submit form, actions, i18n."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from long_time_task import services
from long_time_task.dashboard.forms import ParamsForm
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.registry import LongTimeTaskRegister

pytestmark = pytest.mark.django_db

LIST = reverse("ltt_dashboard:task_list")
SUBMIT = reverse("ltt_dashboard:submit")


def chunks(response: Any) -> Any:
    """The body of a streaming response, as it is sent."""
    return response.streaming_content


def detail(task_id: int) -> str:
    return reverse("ltt_dashboard:task_detail", kwargs={"task_id": task_id})


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


def make(owner: Any, state: str = TaskState.PENDING, **fields: Any) -> LongTimeTask:
    fields = {"task_type": "test_echo", "task_params": {"n": 1}, **fields}
    return LongTimeTask.objects.create(owner=owner, state=state, **fields)


@pytest.mark.parametrize(
    "url",
    [LIST, SUBMIT, reverse("ltt_dashboard:overview"), "/dashboard/tasks/1/", "/dashboard/tasks/1/files/x.csv"],
)
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("ltt_dashboard:login") + "?next=")


def test_login_page_logs_in_and_goes_to_the_list(client: Client, user: Any) -> None:
    response = client.post(reverse("ltt_dashboard:login"), {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302 and response["Location"] == LIST


def test_users_see_only_their_own_tasks(browser: Client, user: Any, other_user: Any) -> None:
    mine, theirs = make(user), make(other_user)
    page = browser.get(LIST).content.decode()
    assert f'data-task-id="{mine.id}"' in page
    assert f'data-task-id="{theirs.id}"' not in page
    assert browser.get(detail(mine.id)).status_code == 200
    assert browser.get(detail(theirs.id)).status_code == 404


def test_staff_see_every_task_with_its_owner(staff_browser: Client, user: Any, other_user: Any) -> None:
    a, b = make(user), make(other_user)
    page = staff_browser.get(LIST).content.decode()
    assert f'data-task-id="{a.id}"' in page and f'data-task-id="{b.id}"' in page
    assert ">alice<" in page and ">bob<" in page
    assert staff_browser.get(detail(b.id)).status_code == 200


def test_list_filters_by_state_type_date_and_id(browser: Client, user: Any) -> None:
    done = make(user, TaskState.FINISHED)
    waiting = make(user)
    other_type = LongTimeTask.objects.create(task_type="test_fail", owner=user)

    def ids(**query: Any) -> set[int]:
        response = browser.get(LIST, query)
        assert response.status_code == 200
        return {t.id for t in response.context["tasks"]}

    assert ids(state="FINISHED") == {done.id}
    assert ids(task_type="test_fail") == {other_type.id}
    assert ids(q=str(waiting.id)) == {waiting.id}
    assert ids(q=f"#{done.id}") == {done.id}
    assert ids(q=done.celery_task_id) == {done.id}
    assert ids(created_from="2000-01-01", created_to="2000-01-02") == set()
    assert ids(created_from="2000-01-01") == {done.id, waiting.id, other_type.id}
    response = browser.get(LIST, {"q": "not an id"})
    assert response.status_code == 200 and not response.context["tasks"]
    assert "Enter a task id" in response.content.decode()


def test_list_pages_follow_a_cursor_and_keep_the_filters(browser: Client, user: Any) -> None:
    LongTimeTask.objects.bulk_create([LongTimeTask(task_type="test_echo", owner=user) for _ in range(30)])
    first = browser.get(LIST, {"state": "PENDING"})
    assert len(first.context["tasks"]) == 25 and first.context["total"] == 30
    next_link = first.context["next_link"]
    assert "state=PENDING" in next_link and "page=2" in next_link
    second = browser.get(LIST + next_link)
    assert len(second.context["tasks"]) == 5
    assert not {t.id for t in first.context["tasks"]} & {t.id for t in second.context["tasks"]}
    assert browser.get(LIST, {"cursor": "garbage"}).status_code == 404


def test_states_use_the_seed_admin_colours(browser: Client, user: Any) -> None:
    make(user, TaskState.FAILED)
    page = browser.get(LIST).content.decode()
    assert 'class="state state-FAILED"' in page
    css = (
        __import__("pathlib")
        .Path(__file__)
        .resolve()
        .parent.parent.joinpath("long_time_task/dashboard/static/long_time_task_dashboard/dashboard.css")
        .read_text()
    )
    for colour in ("#ffc107", "#17a2b8", "#28a745", "#dc3545"):
        assert colour in css


def test_detail_shows_params_result_error_and_timeline(browser: Client, user: Any) -> None:
    task = make(user, TaskState.FAILED, error_message="boom happened", error_code="handler_error")
    task.error_traceback = "Traceback: secret frames"
    task.save()
    page = browser.get(detail(task.id)).content.decode()
    assert "boom happened" in page and "handler_error" in page
    assert "secret frames" not in page  # tracebacks are for staff
    assert "&quot;n&quot;: 1" in page  # params, pretty-printed
    assert 'id="retry-button"' in page and 'id="cancel-button"' not in page


def test_staff_see_the_traceback(staff_browser: Client, user: Any) -> None:
    task = make(user, TaskState.FAILED, error_message="boom", error_traceback="Traceback: frames")
    assert "Traceback: frames" in staff_browser.get(detail(task.id)).content.decode()


def test_buttons_follow_the_state(browser: Client, user: Any) -> None:
    pending, finished = make(user), make(user, TaskState.FINISHED, result={"ok": True})
    page = browser.get(detail(pending.id)).content.decode()
    assert 'id="cancel-button"' in page and 'id="retry-button"' not in page and 'id="rerun-button"' not in page
    page = browser.get(detail(finished.id)).content.decode()
    assert 'id="rerun-button"' in page and 'id="cancel-button"' not in page
    assert "&quot;ok&quot;: true" in page


def test_viewers_who_may_not_manage_get_no_buttons(client: Client, user: Any, django_user_model: Any) -> None:
    viewer = django_user_model.objects.create_user(username="auditor", password="x")
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
    task = make(user)
    client.force_login(viewer)
    page = client.get(detail(task.id)).content.decode()
    assert 'id="cancel-button"' not in page
    assert client.post(reverse("ltt_dashboard:task_cancel", args=[task.id])).status_code == 403


def test_cancel_button_cancels_a_waiting_task(browser: Client, user: Any) -> None:
    task = make(user)
    response = browser.post(reverse("ltt_dashboard:task_cancel", args=[task.id]), follow=True)
    assert response.redirect_chain[-1][0] == detail(task.id)
    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert "was cancelled" in response.content.decode()
    assert task.audit_events.count() == 1


def test_retry_goes_to_the_new_task(browser: Client, user: Any) -> None:
    task = make(user, TaskState.FAILED)
    response = browser.post(reverse("ltt_dashboard:task_retry", args=[task.id]))
    new = LongTimeTask.objects.get(retry_of=task)
    assert response.status_code == 302 and response["Location"] == detail(new.id)


def test_an_action_the_state_refuses_is_a_message_not_an_error(browser: Client, user: Any) -> None:
    task = make(user, TaskState.FINISHED)
    response = browser.post(reverse("ltt_dashboard:task_retry", args=[task.id]), follow=True)
    assert response.status_code == 200
    assert "re-run it instead" in response.content.decode()


def test_actions_on_another_users_task_are_404(browser: Client, other_user: Any) -> None:
    task = make(other_user)
    assert browser.post(reverse("ltt_dashboard:task_cancel", args=[task.id])).status_code == 404
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.PENDING


def test_actions_need_post_and_a_csrf_token(user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    task = make(user)
    assert client.get(reverse("ltt_dashboard:task_cancel", args=[task.id])).status_code == 405
    assert client.post(reverse("ltt_dashboard:task_cancel", args=[task.id])).status_code == 403
    assert client.post(SUBMIT, {"task_type": "test_echo"}).status_code == 403
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.PENDING


def test_result_files_download_for_the_owner_only(
    browser: Client, user: Any, other_user: Any, settings: Any, django_user_model: Any
) -> None:
    settings.LONG_TIME_TASK_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (settings.LONG_TIME_TASK_RESULTS_DIR / "out.csv").write_text("a,b\n1,2\n")
    task = make(user, TaskState.FINISHED, result={"output_file": "out.csv"}, task_type="file_processing")
    url = reverse("ltt_dashboard:task_file", args=[task.id, "out.csv"])
    assert url in browser.get(detail(task.id)).content.decode()
    response = browser.get(url)
    assert response.status_code == 200 and b"".join(chunks(response)) == b"a,b\n1,2\n"
    assert "attachment" in response["Content-Disposition"]
    assert browser.get(reverse("ltt_dashboard:task_file", args=[task.id, "other.csv"])).status_code == 404
    outsider = Client()
    outsider.force_login(other_user)
    assert outsider.get(url).status_code == 404


def test_a_result_path_outside_the_results_dir_is_never_served(browser: Client, user: Any) -> None:
    task = make(user, TaskState.FINISHED, result={"output_file": "../../etc/passwd"}, task_type="file_processing")
    assert browser.get(reverse("ltt_dashboard:task_file", args=[task.id, "passwd"])).status_code == 404


# ---------------------------------------------------------------- the generated form

SCHEMA = {
    "type": "object",
    "required": ["dataset_id", "label"],
    "properties": {
        "dataset_id": {"type": "integer", "minimum": 1, "maximum": 99, "description": "Which dataset"},
        "label": {"type": "string", "minLength": 2, "maxLength": 10, "pattern": "^[a-z]+$"},
        "mode": {"type": "string", "enum": ["basic", "full"], "default": "basic"},
        "ratio": {"type": "number", "minimum": 0, "default": 0.5},
        "verbose": {"type": "boolean", "default": False},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


@pytest.fixture
def form_type() -> Any:
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="form_demo", description="A form", param_schema=SCHEMA)(_handler)
        yield LongTimeTaskRegister.get_task("form_demo")


def _handler(task_id: int, params: dict[str, Any]) -> None:
    return None


def test_the_form_follows_the_schema_types_required_enums_and_defaults(form_type: Any) -> None:
    html = str(ParamsForm(form_type))
    assert 'type="number" name="dataset_id"' in html and 'min="1"' in html and 'max="99"' in html
    assert 'name="dataset_id"' in html and "required" in html.split('name="dataset_id"')[1].split(">")[0]
    assert 'minlength="2"' in html and 'maxlength="10"' in html and 'pattern="^[a-z]+$"' in html
    assert '<option value="&quot;basic&quot;" selected>basic</option>' in html
    assert 'step="any"' in html and 'value="0.5"' in html
    assert 'type="checkbox" name="verbose"' in html
    assert "<textarea" in html and 'name="tags"' in html
    assert "Which dataset" in html
    form = ParamsForm(form_type, {"dataset_id": "7", "label": "abc", "mode": '"full"', "ratio": "", "tags": '["x"]'})
    assert form.is_valid(), form.errors
    assert form.params() == {"dataset_id": 7, "label": "abc", "mode": "full", "tags": ["x"], "verbose": False}


def test_submit_page_lists_types_and_shows_the_chosen_form(browser: Client) -> None:
    page = browser.get(SUBMIT).content.decode()
    assert '<option value="test_progress"' in page
    page = browser.get(SUBMIT, {"task_type": "test_progress"}).content.decode()
    assert 'name="steps"' in page and 'name="delay"' in page


def test_submitting_the_form_creates_the_task_and_goes_to_it(browser: Client, user: Any) -> None:
    response = browser.post(SUBMIT, {"task_type": "test_progress", "steps": "3", "delay": "0.1"})
    task = LongTimeTask.objects.get(owner=user)
    assert response.status_code == 303 and response["Location"] == detail(task.id)
    assert task.task_type == "test_progress" and task.task_params == {"steps": 3, "delay": 0.1}


def test_server_side_validation_errors_are_shown_on_the_fields(browser: Client, user: Any) -> None:
    response = browser.post(SUBMIT, {"task_type": "test_progress", "steps": "0"})
    assert response.status_code == 400
    assert "greater than or equal to 1" in response.content.decode()
    # Checks only the service makes (the type's own validator) come back on the field too.
    response = browser.post(SUBMIT, {"task_type": "file_processing", "file_path": "../secret"})
    assert response.status_code == 400 and 'id="id_file_path_error"' in response.content.decode()
    assert not LongTimeTask.objects.exists()


def test_unknown_or_forbidden_types_cannot_be_submitted(browser: Client) -> None:
    page = browser.get(SUBMIT).content.decode()
    assert "test_restricted" not in page
    response = browser.post(SUBMIT, {"task_type": "test_restricted"})
    assert response.status_code == 400 and not LongTimeTask.objects.exists()


def test_overview_counts_and_recent_failures(staff_browser: Client, user: Any) -> None:
    from django.utils import timezone

    make(user, TaskState.FAILED, finish_at=timezone.now(), error_code="handler_error")
    make(user)
    response = staff_browser.get(reverse("ltt_dashboard:overview"))
    assert response.status_code == 200
    counts = {state: n for state, _, n in response.context["counts"]["states"]}
    assert counts["FAILED"] == 1 and counts["PENDING"] == 1
    assert response.context["failures_count"] == 1
    queues = {q.name: q.depth for q in response.context["queues"]}
    assert {"default", "heavy", "priority", "maintenance"} <= set(queues)
    assert all(depth is None or depth >= 0 for depth in queues.values())


def test_overview_hides_the_system_from_users(browser: Client) -> None:
    response = browser.get(reverse("ltt_dashboard:overview"))
    assert response.status_code == 200 and "queues" not in response.context


def test_pages_are_translated_by_the_browser_language(browser: Client, user: Any) -> None:
    make(user, TaskState.FINISHED)
    page = browser.get(LIST, headers={"accept-language": "zh-CN,zh;q=0.9"}).content.decode()
    assert '<html lang="zh-hans">' in page
    assert "任务" in page and "已完成" in page
    assert "Submit a task" not in page


def test_times_follow_the_viewer_timezone_cookie(browser: Client, user: Any) -> None:
    make(user)
    browser.cookies["ltt_tz"] = "America/New_York"
    page = browser.get(LIST).content.decode()
    assert "-05:00" in page or "-04:00" in page
    browser.cookies["ltt_tz"] = "Not/AZone"
    assert browser.get(LIST).status_code == 200


def test_services_are_the_one_door(browser: Client, user: Any, monkeypatch: Any) -> None:
    calls = []
    real = services.submit

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "submit", spy)
    browser.post(SUBMIT, {"task_type": "test_echo"})
    assert calls == [("test_echo", {})]


def test_a_result_names_files_only_for_types_that_declare_them(browser: Client, user: Any, settings: Any) -> None:
    # test_echo echoes its params: a user could make it name another task's file, so it has no files.
    settings.LONG_TIME_TASK_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (settings.LONG_TIME_TASK_RESULTS_DIR / "theirs.csv").write_text("secret\n")
    task = make(user, TaskState.FINISHED, result={"output_file": "theirs.csv"})
    assert browser.get(reverse("ltt_dashboard:task_file", args=[task.id, "theirs.csv"])).status_code == 404


# ---------------------------------------------------------------- who did it: staff names stay with staff


@pytest.fixture
def operator(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="ops-oliver", password="x", is_staff=True)


def timeline_of(client: Client, task: LongTimeTask) -> list[str]:
    return [item["label"] for item in client.get(detail(task.id)).context["timeline"]]


def test_the_owner_reads_that_staff_cancelled_the_task_not_who(
    browser: Client, user: Any, operator: Any, client: Client
) -> None:
    task = make(user)
    services.cancel_task(task.id, user=operator)
    page = browser.get(detail(task.id)).content.decode()
    assert "ops-oliver" not in page
    assert "Cancelled by staff before it started." in page
    assert "Cancelled by staff" in timeline_of(browser, task)
    api = browser.get(f"/api/tasks/{task.id}/").json()
    assert api["task"]["error_message"] == "Cancelled by staff before it started."
    assert "ops-oliver" not in str(api)
    # Staff still see who it was, in the timeline (and in the audit trail).
    client.force_login(operator)
    assert "Cancelled by ops-oliver" in timeline_of(client, task)


def test_the_owner_reads_their_own_cancel_and_the_systems(browser: Client, user: Any) -> None:
    mine, the_systems = make(user), make(user)
    services.cancel_task(mine.id, user=user)
    services.cancel_task(the_systems.id, user=None)
    mine.refresh_from_db()
    the_systems.refresh_from_db()
    assert mine.error_message == "Cancelled by its owner before it started."
    assert "Cancelled by you" in timeline_of(browser, mine)
    assert the_systems.error_message == "Cancelled by the system before it started."
    assert "Cancelled by the system" in timeline_of(browser, the_systems)


def test_a_cancel_request_shows_once_in_the_timeline(browser: Client, user: Any) -> None:
    running = make(user, TaskState.RUNNING, attempts=1)
    services.cancel_task(running.id, user=user)
    labels = timeline_of(browser, running)
    assert [label for label in labels if label.startswith("Cancel requested")] == ["Cancel requested by you"]
    # A row from before the audit trail: its column is the only trace, and it still shows.
    from django.utils import timezone

    old = make(user, TaskState.RUNNING, attempts=1, cancel_requested_at=timezone.now())
    assert "Cancel requested" in timeline_of(browser, old)


# ---------------------------------------------------------------- stale notes, icons


def test_the_asked_to_stop_note_goes_once_the_task_has_ended(browser: Client, user: Any) -> None:
    running = make(user, TaskState.RUNNING, attempts=1)
    response = browser.post(reverse("ltt_dashboard:task_cancel", args=[running.id]), follow=True)
    assert "it has been asked to stop" in response.content.decode()  # true while it runs
    browser.post(reverse("ltt_dashboard:task_cancel", args=[running.id]))  # the note waits for the next page
    LongTimeTask.objects.filter(id=running.id).update(state=TaskState.CANCELLED)  # it stopped meanwhile
    page = browser.get(detail(running.id)).content.decode()
    assert "asked to stop" not in page


def test_every_page_has_an_icon(browser: Client, client: Client) -> None:
    from django.contrib.staticfiles import finders

    page = browser.get(LIST).content.decode()
    assert 'rel="icon" href="/static/long_time_task_dashboard/favicon.svg"' in page
    assert finders.find("long_time_task_dashboard/favicon.svg")
    # Pages that name no icon (the admin's): browsers ask for /favicon.ico.
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"] == "/static/long_time_task_dashboard/favicon.ico"
    assert finders.find("long_time_task_dashboard/favicon.ico")


def takes_rows(task_id: int, params: dict[str, Any]) -> None:
    """A handler for a type whose schema has a JSON-typed (array) property."""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 10_000 + "]" * 10_000, id="nested deeper than Python's recursion limit"),
        pytest.param('{"n": ' + "9" * 5000 + "}", id="an integer of 5,000 digits"),
    ],
)
def test_json_the_submit_form_cannot_parse_is_a_form_error_not_a_crash(browser: Client, text: str) -> None:
    """A free-form params field (test_echo has no schema) and a JSON-typed schema property alike."""
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(
            task_type="json_prop", param_schema={"type": "object", "properties": {"rows": {"type": "array"}}}
        )(takes_rows)
        for task_type, field in (("test_echo", "params"), ("json_prop", "rows")):
            response = browser.post(reverse("ltt_dashboard:submit"), {"task_type": task_type, field: text})
            assert response.status_code == 400, (task_type, response.status_code)
            assert field in response.context["form"].errors
    assert not LongTimeTask.objects.exists()

"""The admin operates tasks through the services: progress, cancel, retry, re-run, and the audit trail."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.utils import timezone

from long_time_task.admin import LongTimeTaskAdmin
from long_time_task.models import AuditAction, LongTimeTask, TaskAuditEvent, TaskState

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/long_time_task/longtimetask/"


def change_url(task: LongTimeTask) -> str:
    return f"{CHANGELIST}{task.id}/change/"


def task_of(owner, state: TaskState = TaskState.PENDING, **fields) -> LongTimeTask:
    fields.setdefault("task_type", "test_echo")
    fields.setdefault("task_params", {"n": 1})
    return LongTimeTask.objects.create(owner=owner, state=state, **fields)


def texts(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def run_action(client, action: str, *tasks: LongTimeTask):
    data = {"action": action, "_selected_action": [task.id for task in tasks], "index": "0"}
    return client.post(CHANGELIST, data, follow=True)


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("operator", "operator@example.com", "operator-password")


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, staff_user):
    """Staff allowed to look at tasks but not to operate them (no "change" permission)."""
    staff_user.user_permissions.add(Permission.objects.get(codename="view_longtimetask"))
    client.force_login(staff_user)
    return client


# ---------------------------------------------------------------- progress and state


def test_changelist_shows_an_accessible_progress_bar_with_percent_and_escaped_message(admin_client, user):
    task_of(user, TaskState.RUNNING, progress=40, progress_message="<b>rows</b>", progress_current=4, progress_total=10)
    task_of(user, TaskState.FINISHED)
    html = admin_client.get(CHANGELIST).content.decode()
    assert '<progress class="ltt-progress" value="40" max="100" aria-label="Progress"' in html
    assert "40% (4/10)" in html
    assert "&lt;b&gt;rows&lt;/b&gt;" in html and "<b>rows</b>" not in html
    assert '<progress class="ltt-progress" value="100" max="100"' in html  # FINISHED is full, even without reports


def test_progress_is_a_dash_before_the_first_report_and_stays_within_bounds(user):
    model_admin = LongTimeTaskAdmin(LongTimeTask, admin.site)
    assert model_admin.progress_display(task_of(user)) == "—"
    assert 'value="100"' in model_admin.progress_display(task_of(user, TaskState.RUNNING, progress=250.0))
    assert "99%" in model_admin.progress_display(task_of(user, TaskState.RUNNING, progress=99.6))


def test_state_column_shows_cancelled_in_grey_a_cancel_request_and_a_delayed_start(admin_client, user):
    task_of(user, TaskState.CANCELLED)
    task_of(user, TaskState.RUNNING, cancel_requested_at=timezone.now())
    task_of(user, TaskState.PENDING, run_after=timezone.now() + timedelta(hours=2))
    html = admin_client.get(CHANGELIST).content.decode()
    assert '<span class="ltt-state ltt-state-CANCELLED">Cancelled</span>' in html  # grey, from admin.css
    assert "(cancel requested)" in html
    assert "starts at <time datetime=" in html


# ---------------------------------------------------------------- actions


def test_cancel_action_cancels_a_pending_task_and_records_who_did_it(admin_client, operator, user):
    task = task_of(user)
    page = run_action(admin_client, "cancel_tasks", task)
    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert texts(page) == ["Cancelled 1 task."]
    event = TaskAuditEvent.objects.get(task=task)
    assert (event.action, event.actor, event.actor_name) == (AuditAction.CANCELLED, operator, "operator")


def test_cancel_action_requests_the_cancel_of_a_running_task(admin_client, user):
    task = task_of(user, TaskState.RUNNING)
    page = run_action(admin_client, "cancel_tasks", task)
    task.refresh_from_db()
    assert task.state == TaskState.RUNNING and task.cancel_requested_at is not None
    assert texts(page) == ["Cancel requested for 1 running task: it stops at its next check."]


def test_cancel_action_skips_a_finished_task_and_says_why(admin_client, user):
    pending, finished = task_of(user), task_of(user, TaskState.FINISHED)
    page = run_action(admin_client, "cancel_tasks", pending, finished)
    assert texts(page) == [
        "Cancelled 1 task.",
        f"Skipped 1 task: Task {finished.id} is already Finished: only waiting or running tasks can be cancelled.",
    ]
    finished.refresh_from_db()
    assert finished.state == TaskState.FINISHED


def test_retry_action_submits_a_linked_copy_owned_by_the_operator(admin_client, operator, user):
    failed = task_of(user, TaskState.FAILED, task_type="test_fail", task_params={"message": "again"})
    page = run_action(admin_client, "retry_tasks", failed)
    new = LongTimeTask.objects.get(retry_of=failed)
    assert (new.state, new.task_type, new.task_params, new.owner) == (
        TaskState.PENDING,
        "test_fail",
        {"message": "again"},
        operator,
    )
    assert texts(page) == [f'Submitted 1 new task: <a href="{change_url(new)}">Task {new.id}</a>']
    event = TaskAuditEvent.objects.get(task=failed)
    assert (event.action, event.actor, event.new_task) == (AuditAction.RETRIED, operator, new)


def test_retry_action_skips_a_finished_task_and_points_to_re_run(admin_client, user):
    finished = task_of(user, TaskState.FINISHED)
    page = run_action(admin_client, "retry_tasks", finished)
    assert texts(page) == [f"Skipped 1 task: Task {finished.id} finished: re-run it instead of retrying it."]
    assert not LongTimeTask.objects.filter(retry_of=finished).exists()


def test_rerun_action_runs_finished_and_cancelled_tasks_again_but_not_running_ones(admin_client, user):
    finished, cancelled = task_of(user, TaskState.FINISHED), task_of(user, TaskState.CANCELLED)
    running = task_of(user, TaskState.RUNNING)
    page = run_action(admin_client, "rerun_tasks", finished, cancelled, running)
    assert LongTimeTask.objects.filter(retry_of__in=[finished, cancelled]).count() == 2
    assert [e.action for e in TaskAuditEvent.objects.order_by("task_id")] == [AuditAction.RERUN, AuditAction.RETRIED]
    assert texts(page)[1] == (
        f"Skipped 1 task: Task {running.id} is Running: only tasks that have ended can run again."
    )


def test_a_long_list_of_skipped_tasks_is_cut_short(admin_client, user):
    finished = [task_of(user, TaskState.FINISHED) for _ in range(12)]
    page = run_action(admin_client, "cancel_tasks", *finished)
    [message] = texts(page)
    assert message.startswith("Skipped 12 tasks: ") and message.endswith("…and 2 more.")
    assert message.count("is already Finished") == 10


# ---------------------------------------------------------------- retry with edited params


def test_retry_page_shows_the_params_pretty_printed(admin_client, user):
    failed = task_of(user, TaskState.FAILED, task_type="data_analysis", task_params={"dataset_id": 3, "name": "数据"})
    page = admin_client.get(f"{CHANGELIST}{failed.id}/retry/")
    assert page.status_code == 200
    shown = page.context["form"]["params"].value()
    assert json.loads(shown) == {"dataset_id": 3, "name": "数据"}
    assert '\n  "dataset_id": 3' in shown and "数据" in shown  # indented, and readable
    assert f"Retry task {failed.id}" in page.content.decode()


def test_retry_page_rejects_invalid_json_and_submits_nothing(admin_client, user):
    failed = task_of(user, TaskState.FAILED)
    for raw, error in [('{"n": ', "Enter valid JSON"), ("[1, 2]", "must be a JSON object"), ('{"n": NaN}', "JSON")]:
        page = admin_client.post(f"{CHANGELIST}{failed.id}/retry/", {"params": raw})
        assert page.status_code == 200
        assert error in " ".join(page.context["form"].errors["params"])
    assert LongTimeTask.objects.count() == 1


def test_retry_page_names_the_field_the_schema_rejects(admin_client, user):
    failed = task_of(user, TaskState.FAILED, task_type="data_analysis", task_params={"dataset_id": 1})
    page = admin_client.post(f"{CHANGELIST}{failed.id}/retry/", {"params": '{"dataset_id": "x"}'})
    assert page.status_code == 200
    assert "params.dataset_id" in page.context["form"].errors["params"][0]
    assert LongTimeTask.objects.count() == 1


def test_retry_page_reruns_with_the_edited_params_and_opens_the_new_task(admin_client, operator, user):
    finished = task_of(user, TaskState.FINISHED, task_type="data_analysis", task_params={"dataset_id": 1})
    page = admin_client.post(f"{CHANGELIST}{finished.id}/retry/", {"params": '{"dataset_id": 7, "size": 20}'})
    new = LongTimeTask.objects.get(retry_of=finished)
    assert page.status_code == 302 and page["Location"] == change_url(new)
    assert (new.task_params, new.owner) == ({"dataset_id": 7, "size": 20}, operator)
    event = TaskAuditEvent.objects.get(task=finished)
    assert (event.action, event.note) == (AuditAction.RERUN, "with edited params")
    assert texts(admin_client.get(page["Location"])) == [f"Task {finished.id} was re-run as task {new.id}."]


def test_retry_page_with_unchanged_params_is_a_plain_retry(admin_client, user):
    failed = task_of(user, TaskState.FAILED, task_params={"n": 1})
    admin_client.post(f"{CHANGELIST}{failed.id}/retry/", {"params": '{"n": 1}'})
    assert LongTimeTask.objects.get(retry_of=failed).task_params == {"n": 1}
    assert TaskAuditEvent.objects.get(task=failed).note == ""


def test_retry_page_of_a_task_that_has_not_ended_sends_back_to_the_task(admin_client, user):
    pending = task_of(user)
    page = admin_client.get(f"{CHANGELIST}{pending.id}/retry/")
    assert page.status_code == 302 and page["Location"] == change_url(pending)


# ---------------------------------------------------------------- the task page


def test_cancel_button_posts_only(admin_client, user):
    task = task_of(user)
    assert admin_client.get(f"{CHANGELIST}{task.id}/cancel/").status_code == 405
    page = admin_client.post(f"{CHANGELIST}{task.id}/cancel/")
    assert page.status_code == 302 and page["Location"] == change_url(task)
    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert texts(admin_client.get(change_url(task))) == [f"Task {task.id} was cancelled."]


def test_cancel_button_of_a_missing_task_is_not_found(admin_client):
    assert admin_client.post(f"{CHANGELIST}999999/cancel/").status_code == 404


def test_task_page_shows_buttons_links_and_the_audit_trail(admin_client, user):
    failed = task_of(user, TaskState.FAILED, progress=40, progress_message="half way")
    run_action(admin_client, "retry_tasks", failed)
    new = LongTimeTask.objects.get(retry_of=failed)

    html = admin_client.get(change_url(failed)).content.decode()
    assert f'href="{CHANGELIST}{failed.id}/retry/"' in html and "Retry…" in html
    assert f"{failed.id}/cancel/" not in html
    assert '<progress class="ltt-progress" value="40"' in html and "half way" in html
    assert "Retries and re-runs" in html and f'<a href="{change_url(new)}">Task {new.id}</a>' in html
    assert "Audit trail" in html and "operator" in html and "Retried" in html
    assert 'name="_save"' not in html

    html = admin_client.get(change_url(new)).content.decode()
    assert f'action="{CHANGELIST}{new.id}/cancel/"' in html and 'name="csrfmiddlewaretoken"' in html
    assert f'<a href="{change_url(failed)}">Task {failed.id}</a>' in html  # retry of


def test_the_pages_render_in_chinese(admin_client, user):
    failed = task_of(user, TaskState.FAILED)
    for url in [CHANGELIST, change_url(failed), f"{CHANGELIST}{failed.id}/retry/"]:
        page = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans")
        assert page.status_code == 200 and "长耗时任务" in page.content.decode()


# ---------------------------------------------------------------- who may operate


def test_staff_who_may_only_view_see_tasks_but_cannot_operate_them(viewer_client, user):
    pending, failed = task_of(user), task_of(user, TaskState.FAILED)
    changelist = viewer_client.get(CHANGELIST)
    assert changelist.status_code == 200 and 'name="action"' not in changelist.content.decode()
    html = viewer_client.get(change_url(failed)).content.decode()
    assert "/retry/" not in html and "/cancel/" not in html
    TaskAuditEvent.objects.create(task=failed, action=AuditAction.RETRIED, actor_name="someone")
    assert "someone" in viewer_client.get(change_url(failed)).content.decode()  # the trail is part of the task
    assert viewer_client.post(f"{CHANGELIST}{pending.id}/cancel/").status_code == 403
    assert viewer_client.get(f"{CHANGELIST}{failed.id}/retry/").status_code == 403
    run_action(viewer_client, "cancel_tasks", pending)
    pending.refresh_from_db()
    assert pending.state == TaskState.PENDING and not TaskAuditEvent.objects.filter(task=pending).exists()


def test_users_who_are_not_staff_are_sent_to_the_login_page(client, user):
    pending, failed = task_of(user), task_of(user, TaskState.FAILED)
    client.force_login(user)
    for response in [
        client.get(CHANGELIST),
        run_action(client, "cancel_tasks", pending),
        client.post(f"{CHANGELIST}{pending.id}/cancel/"),
        client.get(f"{CHANGELIST}{failed.id}/retry/"),
        client.post(f"{CHANGELIST}{failed.id}/retry/", {"params": "{}"}),
    ]:
        final = response.redirect_chain[0][0] if getattr(response, "redirect_chain", None) else response["Location"]
        assert final.startswith("/admin/login/")
    pending.refresh_from_db()
    assert pending.state == TaskState.PENDING and LongTimeTask.objects.count() == 2

"""The API of operating tasks: cancel, retry, re-run, delayed start, Idempotency-Key, progress and audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState

from .conftest import client_as, token_client
from .test_api import assert_error, submit

pytestmark = pytest.mark.django_db


def post(client: APIClient, path: str):
    return client.post(path, format="json")


def make(state: str, owner) -> LongTimeTask:
    task = services.submit_task("test_echo", {"n": 1}, owner=owner)
    LongTimeTask.objects.filter(id=task.id).update(state=state, attempts=1 if state == TaskState.RUNNING else 0)
    return LongTimeTask.objects.get(id=task.id)


@pytest.mark.parametrize(
    ("who", "cancel", "retry"),
    [("anonymous", 401, 401), ("owner", 200, 201), ("other", 404, 404), ("staff", 200, 201), ("viewer", 403, 403)],
)
def test_who_may_cancel_and_retry(who, cancel, retry, user, other_user, staff_user):
    client = client_as(who, user=user, other_user=other_user, staff_user=staff_user)
    waiting, failed = make(TaskState.PENDING, user), make(TaskState.FAILED, user)
    assert post(client, f"/api/tasks/{waiting.id}/cancel/").status_code == cancel
    assert post(client, f"/api/tasks/{failed.id}/retry/").status_code == retry
    assert LongTimeTask.objects.get(id=waiting.id).state == (
        TaskState.CANCELLED if cancel == 200 else TaskState.PENDING
    )


def test_cancel_answers_200_when_cancelled_202_when_running_409_when_finished(api, user):
    response = post(api, f"/api/tasks/{make(TaskState.PENDING, user).id}/cancel/")
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["state"], body["cancel_requested"], body["message"]) == (
        True,
        "CANCELLED",
        False,
        "Task cancelled",
    )
    running = make(TaskState.RUNNING, user)
    response = post(api, f"/api/tasks/{running.id}/cancel/")
    assert response.status_code == 202
    assert (response.json()["state"], response.json()["cancel_requested"]) == ("RUNNING", True)
    assert api.get(f"/api/tasks/{running.id}/").json()["task"]["cancel_requested_at"] is not None
    finished = make(TaskState.FINISHED, user)
    response = post(api, f"/api/tasks/{finished.id}/cancel/")
    assert_error(
        response,
        409,
        "not_cancellable",
        f"Task {finished.id} is already FINISHED; only waiting or running tasks can be cancelled.",
    )
    assert_error(post(api, "/api/tasks/999999/cancel/"), 404, "not_found", "Task not found")
    assert api.get(f"/api/tasks/{finished.id}/cancel/").status_code == 405


def test_retry_and_rerun_answer_the_new_linked_task(api, user):
    failed = make(TaskState.FAILED, user)
    response = post(api, f"/api/tasks/{failed.id}/retry/")
    assert response.status_code == 201
    body = response.json()
    assert (body["success"], body["state"], body["retry_of"]) == (True, "PENDING", failed.id)
    new = api.get(f"/api/tasks/{body['task_id']}/").json()["task"]
    assert (new["retry_of"], new["params"], new["owner"]) == (failed.id, {"n": 1}, user.username)
    assert api.get(f"/api/tasks/{failed.id}/").json()["task"]["retries"] == [body["task_id"]]

    finished = make(TaskState.FINISHED, user)
    response = post(api, f"/api/tasks/{finished.id}/retry/")
    assert_error(response, 409, "not_retryable", f"Task {finished.id} finished; re-run it instead of retrying it.")
    response = post(api, f"/api/tasks/{finished.id}/rerun/")
    assert response.status_code == 201 and response.json()["retry_of"] == finished.id
    running = make(TaskState.RUNNING, user)
    assert_error(
        post(api, f"/api/tasks/{running.id}/rerun/"),
        409,
        "not_retryable",
        f"Task {running.id} is RUNNING; only finished, failed or cancelled tasks can run again.",
    )


def test_the_audit_trail_is_shown_to_staff_only(api, user, staff_user):
    task = make(TaskState.PENDING, user)
    services.cancel_task(task.id, user=user)
    assert "audit" not in api.get(f"/api/tasks/{task.id}/").json()["task"]
    audit = token_client(staff_user).get(f"/api/tasks/{task.id}/").json()["task"]["audit"]
    assert [(e["action"], e["by"], e["new_task"]) for e in audit] == [("cancelled", user.username, None)]
    assert audit[0]["at"]


def test_progress_is_in_the_detail_and_the_list(api, user):
    task = make(TaskState.RUNNING, user)
    assert api.get(f"/api/tasks/{task.id}/").json()["task"]["progress"] is None
    LongTimeTask.objects.report_progress(task.id, attempt=1, percent=40.0, message="rows", current=4, total=10)
    progress = api.get(f"/api/tasks/{task.id}/").json()["task"]["progress"]
    assert {k: progress[k] for k in ("percent", "message", "current", "total")} == {
        "percent": 40.0,
        "message": "rows",
        "current": 4,
        "total": 10,
    }
    assert progress["updated_at"]
    listed = api.get("/api/tasks/").json()["tasks"][0]
    assert (listed["id"], listed["progress"]["percent"], listed["cancel_requested"]) == (task.id, 40.0, False)


def test_submit_with_a_delay(api):
    response = submit(api, {"task_type": "test_echo", "countdown": 3600})
    assert response.status_code == 201
    detail = api.get(f"/api/tasks/{response.json()['task_id']}/").json()["task"]
    assert detail["state"] == "PENDING" and detail["run_after"]
    when = (timezone.now() + timedelta(days=2)).isoformat()
    response = submit(api, {"task_type": "test_echo", "run_after": when})
    assert response.status_code == 201
    task = LongTimeTask.objects.get(id=response.json()["task_id"])
    assert abs((task.run_after - timezone.now()).total_seconds() - 2 * 86400) < 60
    both = submit(api, {"task_type": "test_echo", "countdown": 5, "run_after": when})
    assert_error(both, 400, "invalid_params", "Give run_after or countdown, not both.")
    for bad in ({"countdown": -1}, {"countdown": "soon"}, {"run_after": "tomorrow"}, {"countdown": 10**9}):
        response = submit(api, {"task_type": "test_echo", **bad})
        assert response.status_code == 400, bad
    too_far = (timezone.now() + timedelta(days=400)).isoformat()
    assert_error(
        submit(api, {"task_type": "test_echo", "run_after": too_far}),
        400,
        "invalid_params",
        "A task can be delayed by at most 366 days.",
    )


def test_idempotency_key_header(api, user):
    body = {"task_type": "test_echo", "params": {"n": 1}}
    first = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    again = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["task_id"] == again.json()["task_id"]
    assert (first["Idempotent-Replayed"], again["Idempotent-Replayed"]) == ("false", "true")
    assert LongTimeTask.objects.count() == 1
    other = {"task_type": "test_echo", "params": {"n": 2}}
    conflict = api.post("/api/tasks/", other, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_key_reused"
    bad = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="has spaces")
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]
    assert "Idempotent-Replayed" not in submit(api, body)  # no key, no header


def test_the_schema_documents_the_new_endpoints_and_fields(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/tasks/{task_id}/cancel/", "/api/tasks/{task_id}/retry/", "/api/tasks/{task_id}/rerun/"):
        assert "post" in schema["paths"][path], path
    cancel = schema["paths"]["/api/tasks/{task_id}/cancel/"]["post"]["responses"]
    assert {"200", "202", "403", "404", "409"} <= set(cancel)
    submit_op = schema["paths"]["/api/tasks/"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in submit_op["parameters"])
    components = schema["components"]["schemas"]
    assert {"run_after", "countdown"} <= set(components["Submit"]["properties"])
    detail = components["TaskDetailDoc"]["properties"]
    assert {"progress", "run_after", "cancel_requested_at", "retry_of", "retries", "audit"} <= set(detail)


def test_a_post_to_no_endpoint_is_a_json_404_even_with_a_session_and_no_csrf_token(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    for path in ("/api/tasks/null,null/cancel/", "/api/tasks/abc/retry/", "/api/nothing/"):
        assert_error(client.post(path), 404, "not_found")
    # The real endpoints still need the CSRF token from a session.
    task = make(TaskState.PENDING, user)
    assert_error(client.post(f"/api/tasks/{task.id}/cancel/"), 403, "permission_denied", "CSRF")
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.PENDING

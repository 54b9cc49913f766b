"""The JSON API: the seed's shapes, authentication, ownership, and a JSON 4xx for every client mistake.

Rejected requests must write nothing and publish nothing: ``django_capture_on_commit_callbacks`` sees every
publish a submit schedules, without running it.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from rest_framework.test import APIClient

from long_time_task.models import LongTimeTask, TaskState

from .conftest import token_client

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str | None = None, fragment: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    if code:
        assert body["code"] == code, body
    if fragment:
        assert fragment in body["error"], body
    return body


def submit(client: APIClient, payload, **kwargs):
    return client.post("/api/tasks/", payload, format="json", **kwargs)


# ------------------------------------------------------------------- submit


def test_submit_writes_one_row_and_publishes_once_after_commit(api, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = submit(api, {"task_type": "test_echo", "params": {"x": 1}})
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "success": True,
        "task_id": body["task_id"],
        "state": "PENDING",
        "message": "Task submitted successfully",
    }
    task = LongTimeTask.objects.get()
    assert (task.id, task.owner, task.task_params, task.state) == (body["task_id"], user, {"x": 1}, TaskState.PENDING)
    assert (task.queue, task.priority) == ("default", 5)
    assert len(callbacks) == 1


def test_submit_takes_queue_and_priority_from_the_registry(api):
    response = submit(api, {"task_type": "test_priority_high", "params": {}, "queue": "default", "priority": 1})
    assert_error(response, 400, "unknown_field", "Unknown field(s): priority, queue.")
    assert not LongTimeTask.objects.exists()
    submit(api, {"task_type": "test_priority_high", "params": {}})
    task = LongTimeTask.objects.get()
    assert (task.queue, task.priority) == ("priority", 10)


def test_params_default_to_an_empty_object(api):
    assert submit(api, {"task_type": "test_echo"}).status_code == 201
    assert LongTimeTask.objects.get().task_params == {}


BAD_SUBMITS = [
    pytest.param({"params": {}}, "invalid_request", "task_type: This field is required.", id="missing-type"),
    pytest.param({"task_type": None}, "invalid_request", "task_type", id="null-type"),
    pytest.param({"task_type": ["x"]}, "invalid_request", "task_type: Not a valid string.", id="list-type"),
    pytest.param({"task_type": "x" * 101}, "max_length", "task_type", id="long-type"),
    pytest.param({"task_type": "nope"}, "unknown_task_type", "Unknown task type: nope", id="unknown-type"),
    pytest.param(
        {"task_type": "test_echo", "params": [1]}, "invalid_params", "params must be a JSON object", id="params-list"
    ),
    pytest.param(
        {"task_type": "test_echo", "params": "x"}, "invalid_params", "params must be a JSON object", id="params-str"
    ),
    pytest.param(
        {"task_type": "data_analysis", "params": {}},
        "invalid_params",
        "Invalid params at params: 'dataset_id' is a required property",
        id="missing-required",
    ),
    pytest.param(
        {"task_type": "data_analysis", "params": {"dataset_id": "abc"}},
        "invalid_params",
        "Invalid params at params.dataset_id: 'abc' is not of type 'integer'",
        id="wrong-type",
    ),
    pytest.param(
        {"task_type": "data_analysis", "params": {"dataset_id": 1, "analysis_type": "deep"}},
        "invalid_params",
        "params.analysis_type",
        id="enum",
    ),
    pytest.param(
        {"task_type": "data_analysis", "params": {"dataset_id": 1, "rm": "-rf"}},
        "invalid_params",
        "'rm' was unexpected",
        id="additional-property",
    ),
    pytest.param(
        {"task_type": "file_processing", "params": {"file_path": "../../etc/passwd.csv"}},
        "invalid_params",
        "no readable file of that name in the files directory",
        id="path-traversal",
    ),
    pytest.param(
        {"task_type": "file_processing", "params": {"file_path": "/etc/passwd.csv"}},
        "invalid_params",
        "no readable file of that name in the files directory",
        id="absolute-path",
    ),
    pytest.param(
        {"task_type": "file_processing", "params": {"file_path": "../../etc/passwd"}},
        "invalid_params",
        "only .csv and .json files can be converted",
        id="path-traversal-other-suffix",
    ),
    pytest.param(
        {"task_type": "test_echo", "params": {"s": "a\u0000b"}},
        "invalid_params",
        "params.s: NUL characters are not allowed",
        id="nul-char",
    ),
    pytest.param(
        {"task_type": "test_echo", "params": {"a": json.loads("[" * 40 + "]" * 40)}},
        "invalid_params",
        "nested deeper than 32 levels",
        id="too-deep",
    ),
]


@pytest.mark.parametrize(("payload", "code", "fragment"), BAD_SUBMITS)
def test_bad_submits_get_a_json_400_and_write_nothing(api, payload, code, fragment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = submit(api, payload)
    assert_error(response, 400, code, fragment)
    assert not LongTimeTask.objects.exists() and callbacks == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{bad json", "application/json", 400, "parse_error"),
        (b'{"task_type": NaN}', "application/json", 400, "parse_error"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (b'"text"', "application/json", 400, "invalid_request"),
        (b"", "application/json", 400, "invalid_request"),
        (b"\xff\xfe", "application/json", 400, "parse_error"),
        (
            b'{"task_type": "test_echo", "params": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            "application/json",
            400,
            "parse_error",
        ),
        (b'{"task_type": "test_echo", "params": {"x": "\\ud800"}}', "application/json", 400, "invalid_params"),
        (b'{"task_type": "test_echo", "params": {"\\udfff": 1}}', "application/json", 400, "invalid_params"),
        (b"task_type=test_echo", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_get_a_json_4xx(api, body, content_type, status, code):
    response = api.generic("POST", "/api/tasks/", body, content_type=content_type)
    assert_error(response, status, code)
    assert not LongTimeTask.objects.exists()


# ------------------------------------------------------------------- detail


def test_detail_has_the_seed_shape_and_result_when_finished(api, user):
    task = LongTimeTask.objects.create(
        task_type="test_echo", owner=user, state=TaskState.FINISHED, attempts=1, result={"ok": True}
    )
    body = api.get(f"/api/tasks/{task.id}/").json()
    assert body["success"] is True
    data = body["task"]
    for key in ("id", "task_type", "state", "create_at", "start_at", "finish_at", "result", "attempts"):
        assert key in data
    assert (data["id"], data["state"], data["result"]) == (task.id, "FINISHED", {"ok": True})
    assert "error_message" not in data and "error_traceback" not in data and "worker" not in data


def test_owner_sees_the_error_but_only_staff_see_the_traceback(user, staff_user):
    task = LongTimeTask.objects.create(
        task_type="test_echo",
        owner=user,
        state=TaskState.FAILED,
        error_message="ValueError: boom",
        error_code="handler_error",
        error_traceback="Traceback (most recent call last): secret internals",
    )
    owner_view = token_client(user).get(f"/api/tasks/{task.id}/").json()["task"]
    assert (owner_view["error_message"], owner_view["error_code"]) == ("ValueError: boom", "handler_error")
    assert "error_traceback" not in owner_view and "result" not in owner_view
    staff_view = token_client(staff_user).get(f"/api/tasks/{task.id}/").json()["task"]
    assert "secret internals" in staff_view["error_traceback"]


def test_another_users_task_is_a_404_exactly_like_a_missing_one(api, other_user):
    theirs = LongTimeTask.objects.create(task_type="test_echo", owner=other_user)
    missing = assert_error(api.get(f"/api/tasks/{theirs.id + 1000}/"), 404, "not_found")
    hidden = assert_error(api.get(f"/api/tasks/{theirs.id}/"), 404, "not_found")
    assert hidden == missing


@pytest.mark.parametrize(
    "path",
    ["/api/tasks/abc/", "/api/tasks/-1/", "/api/tasks/0/", "/api/tasks/99999999999999999999999/", "/api/nothing/"],
)
def test_unknown_paths_and_ids_are_json_404s(api, path):
    assert_error(api.get(path), 404, "not_found")


# ------------------------------------------------------------------- list


def make_tasks(owner, n: int, **kwargs) -> list[LongTimeTask]:
    return [LongTimeTask.objects.create(task_type="test_echo", owner=owner, **kwargs) for _ in range(n)]


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/tasks/list/"])
def test_list_has_the_seed_shape_newest_first_and_only_own_tasks(api, user, other_user, path):
    mine = make_tasks(user, 3)
    make_tasks(other_user, 2)
    body = api.get(path).json()
    assert {k: body[k] for k in ("success", "total", "page", "page_size", "total_pages")} == {
        "success": True,
        "total": 3,
        "page": 1,
        "page_size": 20,
        "total_pages": 1,
    }
    assert [t["id"] for t in body["tasks"]] == [t.id for t in reversed(mine)]
    assert set(body["tasks"][0]) >= {"id", "task_type", "state", "create_at", "finish_at"}


def test_staff_list_everything(staff_user, user, other_user):
    make_tasks(user, 2)
    make_tasks(other_user, 2)
    assert token_client(staff_user).get("/api/tasks/").json()["total"] == 4


def test_list_filters_by_state_and_task_type(api, user):
    make_tasks(user, 2, state=TaskState.FAILED)
    make_tasks(user, 1)
    LongTimeTask.objects.create(task_type="test_fail", owner=user, state=TaskState.FAILED)
    assert api.get("/api/tasks/?state=FAILED").json()["total"] == 3
    assert api.get("/api/tasks/?state=FAILED&task_type=test_fail").json()["total"] == 1
    assert api.get("/api/tasks/?task_type=unknown").json()["total"] == 0


def test_pagination_pages_and_clamps_page_size(api, user):
    make_tasks(user, 5)
    body = api.get("/api/tasks/?page=2&page_size=2").json()
    assert (body["page"], body["page_size"], body["total_pages"], len(body["tasks"])) == (2, 2, 3, 2)
    assert api.get("/api/tasks/?page_size=1000").json()["page_size"] == 100


@pytest.mark.parametrize(
    ("query", "status", "code", "fragment"),
    [
        ("page=abc", 400, "invalid_request", "page: A valid integer is required."),
        ("page=0", 400, "min_value", "page"),
        ("page=-3", 400, "min_value", "page"),
        ("page=1e5", 400, "invalid_request", "page"),
        ("page=99999999999999999999", 400, "max_value", "page"),
        ("page=9", 404, "page_out_of_range", "Page 9 is out of range: the last page is 1."),
        ("page_size=0", 400, "min_value", "page_size"),
        ("page_size=-1", 400, "min_value", "page_size"),
        ("page_size=ten", 400, "invalid_request", "page_size"),
        ("state=DONE", 400, "invalid_choice", "state"),
    ],
)
def test_bad_list_queries_get_a_json_4xx(api, query, status, code, fragment):
    assert_error(api.get(f"/api/tasks/?{query}"), status, code, fragment)


# ------------------------------------------------------------------- methods and authentication


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/tasks/"),
        ("delete", "/api/tasks/"),
        ("post", "/api/tasks/list/"),
        ("post", "/api/tasks/1/"),
        ("patch", "/api/tasks/1/"),
    ],
)
def test_wrong_methods_get_a_json_405(api, method, path):
    assert_error(getattr(api, method)(path, {}, format="json"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/tasks/"), ("get", "/api/tasks/list/"), ("get", "/api/tasks/1/"), ("post", "/api/tasks/")],
)
def test_anonymous_requests_get_a_json_401_and_create_nothing(anon, method, path):
    response = getattr(anon, method)(path, {"task_type": "test_echo"}, format="json")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not LongTimeTask.objects.exists()


@pytest.mark.parametrize("keyword", ["Bearer", "Token", "bearer"])
def test_token_keywords(user, keyword):
    from long_time_task.models import ApiToken

    _, raw = ApiToken.issue(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {raw}")
    assert client.get("/api/tasks/").status_code == 200


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer", "Bearer a b", "Token ltt_wrong"])
def test_bad_tokens_get_a_json_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_error(client.get("/api/tasks/"), 401, "authentication_failed")


def test_revoked_and_expired_tokens_are_refused(user):
    from datetime import timedelta

    from django.utils import timezone

    from long_time_task.models import ApiToken

    revoked, raw_revoked = ApiToken.issue(user)
    ApiToken.objects.filter(id=revoked.id).update(revoked_at=timezone.now())
    _, raw_expired = ApiToken.issue(user, expires_at=timezone.now() - timedelta(seconds=1))
    for raw in (raw_revoked, raw_expired):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert_error(client.get("/api/tasks/"), 401, "authentication_failed")


def test_tokens_are_stored_hashed(user):
    from long_time_task.models import ApiToken

    token, raw = ApiToken.issue(user)
    prefix, key_hash = ApiToken.objects.filter(id=token.id).values_list("key_prefix", "key_hash").get()
    assert raw[12:] not in prefix + key_hash and raw not in (prefix, key_hash)
    assert prefix == raw[:12] and len(key_hash) == 64


def test_session_users_need_a_csrf_token_to_submit(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/tasks/").status_code == 200  # safe methods need no token
    assert_error(submit(client, {"task_type": "test_echo"}), 403, "permission_denied", "CSRF")
    assert not LongTimeTask.objects.exists()
    client.get("/admin/login/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    assert submit(client, {"task_type": "test_echo"}, HTTP_X_CSRFTOKEN=csrf).status_code == 201


# ------------------------------------------------------------------- big tables: cursor and capped count


def test_following_next_cursor_walks_the_whole_list_in_order(api, user):
    ids = [t.id for t in reversed(make_tasks(user, 7))]  # newest first
    seen, cursor = [], None
    for _ in range(10):
        body = api.get("/api/tasks/", {"page_size": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [t["id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_tasks_created_in_the_same_instant_are_neither_skipped_nor_repeated(api, user):
    tasks = make_tasks(user, 5)
    LongTimeTask.objects.filter(id__in=[t.id for t in tasks]).update(create_at=tasks[0].create_at)
    first = api.get("/api/tasks/?page_size=2").json()
    rest = api.get(f"/api/tasks/?page_size=10&cursor={first['next_cursor']}").json()
    assert [t["id"] for t in first["tasks"] + rest["tasks"]] == sorted((t.id for t in tasks), reverse=True)


def test_the_count_stops_at_its_cap_and_says_it_is_an_estimate(api, user, settings):
    settings.LONG_TIME_TASK_LIST_COUNT_CAP = 3
    make_tasks(user, 5)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE long_time_task")  # planner estimates need statistics
    body = api.get("/api/tasks/?page_size=2").json()
    assert body["total_is_estimate"] is True and body["total"] >= 4
    settings.LONG_TIME_TASK_LIST_COUNT_CAP = 10
    assert api.get("/api/tasks/").json()["total_is_estimate"] is False


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=MjAyNi0wMS0wMXwx", "invalid_cursor"),  # the old format (base64 of "time|id")
        ("cursor=MDAwMS0wMS0wMVQwMDowMDowMCsxNDowMHw1", "invalid_cursor"),
        ("cursor=AAAAAAAAAAAAAAAAAAAAA", "invalid_cursor"),  # 21 characters
        ("cursor=AAAAAAAAAAAAAAAAAAAAAA%0A", "invalid_cursor"),  # a trailing newline
        ("cursor=", "blank"),
    ],
)
def test_bad_cursors_are_a_400(api, query, code):
    assert_error(api.get(f"/api/tasks/?{query}"), 400, code)


def test_an_estimated_total_becomes_exact_on_the_last_page(api, user, settings, monkeypatch):
    from long_time_task import pagination

    monkeypatch.setattr(pagination, "planner_estimate", lambda tasks: 40_000)  # a planner far off the mark
    settings.LONG_TIME_TASK_LIST_COUNT_CAP = 3
    make_tasks(user, 2)
    body = api.get("/api/tasks/?page_size=20").json()
    assert (body["total"], body["total_is_estimate"], body["total_pages"]) == (2, False, 1)
    assert_error(api.get("/api/tasks/?page=2&page_size=20"), 404, "page_out_of_range")


def test_page_numbers_stop_at_the_offset_limit(api, user, settings):
    settings.LONG_TIME_TASK_MAX_LIST_OFFSET = 2
    make_tasks(user, 5)
    assert_error(api.get("/api/tasks/?page=2&page_size=3"), 400, "page_too_deep", "next_cursor")

"""The API's contract at its edges: no endpoint answers an HTML (or YAML) error page, no error leaks Python's
internals."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from long_time_task.models import LongTimeTask, TaskState

from .conftest import token_client
from .test_api import assert_error

pytestmark = pytest.mark.django_db

LEAKS = ("sys.", "int_max_str_digits", "Traceback", 'File "', "<html", "<!doctype")
HUGE = "1" * 5000


def no_leak(response: Any) -> None:
    text = response.content.decode(errors="replace")
    assert not [leak for leak in LEAKS if leak.lower() in text.lower()], text[:500]


def session_client(user: Any, *, csrf: bool, cookie: bool | None = None) -> Client:
    """A logged-in browser: with the CSRF cookie and header (``csrf``), or the cookie alone, or neither."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    if csrf or cookie:
        client.get("/admin/login/")  # sets the csrftoken cookie
    if csrf:
        client.defaults["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    return client


# ------------------------------------------------------------------ the schema and its docs page


@pytest.mark.parametrize("path", ["/api/docs/", "/api/schema/", "/api/schema/?format=json"])
def test_the_docs_and_the_schema_answer_an_anonymous_request_with_the_json_401(anon, path):
    response = anon.get(path, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")  # as a browser asks
    assert_error(response, 401, "not_authenticated")


def test_the_docs_and_the_schema_answer_errors_in_json_and_still_serve_logged_in_users(api):
    assert_error(api.post("/api/docs/"), 405, "method_not_allowed")
    assert_error(api.post("/api/schema/"), 405, "method_not_allowed")
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and docs["Content-Type"].startswith("text/html")
    schema = api.get("/api/schema/")
    assert schema.status_code == 200 and "openapi" in schema["Content-Type"]


# ------------------------------------------------------------------ integers of 5,000 digits, floats past 1e308


@pytest.mark.parametrize(
    "body",
    [
        '{"task_type": "test_echo", "params": {"n": ' + HUGE + "}}",
        '{"task_type": "test_echo", "params": {"n": -' + HUGE + "}}",
        '{"task_type": "test_echo", "countdown": ' + HUGE + "}",
        '{"task_type": ' + HUGE + "}",
        '{"task_type": "test_echo", "params": {"n": 1e400}}',
        '{"task_type": "test_echo", "params": {"n": -1e400}}',
    ],
    ids=["params", "negative", "countdown", "task_type", "float-overflow", "negative-float-overflow"],
)
def test_numbers_json_cannot_hold_are_a_clear_parse_error(api, body):
    response = api.generic("POST", "/api/tasks/", body, content_type="application/json")
    assert_error(response, 400, "parse_error", "JSON parse error")
    no_leak(response)
    assert not LongTimeTask.objects.exists()


def test_an_integer_of_4300_digits_still_parses(api):
    body = '{"task_type": "test_echo", "params": {"n": ' + "9" * 4300 + "}}"
    response = api.generic("POST", "/api/tasks/", body, content_type="application/json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "path",
    [
        f"/api/tasks/?page={HUGE}",
        f"/api/tasks/?page_size={HUGE}",
        f"/api/tasks/list/?page=-{HUGE}",
        f"/api/tasks/events/?ids={HUGE}",
        f"/api/tasks/events/?ids=1,{HUGE}",
    ],
)
def test_huge_integers_in_the_query_are_a_clear_400(api, path):
    response = api.get(path, HTTP_ACCEPT="text/event-stream" if "events" in path else "application/json")
    assert response.status_code == 400, response.content
    no_leak(response)


@pytest.mark.parametrize("path", [f"/api/tasks/{HUGE}/", f"/api/tasks/{HUGE}/cancel/", f"/api/tasks/{HUGE}/events/"])
def test_a_task_id_of_5000_digits_is_a_json_404(api, path):
    response = api.post(path) if path.endswith("cancel/") else api.get(path)
    assert_error(response, 404, "not_found")


# ------------------------------------------------------------------ bodies over Django's 2.5 MB


BIG = 3 * 1024 * 1024  # over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which Django checks before anyone parses


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request: Any, settings: Any) -> bool:
    settings.DEBUG = request.param
    return bool(request.param)


@pytest.mark.parametrize("action", ["submit", "cancel", "retry", "rerun"])
@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("who", ["token", "session", "session-cookie-only", "session-no-csrf"])
def test_a_body_over_django_limit_gets_a_json_answer_never_its_html_page(user, debug, who, content_type, action):
    """Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE with its own HTML 400 (the debug page with DEBUG
    on) when anyone reads it: DRF's parser, or the CSRF check of a session request (which reads request.POST,
    and so has DRF parse the body, unless the CSRF cookie is missing). The API answers its JSON 413 instead;
    a form body is a 415 before it is read; a token request to an endpoint without a body never reads it."""
    task = LongTimeTask.objects.create(task_type="test_echo", owner=user, state=TaskState.FAILED)
    if who == "token":
        client: Any = token_client(user)
    else:
        client = session_client(user, csrf=who == "session", cookie=who == "session-cookie-only")
    if content_type == "application/json":
        body = b'{"task_type": "test_echo", "params": {"x": "' + b"x" * BIG + b'"}}'
    else:
        body = b"task_type=test_echo&x=" + b"x" * BIG
    path = "/api/tasks/" if action == "submit" else f"/api/tasks/{task.id}/{action}/"
    response = client.generic("POST", path, body, content_type=content_type)
    assert response["Content-Type"].startswith("application/json") and response.status_code < 500
    no_leak(response)
    if who == "session-no-csrf":  # refused before the body is read
        assert_error(response, 403, "permission_denied", "CSRF")
    elif who != "token" or action == "submit":  # the body is read
        if content_type == "application/json":
            assert_error(response, 413, "request_too_large", "larger than")
        else:
            assert_error(response, 415, "unsupported_media_type")
        assert LongTimeTask.objects.count() == 1


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/tasks/list/", "/api/task-types/", "/api/docs/"])
def test_more_query_parameters_than_django_takes_is_a_json_400(api, debug, path):
    query = "&".join(f"f{i}=1" for i in range(1200))  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1,000
    response = api.get(f"{path}?{query}")
    assert_error(response, 400, "invalid_request", "too many fields")

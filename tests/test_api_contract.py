"""The API's contract at its edges: no endpoint answers an HTML (or YAML) error page, no error leaks Python's
internals, the schema says what the server accepts, and the README's table of errors is true."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from long_time_task.api.events import IDS_PATTERN, open_streams
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.pagination import CURSOR_PATTERN, encode_cursor
from long_time_task.services import IDEMPOTENCY_KEY

from .conftest import token_client
from .test_api import assert_error, submit
from .workers import ROOT

pytestmark = pytest.mark.django_db

# Django's test client presents itself as a single-threaded WSGI server, which serves no event streams (503):
# the event requests here are a threaded server's, as in tests/test_events.py.
THREADED: dict[str, Any] = {"wsgi.multithread": True}
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
    response = api.get(path, HTTP_ACCEPT="text/event-stream" if "events" in path else "application/json", **THREADED)
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


# ------------------------------------------------------------------ the list: cursors, page, empty values


def make_tasks(user: Any, n: int) -> list[LongTimeTask]:
    return [LongTimeTask.objects.create(task_type="test_echo", owner=user) for _ in range(n)]


def test_a_cursor_page_reports_page_null_and_ignores_page(api, user):
    make_tasks(user, 3)
    first = api.get("/api/tasks/?page_size=2").json()
    assert first["page"] == 1 and first["next_cursor"]
    second = api.get(f"/api/tasks/?page_size=2&cursor={first['next_cursor']}&page=7").json()
    assert second["page"] is None and len(second["tasks"]) == 1 and second["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["A" * 22, "_" * 22, "-" * 22, "f" * 22, "0" * 22, "zzzzzzzzzzzzzzzzzzzzzz"])
def test_every_cursor_the_schema_allows_is_a_page(api, user, cursor):
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    make_tasks(user, 1)
    response = api.get(f"/api/tasks/?cursor={cursor}")
    assert response.status_code == 200 and response.json()["page"] is None, response.content


def test_a_cursor_is_22_characters_and_keeps_the_position_to_the_microsecond(api, user):
    tasks = make_tasks(user, 3)
    cursor = encode_cursor(tasks[1].create_at, tasks[1].id)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert [t["id"] for t in api.get(f"/api/tasks/?cursor={cursor}").json()["tasks"]] == [tasks[0].id]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("task_type=", "blank"),
        ("state=", "invalid_choice"),
        ("page=", "invalid_request"),
        ("page_size=", "invalid_request"),
        ("cursor=", "blank"),
    ],
)
def test_an_empty_query_parameter_is_refused_as_the_schema_says(api, query, code):
    assert_error(api.get(f"/api/tasks/?{query}"), 400, code)


def test_a_type_name_of_spaces_is_a_filter_that_matches_nothing(api, user):
    make_tasks(user, 1)
    assert api.get("/api/tasks/?task_type=%20").json()["tasks"] == []


# ------------------------------------------------------------------ the schema says what the server does


@pytest.fixture
def schema(api: APIClient) -> dict[str, Any]:
    return dict(api.get("/api/schema/?format=json").json())


def parameter(schema: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any] | None:
    found = [p for p in schema["paths"][path][method].get("parameters", []) if p["name"] == name]
    return found[0] if found else None


def test_the_schema_gives_the_patterns_the_server_checks(schema):
    for path in ("/api/tasks/", "/api/tasks/list/"):
        cursor = parameter(schema, path, "get", "cursor")
        assert cursor and cursor["schema"]["pattern"] == CURSOR_PATTERN
        task_type = parameter(schema, path, "get", "task_type")
        assert task_type and task_type["schema"]["minLength"] == 1
    key = parameter(schema, "/api/tasks/", "post", "Idempotency-Key")
    assert key and key["schema"]["pattern"] == IDEMPOTENCY_KEY.pattern
    ids = parameter(schema, "/api/tasks/events/", "get", "ids")
    assert ids and ids["schema"]["pattern"] == IDS_PATTERN
    page = schema["components"]["schemas"]["TaskListResponse"]["properties"]["page"]
    assert page.get("nullable") is True


def test_the_schema_says_a_stream_needs_accept_event_stream(schema):
    for path in ("/api/tasks/events/", "/api/tasks/{task_id}/events/"):
        accept = parameter(schema, path, "get", "Accept")
        assert accept and accept["required"] and accept["schema"]["enum"] == ["text/event-stream"]
        assert parameter(schema, path, "get", "format") is None
        assert "406" in schema["paths"][path]["get"]["responses"]


def test_the_schema_documents_413_on_every_post(schema):
    for path, item in schema["paths"].items():
        if "post" in item:
            assert "413" in item["post"]["responses"], path


@pytest.mark.parametrize(
    ("ids", "ok"),
    [
        ("", True),
        ("1", True),
        ("1,2,3", True),
        (",".join(["7"] * 100), True),
        ("9" * 18, True),
        (",".join(["7"] * 101), False),
        ("9" * 19, False),
        ("0", False),
        ("01", False),
        ("1,", False),
        (" 1", False),
        ("1_0", False),
        ("\u0661", False),  # ARABIC-INDIC DIGIT ONE: int() takes it
        ("+1", False),
    ],
)
def test_ids_are_exactly_what_the_schema_pattern_allows(user, ids, ok, settings):
    settings.LONG_TIME_TASK_EVENTS_STREAM_SECONDS = 0.05
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 100
    assert bool(re.fullmatch(IDS_PATTERN, ids)) is ok
    client = token_client(user)
    response: Any = client.get("/api/tasks/events/", {"ids": ids}, HTTP_ACCEPT="text/event-stream", **THREADED)
    assert response.status_code == (200 if ok else 400)
    if ok:
        assert b"".join(response.streaming_content).startswith(b"retry:")
        response.close()


@pytest.mark.parametrize(
    ("key", "ok"), [("a", True), ("~" * 255, True), ("~" * 256, False), ("a b", False), ("é", False)]
)
def test_idempotency_keys_are_exactly_what_the_schema_pattern_allows(api, key, ok):
    assert bool(IDEMPOTENCY_KEY.fullmatch(key)) is ok
    response = submit(api, {"task_type": "test_echo"}, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == (201 if ok else 400), response.content


# ------------------------------------------------------------------ the README's table of errors is true


def readme_error_rows() -> set[tuple[int, tuple[str, ...]]]:
    text = (Path(ROOT) / "README.md").read_text()
    table = text.split("### Errors", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in table.splitlines():
        match = re.match(r"\| (\d{3}) \| ([^|]+) \|", line)
        if match:
            rows.add((int(match[1]), tuple(sorted(re.findall(r"`([a-z_]+)`", match[2])))))
    return rows


Request = Callable[[Any], Any]  # (a fixture bundle) -> response


def _failed_task(f: Any) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="test_echo", owner=f.user, state=TaskState.FAILED)


def _finished_task(f: Any) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="test_echo", owner=f.user, state=TaskState.FINISHED)


def _post(f: Any, body: Any, **extra: Any) -> Any:
    return submit(f.api, body, **extra)


def _raw(f: Any, body: bytes, content_type: str = "application/json") -> Any:
    return f.api.generic("POST", "/api/tasks/", body, content_type=content_type)


def _too_many_unfinished(f: Any) -> Any:
    f.settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 1
    LongTimeTask.objects.create(task_type="test_echo", owner=f.user)
    return _post(f, {"task_type": "test_echo"})


def _throttled(f: Any) -> Any:
    f.settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    _post(f, {"task_type": "test_echo"})
    return _post(f, {"task_type": "test_echo"})


def _idempotency_key_reused(f: Any) -> Any:
    _post(f, {"task_type": "test_echo", "params": {"n": 1}}, HTTP_IDEMPOTENCY_KEY="k")
    return _post(f, {"task_type": "test_echo", "params": {"n": 2}}, HTTP_IDEMPOTENCY_KEY="k")


def _page_too_deep(f: Any) -> Any:
    f.settings.LONG_TIME_TASK_MAX_LIST_OFFSET = 1
    make_tasks(f.user, 3)
    return f.api.get("/api/tasks/?page=3&page_size=1")


def _stream(f: Any, **settings: Any) -> Any:
    for name, value in settings.items():
        setattr(f.settings, name, value)
    return f.api.get("/api/tasks/events/", HTTP_ACCEPT="text/event-stream", **THREADED)


def _events_busy(f: Any) -> Any:
    f.settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 1
    held = open_streams.acquire(f.other_user.pk, per_user=10, in_all=1)  # what another user's open stream holds
    assert not isinstance(held, str)
    try:
        return _stream(f)
    finally:
        held.release()


def _not_owner(f: Any) -> Any:
    task = LongTimeTask.objects.create(task_type="test_echo", owner=f.other_user, state=TaskState.FAILED)
    viewer = f.user
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
    return token_client(type(viewer).objects.get(id=viewer.id)).post(f"/api/tasks/{task.id}/retry/")


def _schedule(f: Any, **fields: Any) -> Any:
    body = {"name": "n", "task_type": "test_echo", "cron": "0 3 * * *", **fields}
    body = {key: value for key, value in body.items() if value is not None}  # None: left out
    return f.api.post("/api/schedules/", body, format="json")


def _declared_in_code(f: Any) -> Any:
    from long_time_task.models import Schedule

    row = Schedule.objects.create(name="d", task_type="test_echo", cron="0 4 * * *", timezone="UTC", code_name="x")
    f.user.is_staff = True
    f.user.save()
    return token_client(f.user).delete(f"/api/schedules/{row.id}/")


EXAMPLES: dict[tuple[int, tuple[str, ...]], list[tuple[str, Request]]] = {
    (400, ("parse_error",)): [
        ("parse_error", lambda f: _raw(f, b"{bad json")),
        ("parse_error", lambda f: _raw(f, b'{"task_type": NaN}')),
        ("parse_error", lambda f: _raw(f, b'{"task_type": "test_echo", "params": {"n": 1e999}}')),
        ("parse_error", lambda f: _raw(f, b'{"task_type": "test_echo", "params": {"n": ' + HUGE.encode() + b"}}")),
        ("parse_error", lambda f: _raw(f, b"[" * 5000 + b"]" * 5000)),
    ],
    (400, ("invalid_request",)): [
        ("invalid_request", lambda f: _raw(f, b"[1]")),
        ("invalid_request", lambda f: _post(f, {"params": {}})),
        ("invalid_request", lambda f: _post(f, {"task_type": None})),
        ("invalid_request", lambda f: f.api.get("/api/tasks/?page=abc")),
        ("invalid_request", lambda f: f.api.get("/api/tasks/?page=")),
        (
            "invalid_request",
            lambda f: f.api.get("/api/tasks/events/?ids=1,x", HTTP_ACCEPT="text/event-stream", **THREADED),
        ),
        ("invalid_request", lambda f: f.api.get("/api/tasks/?" + "&".join(f"f{i}=1" for i in range(1001)))),
    ],
    (400, ("blank", "null_characters_not_allowed")): [
        ("blank", lambda f: _post(f, {"task_type": ""})),
        ("blank", lambda f: f.api.get("/api/tasks/?task_type=")),
        ("blank", lambda f: f.api.get("/api/tasks/?cursor=")),
        ("null_characters_not_allowed", lambda f: _post(f, {"task_type": "a\x00"})),
        ("null_characters_not_allowed", lambda f: f.api.get("/api/tasks/?task_type=a%00")),
    ],
    (400, ("unknown_task_type",)): [("unknown_task_type", lambda f: _post(f, {"task_type": "nope"}))],
    (400, ("invalid_params",)): [
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "params": [1]})),
        ("invalid_params", lambda f: _post(f, {"task_type": "data_analysis", "params": {}})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "countdown": 1, "run_after": "2030-01-01"})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "countdown": "90"})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "countdown": True})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "run_after": "tomorrow"})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "run_after": "0001-01-01"})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo", "run_after": "9999-01-01T00:00:00Z"})),
        ("invalid_params", lambda f: _post(f, {"task_type": "test_echo"}, HTTP_IDEMPOTENCY_KEY="a b")),
    ],
    (400, ("unknown_field",)): [
        ("unknown_field", lambda f: _post(f, {"task_type": "test_echo", "queue": "x"})),
        ("unknown_field", lambda f: _schedule(f, queue="x")),
    ],
    (400, ("invalid_schedule",)): [
        ("invalid_schedule", lambda f: _schedule(f, cron="61 * * * *")),
        ("invalid_schedule", lambda f: _schedule(f, timezone="Mars/Olympus")),
        ("invalid_schedule", lambda f: _schedule(f, cron="0 3 * * *", interval_seconds=3600)),
        ("invalid_schedule", lambda f: _schedule(f, cron=None)),
        ("invalid_schedule", lambda f: _schedule(f, run_at="2001-01-01T00:00:00Z", cron=None)),
    ],
    (400, ("invalid_choice", "max_length", "max_string_length", "max_value", "min_value")): [
        ("min_value", lambda f: f.api.get("/api/tasks/?page=0")),
        ("max_value", lambda f: f.api.get("/api/tasks/?page_size=2000000000")),
        ("max_length", lambda f: _post(f, {"task_type": "x" * 101})),
        ("max_length", lambda f: f.api.get("/api/tasks/?task_type=" + "x" * 101)),
        ("max_string_length", lambda f: f.api.get("/api/tasks/?page=" + "1" * 1001)),
        ("invalid_choice", lambda f: f.api.get("/api/tasks/?state=DONE")),
        ("invalid_choice", lambda f: f.api.get("/api/tasks/?state=")),
    ],
    (400, ("invalid_cursor", "page_too_deep")): [
        ("invalid_cursor", lambda f: f.api.get("/api/tasks/?cursor=not-a-cursor")),
        ("page_too_deep", _page_too_deep),
    ],
    (401, ("authentication_failed", "not_authenticated")): [
        ("not_authenticated", lambda f: APIClient().get("/api/tasks/")),
        ("authentication_failed", lambda f: APIClient(HTTP_AUTHORIZATION="Bearer nope").get("/api/tasks/")),
    ],
    (403, ("permission_denied",)): [
        ("permission_denied", lambda f: session_client(f.user, csrf=False).post("/api/tasks/", {}, "application/json")),
        ("permission_denied", lambda f: _post(f, {"task_type": "test_restricted"})),
        ("permission_denied", _not_owner),
    ],
    (404, ("not_found",)): [
        ("not_found", lambda f: f.api.get("/api/tasks/999999/")),
        ("not_found", lambda f: f.api.get("/api/nothing-here/")),
    ],
    (404, ("page_out_of_range",)): [("page_out_of_range", lambda f: f.api.get("/api/tasks/?page=2"))],
    (405, ("method_not_allowed",)): [("method_not_allowed", lambda f: f.api.put("/api/tasks/"))],
    (406, ("not_acceptable",)): [
        ("not_acceptable", lambda f: f.api.get("/api/tasks/", HTTP_ACCEPT="text/html")),
        ("not_acceptable", lambda f: f.api.get("/api/tasks/events/", **THREADED)),
    ],
    (409, ("idempotency_key_reused", "not_cancellable", "not_retryable")): [
        ("not_cancellable", lambda f: f.api.post(f"/api/tasks/{_finished_task(f).id}/cancel/")),
        ("not_retryable", lambda f: f.api.post(f"/api/tasks/{_finished_task(f).id}/retry/")),
        ("idempotency_key_reused", _idempotency_key_reused),
    ],
    (409, ("declared_in_code",)): [("declared_in_code", _declared_in_code)],
    (413, ("request_too_large",)): [
        ("request_too_large", lambda f: _raw(f, b'{"x": "' + b"x" * 70_000 + b'"}')),
        ("request_too_large", lambda f: _raw(f, b'{"x": "' + b"x" * BIG + b'"}')),
    ],
    (415, ("unsupported_media_type",)): [("unsupported_media_type", lambda f: _raw(f, b"x=1", "text/plain"))],
    (429, ("throttled",)): [("throttled", _throttled)],
    (429, ("too_many_unfinished",)): [("too_many_unfinished", _too_many_unfinished)],
    (429, ("too_many_streams",)): [("too_many_streams", lambda f: _stream(f, LONG_TIME_TASK_EVENTS_MAX_PER_USER=0))],
    (429, ("events_busy",)): [("events_busy", _events_busy)],
    (503, ("events_disabled",)): [
        ("events_disabled", lambda f: _stream(f, LONG_TIME_TASK_EVENTS_ENABLED=False)),
        ("events_disabled", lambda f: f.api.get("/api/tasks/events/", HTTP_ACCEPT="text/event-stream")),  # 1 thread
    ],
}


def test_every_row_of_the_readme_error_table_has_an_example_here():
    assert readme_error_rows() == set(EXAMPLES)


class Bundle:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@pytest.mark.parametrize(
    ("row", "code", "make"),
    [
        pytest.param(row, code, make, id=f"{row[0]}-{code}-{i}")
        for row, cases in EXAMPLES.items()
        for i, (code, make) in enumerate(cases)
    ],
)
def test_each_row_of_the_readme_error_table_is_what_the_server_answers(row, code, make, user, other_user, settings):
    f = Bundle(api=token_client(user), user=user, other_user=other_user, settings=settings)
    before = LongTimeTask.objects.count()
    response = make(f)
    assert response.status_code == row[0], response.content
    if response["Content-Type"].startswith("text/event-stream"):  # an EventSource gets the error as an event
        text = response.content.decode()
        assert text.startswith("event: error\n") and f'"code":"{code}"' in text, text
    else:
        assert_error(response, row[0], code)
    if row[0] != 409 and code not in ("too_many_unfinished", "throttled", "page_too_deep", "permission_denied"):
        assert LongTimeTask.objects.count() == before  # a refused request writes nothing

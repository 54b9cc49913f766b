"""Oversized and deeply nested bodies, against the live stack (gunicorn gthread in front of the API).

Every one gets a JSON 413 or 400 with its code: never a 500, never an HTML page, and nothing is written.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from long_time_task.models import LongTimeTask
from tests.security.conftest import Person
from tests.security.stack import Response

LIMIT = 65_536  # LONG_TIME_TASK_MAX_BODY_BYTES, the demo's default


def body_of(size: int) -> bytes:
    """A well-formed submit of exactly ``size`` bytes."""
    empty = json.dumps({"task_type": "test_echo", "params": {"blob": ""}}).encode()
    return json.dumps({"task_type": "test_echo", "params": {"blob": "x" * (size - len(empty))}}).encode()


def nested_params(depth: int) -> bytes:
    return b'{"task_type": "test_echo", "params": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
def author(make_person: Callable[..., Person], orm: None) -> Iterator[Person]:
    """A user who must end up with no task at all."""
    person = make_person("user")
    yield person
    assert not LongTimeTask.objects.filter(owner=person.user).exists()


def assert_json_error(response: Response, status: int, code: str) -> None:
    assert response.status == status, (response.status, response.text[:300])
    assert response.content_type.startswith("application/json"), response.content_type
    assert response.json()["code"] == code, response.json()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(body_of(LIMIT + 1), 413, "request_too_large", id="64 KiB + 1"),
        pytest.param(body_of(1_000_000), 413, "request_too_large", id="1 MB"),
        pytest.param(body_of(3_000_000), 413, "request_too_large", id="3 MB: over Django's own 2.5 MB"),
        pytest.param(body_of(LIMIT), 400, "invalid_params", id="64 KiB exactly: read, then the params cap"),
        pytest.param(nested_params(40), 400, "invalid_params", id="params 40 deep"),
        pytest.param(nested_params(10_000), 400, "parse_error", id="params 10,000 deep"),
        pytest.param(nested_arrays(10_000), 400, "parse_error", id="arrays 10,000 deep"),
        pytest.param(nested_arrays(40_000), 413, "request_too_large", id="arrays 40,000 deep: too large first"),
    ],
)
@pytest.mark.parametrize("door", ["token", "session"])
def test_oversized_and_deeply_nested_bodies_get_a_json_4xx(
    door: str, body: bytes, status: int, code: str, author: Person
) -> None:
    client = author.api() if door == "token" else author.web
    headers = {"Content-Type": "application/json"}
    if door == "session":
        headers |= {"X-CSRFToken": client.csrf_token(), "Origin": client.origin}
    assert_json_error(client.request("POST", "/api/tasks/", body=body, headers=headers), status, code)


def test_a_chunked_body_without_a_length_is_not_taken_either(author: Person) -> None:
    """No Content-Length to trust. (Django's WSGI request reads a body by its Content-Length, so behind gunicorn
    a chunked body is not read at all: the submit has no task_type. Either way: a JSON 4xx, nothing written.)"""
    body = body_of(1_000_000)
    head = (
        "POST /api/tasks/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {author.token}\r\nX-Forwarded-For: {author.address}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", author.stack.web_port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for i in range(0, len(body), 8192):
                chunk = body[i : i + 8192]
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed before the body ended: its answer is still there
            pass
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        response = Response(answer.status, answer.headers, answer.read())
    assert response.status in (400, 413), (response.status, response.text[:300])
    assert response.content_type.startswith("application/json")
    assert response.json()["code"] in ("invalid_request", "request_too_large")


def test_the_admin_retry_form_refuses_deeply_nested_params(people: dict[str, Person], make_task: Any) -> None:
    task = make_task(people["owner"].user, state="FAILED", task_params={"n": 1})
    params = "[" * 10_000 + "]" * 10_000
    response = people["staff"].web.post_form(f"/admin/long_time_task/longtimetask/{task.id}/retry/", {"params": params})
    assert response.status == 200 and "Enter valid JSON" in response.text


EXTREME_TIMES = [
    "0001-01-01T00:00:00",
    "0001-01-01",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:59:59+14:00",
    "2026-06-01T00:00:00+15:00",
    "2026-06-01T00:00:00+24:00",
]


def test_dates_at_the_ends_of_the_calendar_are_never_a_500(make_person: Callable[..., Person], make_task: Any) -> None:
    """The sweep of tests/test_datetime_extremes.py, over HTTP on the production-like stack: every answer is a 2xx,
    a redirect or a clear 4xx (and the autouse check finds no 5xx and no ERROR in the servers' logs)."""
    author = make_person("user")
    api, web = author.api(), author.web
    for when in EXTREME_TIMES:
        response = api.post_json("/api/tasks/", {"task_type": "test_echo", "run_after": when})
        # A time long past starts at once (201); one beyond range or a year ahead is refused.
        assert response.status == 201 or response.json()["code"] == "invalid_params", (when, response.text[:300])
    for countdown in (True, "90", 10**30):
        response = api.post_json("/api/tasks/", {"task_type": "test_echo", "countdown": countdown})
        assert response.status == 400 and response.json()["code"] == "invalid_params", (countdown, response.text)
    for day in ("0001-01-01", "9999-12-31", "10000-01-01"):
        for field in ("created_from", "created_to"):
            assert web.get(f"/dashboard/?{field}={day}").status in (200, 400), (field, day)
    staff = make_person("staff").web
    make_task(author.user)
    admin = "/admin/long_time_task/longtimetask/"
    for query in (
        "create_at__year=1",
        "create_at__year=9999&create_at__month=12&create_at__day=31",
        "create_at__gte=0001-01-01",
        "create_at__lt=9999-12-31",
    ):
        response = staff.get(f"{admin}?{query}")
        assert response.status in (200, 302), (query, response.status)

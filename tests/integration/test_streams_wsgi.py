"""Event streams on the README's small site: gunicorn's gthread worker, no ASGI process (issue 15).

Every open stream holds a server thread; one user within the per-user cap of streams once held all of them,
and another user's API requests queued behind the streams (28 s with 10 open, timeouts with 16). Now a WSGI
process serves at most ``LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS`` streams in all, well below its threads:
these tests start gunicorn (1 worker, 4 threads, DEBUG off, on the test database) with the defaults.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from long_time_task.models import ApiToken, LongTimeTask, TaskState
from tests.workers import WebServer, gunicorn, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4
PER_USER = 10  # LONG_TIME_TASK_EVENTS_MAX_PER_USER's default: what one user may ask for
WSGI_MAX_STREAMS = 1  # LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS's default: what the process serves in all
TIMEOUT = 5.0  # a request that waits this long is queued behind streams


def api_answers(port: int) -> bool:
    """Django answers (401: the API without a token), not only the socket."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/task-types/", headers={"X-Forwarded-Proto": "https"})
        with conn.getresponse() as response:
            return response.status == 401
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture
def server(worker_database: str, tmp_path: Path) -> Iterator[WebServer]:
    env = worker_env(
        worker_database,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_SECURE_PROXY_SSL_HEADER="true",  # behind the README's proxy: requests say X-Forwarded-Proto
        LONG_TIME_TASK_EVENTS_STREAM_SECONDS="120",  # the streams stay open for the whole test
    )
    for name in ("LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS", "LONG_TIME_TASK_EVENTS_MAX_PER_USER"):
        env.pop(name, None)  # the defaults, as shipped
    with WebServer(env, tmp_path / "gunicorn.log", gunicorn(THREADS), api_answers, timeout=60) as web:
        yield web


def user_with_task(django_user_model: Any, name: str) -> tuple[str, int]:
    """A user's API token, and one of the user's tasks, running (so that its stream stays open)."""
    user = django_user_model.objects.create_user(name, password=f"{name}-password")
    task = LongTimeTask.objects.create(task_type="test_progress", owner=user, state=TaskState.RUNNING)
    return ApiToken.issue(user)[1], task.id


def headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https", **extra}


def open_stream(port: int, token: str, task_id: int) -> http.client.HTTPConnection:
    """Send a stream request (the answer is read later: ``answer``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request("GET", f"/api/tasks/{task_id}/events/", headers=headers(token, Accept="text/event-stream"))
    return conn


def answer(conn: http.client.HTTPConnection, deadline: float) -> http.client.HTTPResponse | None:
    """The response's status and headers (its body is left unread), or None if none came by ``deadline``."""
    assert conn.sock is not None
    conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return conn.getresponse()
    except TimeoutError:
        return None


def detail_latency(port: int, token: str, task_id: int) -> float:
    """One ``GET /api/tasks/{id}/`` on a new connection, in seconds; fails the test if it queues."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/api/tasks/{task_id}/", headers=headers(token))
        response = conn.getresponse()
        body = response.read()
    except TimeoutError:
        pytest.fail(f"GET /api/tasks/{task_id}/ waited over {TIMEOUT} s: the server's threads are held by streams")
    finally:
        conn.close()
    assert response.status == 200, body[:300]
    return time.perf_counter() - started


def median_latency(port: int, token: str, task_id: int, n: int = 20) -> float:
    detail_latency(port, token, task_id)  # warm-up: the first request of a connection or thread costs more
    return statistics.median(detail_latency(port, token, task_id) for _ in range(n))


def sse_error(response: http.client.HTTPResponse) -> dict[str, Any]:
    """The JSON error envelope a refused stream sends to an event-stream client (one ``error`` event)."""
    body = response.read().decode()
    assert body.startswith("event: error\ndata: "), body
    return dict(json.loads(body.split("data: ", 1)[1]))


def test_a_user_holding_every_stream_they_may_does_not_delay_another_users_api(
    server: WebServer, django_user_model: Any
) -> None:
    assert WSGI_MAX_STREAMS < THREADS / 2
    a_token, a_task = user_with_task(django_user_model, "alice")
    b_token, b_task = user_with_task(django_user_model, "bob")
    baseline = median_latency(server.port, b_token, b_task)

    # Alice opens as many streams as the per-user cap allows her (dashboards in ten tabs) and keeps them.
    streams = [open_stream(server.port, a_token, a_task) for _ in range(PER_USER)]
    deadline = time.monotonic() + TIMEOUT
    answers = [answer(conn, deadline) for conn in streams]
    try:
        with_streams = median_latency(server.port, b_token, b_task)

        held = [r for r in answers if r is not None and r.status == 200]
        refused = [r for r in answers if r is not None and r.status != 200]
        assert len(held) == WSGI_MAX_STREAMS, [r and r.status for r in answers]
        assert len(refused) == PER_USER - WSGI_MAX_STREAMS
        for response in refused:
            assert response.status == 429 and response.getheader("Retry-After") == "3"
            error = sse_error(response)
            assert error["success"] is False and error["code"] == "events_busy", error
        assert held[0].read(13) == b"retry: 1000\n\n"  # a live stream, held while Bob's requests ran
        assert with_streams - baseline < 0.1, f"median {with_streams * 1000:.0f} ms against {baseline * 1000:.0f} ms"
    finally:
        for response in answers:
            if response is not None:
                response.close()
        for conn in streams:
            conn.close()


def test_a_stream_whose_client_left_is_given_back(server: WebServer, django_user_model: Any) -> None:
    token, task = user_with_task(django_user_model, "alice")
    first = open_stream(server.port, token, task)
    response = answer(first, time.monotonic() + TIMEOUT)
    assert response is not None and response.status == 200
    assert response.read(13) == b"retry: 1000\n\n"

    second = open_stream(server.port, token, task)
    refused = answer(second, time.monotonic() + TIMEOUT)
    assert refused is not None and refused.status == 429  # the process's one stream is taken
    refused.close()
    second.close()

    # The browser goes away without a word: the connection closes. The server notices at its next writes
    # (a keep-alive every second under WSGI) and gives the stream's place back.
    assert first.sock is not None
    first.sock.shutdown(socket.SHUT_RDWR)
    response.close()
    first.close()

    def a_new_stream_is_served() -> bool:
        conn = open_stream(server.port, token, task)
        got = answer(conn, time.monotonic() + TIMEOUT)
        try:
            return got is not None and got.status == 200
        finally:
            if got is not None:
                got.close()
            conn.close()

    wait_for(a_new_stream_is_served, timeout=20, interval=0.2, what="the gone client's stream to be given back")

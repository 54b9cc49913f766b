"""The caps on open event streams: per user everywhere, and in all under WSGI, where each open stream holds
a server thread (issue 15). Django's test client here; tests/integration/test_streams_wsgi.py proves the
same on gunicorn's gthread worker, with another user's API latency."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from long_time_task.api.events import hub, open_streams
from long_time_task.models import TaskState
from tests.test_events import THREADED, chunks, events, make
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # closing a response closes the connection


@pytest.fixture(autouse=True)
def _short_streams(settings: Any) -> Iterator[None]:
    settings.LONG_TIME_TASK_EVENTS_STREAM_SECONDS = 1.5
    settings.LONG_TIME_TASK_EVENTS_POLL_INTERVAL = 0.05
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 100  # each test sets the cap it is about
    yield
    wait_for(lambda: open_streams.total == 0, timeout=5, what="every stream to be given back")
    wait_for(lambda: hub._thread is None or not hub._thread.is_alive(), timeout=5, what="the events poller to stop")


def stream_client(user: Any, **environ: Any) -> Client:
    client = Client(headers={"accept": "text/event-stream"}, **{**THREADED, **environ})
    client.force_login(user)
    return client


def error_of(response: Any) -> dict[str, Any]:
    """The JSON error envelope of a refused stream (sent to an event-stream client as one ``error`` event)."""
    ((name, data),) = events([response.content])
    assert name == "error"
    return dict(data)


def test_a_wsgi_process_serves_at_most_its_cap_of_streams_whoever_asks(
    user: Any, other_user: Any, settings: Any
) -> None:
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 1
    mine, theirs = make(user), make(other_user)
    held = stream_client(user).get(f"/api/tasks/{mine.id}/events/")
    assert held.status_code == 200
    assert next(iter(chunks(held))) == b"retry: 1000\n\n"

    refused = stream_client(other_user).get(f"/api/tasks/{theirs.id}/events/")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "3"
    error = error_of(refused)
    assert error["success"] is False and error["code"] == "events_busy"

    held.close()  # what the server does when the stream ends or its client goes
    assert open_streams.total == 0
    again = stream_client(other_user).get(f"/api/tasks/{theirs.id}/events/")
    assert again.status_code == 200
    again.close()


def test_the_per_user_cap_answers_429_with_retry_after(user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_MAX_PER_USER = 1
    task = make(user)
    held = stream_client(user).get(f"/api/tasks/{task.id}/events/")
    refused = stream_client(user).get(f"/api/tasks/{task.id}/events/")
    assert refused.status_code == 429 and refused["Retry-After"] == "3"
    assert error_of(refused)["code"] == "too_many_streams"
    held.close()


def test_a_client_gone_mid_stream_gives_its_stream_back(user: Any) -> None:
    task = make(user)
    response = stream_client(user).get(f"/api/tasks/{task.id}/events/")
    stream = iter(chunks(response))
    next(stream), next(stream), next(stream)  # retry, the state, a keep-alive: it waits on the poller
    assert open_streams.of(user.pk) == 1 and hub.streams == 1
    response.close()  # the server closes the response once a write to a gone client fails
    assert open_streams.of(user.pk) == 0 and open_streams.total == 0
    assert hub.streams == 0


def test_a_response_dropped_unsent_gives_its_stream_back(user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_MAX_PER_USER = 1
    task = make(user)
    client = stream_client(user)
    response = client.get(f"/api/tasks/{task.id}/events/")
    assert response.status_code == 200
    del response  # never iterated, never closed (e.g. an ASGI client gone while the view ran)
    gc.collect()
    again = client.get(f"/api/tasks/{task.id}/events/")
    assert again.status_code == 200
    again.close()


def test_a_single_threaded_wsgi_server_serves_no_streams(user: Any) -> None:
    # gunicorn's sync worker (wsgi.multithread false): a stream would hold the whole process.
    task = make(user)
    single: dict[str, Any] = {"wsgi.multithread": False}
    client = Client(**single)
    client.force_login(user)
    response = client.get(f"/api/tasks/{task.id}/events/")
    assert response.status_code == 503
    assert response.json()["code"] == "events_disabled"
    assert open_streams.total == 0


def test_a_wsgi_cap_of_zero_serves_no_streams(user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 0
    task = make(user)
    response = stream_client(user).get(f"/api/tasks/{task.id}/events/")
    assert response.status_code == 503 and error_of(response)["code"] == "events_disabled"
    assert stream_client(user).get("/api/tasks/events/?ids=").status_code == 503


def test_asgi_streams_are_capped_per_user_only(user: Any, other_user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 0
    settings.LONG_TIME_TASK_EVENTS_MAX_PER_USER = 1
    tasks = {who: make(who, TaskState.FINISHED) for who in (user, other_user)}

    async def open_streams_of_both() -> list[tuple[int, list[str]]]:
        answers = []
        for who, task in tasks.items():
            client = AsyncClient()
            await client.aforce_login(who)
            response: Any = await client.get(f"/api/tasks/{task.id}/events/", headers={"accept": "text/event-stream"})
            body = b"".join([part async for part in response.streaming_content])
            answers.append((response.status_code, [name for name, _ in events([body])]))
        return answers

    assert async_to_sync(open_streams_of_both)() == [(200, ["retry", "task", "end"])] * 2
    assert open_streams.total == 0

    running = make(user)

    async def open_two_as_one_user() -> tuple[int, int]:
        client = AsyncClient()
        await client.aforce_login(user)
        url, accept = f"/api/tasks/{running.id}/events/", {"accept": "text/event-stream"}
        held: Any = await client.get(url, headers=accept)
        content = aiter(held.streaming_content)
        assert await anext(content) == b"retry: 1000\n\n"
        refused = await client.get(url, headers=accept)
        await content.aclose()  # the test client then closes the response, as Django's ASGI handler does
        return held.status_code, refused.status_code

    assert async_to_sync(open_two_as_one_user)() == (200, 429)
    assert open_streams.total == 0


def test_the_refusal_is_plain_json_for_a_json_client(user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 0
    task = make(user)
    client = Client(**THREADED)
    client.force_login(user)
    response = client.get(f"/api/tasks/{task.id}/events/", headers={"accept": "application/json"})
    assert response.status_code == 503
    assert json.loads(response.content)["code"] == "events_disabled"

"""The Server-Sent Events endpoints: who may listen, the stream's format, its bounded life, the shared poller."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from long_time_task.api.events import hub
from long_time_task.models import LongTimeTask, TaskState
from tests.workers import wait_for

# Django's test client presents itself as a WSGI server that runs one request at a time, where a stream
# would hold the whole process (refused: tests/test_streams_wsgi.py); these tests are a threaded server's.
THREADED: dict[str, Any] = {"wsgi.multithread": True}


@pytest.fixture(autouse=True)
def _short_streams(settings: Any) -> Iterator[None]:
    settings.LONG_TIME_TASK_EVENTS_STREAM_SECONDS = 1.5
    settings.LONG_TIME_TASK_EVENTS_POLL_INTERVAL = 0.05
    settings.LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = 100  # the cap in all has its own tests
    yield
    # The poller stops (and closes its connection) once the last stream is gone.
    wait_for(lambda: hub._thread is None or not hub._thread.is_alive(), timeout=5, what="the events poller to stop")


@pytest.fixture
def browser(user: Any) -> Client:
    """A logged-in client that asks for event streams, as EventSource does."""
    client = Client(headers={"accept": "text/event-stream"}, **THREADED)
    client.force_login(user)
    return client


@pytest.fixture
def plain(user: Any) -> Client:
    client = Client(**THREADED)
    client.force_login(user)
    return client


def chunks(response: Any) -> Any:
    """The body of a streaming response, as it is sent."""
    return response.streaming_content


def events(chunks: Iterator[bytes] | list[bytes]) -> list[tuple[str, Any]]:
    """Parse SSE text into (event, data) pairs; comments are kept as (":", text)."""
    out: list[tuple[str, Any]] = []
    for block in b"".join(chunks).decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            out.append((":", block[1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
        else:
            out.append(("retry", fields.get("retry")))
    return out


def make(owner: Any, state: str = TaskState.RUNNING, **fields: Any) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="test_progress", owner=owner, state=state, **fields)


@pytest.mark.django_db
def test_anonymous_clients_get_401(client: Client, user: Any) -> None:
    task = make(user)
    assert client.get(f"/api/tasks/{task.id}/events/").status_code == 401
    response = client.get("/api/tasks/events/", headers={"accept": "text/event-stream"})
    assert response.status_code == 401
    assert response.content.startswith(b"event: error\ndata: ")


@pytest.mark.django_db
def test_another_users_task_stream_is_404(browser: Client, other_user: Any) -> None:
    task = make(other_user)
    response = browser.get(f"/api/tasks/{task.id}/events/", headers={"accept": "text/event-stream"})
    assert response.status_code == 404
    assert browser.get("/api/tasks/999999/events/").status_code == 404


@pytest.mark.django_db
def test_token_clients_can_stream_like_the_api(api: Any, user: Any) -> None:
    task = make(user, TaskState.FINISHED)
    response = api.get(f"/api/tasks/{task.id}/events/", HTTP_ACCEPT="text/event-stream", **THREADED)
    assert response.status_code == 200
    assert [name for name, _ in events(chunks(response))] == ["retry", "task", "end"]


@pytest.mark.django_db
def test_a_finished_task_stream_sends_its_state_and_ends(browser: Client, user: Any) -> None:
    task = make(user, TaskState.FINISHED, start_at=timezone.now(), finish_at=timezone.now(), progress=100.0)
    response = browser.get(f"/api/tasks/{task.id}/events/", headers={"accept": "text/event-stream"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert {"no-cache", "no-store", "private"} <= {d.strip() for d in response["Cache-Control"].split(",")}
    text = b"".join(chunks(response)).decode()
    assert text.startswith("retry: 1000\n\nevent: task\ndata: {")
    (retry, _), (name, data), (end, reason) = events([text.encode()])
    assert name == "task" and end == "end" and reason == {"reason": "finished"}
    assert data["id"] == task.id and data["state"] == "FINISHED" and data["terminal"] is True
    assert data["progress"]["percent"] == 100.0 and data["duration"] is not None


@pytest.mark.django_db
def test_a_stream_closes_after_its_bounded_duration(browser: Client, user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_STREAM_SECONDS = 0.3
    task = make(user)
    response = browser.get(f"/api/tasks/{task.id}/events/")
    started = timezone.now()
    parsed = events(chunks(response))  # returns: the stream ended by itself
    assert (timezone.now() - started).total_seconds() < 3
    assert [name for name, _ in parsed] == ["retry", "task"]


@pytest.mark.django_db
def test_list_stream_ignores_ids_the_caller_may_not_see(browser: Client, user: Any, other_user: Any) -> None:
    mine, theirs = make(user), make(other_user)
    response = browser.get(f"/api/tasks/events/?ids={mine.id},{theirs.id}")
    assert response.status_code == 200
    sent = [data["id"] for name, data in events(chunks(response)) if name == "task"]
    assert sent == [mine.id]


@pytest.mark.django_db
@pytest.mark.parametrize("ids", ["abc", ",".join(str(i) for i in range(1, 150)), "0", "-3"])
def test_list_stream_rejects_bad_ids(plain: Client, ids: str) -> None:
    response = plain.get("/api/tasks/events/", {"ids": ids})
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


@pytest.mark.django_db(transaction=True)
def test_changes_are_streamed_as_they_happen(browser: Client, user: Any) -> None:
    task = make(user, start_at=timezone.now())
    stream = iter(chunks(browser.get(f"/api/tasks/{task.id}/events/")))
    assert next(stream) == b"retry: 1000\n\n"
    assert events([next(stream)])[0][1]["progress"] is None
    LongTimeTask.objects.filter(id=task.id).update(progress=40.0, progress_message="step 2 of 5")
    name, data = events([next(stream)])[0]
    assert name == "task" and data["progress"]["percent"] == 40.0 and data["progress"]["message"] == "step 2 of 5"
    LongTimeTask.objects.filter(id=task.id).update(state=TaskState.FINISHED, finish_at=timezone.now())
    rest = events(list(stream))
    assert [name for name, _ in rest] == ["task", "end"] and rest[0][1]["state"] == "FINISHED"


@pytest.mark.django_db(transaction=True)
def test_list_stream_announces_new_tasks_of_the_caller_only(browser: Client, user: Any, other_user: Any) -> None:
    stream = iter(chunks(browser.get("/api/tasks/events/?ids=")))
    assert next(stream) == b"retry: 1000\n\n"
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.extend(stream))
    reader.start()
    wait_for(lambda: hub.streams > 0, timeout=5, what="the stream to join the poller")
    theirs, mine = make(other_user), make(user)
    reader.join(10)
    created = [data for name, data in events(result) if name == "created"]
    assert created == [{"id": mine.id, "task_type": "test_progress"}]
    assert theirs.id not in [data["id"] for data in created]


@pytest.mark.django_db(transaction=True)
def test_many_streams_share_one_poller(browser: Client, user: Any) -> None:
    task = make(user)
    streams = [iter(chunks(browser.get(f"/api/tasks/{task.id}/events/"))) for _ in range(5)]
    for stream in streams:
        next(stream), next(stream)  # retry, then the state
    readers = [threading.Thread(target=lambda s=s: list(s)) for s in streams]
    for reader in readers:
        reader.start()
    wait_for(lambda: hub.streams == 5, timeout=5, what="five streams on the poller")
    threads = [t for t in threading.enumerate() if t.name == "long-time-task-events"]
    assert len(threads) == 1
    wait_for(lambda: hub.polls > 2, timeout=5, what="the poller to poll")
    for reader in readers:
        reader.join(10)
    assert hub.streams == 0 and not hub.watched


@pytest.mark.django_db
def test_the_api_schema_documents_the_streams(api: Any) -> None:
    schema = api.get("/api/schema/?format=json").json()
    assert "/api/tasks/{task_id}/events/" in schema["paths"]
    assert "/api/tasks/events/" in schema["paths"]
    content = schema["paths"]["/api/tasks/{task_id}/events/"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in content


@pytest.mark.django_db
def test_streams_can_be_turned_off_and_the_page_then_polls(plain: Client, user: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_EVENTS_ENABLED = False
    task = make(user)
    response = plain.get(f"/api/tasks/{task.id}/events/")
    assert response.status_code == 503 and response.json()["code"] == "events_disabled"
    assert plain.get("/api/tasks/events/").status_code == 503


@pytest.mark.django_db
def test_a_client_that_does_not_ask_for_a_stream_gets_406_at_once(plain: Client, user: Any) -> None:
    task = make(user)
    response = plain.get(f"/api/tasks/{task.id}/events/", headers={"accept": "application/json"})
    assert response.status_code == 406 and response.json()["code"] == "not_acceptable"
    assert plain.get("/api/tasks/events/").status_code == 406


def test_one_user_cannot_open_more_than_the_cap_of_streams(browser: Client, plain: Client, user: Any, settings: Any):
    settings.LONG_TIME_TASK_EVENTS_MAX_PER_USER = 2
    task = make(user)
    streams = [iter(chunks(browser.get(f"/api/tasks/{task.id}/events/"))) for _ in range(2)]
    refused = browser.get(f"/api/tasks/{task.id}/events/")
    assert refused.status_code == 429 and b"too_many_streams" in refused.content
    readers = [threading.Thread(target=lambda s=s: list(s)) for s in streams]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    assert browser.get(f"/api/tasks/{task.id}/events/").status_code == 200  # free again once they closed

"""The dashboard when the web server refuses its stream (issue 15): a WSGI process serves at most
``LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS`` streams at once; a refused page polls at once, and takes a
stream when one frees up. runserver here with the shipped default of 1 stream; Debian's chromium."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from long_time_task.models import LongTimeTask, TaskState
from tests.browser.conftest import login
from tests.workers import WebServer, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def one_stream_server(worker_database: str, tmp_path: Any) -> Iterator[str]:
    env = worker_env(worker_database, LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS="1")
    with WebServer(env, tmp_path / "web.log") as web:
        yield f"http://127.0.0.1:{web.port}"


@pytest.fixture
def open_page(chromium: Any, one_stream_server: str) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_page() -> Any:
        context = chromium.new_context(base_url=one_stream_server, locale="en-US", timezone_id="Europe/Paris")
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def running_task(owner: Any) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="test_progress", owner=owner, state=TaskState.RUNNING)


def test_a_refused_stream_polls_then_goes_live_when_a_stream_frees_up(open_page: Any, django_user_model: Any) -> None:
    alice = django_user_model.objects.create_user(username="alice", password="alice-password")
    bob = django_user_model.objects.create_user(username="bob", password="bob-password")
    hers, his = running_task(alice), running_task(bob)

    first = open_page()
    login(first, "alice", "alice-password")  # the task list: its stream takes the process's one
    first.goto(f"/dashboard/tasks/{hers.id}/")
    # The list's stream is given back once the server notices the page gone (a keep-alive write fails,
    # about 2 s); until then the detail page polls, and asks again after 3 s.
    expect(first.locator("[data-live-status]")).to_contain_text("Live", timeout=15_000)

    second = open_page()
    login(second, "bob", "bob-password")
    refused = []
    second.on("response", lambda r: refused.append(r) if "/events/" in r.url and r.status == 429 else None)
    second.goto(f"/dashboard/tasks/{his.id}/")
    status = second.locator("[data-live-status]")
    expect(status).to_contain_text("Updating every few seconds", timeout=5_000)  # refused: it polls at once
    assert refused and refused[0].headers.get("retry-after") == "3"

    percent = second.locator('[data-live] [data-field="percent"]')
    LongTimeTask.objects.filter(id=his.id).update(progress=40.0)
    expect(percent).to_have_text("40%", timeout=10_000)  # through the polling

    first.context.close()  # Alice leaves: her stream's place comes back within a couple of seconds
    expect(status).to_contain_text("Live", timeout=30_000)  # the page asked again (3, 6, 12 s…) and got it
    LongTimeTask.objects.filter(id=his.id).update(progress=70.0)
    expect(percent).to_have_text("70%", timeout=5_000)

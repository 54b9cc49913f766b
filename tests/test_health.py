"""``/healthz`` and ``/readyz`` in process (long_time_task.observability.health), through Django's test clients.

An operator's trial found both 404, and a probe using the pod's IP as its Host refused by ``ALLOWED_HOSTS`` (400).
Here: the liveness answer needs no database (pytest-django refuses every database access in a test without the
``django_db`` mark); probes are answered whatever their Host and over plain HTTP with the HTTPS redirect on,
while every other request still meets ``ALLOWED_HOSTS``; readiness names the dependency that did not answer,
within its timeout. tests/integration/test_health_http.py does the same over real HTTP (gunicorn).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from celery import current_app
from django.test import AsyncClient, Client

from long_time_task.checks import HEALTH_MIDDLEWARE, check_health_middleware_first
from long_time_task.observability.health import REUSE_SECONDS, Checker, outcome
from tests.conftest import require_services
from tests.workers import free_port, wait_for

POD_IP = "10.1.2.3"  # what a kubelet's probe sends as its Host: in no ALLOWED_HOSTS


@pytest.fixture
def production(settings: Any) -> None:
    """ALLOWED_HOSTS names the site only, and plain HTTP is redirected to HTTPS, as with DJANGO_DEBUG=false."""
    settings.ALLOWED_HOSTS = ["tasks.example.com"]
    settings.SECURE_SSL_REDIRECT = True


def body(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    return dict(json.loads(response.content))


def test_healthz_answers_with_the_database_out_of_reach(client: Client) -> None:
    # No django_db mark: any query, or even a connection, would fail the request.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert body(response) == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_a_probe_is_answered_whatever_its_host_and_over_plain_http(client: Client, production: None) -> None:
    assert client.get("/healthz", HTTP_HOST=POD_IP).status_code == 200
    assert client.get("/healthz", HTTP_HOST=f"{POD_IP}:8000").status_code == 200
    # Everything else still meets ALLOWED_HOSTS, then the HTTPS redirect.
    assert client.get("/api/task-types/", HTTP_HOST=POD_IP).status_code == 400
    redirect = client.get("/api/task-types/", HTTP_HOST="tasks.example.com")
    assert redirect.status_code == 301 and redirect["Location"] == "https://tasks.example.com/api/task-types/"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/healthz"),
        ("PUT", "/readyz"),
        ("OPTIONS", "/healthz"),
        ("DELETE", "/readyz"),
        ("GET", "/healthz/"),
        ("GET", "/readyz/"),
        ("GET", "/healthz/x"),
        ("GET", "/HEALTHZ"),
        ("GET", "/api/healthz"),
        ("GET", "/"),
    ],
)
def test_anything_but_get_or_head_on_the_two_paths_goes_on_to_allowed_hosts(
    client: Client, production: None, method: str, path: str
) -> None:
    assert client.generic(method, path, HTTP_HOST=POD_IP).status_code == 400


def test_head_answers_the_status_without_a_body(client: Client, production: None) -> None:
    response = client.head("/healthz", HTTP_HOST=POD_IP)
    assert response.status_code == 200 and response.content == b""
    assert response["Cache-Control"] == "no-store"


def test_an_async_stack_answers_probes_and_passes_the_rest_on(production: None) -> None:
    client = AsyncClient()
    healthz = async_to_sync(client.get)("/healthz", headers={"host": POD_IP})
    assert healthz.status_code == 200 and body(healthz) == {"status": "ok"}
    assert async_to_sync(client.get)("/api/task-types/", headers={"host": POD_IP}).status_code == 400


def test_the_system_check_wants_the_middleware_first(settings: Any) -> None:
    others = [entry for entry in settings.MIDDLEWARE if entry != HEALTH_MIDDLEWARE]
    assert check_health_middleware_first() == []  # the demo's: first
    settings.MIDDLEWARE = [*others, HEALTH_MIDDLEWARE]
    warnings = check_health_middleware_first()
    assert [w.id for w in warnings] == ["long_time_task.W005"] and others[0] in warnings[0].msg
    settings.MIDDLEWARE = others  # not installed: nothing to say
    assert check_health_middleware_first() == []


def test_concurrent_probes_share_one_check_run() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow_check() -> None:
        calls.append(1)
        release.wait(10)

    checker = Checker("slow", slow_check)
    runs = []
    callers = [threading.Thread(target=lambda: runs.append(checker.run())) for _ in range(20)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len({id(run) for run in runs}) == 1 and not runs[0].done()
    assert outcome(runs[0], 0.5) == {"status": "failed", "reason": "no answer within 0.5 s"}

    release.set()
    runs[0].result(timeout=5)
    assert checker.run() is runs[0]  # just ended: reused for REUSE_SECONDS
    assert wait_for(lambda: checker.run() is not runs[0], timeout=REUSE_SECONDS + 5, what="a new run")
    assert wait_for(lambda: len(calls) == 2, timeout=5, what="the second run")


def test_a_failed_check_is_named_by_its_exceptions_class_only() -> None:
    def refused() -> None:
        raise ConnectionRefusedError("connection to postgres://app:secret@db:5432 refused")

    run = Checker("database", refused).run()
    wait_for(run.done, timeout=5, what="the check")
    assert outcome(run, 2) == {"status": "failed", "reason": "ConnectionRefusedError"}


# ---------------------------------------------------------------- readiness on the real services


@pytest.mark.django_db
def test_readyz_is_ok_when_the_database_and_the_broker_answer(client: Client, production: None) -> None:
    require_services()
    response = client.get("/readyz", HTTP_HOST=POD_IP)
    assert response.status_code == 200, response.content
    answer = body(response)
    assert answer["status"] == "ok"
    assert {name: check["status"] for name, check in answer["checks"].items()} == {"database": "ok", "broker": "ok"}
    assert response["Cache-Control"] == "no-store"


def readyz(client: Client) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.get("/readyz", HTTP_HOST=POD_IP)
    return response, time.monotonic() - started


@pytest.mark.django_db
def test_readyz_names_the_broker_when_it_refuses_connections(
    client: Client, production: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_services()
    port = free_port()  # nothing listens there
    monkeypatch.setitem(current_app.conf, "broker_write_url", f"redis://127.0.0.1:{port}/0")
    response, took = readyz(client)
    assert response.status_code == 503, response.content
    answer = body(response)
    assert answer["status"] == "unavailable" and answer["failed"] == ["broker"]
    assert answer["checks"]["database"]["status"] == "ok"
    assert answer["checks"]["broker"] == {"status": "failed", "reason": "OperationalError"}
    assert str(port) not in response.content.decode() and "127.0.0.1" not in response.content.decode()
    assert took < 2 + 5


@pytest.mark.django_db
def test_readyz_gives_up_on_a_broker_that_never_answers(
    client: Client, production: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_services()
    settings.LONG_TIME_TASK_READY_TIMEOUT = 0.5
    # A server that accepts connections (the kernel completes them) and never says a word: the Redis client waits
    # for its PING's answer up to its socket timeout (10 s here).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setitem(current_app.conf, "broker_write_url", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        response, took = readyz(client)
        assert response.status_code == 503, response.content
        answer = body(response)
        assert answer["failed"] == ["broker"] and answer["checks"]["database"]["status"] == "ok"
        assert answer["checks"]["broker"] == {"status": "failed", "reason": "no answer within 0.5 s"}
        assert took < 0.5 + 3
        # The check still waiting is shared, not repeated: a second probe answers the same, in the same time.
        again, took = readyz(client)
        assert again.status_code == 503 and body(again)["checks"]["broker"] == answer["checks"]["broker"]
        assert took < 0.5 + 3
    # Closing the listening socket resets the connection the check waits on: its thread ends.


def test_the_probe_filter_drops_only_django_s_line_for_a_probe_answer(rf: Any) -> None:
    import logging

    from long_time_task.observability.health import ProbeRequestsFilter

    def record(name: str, path: str) -> logging.LogRecord:
        line = logging.LogRecord(name, logging.ERROR, __file__, 1, "Service Unavailable: %s", (path,), None)
        line.request = rf.get(path)
        return line

    keep = ProbeRequestsFilter().filter
    assert not keep(record("django.request", "/readyz"))
    assert not keep(record("django.request", "/healthz"))
    assert keep(record("django.request", "/api/tasks/"))  # any other URL's 5xx still logs
    assert keep(record("long_time_task.observability.health", "/readyz"))  # the reason, logged once per check
    assert keep(logging.LogRecord("django.request", logging.ERROR, __file__, 1, "no request", (), None))


def test_the_demo_logging_filters_probe_answers() -> None:
    from django.conf import settings

    logging: dict[str, Any] = settings.LOGGING
    assert logging["handlers"]["console"]["filters"] == ["probes"]

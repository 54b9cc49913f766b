"""``/healthz`` and ``/readyz`` over real HTTP, on the demo as production runs it: gunicorn (gthread), ``DJANGO_DEBUG``
off (so ``SECURE_SSL_REDIRECT`` is on), ``ALLOWED_HOSTS`` naming the site only, PostgreSQL and Redis.

A kubelet probes the pod's IP with that IP as the Host header, over plain HTTP. It must get its answer, while
any other request with that Host still gets 400 from ``ALLOWED_HOSTS``; and ``/readyz`` must name the
dependency that does not answer, within its timeout, without a URL or a host in its answer.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.workers import WebServer, free_port, gunicorn

# The mark makes worker_database the test database's name (without it, the name in the settings).
pytestmark = pytest.mark.django_db

POD_IP = "10.1.2.3"
SITE = "tasks.example.com"
READY_TIMEOUT = 1.0
# The test run's own configuration must not leak into the server's: it gets the demo's settings from its environment.
PRIVATE_PREFIXES = ("PYTEST", "DJANGO_", "DATABASE_", "CELERY_", "LONG_TIME_TASK_", "DEMO_", "LTT_")


def request(port: int, method: str, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def probe_answers(port: int) -> bool:
    """Ready once ``/healthz`` answers a probe, which is what it is for."""
    try:
        return request(port, "GET", "/healthz", POD_IP)[0] == 200
    except OSError:
        return False


def gunicorn_server(env: dict[str, str], log_path: Path) -> WebServer:
    """``gunicorn demo.wsgi`` (1 process, 2 threads) in its own process group."""
    return WebServer(env, log_path, gunicorn(threads=2), probe_answers, timeout=60)


def server_env(database: str, root: Path, **overrides: str) -> dict[str, str]:
    """The demo's production settings on the tests' PostgreSQL database and Redis."""
    database_url = urlsplit(settings.TEST_DATABASE_URL)._replace(path=f"/{database}").geturl()
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="demo.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS=SITE,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=settings.TEST_REDIS_URL,
        DEMO_VAR_DIR=str(root / "var"),
        DJANGO_STATIC_ROOT=str(root / "static"),
        LONG_TIME_TASK_READY_TIMEOUT=str(READY_TIMEOUT),
        PYTHONWARNINGS="ignore",
    )
    env.update(overrides)
    return env


@pytest.fixture
def start_server(worker_database: str, tmp_path: Path) -> Iterator[Any]:
    servers: list[WebServer] = []

    def start(**overrides: str) -> WebServer:
        server = gunicorn_server(server_env(worker_database, tmp_path, **overrides), tmp_path / "gunicorn.log")
        servers.append(server)
        return server.__enter__()

    yield start
    for server in servers:
        server.__exit__()


def test_a_probe_with_the_pods_ip_is_answered_while_allowed_hosts_still_guards_the_rest(start_server: Any) -> None:
    port = start_server().port

    status, headers, content = request(port, "GET", "/healthz", POD_IP)
    assert (status, json.loads(content)) == (200, {"status": "ok"})
    assert headers["Cache-Control"] == "no-store"
    assert request(port, "HEAD", "/healthz", POD_IP)[0] == 200

    status, _, content = request(port, "GET", "/readyz", POD_IP)
    assert status == 200, content
    checks = json.loads(content)["checks"]
    assert {name: check["status"] for name, check in checks.items()} == {"database": "ok", "broker": "ok"}

    # With the pod's IP as the Host, everything else is refused, whatever the method or path.
    assert request(port, "GET", "/api/task-types/", POD_IP)[0] == 400
    assert request(port, "POST", "/healthz", POD_IP)[0] == 400
    assert request(port, "GET", "/healthz/", POD_IP)[0] == 400
    # With the site's name, the HTTPS redirect is on: /healthz was answered before it.
    status, headers, _ = request(port, "GET", "/api/task-types/", SITE)
    assert (status, headers["Location"]) == (301, f"https://{SITE}/api/task-types/")


@pytest.mark.parametrize("dependency", ["database", "broker"])
def test_readyz_names_the_dependency_that_does_not_answer(start_server: Any, dependency: str) -> None:
    closed = free_port()  # nothing listens there: connections are refused
    override = {
        "database": {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed}/tasks"},
        "broker": {"CELERY_BROKER_URL": f"redis://127.0.0.1:{closed}/0"},
    }[dependency]
    port = start_server(**override).port

    started = time.monotonic()
    status, _, content = request(port, "GET", "/readyz", POD_IP)
    took = time.monotonic() - started
    answer = json.loads(content)
    assert status == 503, content
    assert answer["status"] == "unavailable" and answer["failed"] == [dependency]
    other = "broker" if dependency == "database" else "database"
    assert answer["checks"][other]["status"] == "ok"
    assert answer["checks"][dependency]["status"] == "failed" and answer["checks"][dependency]["reason"]
    text = content.decode()
    assert str(closed) not in text and "127.0.0.1" not in text and "://" not in text
    assert took < READY_TIMEOUT + 5
    # Liveness does not depend on it: the process is alive, only not ready.
    assert request(port, "GET", "/healthz", POD_IP)[0] == 200

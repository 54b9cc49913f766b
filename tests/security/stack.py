"""A production-like stack for the attack suite, and an HTTP client that speaks to it over real sockets.

The stack is what the README's "Deployment" runs: gunicorn with gthread workers serving ``demo.wsgi`` (the site,
the API, the admin) and gunicorn with uvicorn workers serving ``demo.asgi`` (the event streams), on the demo's own
settings with ``DJANGO_DEBUG=false``, collected static files (WhiteNoise's manifest), PostgreSQL (the
pytest-django test database, so rows the tests commit are what the servers see), Redis as the broker and as the
shared cache (throttle counters), and a real Celery worker for the tests whose tasks must run. Every server runs in
a process group of its own and is stopped by it. There is no TLS here, so HTTPS redirects and secure cookies are
off; everything else is as in production.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tests.workers import ROOT, WorkerProcess, free_port, wait_for

SERVER_ERROR = re.compile(r'" 5\d\d\b|\b(ERROR|CRITICAL)\b')
# The environment a test run carries that must not leak into the stack's processes.
PRIVATE_PREFIXES = ("PYTEST", "DJANGO_", "DATABASE_", "CELERY_", "LONG_TIME_TASK_", "DEMO_", "LTT_", "LOGIN_")


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def stack_env(*, database_url: str, broker_url: str, cache_url: str, root: Path) -> dict[str, str]:
    """The demo's production settings (DEBUG off) on the tests' services, with its directories under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="demo.settings",
        DEMO_EXTRA_APPS="tests.testapp",  # the test task types (echo, fail, ...), as a project adds its own
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        # No TLS on 127.0.0.1: no redirect to https, and cookies a plain-HTTP client sends back.
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_SESSION_COOKIE_SECURE="false",
        DJANGO_CSRF_COOKIE_SECURE="false",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        DJANGO_CACHE_URL=cache_url,
        DEMO_VAR_DIR=str(root / "var"),
        DJANGO_STATIC_ROOT=str(root / "static"),
        LONG_TIME_TASK_FILES_DIR=str(root / "files"),
        LONG_TIME_TASK_RESULTS_DIR=str(root / "results"),
        # As behind one proxy: X-Forwarded-For names the client, so each test client can have an address of its
        # own (the failed-login counters are per address).
        LONG_TIME_TASK_TRUSTED_PROXY_COUNT="1",
        PYTHONWARNINGS="ignore",
    )
    return env


class Server:
    """One gunicorn (or any command) in a process group of its own, logging to a file, ready once ``ready``
    answers true."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.args, self.env, self.log_path = name, args, env, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 60) -> Server:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            return ready()

        wait_for(up, timeout=timeout, interval=0.2, what=f"{self.name} to answer")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        try:  # anything of the group the master left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None


def gunicorn(app: str, port: int, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}", *options,
        "--access-logfile", "-", "--error-logfile", "-", "--graceful-timeout", "5",
    ]  # fmt: skip


@dataclass
class Stack:
    """The running stack: where its servers listen, its directories, and its logs."""

    root: Path
    env: dict[str, str]
    web_port: int = field(default_factory=free_port)
    stream_port: int = field(default_factory=free_port)
    servers: list[Server] = field(default_factory=list)
    worker: WorkerProcess | None = None

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def start(self) -> Stack:
        for directory in ("var", "static", "files", "results", "logs"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        # With DEBUG off the pages name WhiteNoise's hashed static files, so they must be collected first.
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT, env=self.env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        # The site and the API: gthread, as in the README (one process per core, 4 threads each).
        web = Server(
            "gunicorn gthread",
            gunicorn("demo.wsgi:application", self.web_port, "-k", "gthread", "--workers", "2", "--threads", "4"),
            self.env,
            self.root / "logs" / "web.log",
        )
        # The event streams: uvicorn workers, and no persistent database connections (README "Deployment").
        streams = Server(
            "gunicorn uvicorn",
            gunicorn("demo.asgi:application", self.stream_port, "-k", "uvicorn_worker.UvicornWorker", "--workers", "1"),
            {**self.env, "DATABASE_CONN_MAX_AGE": "0"},
            self.root / "logs" / "streams.log",
        )
        self.servers = [web, streams]
        web.start(lambda: answers(self.web_port, "/dashboard/login/", 200))
        streams.start(lambda: answers(self.stream_port, "/api/tasks/events/", 401))
        return self

    def start_worker(self) -> WorkerProcess:
        """A real Celery worker on the stack's settings (default and heavy queues), started on first use."""
        if self.worker is None:
            self.worker = WorkerProcess(
                queues="default,heavy",
                concurrency=1,
                name="security",
                log_path=self.root / "logs" / "worker.log",
                env=self.env,
            ).start()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        for server in self.servers:
            server.stop()

    def client(self, address: str = "203.0.113.1", *, streams: bool = False) -> Client:
        """A client of the site (or of the stream server), coming from ``address`` (as the proxy would say)."""
        return Client(self.stream_port if streams else self.web_port, address)

    def log_sizes(self) -> dict[str, int]:
        return {s.name: s.log_path.stat().st_size if s.log_path.exists() else 0 for s in self.servers}

    def server_errors(self, since: dict[str, int]) -> list[str]:
        """Log lines written since ``since`` that show a server error: a 5xx in an access log, or anything logged
        as an ERROR (Django's "Internal Server Error", an exception in the ASGI application, a worker crash)."""
        found = []
        for server in self.servers:
            with server.log_path.open("rb") as log:
                log.seek(since.get(server.name, 0))
                for line in log.read().decode(errors="replace").splitlines():
                    if SERVER_ERROR.search(line):
                        found.append(f"{server.name}: {line}")
        return found


def answers(port: int, path: str, status: int) -> bool:
    try:
        return Client(port).get(path).status == status
    except OSError:
        return False


# ---------------------------------------------------------------- the client


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return str(self.headers.get("Content-Type", ""))

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))


class Client:
    """HTTP/1.1 over a real socket, one connection per request, with a cookie jar (the session, the CSRF token)
    and default headers. Paths are sent exactly as given (no normalisation of ``..`` or of escapes)."""

    def __init__(self, port: int, address: str = "203.0.113.1") -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.headers: dict[str, str] = {"X-Forwarded-For": address}

    # ------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        with self._open(method, path, body=body, headers=headers, timeout=timeout) as response:
            return Response(response.status, response.headers, response.read())

    @contextmanager
    def _open(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Iterator[http.client.HTTPResponse]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = {**self.headers, **(headers or {})}
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            data = body.encode() if isinstance(body, str) else body
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            for header in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            yield response
        finally:
            connection.close()

    def get(self, path: str, **options: Any) -> Response:
        return self.request("GET", path, **options)

    def post_json(self, path: str, data: Any, **options: Any) -> Response:
        headers = {"Content-Type": "application/json", **options.pop("headers", {})}
        return self.request("POST", path, body=json.dumps(data), headers=headers, **options)

    def post_form(self, path: str, fields: dict[str, Any] | list[tuple[str, Any]], *, csrf: bool = True) -> Response:
        """A browser's form POST: with the CSRF token of the cookie (unless ``csrf`` is false) and its Origin."""
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        if csrf:
            items.append(("csrfmiddlewaretoken", self.csrf_token()))
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin}
        return self.request("POST", path, body=urlencode(items), headers=headers)

    @contextmanager
    def hold_stream(self, path: str, *, timeout: float = 15) -> Iterator[http.client.HTTPResponse]:
        """An event stream, open (its status and headers read, its body not) until the block ends."""
        with self._open("GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
            yield response

    def stream(self, path: str, until: Callable[[str], bool], *, timeout: float = 15) -> tuple[int, str]:
        """Reads an event stream until ``until(text so far)`` holds or the server ends it; the status and text."""
        headers = {"Accept": "text/event-stream"}
        with self._open("GET", path, headers=headers, timeout=timeout) as response:
            text = ""
            deadline = time.monotonic() + timeout
            while not until(text) and time.monotonic() < deadline:
                chunk = response.read1(65536)
                if not chunk:
                    break
                text += chunk.decode(errors="replace")
            return response.status, text

    # ------------------------------------------------------------ sessions

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def csrf_token(self) -> str:
        if "csrftoken" not in self.cookies:
            self.get("/dashboard/login/")
        return self.cookies["csrftoken"]

    def login(self, username: str, password: str) -> Client:
        """Logs in through the dashboard's login page (the session then also opens the admin to staff)."""
        response = self.post_form("/dashboard/login/", {"username": username, "password": password})
        assert response.status == 302 and "sessionid" in self.cookies, (response.status, response.text[:500])
        return self

    def with_token(self, token: str) -> Client:
        self.headers["Authorization"] = f"Bearer {token}"
        return self

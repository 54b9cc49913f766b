"""Real Celery worker processes for the integration tests, and bounded polling helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class WorkerProcess:
    """``celery -A demo worker`` in its own process group, with its log in ``log_path``."""

    def __init__(
        self,
        *,
        queues: str,
        concurrency: int,
        name: str,
        log_path: Path,
        env: dict[str, str],
        extra_args: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.queues, self.concurrency, self.name = queues, concurrency, name
        self.log_path, self.env, self.extra_args = log_path, env, extra_args or []
        self.prefix = prefix or []  # what runs the command, e.g. ``ip netns exec NAME`` (tests/hosts)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60) -> WorkerProcess:
        args = [
            *self.prefix, sys.executable, "-m", "celery", "-A", "demo", "worker",
            "-Q", self.queues, "-c", str(self.concurrency), "-P", "prefork",
            "-n", f"{self.name}@%h", "-l", "INFO",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
            *self.extra_args,
        ]  # fmt: skip
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._ready, timeout=ready_timeout, interval=0.1, what=f"worker {self.name} to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
        return b" ready." in self.log_path.read_bytes()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        try:  # children left behind by a main process killed with SIGKILL
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def wait_for_sessions_to_end(application_name: str, *, timeout: float = 30) -> None:
    """Wait until no connection to the test database names itself ``application_name`` (a stack a test started
    is gone only once its database sessions are: a flush or a drop would otherwise wait on them)."""
    from django.db import connection

    def sessions() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                [application_name],
            )
            return int(cursor.fetchone()[0])

    wait_for(lambda: sessions() == 0, timeout=timeout, what=f"the database sessions of {application_name} to end")


def worker_env(database_name: str, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        LTT_WORKER_DATABASE_NAME=database_name,
        PYTHONWARNINGS="ignore",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runserver(port: int) -> list[str]:
    return [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]


def gunicorn(threads: int, workers: int = 1) -> Callable[[int], list[str]]:
    """``gunicorn demo.wsgi`` with the gthread worker (``workers`` processes, ``threads`` threads each), as in
    production."""

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "demo.wsgi", "--bind", f"127.0.0.1:{port}",
            "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
            "--graceful-timeout", "5",
        ]  # fmt: skip

    return command


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class WebServer:
    """A web process of the demo in its own process group, for tests that need a real one: ``manage.py
    runserver`` unless ``command`` (given the port) says otherwise, ready once ``ready(port)`` says so (by
    default, once it accepts connections).

    ``with WebServer(env, log_path) as web: ... web.port ...``
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        command: Callable[[int], list[str]] = runserver,
        ready: Callable[[int], bool] = accepts_connections,
        timeout: float = 30,
    ) -> None:
        self.env, self.log_path, self.port = env, log_path, free_port()
        self.command, self.ready, self.timeout = command, ready, timeout
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WebServer:
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(self.port),
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for(self._ready, timeout=self.timeout, interval=0.1, what="the web server")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the web server exited:\n{self.log_path.read_text(errors='replace')}")
        return self.ready(self.port)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)
        self.log.close()

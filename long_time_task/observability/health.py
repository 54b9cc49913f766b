"""``/healthz`` and ``/readyz``: the web process's liveness and readiness probes, answered by a middleware that
sits first in ``MIDDLEWARE``.

Kubernetes sends its probes over plain HTTP to the pod's IP, with that IP as the Host header, and so do most load
balancers. Django would turn them away twice: ``ALLOWED_HOSTS`` (400, at the first ``request.get_host()``) and,
in production, ``SECURE_SSL_REDIRECT`` (301, in ``SecurityMiddleware``). Answered here, before either runs, a probe
needs neither the pod's IP in ``ALLOWED_HOSTS`` nor a Host header of its own. Only ``GET`` and ``HEAD`` on exactly
these two paths are answered; every other request (another method, ``/healthz/``, any other URL) goes on untouched,
so ``ALLOWED_HOSTS`` and the HTTPS redirect still guard all of them. Nothing here reads the Host header.

- ``/healthz`` (liveness): the process answers. It touches neither the database nor the broker: a database
  outage must take pods out of the load balancer (readiness), not restart every one of them.
- ``/readyz`` (readiness): ``SELECT 1`` on the default database alias, and a connection to Celery's broker (the
  one this process publishes to), side by side, each within ``READY_TIMEOUT`` seconds. 200 ``{"status": "ok",
  "checks": {...}}``, or 503 with ``failed`` naming the dependencies that did not answer and a short reason each
  (the exception's class, or "no answer within 2 s"; never a URL or a message that could carry one: those go to
  the log).

Each check runs in a daemon thread of its own, so the answer comes within the timeout whatever the driver does
(a broker that accepts the connection and never answers, a database host that drops packets). A check still
running is shared by the probes that arrive meanwhile, and a finished one is reused for ``REUSE_SECONDS``: a flood
of ``/readyz`` requests (the endpoint needs no login) costs each dependency at most one check a second per process,
and leaves at most one thread per dependency waiting on a dead one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, wait
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from celery import current_app
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from ..conf import conf

logger = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METHODS = frozenset({"GET", "HEAD"})
REUSE_SECONDS = 1.0


def database_answers() -> None:
    """``SELECT 1`` on a connection of its own (this thread's), closed afterwards."""
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def broker_answers() -> None:
    """A new connection to the broker this process publishes to, tried once (no retry), then released. On Redis,
    establishing it sends a ``PING``."""
    with current_app.connection_for_write(connect_timeout=conf.READY_TIMEOUT) as connection:
        connection.ensure_connection(max_retries=0)


class Checker:
    """One dependency's check, run in a daemon thread; at most one run at a time per process, shared by the callers
    that arrive while it runs and for ``REUSE_SECONDS`` after it ends."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.name = name
        self.check = check
        self.lock = threading.Lock()
        self.current: Future[float] | None = None
        self.ended = 0.0

    def run(self) -> Future[float]:
        """The run in progress or just ended, else a new one; its result is the seconds the check took."""
        with self.lock:
            future = self.current
            if future is not None and (not future.done() or time.monotonic() - self.ended < REUSE_SECONDS):
                return future
            future = Future()
            self.current = future
        threading.Thread(
            target=self.work, args=(future,), name=f"long-time-task-ready-{self.name}", daemon=True
        ).start()
        return future

    def work(self, future: Future[float]) -> None:
        started = time.monotonic()
        try:
            self.check()
        except Exception as exc:  # reported as this dependency's failure, whatever it is
            logger.warning("Readiness: the %s did not answer", self.name, exc_info=True)
            self.ended = time.monotonic()
            future.set_exception(exc)
        else:
            self.ended = time.monotonic()
            future.set_result(self.ended - started)


def outcome(future: Future[float], timeout: float) -> dict[str, Any]:
    if not future.done():
        return {"status": "failed", "reason": f"no answer within {timeout:g} s"}
    error = future.exception()
    if error is not None:
        return {"status": "failed", "reason": type(error).__name__}
    return {"status": "ok", "seconds": round(future.result(), 4)}


def probe_response(request: HttpRequest, body: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    if request.method == "HEAD":
        response.content = b""
    return response


class HealthCheckMiddleware:
    """Answers ``GET``/``HEAD`` ``/healthz`` and ``/readyz``; passes every other request on. Put it first in
    ``MIDDLEWARE`` (``long_time_task.W005`` warns otherwise)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self.checkers = {"database": Checker("database", database_answers), "broker": Checker("broker", broker_answers)}

    @staticmethod
    def probe(request: HttpRequest) -> str | None:
        if request.method not in METHODS or request.path_info not in (LIVENESS_PATH, READINESS_PATH):
            return None
        return request.path_info

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        path = self.probe(request)
        if path is None:
            response: HttpResponseBase = self.get_response(request)
            return response
        return self.liveness(request) if path == LIVENESS_PATH else self.readiness(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        path = self.probe(request)
        if path is None:
            response: HttpResponseBase = await self.get_response(request)
            return response
        if path == LIVENESS_PATH:
            return self.liveness(request)
        # The wait for the checks blocks a thread of the default executor, never the event loop.
        return await sync_to_async(self.readiness, thread_sensitive=False)(request)

    def liveness(self, request: HttpRequest) -> JsonResponse:
        return probe_response(request, {"status": "ok"})

    def readiness(self, request: HttpRequest) -> JsonResponse:
        timeout = conf.READY_TIMEOUT
        runs = {name: checker.run() for name, checker in self.checkers.items()}
        wait(runs.values(), timeout=timeout)
        checks = {name: outcome(future, timeout) for name, future in runs.items()}
        failed = [name for name, check in checks.items() if check["status"] != "ok"]
        if failed:
            return probe_response(request, {"status": "unavailable", "failed": failed, "checks": checks}, 503)
        return probe_response(request, {"status": "ok", "checks": checks})


class ProbeRequestsFilter(logging.Filter):
    """A logging filter that drops Django's own line for a probe's answer: ``django.request`` logs every 5xx at
    ERROR, so a database outage would add an ERROR per probe per process (a kubelet probes every few seconds)
    to the WARNING this module already logs once per check with the reason. Add it to the handlers of a project's
    ``LOGGING`` (the demo does); other requests' lines pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if record.name != "django.request" or not isinstance(request, HttpRequest):
            return True
        return request.path_info not in (LIVENESS_PATH, READINESS_PATH)

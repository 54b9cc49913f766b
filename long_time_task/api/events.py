"""Live task updates as Server-Sent Events: ``GET /api/tasks/{id}/events/`` and ``GET /api/tasks/events/``.

A stream authenticates like the rest of the API and carries only tasks the caller may see. Every stream
starts with the current state of its tasks, then sends an event each time one changes (state, progress,
attempts, cancel request), and closes after ``LONG_TIME_TASK_EVENTS_STREAM_SECONDS`` (30 s): the browser's
``EventSource`` reconnects by itself (``retry:``), and since each connection starts with the full state,
nothing is missed in between. A task stream also ends (``event: end``) once its task is finished.

Under WSGI (gunicorn's gthread, runserver) an open stream holds a server thread, which would otherwise
serve requests: a process serves at most ``LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS`` (1) streams at once,
whoever opens them, and none on a server that runs one request at a time (``wsgi.multithread`` false,
e.g. gunicorn's sync worker). A refused stream answers 429 with ``Retry-After`` (not a 5xx: Django logs every
5xx as an ERROR, and a refused stream is routine), and the dashboard polls meanwhile. Under ASGI (uvicorn)
a stream holds no thread, and only the per-user cap applies.

Streams do not touch the database themselves. One :class:`Hub` thread per process polls the rows of every
task that any open stream watches, with one query every ``LONG_TIME_TASK_EVENTS_POLL_INTERVAL`` (0.5 s), over
one connection, which it closes when the last stream goes. So a thousand idle streams cost one database
connection per web process, not a thousand. See docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from django.db import DatabaseError, connection
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, status
from rest_framework.exceptions import NotAcceptable, Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from ..conf import conf
from ..models import TERMINAL_STATES, LongTimeTask, TaskState
from ..models.querysets import sees_all
from .errors import ApiError

logger = logging.getLogger(__name__)

# The columns a stream reports; a change in any of them is an event.
FIELDS = (
    "id",
    "owner_id",
    "task_type",
    "state",
    "attempts",
    "progress",
    "progress_message",
    "progress_current",
    "progress_total",
    "start_at",
    "finish_at",
    "cancel_requested_at",
    "retry_at",
)
MAX_LIST_IDS = 100
# Up to MAX_LIST_IDS task ids, comma-separated, each 1 to 18 digits with no leading zero (so below 2**63), or nothing.
IDS_PATTERN = rf"^([1-9][0-9]{{0,17}}(,[1-9][0-9]{{0,17}}){{0,{MAX_LIST_IDS - 1}}})?$"
_IDS = re.compile(IDS_PATTERN)


Server = Literal["asgi", "wsgi-threads", "wsgi-single"]


def server_of(request: Request) -> Server:
    """How the server runs this request. A WSGI server puts PEP 3333's keys in ``META`` (the environ) and
    says there whether it runs requests in threads; an ASGI request has none of them."""
    if "wsgi.version" not in request.META:
        return "asgi"
    return "wsgi-threads" if request.META.get("wsgi.multithread") else "wsgi-single"


def check_enabled(request: Request) -> None:
    """503 ``events_disabled`` where this server serves no streams: the caller polls instead."""
    if not conf.EVENTS_ENABLED:
        message = _("Live updates are turned off on this server; poll instead.")
    elif server_of(request) == "wsgi-single":
        message = _("This server runs one request at a time, which a stream would hold; poll instead.")
    elif server_of(request) == "wsgi-threads" and conf.EVENTS_WSGI_MAX_STREAMS == 0:
        message = _("Live updates are not served by this WSGI server; poll instead.")
    else:
        return
    raise ApiError(message, code="events_disabled", status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


KEEPALIVE_SECONDS = 10.0  # a comment line: keeps proxies from closing the stream, and finds gone clients
# Under WSGI a gone client is only noticed when a write fails (the second after it left), and until then
# its stream holds a thread and a slot: write every second there.
WSGI_KEEPALIVE_SECONDS = 1.0
# A refused stream's Retry-After: time enough for the stream of a page just left (a dashboard's previous page)
# to be noticed gone and given back.
RETRY_AFTER_SECONDS = 3
RETRY_MS = 1000


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def task_payload(row: dict[str, Any]) -> dict[str, Any]:
    """One task as a stream reports it (a subset of the API's detail, plus the display name of the state)."""
    state = row["state"]
    duration = None
    if row["start_at"] is not None:
        end = row["finish_at"] or timezone.now()
        duration = round((end - row["start_at"]).total_seconds(), 1)
    has_progress = row["progress"] is not None or row["progress_message"]
    return {
        "id": row["id"],
        "task_type": row["task_type"],
        "state": state,
        "state_display": str(TaskState(state).label) if state in TaskState.values else state,
        "terminal": state in TERMINAL_STATES,
        "attempts": row["attempts"],
        "progress": {
            "percent": row["progress"],
            "message": row["progress_message"],
            "current": row["progress_current"],
            "total": row["progress_total"],
        }
        if has_progress
        else None,
        "start_at": _iso(row["start_at"]),
        "finish_at": _iso(row["finish_at"]),
        "retry_at": _iso(row["retry_at"]),
        "duration": duration,
        "cancel_requested": row["cancel_requested_at"] is not None,
    }


def _version(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in FIELDS)


# ---------------------------------------------------------------- the hub


@dataclass
class Hub:
    """One polling thread per process for all open streams: it reads the watched rows with one query per tick
    and keeps the latest of each in memory, where the streams read them."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    watched: Counter[int] = field(default_factory=Counter)
    # New rows: the highest id seen, and the rows above it found by later ticks (kept a few ticks).
    max_id: int | None = None
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    streams: int = 0
    generation: int = 0
    polls: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def join(self, ids: Iterable[int], rows: Iterable[dict[str, Any]], max_id: int | None) -> int:
        """A stream opens: watch ``ids`` (their current ``rows`` were read by the request). Returns the
        generation to wait from."""
        with self._cond:
            self.streams += 1
            self.watched.update(ids)
            for row in rows:
                self.rows.setdefault(row["id"], row)
            if max_id is not None and (self.max_id is None or max_id > self.max_id):
                self.max_id = max_id
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="long-time-task-events", daemon=True)
                self._thread.start()
            return self.generation

    def leave(self, ids: Iterable[int]) -> None:
        with self._cond:
            self.streams -= 1
            self.watched.subtract(ids)
            for task_id in [i for i, n in self.watched.items() if n <= 0]:
                del self.watched[task_id]
                self.rows.pop(task_id, None)
            self._cond.notify_all()

    def wait(self, generation: int, timeout: float) -> int:
        """Block until a tick after ``generation`` changed something (or ``timeout``); the new generation."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != generation, timeout=timeout)
            return self.generation

    def snapshot(self, ids: Iterable[int], since_id: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._cond:
            rows = [self.rows[i] for i in ids if i in self.rows]
            new = [r for r in self.new_rows if since_id is not None and r["id"] > since_id]
            return rows, new

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self.streams <= 0:
                        self._thread = None
                        return
                    ids = sorted(self.watched)
                    max_id = self.max_id
                try:
                    rows, new = self._poll(ids, max_id)
                except DatabaseError:
                    logger.warning("Task events: the database query failed; retrying", exc_info=True)
                    connection.close()
                    time.sleep(conf.EVENTS_POLL_INTERVAL)
                    continue
                with self._cond:
                    changed = False
                    for row in rows:
                        old = self.rows.get(row["id"])
                        if row["id"] in self.watched and (old is None or _version(old) != _version(row)):
                            self.rows[row["id"]] = row
                            changed = True
                    if new:
                        self.new_rows = (self.new_rows + new)[-200:]
                        self.max_id = max(r["id"] for r in new)
                        changed = True
                    self.polls += 1
                    if changed:
                        self.generation += 1
                        self._cond.notify_all()
                time.sleep(conf.EVENTS_POLL_INTERVAL)
        finally:
            connection.close()  # this thread's own connection: gone with the last stream

    def _poll(self, ids: list[int], max_id: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        # Only a broken connection is dropped: CONN_MAX_AGE is about request connections, and with 0 (the
        # ASGI process of the Deployment section) Django's check would reconnect on every poll.
        if connection.connection is not None and connection.errors_occurred and not connection.is_usable():
            connection.close()
        rows = list(LongTimeTask.objects.filter(id__in=ids).values(*FIELDS)) if ids else []
        new: list[dict[str, Any]] = []
        if max_id is not None:
            new = list(LongTimeTask.objects.filter(id__gt=max_id).order_by("id").values(*FIELDS)[:100])
        return rows, new


hub = Hub()


# ---------------------------------------------------------------- the stream


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@dataclass
class Stream:
    """What one stream watches, and which rows it may be told about."""

    rows: list[dict[str, Any]]
    user_id: Any
    sees_all: bool
    max_id: int | None = None  # list streams: announce rows created after this one
    single: bool = False  # a task stream: it ends once its task is finished

    @property
    def ids(self) -> list[int]:
        return [row["id"] for row in self.rows]

    def visible(self, row: dict[str, Any]) -> bool:
        return self.sees_all or (row["owner_id"] is not None and row["owner_id"] == self.user_id)

    def first(self) -> tuple[list[str], dict[int, tuple[Any, ...]]]:
        chunks = [f"retry: {RETRY_MS}\n\n"]
        chunks += [sse("task", task_payload(row)) for row in self.rows]
        if self.single and self.rows and self.rows[0]["state"] in TERMINAL_STATES:
            chunks.append(sse("end", {"reason": "finished"}))
        return chunks, {row["id"]: _version(row) for row in self.rows}

    def changes(
        self, seen: dict[int, tuple[Any, ...]], announced: set[int], since_id: int | None
    ) -> tuple[list[str], bool]:
        """The events since ``seen``; and whether the stream is over (its one task finished)."""
        rows, new = hub.snapshot(self.ids, since_id)
        chunks = []
        for row in rows:
            version = _version(row)
            if seen.get(row["id"]) != version:
                seen[row["id"]] = version
                chunks.append(sse("task", task_payload(row)))
        for row in new:
            if row["id"] not in announced and self.visible(row):
                announced.add(row["id"])
                chunks.append(sse("created", {"id": row["id"], "task_type": row["task_type"]}))
        done = self.single and bool(rows) and rows[0]["state"] in TERMINAL_STATES
        if done:
            chunks.append(sse("end", {"reason": "finished"}))
        return chunks, done

    def iterate(self) -> Generator[str, None, None]:
        """Under WSGI: waits in this server thread (see ``WSGI_KEEPALIVE_SECONDS``)."""
        chunks, seen = self.first()
        yield from chunks
        if self.single and chunks[-1].startswith("event: end"):
            return
        generation = hub.join(self.ids, self.rows, self.max_id)
        announced: set[int] = set()
        try:
            deadline = time.monotonic() + conf.EVENTS_STREAM_SECONDS
            keepalive = time.monotonic() + WSGI_KEEPALIVE_SECONDS
            while (now := time.monotonic()) < deadline:
                generation = hub.wait(generation, timeout=min(deadline, keepalive) - now)
                chunks, done = self.changes(seen, announced, self.max_id)
                yield from chunks
                if done:
                    return
                if not chunks and time.monotonic() >= keepalive:
                    yield ": keepalive\n\n"
                    keepalive = time.monotonic() + WSGI_KEEPALIVE_SECONDS
        finally:
            hub.leave(self.ids)

    async def aiterate(self) -> AsyncGenerator[str, None]:
        """The same under ASGI: waits in the event loop, holding no thread and no database connection."""
        chunks, seen = self.first()
        for chunk in chunks:
            yield chunk
        if self.single and chunks[-1].startswith("event: end"):
            return
        generation = hub.join(self.ids, self.rows, self.max_id)
        announced: set[int] = set()
        try:
            deadline = time.monotonic() + conf.EVENTS_STREAM_SECONDS
            keepalive = time.monotonic() + KEEPALIVE_SECONDS
            step = min(0.25, conf.EVENTS_POLL_INTERVAL)
            while time.monotonic() < deadline:
                await asyncio.sleep(step)
                if hub.generation != generation:
                    generation = hub.generation
                    chunks, done = self.changes(seen, announced, self.max_id)
                    for chunk in chunks:
                        yield chunk
                    if done:
                        return
                    if chunks:
                        keepalive = time.monotonic() + KEEPALIVE_SECONDS
                if time.monotonic() >= keepalive:
                    yield ": keepalive\n\n"
                    keepalive = time.monotonic() + KEEPALIVE_SECONDS
        finally:
            hub.leave(self.ids)


class Slot:
    """One open stream's place in :class:`OpenStreams`, given back once, on whichever comes first: the
    stream's end, the server closing the response (a finished stream, or a client gone), or the response
    being dropped without ever being sent."""

    def __init__(self, streams: OpenStreams, user_id: Any) -> None:
        self.streams, self.user_id, self.held = streams, user_id, True

    def release(self) -> None:
        self.streams.release(self)


Refusal = Literal["too_many_streams", "events_busy"]


class OpenStreams:
    """The streams open in this process: per user (so that no one takes a server's worth of them), and in
    all (under WSGI, where each holds a server thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Any] = Counter()
        self.total = 0

    def acquire(self, user_id: Any, *, per_user: int, in_all: int | None) -> Slot | Refusal:
        """A slot, or the code of the cap that refuses one (``in_all``: None for no cap)."""
        with self._lock:
            if in_all is not None and self.total >= in_all:
                return "events_busy"
            if self._counts[user_id] >= per_user:
                return "too_many_streams"
            self._counts[user_id] += 1
            self.total += 1
            return Slot(self, user_id)

    def release(self, slot: Slot) -> None:
        with self._lock:
            if not slot.held:
                return
            slot.held = False
            self.total -= 1
            self._counts[slot.user_id] -= 1
            if self._counts[slot.user_id] <= 0:
                del self._counts[slot.user_id]

    def of(self, user_id: Any) -> int:
        with self._lock:
            return self._counts[user_id]


open_streams = OpenStreams()


def counted_stream_response(request: Request, stream: Stream) -> StreamingHttpResponse:
    """The stream, unless it would pass a cap of open streams in this process: the caller's own
    (``LONG_TIME_TASK_EVENTS_MAX_PER_USER``, 429), or under WSGI everyone's together
    (``LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS``, 429 ``events_busy``), since each open stream holds a server thread that
    would otherwise serve requests. Both answer with ``Retry-After``; the dashboard polls meanwhile."""
    server = server_of(request)
    per_user = conf.EVENTS_MAX_PER_USER
    slot = open_streams.acquire(
        request.user.pk, per_user=per_user, in_all=conf.EVENTS_WSGI_MAX_STREAMS if server != "asgi" else None
    )
    if slot == "events_busy":
        raise Throttled(
            wait=RETRY_AFTER_SECONDS,
            detail=_("This server is serving as many live streams as it may; poll meanwhile."),
            code="events_busy",
        )
    if isinstance(slot, str):  # too_many_streams
        raise Throttled(
            wait=RETRY_AFTER_SECONDS,
            detail=_("Too many open event streams (%(limit)s); close some pages.") % {"limit": per_user},
            code="too_many_streams",
        )
    try:
        response = stream_response(stream, slot, asgi=server == "asgi")
    except BaseException:
        slot.release()
        raise
    # A response dropped unclosed (an ASGI client gone while the view ran): the slot goes with it.
    weakref.finalize(response, slot.release)
    return response


class Held:
    """A stream's chunks, holding its slot until they end or the server closes the response, which closes
    its content: a WSGI server when the stream ends or a write to a gone client fails (PEP 3333: the
    iterable's ``close()``), Django's ASGI handler after sending or once the client is gone."""

    def __init__(self, slot: Slot, chunks: Generator[str, None, None]) -> None:
        self.slot, self.chunks = slot, chunks

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self.chunks)
        except BaseException:  # the end (StopIteration), or a failure: either way the stream is over
            self.slot.release()
            raise

    def close(self) -> None:
        try:
            self.chunks.close()  # runs the stream's finally: it leaves the poller
        finally:
            self.slot.release()


class AsyncHeld:
    """The same for an ASGI stream (a client gone cancels the task that awaits the next chunk)."""

    def __init__(self, slot: Slot, chunks: AsyncGenerator[str, None]) -> None:
        self.slot, self.chunks = slot, chunks

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        try:
            return await anext(self.chunks)
        except BaseException:
            self.slot.release()
            raise

    def close(self) -> None:
        self.slot.release()


def stream_response(stream: Stream, slot: Slot, *, asgi: bool) -> StreamingHttpResponse:
    # The stream reads nothing more itself: give this thread's connection back now instead of holding it
    # (idle) for the stream's whole life. (Not inside a transaction, e.g. a test's.)
    if not connection.in_atomic_block:
        connection.close()
    content: Held | AsyncHeld = AsyncHeld(slot, stream.aiterate()) if asgi else Held(slot, stream.iterate())
    response = StreamingHttpResponse(content, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: pass the events on at once
    return response


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets a client ask for ``text/event-stream``; errors (401, 404) are then sent as one ``error`` event."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return sse("error", data).encode() if data is not None else b""


def require_event_stream(request: Request) -> None:
    """A stream only for clients that ask for one (``EventSource`` always does): anything else gets a 406
    at once, instead of a response that stays open."""
    if not isinstance(request.accepted_renderer, EventStreamRenderer):
        raise NotAcceptable(_("Ask for text/event-stream (the Accept header) to receive this stream."))


STREAM_DESCRIPTION = (
    "Server-Sent Events: send `Accept: text/event-stream` (as `EventSource` does; anything else answers 406). "
    "The stream starts with a `task` event per task (its current "
    "state), then sends a `task` event whenever one changes (state, progress, attempts, cancel request). It "
    "closes after about 30 s (`retry: 1000` makes `EventSource` reconnect, and every connection starts with the "
    "full state). Lines starting with `:` are keep-alives. The data of a `task` event: `id`, `task_type`, "
    "`state`, `state_display`, `terminal`, `attempts`, `progress` (`percent`, `message`, `current`, `total`, or "
    "null), `start_at`, `finish_at`, `retry_at`, `duration` (seconds), `cancel_requested`. A stream may be "
    "refused: 429 `too_many_streams` (the caller's open streams in this web process) or 429 `events_busy` (a "
    "WSGI process serves few at once, since each holds a thread), both with `Retry-After`; 503 `events_disabled` "
    "where the server serves none. Poll `GET /api/tasks/{id}/` meanwhile."
)


class TaskEventsView(APIView):
    """``GET``: one task's changes as Server-Sent Events; ends with ``event: end`` once it is finished."""

    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="tasks_events",
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.OBJECT, description="The event stream."),
            **{code: OpenApiResponse(description="The error envelope.") for code in (401, 404, 406, 429, 503)},
        },
        description=STREAM_DESCRIPTION
        + " A task stream ends with an `end` event once its task is finished. Another user's task answers 404.",
    )
    def get(self, request: Request, task_id: int) -> StreamingHttpResponse:
        check_enabled(request)
        task = services.get_task(task_id, user=request.user)
        if task is None:
            raise ApiError(_("Task not found"), code="not_found", status_code=status.HTTP_404_NOT_FOUND)
        require_event_stream(request)
        row = {name: getattr(task, name) for name in FIELDS}
        stream = Stream(rows=[row], user_id=request.user.pk, sees_all=sees_all(request.user), single=True)
        return counted_stream_response(request, stream)


class TaskListEventsView(APIView):
    """``GET``: changes of the listed tasks (``ids``), and the ids of new tasks the caller may see."""

    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="tasks_list_events",
        parameters=[
            OpenApiParameter(
                "ids",
                str,
                OpenApiParameter.QUERY,
                required=False,
                pattern=IDS_PATTERN,
                description=f"Comma-separated task ids to follow (at most {MAX_LIST_IDS}); ids the caller may not "
                "see are ignored.",
            )
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.OBJECT, description="The event stream."),
            **{code: OpenApiResponse(description="The error envelope.") for code in (400, 401, 404, 406, 429, 503)},
        },
        description=STREAM_DESCRIPTION
        + " Also sends a `created` event (`id`, `task_type`) for each task the caller may see that is submitted "
        "while the stream is open.",
    )
    def get(self, request: Request) -> StreamingHttpResponse | Response:
        check_enabled(request)
        raw = request.query_params.get("ids", "")
        if not _IDS.fullmatch(raw):  # not int() per part: it takes " 1", "1_0", Arabic digits, 5,000 digits
            raise ApiError(
                _("ids must be at most %(n)s comma-separated task ids.") % {"n": MAX_LIST_IDS}, code="invalid_request"
            )
        ids = sorted({int(part) for part in raw.split(",") if part})
        require_event_stream(request)
        rows = list(services.visible_tasks(request.user).filter(id__in=ids).order_by("-id").values(*FIELDS))
        last = LongTimeTask.objects.order_by("-id").values_list("id", flat=True).first()
        stream = Stream(rows=rows, user_id=request.user.pk, sees_all=sees_all(request.user), max_id=last or 0)
        return counted_stream_response(request, stream)

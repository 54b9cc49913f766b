"""OpenTelemetry tracing: a task's trace runs from the request that submitted it into the worker that runs it.

Spans: ``long_time_task.submit`` (around ``services.submit``), ``send <queue>`` (a PRODUCER span around the one
``apply_async``, whose context travels in the message headers as W3C trace context), and, in the worker,
``process <queue>`` (a CONSUMER span around the Celery task) with its steps ``long_time_task.claim``,
``long_time_task.run`` (the handler) and ``long_time_task.finish`` (recording the outcome). docs/operations.md,
"Tracing", lists their attributes and says how they are related.

Only the OpenTelemetry API (``opentelemetry-api``) is used: the project's SDK set-up, or ``opentelemetry-instrument``,
decides sampling and exporters. Nothing is imported before a hook first runs, and nothing at all when the API is not
installed or ``LONG_TIME_TASK_TRACING`` is ``"off"``: each hook is then one check of a module global.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from celery import current_app

from .conf import conf

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext

    from .models import LongTimeTask

MODES = ("parent", "link", "off")

# Attribute names: the messaging semantic conventions where they apply, this project's namespace for the rest.
TASK_ID = "long_time_task.task.id"
TASK_TYPE = "long_time_task.task.type"
ATTEMPT = "long_time_task.task.attempt"
OUTCOME = "long_time_task.outcome"
REPLAYED = "long_time_task.idempotent_replay"
MESSAGING_SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
CLIENT_ID = "messaging.client.id"
ERROR_TYPE = "error.type"

FAILED_OUTCOMES = frozenset({"failed", "retrying"})  # the attempt failed (retrying: the task will run again)
TRACEPARENT_MAX = 64  # the column's width; a W3C version-00 traceparent is 55 characters

F = TypeVar("F", bound=Callable[..., Any])


class _Api:
    """The OpenTelemetry API, imported on first use."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.propagators.textmap import Getter
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.context, self.propagate, self.trace = context, propagate, trace
        self.tracer = trace.get_tracer("long_time_task")
        self.w3c = TraceContextTextMapPropagator()  # the stored traceparent is W3C, whatever OTEL_PROPAGATORS says

        class RequestGetter(Getter[Any]):
            """Reads a header of the message from a Celery task request. With message protocol 2, a custom header
            is in ``request.headers`` and is also set as an attribute of the request (what
            opentelemetry-instrumentation-celery reads); both are tried, in that order."""

            def get(self, carrier: Any, key: str) -> list[str] | None:
                headers = getattr(carrier, "headers", None)
                value = headers.get(key) if isinstance(headers, dict) else None
                if value is None:
                    value = getattr(carrier, key, None)
                return [value] if isinstance(value, str) else None

            def keys(self, carrier: Any) -> list[str]:
                headers = getattr(carrier, "headers", None)
                return list(headers) if isinstance(headers, dict) else []

        self.request_getter = RequestGetter()


_api: _Api | None | bool = None  # None: not tried yet; False: not installed


def api() -> _Api | None:
    """The OpenTelemetry API, or None when tracing is off, OpenTelemetry is not installed, or no SDK (tracer
    provider) is set up."""
    global _api
    if _api is False:
        return None
    if conf.TRACING == "off":
        return None
    if _api is None:
        try:
            _api = _Api()
        except ImportError:
            _api = False
            return None
    if not isinstance(_api, _Api):
        return None
    # The API alone, with no SDK set up (a dependency pulled it in): its tracer would make non-recording spans,
    # 15-60 µs per hook for nothing. The check is repeated, so an SDK set up later (a worker's
    # ``worker_process_init``) is seen at once.
    if isinstance(_api.trace.get_tracer_provider(), _api.trace.ProxyTracerProvider):
        return None
    return _api


def messaging_system(broker_url: str) -> str:
    """``messaging.system``: the broker, as the semantic conventions name it where they do (RabbitMQ)."""
    scheme = broker_url.split("://", 1)[0].lower().split("+", 1)[0]
    if scheme in {"amqp", "amqps", "pyamqp", "librabbitmq"}:
        return "rabbitmq"
    if scheme in {"redis", "rediss", "sentinel"}:
        return "redis"
    return scheme or "celery"


_systems: dict[int, str] = {}


def broker_system(app: Any) -> str:
    """``messaging_system`` of ``app``'s broker, worked out once per app configuration (reading ``broker_url``
    from Celery's settings costs some 18 µs)."""
    settings = app.conf
    system = _systems.get(id(settings))
    if system is None:
        system = _systems[id(settings)] = messaging_system(str(settings.broker_url or ""))
    return system


# ---------------------------------------------------------------- the web side


def traced_submit(func: F) -> F:
    """Wrap ``services.submit`` in a ``long_time_task.submit`` span, a child of whatever span is current
    (the request's, under Django's instrumentation)."""

    @functools.wraps(func)
    def submit(task_type: str, *args: Any, **kwargs: Any) -> Any:
        otel = api()
        if otel is None:
            return func(task_type, *args, **kwargs)
        with otel.tracer.start_as_current_span("long_time_task.submit", attributes={TASK_TYPE: str(task_type)}) as span:
            submission = func(task_type, *args, **kwargs)
            span.set_attribute(TASK_ID, submission.task.id)
            if not submission.created:
                span.set_attribute(REPLAYED, True)
            return submission

    return submit  # type: ignore[return-value]


def traceparent() -> str:
    """The current span's context as a W3C ``traceparent``, stored on the row at submit so that a task
    published again later (sweeper, reaper) stays in its submit's trace; "" without one."""
    otel = api()
    if otel is None:
        return ""
    carrier: dict[str, str] = {}
    otel.w3c.inject(carrier)
    value = carrier.get("traceparent", "")
    return value if len(value) <= TRACEPARENT_MAX else ""


def _stored_context(otel: _Api, task: LongTimeTask) -> SpanContext | None:
    if "traceparent" in task.get_deferred_fields():  # never a query per publish
        return None
    value = task.traceparent
    if not value:
        return None
    stored = otel.trace.get_current_span(otel.w3c.extract({"traceparent": value})).get_span_context()
    return stored if stored.is_valid else None


class _NoHeaders:
    """``publishing`` with tracing off: no span, no headers, and no generator to set up."""

    def __enter__(self) -> dict[str, str]:
        return {}

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_HEADERS = _NoHeaders()


def publishing(task: LongTimeTask, *, attempt: int, queue: str) -> AbstractContextManager[dict[str, str]]:
    """The ``send <queue>`` span around one publish; yields the message headers that carry its context.

    Its parent is the submit's span stored on the row when there is one, so that a republish by the sweeper
    or the reaper continues the submit's trace (the span current there, from another trace, becomes a link);
    otherwise the current span (the executor's, for a retry). Tracing off: no span, no headers."""
    otel = api()
    if otel is None:
        return _NO_HEADERS
    return _publishing(otel, task, attempt, queue)


@contextmanager
def _publishing(otel: _Api, task: LongTimeTask, attempt: int, queue: str) -> Iterator[dict[str, str]]:
    trace = otel.trace
    parent: Context | None = None
    links = []
    stored = _stored_context(otel, task)
    if stored is not None:
        ambient = trace.get_current_span().get_span_context()
        if ambient.is_valid and ambient.trace_id != stored.trace_id:
            links.append(trace.Link(ambient))
        parent = trace.set_span_in_context(trace.NonRecordingSpan(stored))
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: broker_system(current_app),
        OPERATION_TYPE: "send",
        OPERATION_NAME: "send",
        DESTINATION: queue,
        MESSAGE_ID: task.celery_task_id,
        TASK_ID: task.id,
        TASK_TYPE: task.task_type,
        ATTEMPT: attempt,
    }
    with otel.tracer.start_as_current_span(
        f"send {queue}", context=parent, kind=trace.SpanKind.PRODUCER, attributes=attributes, links=links
    ):
        headers: dict[str, str] = {}
        otel.propagate.inject(headers)  # the current context: this span, and the request's baggage
        yield headers


# ---------------------------------------------------------------- the worker side


class _Attempt:
    """The spans of one attempt in a worker: ``process <queue>`` and its current step."""

    def __init__(self, otel: _Api, span: Span, task_id: int, attempt: int) -> None:
        self.otel, self.span = otel, span
        self.attributes: dict[str, Any] = {TASK_ID: task_id, ATTEMPT: attempt}
        self.step_name = ""
        self.step_span: Span | None = None
        self.step_token: Any = None
        self.error = ""

    def step(self, name: str, task_type: str | None, error: str | None) -> None:
        if task_type:
            self.attributes[TASK_TYPE] = task_type
            self.span.set_attribute(TASK_TYPE, task_type)
        if error:
            self.error = error
        if name == self.step_name:
            return
        self.end_step(sys.exc_info()[1] if self.step_name == "run" else None)  # what the handler raised
        trace = self.otel.trace
        span = self.otel.tracer.start_span(
            f"long_time_task.{name}", context=trace.set_span_in_context(self.span), attributes=self.attributes
        )
        self.step_name, self.step_span = name, span
        self.step_token = self.otel.context.attach(trace.set_span_in_context(span))

    def end_step(self, exc: BaseException | None, outcome: str | None = None) -> None:
        span = self.step_span
        if span is None:
            return
        if exc is not None and not _is_cancellation(exc):
            span.record_exception(exc)
            span.set_status(self.otel.trace.Status(self.otel.trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if outcome is not None:
            span.set_attribute(OUTCOME, outcome)
            if outcome in FAILED_OUTCOMES and self.error and self.step_name == "finish":
                span.set_attribute(ERROR_TYPE, self.error)
        self.otel.context.detach(self.step_token)
        span.end()
        self.step_span, self.step_token = None, None

    def finish(self, outcome: str) -> None:
        self.end_step(None, outcome)
        self.span.set_attribute(OUTCOME, outcome)
        if outcome in FAILED_OUTCOMES:
            self.span.set_attribute(ERROR_TYPE, self.error or "_OTHER")
            self.span.set_status(self.otel.trace.Status(self.otel.trace.StatusCode.ERROR, self.error or outcome))


def _is_cancellation(exc: BaseException) -> bool:
    from .context import TaskCancelled

    return isinstance(exc, TaskCancelled)


_current: ContextVar[_Attempt | None] = ContextVar("long_time_task_attempt", default=None)


def step(name: str, *, task_type: str | None = None, error: str | None = None) -> None:
    """Start step ``name`` (claim, run, finish) of the attempt this worker is running, ending the one before;
    the exception being handled, if any, is recorded on the step it ends (the handler's, on ``run``).
    ``error``: the error code, should the attempt end failed. Nothing outside a traced attempt."""
    attempt = _current.get()
    if attempt is not None:
        attempt.step(name, task_type, error)


def traced_attempt(func: Callable[[Any, int, int], str]) -> Callable[[Any, int, int], str]:
    """Wrap the executor's Celery task in a ``process <queue>`` span, continuing the trace whose context came
    in the message headers (see ``_process_parent``)."""

    @functools.wraps(func)
    def execute(self: Any, task_id: int, attempt: int = 1) -> str:
        otel = api()
        if otel is None:
            return func(self, task_id, attempt)
        request = self.request
        delivery = getattr(request, "delivery_info", None) or {}
        queue = str(delivery.get("routing_key") or "")
        attributes: dict[str, Any] = {
            MESSAGING_SYSTEM: broker_system(self.app),
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            DESTINATION: queue,
            MESSAGE_ID: str(request.id or ""),
            CLIENT_ID: str(request.hostname or ""),
            TASK_ID: int(task_id),
            ATTEMPT: int(attempt),
        }
        parent, links = _process_parent(otel, request)
        trace = otel.trace
        name = f"process {queue}" if queue else "process"
        span = otel.tracer.start_span(
            name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes, links=links
        )
        handle = _Attempt(otel, span, int(task_id), int(attempt))
        reset = _current.set(handle)
        token = otel.context.attach(trace.set_span_in_context(span, parent))  # with the message's baggage
        try:
            outcome = func(self, task_id, attempt)
        except BaseException as exc:
            recorded = getattr(exc, "attempt_outcome", None)
            if isinstance(recorded, str):
                # The executor recorded the outcome (failed, cancelled, retrying); the exception only tells Celery.
                handle.finish(recorded)
                raise
            handle.end_step(exc)  # escaped the executor: the database down at the claim, say
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        else:
            handle.finish(outcome)
            return outcome
        finally:
            otel.context.detach(token)
            span.end()
            _current.reset(reset)

    return execute


def _process_parent(otel: _Api, request: Any) -> tuple[Context | None, list[Any]]:
    """Parent and links of the ``process`` span, from the creation context in the message headers.

    ``"parent"`` (default): a child of the creation context, so that the submit's trace continues in the worker
    (the messaging conventions allow it for single-message processing), with a link to it as well. If a span is
    already current (``opentelemetry-instrumentation-celery``'s task span) in the same trace, the span nests under
    it instead; one from another trace is kept as a link. ``"link"``: a new trace (or the current span's), linked
    to the creation context."""
    trace = otel.trace
    created = otel.propagate.extract(request, getter=otel.request_getter)
    creation = trace.get_current_span(created).get_span_context()
    ambient = trace.get_current_span().get_span_context()
    links = [trace.Link(creation)] if creation.is_valid else []
    if not creation.is_valid or conf.TRACING == "link":
        return None, links  # the current context: a new trace, or the span already current
    if ambient.is_valid and ambient.trace_id == creation.trace_id:
        return None, links
    if ambient.is_valid:
        links.append(trace.Link(ambient))
    return created, links

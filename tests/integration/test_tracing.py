"""Tracing across a real worker: the submit's trace continues in a Celery worker process, over real Redis.

The test process runs OpenTelemetry's SDK with its in-memory exporter (the web side: the request, submit and send
spans); the worker is a real ``celery worker`` process (prefork) whose pool processes export their spans to a file
(tests/otel_worker.py). The only way the worker's spans can share the request's trace id is the W3C trace context
that travelled in the message headers through the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.worker import recovery
from tests.workers import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

ID, TYPE, ATTEMPT, OUTCOME = (
    "long_time_task.task.id",
    "long_time_task.task.type",
    "long_time_task.task.attempt",
    "long_time_task.outcome",
)
STEPS = ("long_time_task.claim", "long_time_task.run", "long_time_task.finish")


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The SDK in this process (the web side), with an in-memory exporter. The global provider can be set only
    once per process: a later module reuses it."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    provider.add_span_processor(processor)
    yield memory
    processor.shutdown()  # the exporter stops keeping spans


@pytest.fixture
def web_spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: Any) -> Path:
    return tmp_path_factory.mktemp("spans") / "worker-spans.jsonl"


@pytest.fixture(scope="module")
def traced_worker(worker_database: str, broker: Any, spans_file: Path, tmp_path_factory: Any) -> Iterator[Any]:
    """A real worker on the ``operate`` queue (``test_traced``'s), two pool processes, the SDK in each."""
    worker = WorkerProcess(
        queues="operate",
        concurrency=2,
        name="traced",
        log_path=tmp_path_factory.mktemp("traced-worker") / "worker.log",
        env=worker_env(worker_database, LTT_TEST_SPANS_FILE=spans_file),
    ).start()
    yield worker
    worker.stop()


def read_spans(spans_file: Path) -> list[dict[str, Any]]:
    """Every span the worker exported so far; a line still being appended (no newline yet) waits for the next read."""
    return [json.loads(line) for line in spans_file.read_text().split("\n")[:-1] if line]


def worker_spans(spans_file: Path, task_id: int) -> list[dict[str, Any]]:
    """The worker's spans of ``task_id``: those naming it, and the handler's own spans under them."""
    if not spans_file.exists():
        return []
    records = read_spans(spans_file)
    spans = [span for span in records if span["attributes"].get(ID) == task_id]
    ids = {span["span_id"] for span in spans}
    return spans + [span for span in records if span["name"] == "handler work" and span["parent_id"] in ids]


def attempts_done(spans_file: Path, task_id: int, count: int) -> list[dict[str, Any]] | None:
    """The worker's spans of ``task_id`` once ``count`` process spans (one per attempt) have ended."""
    spans = worker_spans(spans_file, task_id)
    processes = [span for span in spans if span["kind"] == "CONSUMER" and span["attributes"].get(ID) == task_id]
    return spans if len(processes) >= count else None


def hexid(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def one(spans: list[dict[str, Any]], name: str, **attributes: Any) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and all(s["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, [s["name"] for s in spans])
    return found[0]


def web(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    assert len(found) == 1, (name, [span.name for span in exporter.get_finished_spans()])
    return found[0]


def wait_until_state(task_id: int, states: set[str], timeout: float = 30) -> LongTimeTask:
    def reached() -> LongTimeTask | None:
        task = LongTimeTask.objects.get(id=task_id)
        return task if task.state in states else None

    return wait_for(reached, timeout=timeout, what=f"task {task_id} to reach {sorted(states)}")


def test_the_worker_continues_the_trace_of_the_request_that_submitted_the_task(traced_worker, web_spans, spans_file):
    with trace.get_tracer("tests").start_as_current_span("POST /api/tasks"):
        task = services.submit("test_traced", {}).task

    assert wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}).state == TaskState.FINISHED
    spans = wait_for(lambda: attempts_done(spans_file, task.id, 1), timeout=30, what="the worker's spans")

    # The web side: request -> submit -> send, one trace; the row keeps the submit's context.
    request, submit = web(web_spans, "POST /api/tasks"), web(web_spans, "long_time_task.submit")
    send = web(web_spans, "send operate")
    trace_id, request_id = hexid(request)
    assert submit.parent is not None and submit.parent.span_id == request.get_span_context().span_id
    assert send.parent is not None and send.parent.span_id == submit.get_span_context().span_id
    assert (submit.kind, send.kind) == (trace.SpanKind.INTERNAL, trace.SpanKind.PRODUCER)
    assert dict(submit.attributes or {}) == {TYPE: "test_traced", ID: task.id}
    assert dict(send.attributes or {}) == {
        "messaging.system": "redis",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "operate",
        "messaging.message.id": task.celery_task_id,
        ID: task.id,
        TYPE: "test_traced",
        ATTEMPT: 1,
    }
    flags = f"{submit.get_span_context().trace_flags:02x}"  # sampled (and, with a recent SDK, random)
    assert LongTimeTask.objects.get(id=task.id).traceparent == f"00-{trace_id}-{hexid(submit)[1]}-{flags}"

    # The worker side: every span in the request's trace; process is a child of send (and links to it).
    _, send_id = hexid(send)
    assert {span["trace_id"] for span in spans} == {trace_id}
    process = one(spans, "process operate")
    assert process["kind"] == "CONSUMER" and process["parent_id"] == send_id
    assert process["links"] == [[trace_id, send_id]]
    assert process["status"] == "UNSET"
    assert {k: v for k, v in process["attributes"].items() if k != "messaging.client.id"} == {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "operate",
        "messaging.message.id": task.celery_task_id,
        ID: task.id,
        TYPE: "test_traced",
        ATTEMPT: 1,
        OUTCOME: "finished",
    }
    assert process["attributes"]["messaging.client.id"].startswith("traced@")
    claim, run, finish = (one(spans, name) for name in STEPS)
    assert [step["parent_id"] for step in (claim, run, finish)] == [process["span_id"]] * 3
    assert claim["attributes"] == {ID: task.id, ATTEMPT: 1}  # the type is known once the claim has read the row
    assert run["attributes"] == {ID: task.id, ATTEMPT: 1, TYPE: "test_traced"}
    assert finish["attributes"] == {ID: task.id, ATTEMPT: 1, TYPE: "test_traced", OUTCOME: "finished"}
    assert [step["status"] for step in (claim, run, finish)] == ["UNSET"] * 3
    # The handler's own spans nest under run: its context is current while the handler runs.
    assert one(spans, "handler work")["parent_id"] == run["span_id"]
    assert request_id not in {span["span_id"] for span in spans}


def test_a_failing_handler_leaves_error_spans_with_the_exception_and_the_error_code(
    traced_worker, web_spans, spans_file
):
    task = services.submit("test_traced", {"fail": True}).task

    assert wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}).state == TaskState.FAILED
    spans = wait_for(lambda: attempts_done(spans_file, task.id, 1), timeout=30, what="the worker's spans")

    trace_id, _ = hexid(web(web_spans, "long_time_task.submit"))
    assert {span["trace_id"] for span in spans} == {trace_id}
    process, run, finish = one(spans, "process operate"), one(spans, STEPS[1]), one(spans, STEPS[2])
    assert run["status"] == "ERROR" and run["events"] == ["exception"]  # the handler raised
    assert process["status"] == "ERROR"
    assert process["attributes"][OUTCOME] == finish["attributes"][OUTCOME] == "failed"
    assert process["attributes"]["error.type"] == finish["attributes"]["error.type"] == "handler_error"
    assert one(spans, STEPS[0])["status"] == "UNSET"


def test_a_retry_published_by_the_worker_stays_in_the_trace(traced_worker, web_spans, spans_file):
    task = services.submit("test_traced", {"failures": 1}).task

    done = wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED})
    assert (done.state, done.attempts) == (TaskState.FINISHED, 2)
    spans = wait_for(lambda: attempts_done(spans_file, task.id, 2), timeout=30, what="both attempts' spans")

    trace_id, _ = hexid(web(web_spans, "long_time_task.submit"))
    assert {span["trace_id"] for span in spans} == {trace_id}
    first, second = one(spans, "process operate", **{ATTEMPT: 1}), one(spans, "process operate", **{ATTEMPT: 2})
    assert (first["status"], first["attributes"][OUTCOME], first["attributes"]["error.type"]) == (
        "ERROR",
        "retrying",
        "temporary_error",
    )
    assert (second["status"], second["attributes"][OUTCOME]) == ("UNSET", "finished")
    # Attempt 1's finish step published attempt 2: its send span is the parent of attempt 2's process span.
    finish = one(spans, STEPS[2], **{ATTEMPT: 1})
    resend = one(spans, "send operate", **{ATTEMPT: 2})
    assert resend["parent_id"] == finish["span_id"] and resend["kind"] == "PRODUCER"
    assert second["parent_id"] == resend["span_id"]


def test_a_task_published_later_by_the_sweeper_continues_its_submit_trace(
    traced_worker, web_spans, spans_file, settings
):
    settings.LONG_TIME_TASK_ETA_MAX_SECONDS = 0  # any delay waits in the database for the sweeper
    with trace.get_tracer("tests").start_as_current_span("POST /api/tasks"):
        task = services.submit("test_traced", {}, countdown=0.3).task
    submit = web(web_spans, "long_time_task.submit")
    assert not [span for span in web_spans.get_finished_spans() if span.name.startswith("send")]  # held back
    wait_for(lambda: recovery.dispatch_due_tasks() or None, timeout=10, what="the sweeper to publish the task")

    assert wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}).state == TaskState.FINISHED
    spans = wait_for(lambda: attempts_done(spans_file, task.id, 1), timeout=30, what="the worker's spans")
    trace_id, submit_id = hexid(submit)
    send = web(web_spans, "send operate")
    assert send.parent is not None and f"{send.parent.span_id:016x}" == submit_id
    assert {span["trace_id"] for span in spans} == {trace_id}
    assert one(spans, "process operate")["parent_id"] == hexid(send)[1]


def test_a_sweeper_run_inside_another_trace_is_kept_as_a_link(traced_worker, web_spans, spans_file, settings):
    """Beat runs the sweeper as a Celery task of its own, which a project's Celery instrumentation traces: the
    republish still continues the submit's trace, and the sweep's span is kept as a link."""
    settings.LONG_TIME_TASK_ETA_MAX_SECONDS = 0
    task = services.submit("test_traced", {}, countdown=0.3).task
    submit_trace, submit_id = hexid(web(web_spans, "long_time_task.submit"))
    with trace.get_tracer("tests").start_as_current_span("run long_time_task.dispatch_due_tasks") as sweep:
        wait_for(lambda: recovery.dispatch_due_tasks() or None, timeout=10, what="the sweeper to publish the task")

    send = web(web_spans, "send operate")
    sweep_trace, sweep_id = f"{sweep.get_span_context().trace_id:032x}", f"{sweep.get_span_context().span_id:016x}"
    assert sweep_trace != submit_trace
    assert hexid(send)[0] == submit_trace and f"{send.parent.span_id:016x}" == submit_id
    assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in send.links] == [
        (sweep_trace, sweep_id)
    ]
    spans = wait_for(lambda: attempts_done(spans_file, task.id, 1), timeout=30, what="the worker's spans")
    assert {span["trace_id"] for span in spans} == {submit_trace}

"""A project that also runs opentelemetry-instrumentation-celery, on both sides: one trace, nothing orphaned.

That instrumentation adds a PRODUCER span around ``apply_async`` (inside this library's ``send`` span, whose
``traceparent`` header it replaces with its own) and a CONSUMER span around the task, current while it runs. The
library's ``process`` span then nests under that span rather than beside it (tracing._process_parent).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from long_time_task import services
from long_time_task.dispatch import EXECUTOR_TASK
from long_time_task.models import TaskState
from tests.integration.test_tracing import ID, STEPS, attempts_done, hexid, one, read_spans, wait_until_state, web
from tests.workers import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def instrumented(tmp_path_factory: Any) -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    provider.add_span_processor(processor)
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument()
    yield memory
    instrumentor.uninstrument()
    processor.shutdown()


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: Any) -> Path:
    return tmp_path_factory.mktemp("spans") / "worker-spans.jsonl"


@pytest.fixture(scope="module")
def instrumented_worker(worker_database: str, broker: Any, spans_file: Path, tmp_path_factory: Any) -> Iterator[Any]:
    worker = WorkerProcess(
        queues="operate",
        concurrency=1,
        name="instrumented",
        log_path=tmp_path_factory.mktemp("instrumented-worker") / "worker.log",
        env=worker_env(worker_database, LTT_TEST_SPANS_FILE=spans_file, LTT_TEST_CELERY_INSTRUMENTATION="1"),
    ).start()
    yield worker
    worker.stop()


def test_with_celery_instrumentation_too_the_trace_is_one_chain(instrumented, instrumented_worker, spans_file):
    instrumented.clear()
    with trace.get_tracer("tests").start_as_current_span("POST /api/tasks"):
        task = services.submit("test_traced", {}).task

    assert wait_until_state(task.id, {TaskState.FINISHED, TaskState.FAILED}).state == TaskState.FINISHED
    ours = wait_for(lambda: attempts_done(spans_file, task.id, 1), timeout=30, what="the worker's spans")
    records = read_spans(spans_file)
    theirs = one(records, f"run/{EXECUTOR_TASK}")

    request, send = web(instrumented, "POST /api/tasks"), web(instrumented, "send operate")
    apply_async = web(instrumented, f"apply_async/{EXECUTOR_TASK}")
    trace_id = hexid(request)[0]
    # Web: request -> submit -> send (ours) -> apply_async (theirs), whose context the message carries.
    assert apply_async.parent.span_id == send.get_span_context().span_id
    # Worker: run (theirs, a child of apply_async) -> process (ours) -> claim, run, finish.
    assert theirs["trace_id"] == trace_id and theirs["parent_id"] == hexid(apply_async)[1]
    process = one(ours, "process operate")
    assert process["parent_id"] == theirs["span_id"]
    assert process["links"] == [[trace_id, hexid(apply_async)[1]]]
    assert [one(ours, name)["parent_id"] for name in STEPS] == [process["span_id"]] * 3
    assert {span["trace_id"] for span in ours} == {trace_id}
    assert [span["attributes"].get(ID) for span in ours if span["name"] == "process operate"] == [task.id]
    assert "Failed to detach context" not in instrumented_worker.output()  # the two detach in order

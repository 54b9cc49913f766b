"""Tracing without a worker: the submit span, the stored context, the worker's choice of parent and links (pure
logic on a request carrying headers), the modes, and that nothing of OpenTelemetry is imported when it is absent.

Across a real worker: tests/integration/test_tracing.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import current_app
from django.core.checks import run_checks
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from long_time_task import services, tracing
from long_time_task.models import LongTimeTask
from long_time_task.registry import InvalidParams
from tests.workers import ROOT, worker_env

TRACER = trace.get_tracer("tests")


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the global provider can be set once per process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    provider.add_span_processor(processor)
    yield memory
    processor.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def named(spans: InMemorySpanExporter, name: str) -> list[Any]:
    return [span for span in spans.get_finished_spans() if span.name == name]


# ---------------------------------------------------------------- submit


@pytest.mark.django_db
def test_submit_span_is_a_child_of_the_current_span_and_its_context_is_stored_on_the_row(spans):
    with TRACER.start_as_current_span("POST /api/tasks") as request:
        task = services.submit("test_echo", {"n": 1}).task

    (submit,) = named(spans, "long_time_task.submit")
    assert submit.parent.span_id == request.get_span_context().span_id
    assert submit.context.trace_id == request.get_span_context().trace_id
    assert dict(submit.attributes) == {"long_time_task.task.type": "test_echo", "long_time_task.task.id": task.id}
    stored = LongTimeTask.objects.get(id=task.id).traceparent
    assert stored == f"00-{submit.context.trace_id:032x}-{submit.context.span_id:016x}-{submit.context.trace_flags:02x}"


@pytest.mark.django_db
def test_an_idempotent_replay_is_marked_on_its_submit_span(spans, user):
    first = services.submit("test_echo", {}, owner=user, idempotency_key="k-1").task
    again = services.submit("test_echo", {}, owner=user, idempotency_key="k-1")
    assert (again.task.id, again.created) == (first.id, False)
    replay = named(spans, "long_time_task.submit")[1]
    assert replay.attributes["long_time_task.idempotent_replay"] is True


@pytest.mark.django_db
def test_a_refused_submit_leaves_an_error_span_and_no_row(spans):
    with pytest.raises(InvalidParams):
        services.submit("test_echo", "not an object")  # type: ignore[arg-type]
    (submit,) = named(spans, "long_time_task.submit")
    assert submit.status.status_code == trace.StatusCode.ERROR
    assert [event.name for event in submit.events] == ["exception"]
    assert not LongTimeTask.objects.exists()


@pytest.mark.django_db
def test_tracing_off_makes_no_span_and_stores_no_context(spans, settings):
    settings.LONG_TIME_TASK_TRACING = "off"
    with TRACER.start_as_current_span("POST /api/tasks"):
        task = services.submit("test_echo", {}).task
        with tracing.publishing(task, attempt=1, queue="default") as headers:
            assert headers == {}
    assert [span.name for span in spans.get_finished_spans()] == ["POST /api/tasks"]
    assert LongTimeTask.objects.get(id=task.id).traceparent == ""
    assert tracing.api() is None and tracing.traceparent() == ""


def test_the_publish_headers_carry_the_send_span_as_w3c_trace_context(spans):
    task = LongTimeTask(id=7, task_type="test_echo", celery_task_id="c-7", queue="default")  # no stored context
    with TRACER.start_as_current_span("finish of attempt 1") as finish:
        with tracing.publishing(task, attempt=2, queue="q") as headers:
            pass
    (send,) = named(spans, "send q")
    assert send.parent.span_id == finish.get_span_context().span_id  # the current span: a retry's
    assert send.kind == trace.SpanKind.PRODUCER and send.attributes["long_time_task.task.attempt"] == 2
    assert list(headers) == ["traceparent"]
    assert headers["traceparent"].startswith(f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-")


# ---------------------------------------------------------------- the worker's parent and links


def ids(context: Any) -> tuple[int, int]:
    return context.trace_id, context.span_id


def creation() -> tuple[Any, dict[str, str]]:
    """A producer span in a trace of its own (as ids), and the headers a message would carry for it."""
    with TRACER.start_as_current_span("send", context=trace.set_span_in_context(trace.INVALID_SPAN)) as span:
        headers: dict[str, str] = {}
        tracing.api().propagate.inject(headers)
    return ids(span.get_span_context()), headers


def parent_and_links(request: Any) -> tuple[Any, list[Any]]:
    """The process span's parent (None: the current context) and links, as ids."""
    parent, links = tracing._process_parent(tracing.api(), request)
    parent_ids = ids(trace.get_current_span(parent).get_span_context()) if parent is not None else None
    return parent_ids, [ids(link.context) for link in links]


def test_worker_span_is_a_child_of_the_creation_context_and_links_to_it():
    sent, headers = creation()
    assert parent_and_links(SimpleNamespace(headers=headers)) == (sent, [sent])


def test_worker_span_reads_the_header_from_the_request_attribute_too():
    sent, headers = creation()
    assert parent_and_links(SimpleNamespace(headers=None, **headers)) == (sent, [sent])


def test_worker_span_nests_under_a_current_span_of_the_same_trace():
    """opentelemetry-instrumentation-celery's task span, itself a child of the creation context."""
    sent, headers = creation()
    remote = trace.SpanContext(sent[0], sent[1], is_remote=True, trace_flags=trace.TraceFlags(1))
    parent = trace.NonRecordingSpan(remote)
    with TRACER.start_as_current_span("run/execute", context=trace.set_span_in_context(parent)):
        assert parent_and_links(SimpleNamespace(headers=headers)) == (None, [sent])  # None: the current span


def test_worker_span_keeps_a_current_span_of_another_trace_as_a_link():
    sent, headers = creation()
    with TRACER.start_as_current_span("worker loop", context=trace.set_span_in_context(trace.INVALID_SPAN)) as loop:
        assert parent_and_links(SimpleNamespace(headers=headers)) == (sent, [sent, ids(loop.get_span_context())])


def test_link_mode_starts_a_trace_of_its_own_linked_to_the_creation_context(settings):
    settings.LONG_TIME_TASK_TRACING = "link"
    sent, headers = creation()
    assert parent_and_links(SimpleNamespace(headers=headers)) == (None, [sent])


def test_a_message_without_trace_context_starts_a_new_trace():
    assert parent_and_links(SimpleNamespace(headers={"id": "x"})) == (None, [])


def test_an_exception_escaping_the_attempt_ends_its_spans_in_error_and_restores_the_context(spans):
    def executor(self: Any, task_id: int, attempt: int) -> str:
        tracing.step("claim")
        raise ConnectionError("the database is down")

    task = SimpleNamespace(
        request=SimpleNamespace(headers={}, delivery_info={"routing_key": "q"}, id="c-3", hostname="w@h"),
        app=current_app,
    )
    with TRACER.start_as_current_span("worker loop") as loop:
        with pytest.raises(ConnectionError):
            tracing.traced_attempt(executor)(task, 3, 1)
        assert trace.get_current_span() is loop
    (process,), (claim,) = named(spans, "process q"), named(spans, "long_time_task.claim")
    assert process.status.status_code == claim.status.status_code == trace.StatusCode.ERROR
    assert [event.name for event in process.events] == [event.name for event in claim.events] == ["exception"]
    assert claim.parent.span_id == process.context.span_id
    tracing.step("finish")  # outside an attempt: nothing
    assert len(spans.get_finished_spans()) == 3


def test_messaging_system_names_the_broker():
    assert tracing.messaging_system("amqp://guest@localhost//") == "rabbitmq"
    assert tracing.messaging_system("rediss://x:6380/0") == "redis"
    assert tracing.messaging_system("sqla+sqlite:///broker.db") == "sqla"


def test_an_unknown_mode_is_a_configuration_error(settings):
    settings.LONG_TIME_TASK_TRACING = "yes please"
    assert [message.id for message in run_checks() if message.id == "long_time_task.E003"] == ["long_time_task.E003"]
    settings.LONG_TIME_TASK_TRACING = False
    assert not [message for message in run_checks() if message.id == "long_time_task.E003"]


# ---------------------------------------------------------------- nothing when absent

ABSENT = textwrap.dedent(
    """
    import importlib.abc, json, os, sys

    class Blocker(importlib.abc.MetaPathFinder):
        tried = []  # by whom: the first file on the stack outside the import machinery

        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                frame = sys._getframe(1)
                while frame.f_code.co_filename.startswith("<frozen"):
                    frame = frame.f_back
                Blocker.tried.append(frame.f_code.co_filename.rsplit("site-packages/", 1)[-1])
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    if os.environ["BLOCK"] == "1":
        sys.meta_path.insert(0, Blocker())

    import django

    django.setup()
    from long_time_task import services
    from long_time_task.models import LongTimeTask
    from long_time_task.worker.tasks import execute_long_time_task

    task = services.submit("test_echo", {"n": 1}).task  # autocommit: published to the broker at once
    outcome = execute_long_time_task.apply(args=(task.id, 1)).get()  # the traced task, run here
    row = LongTimeTask.objects.get(id=task.id)
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    hooks = {}
    if os.environ["BLOCK"] == "0" and os.environ["LTT_TEST_TRACING"] != "off":
        from long_time_task import tracing
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        hooks["without_sdk"] = tracing.api() is not None  # the API alone: no spans to make
        trace.set_tracer_provider(TracerProvider())
        hooks["with_sdk"] = tracing.api() is not None  # an SDK set up later is seen at once
    print(json.dumps({
        "outcome": outcome, "state": row.state, "traceparent": row.traceparent, "tried": Blocker.tried,
        "loaded": loaded, "hooks": hooks,
    }))
    """
)


def run_absent(worker_database: str, *, block: bool, mode: str = "parent") -> dict[str, Any]:
    env = worker_env(worker_database, BLOCK="1" if block else "0", LTT_TEST_TRACING=mode)
    env.pop("LTT_TEST_SPANS_FILE", None)
    done = subprocess.run(
        [sys.executable, "-c", ABSENT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True)
def test_without_opentelemetry_the_app_works_and_imports_none_of_it(worker_database):
    absent = run_absent(worker_database, block=True)
    assert (absent["outcome"], absent["state"], absent["traceparent"]) == ("finished", "FINISHED", "")
    ours = [name for name in absent["tried"] if "long_time_task" in name]
    assert ours == [str(ROOT / "long_time_task" / "tracing.py")]  # one attempt, at the first hook; never again
    assert absent["loaded"] == []  # (redis-py looks for it too, and copes: its attempts are in "tried")

    # The same run where it is installed does load it: the check above can fail.
    present = run_absent(worker_database, block=False)
    assert present["state"] == "FINISHED" and "opentelemetry.trace" in present["loaded"]
    # Installed but with no SDK set up (a dependency pulled the API in): the hooks stay off until one is.
    assert present["hooks"] == {"without_sdk": False, "with_sdk": True}


@pytest.mark.django_db(transaction=True)
def test_with_tracing_off_opentelemetry_is_not_even_looked_for(worker_database):
    off = run_absent(worker_database, block=True, mode="off")
    assert off["state"] == "FINISHED" and off["loaded"] == []
    assert not [name for name in off["tried"] if "long_time_task" in name]

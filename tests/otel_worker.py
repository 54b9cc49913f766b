"""OpenTelemetry's SDK in a test worker: every span its pool processes end is appended to ``LTT_TEST_SPANS_FILE``
as one JSON line, for the tracing tests to read (tests/integration/test_tracing.py).

tests/settings.py imports this module only when that variable is set. The SDK is set up in each pool process
after the fork (``worker_process_init``), as OpenTelemetry's Celery documentation asks; with
``LTT_TEST_CELERY_INSTRUMENTATION=1``, opentelemetry-instrumentation-celery is turned on there too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from celery.signals import worker_process_init
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the tests compare: names, ids in hex, parent, links, kind, status, attributes, event names."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links],
        "events": [event.name for event in span.events],
        "pid": os.getpid(),
    }


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())  # one append per batch: the pool processes share the file
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


@worker_process_init.connect(weak=False)
def _set_up_tracing(**kwargs: Any) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["LTT_TEST_SPANS_FILE"])))
    trace.set_tracer_provider(provider)
    if os.environ.get("LTT_TEST_CELERY_INSTRUMENTATION") == "1":
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]

"""Serving the metrics: the text ``/metrics`` answers, and the worker's opt-in exporter.

The counters and histograms come from every process of this host that shares ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's ``MultiProcessCollector`` sums their files), or, without that directory, from this
process alone (prometheus-client's default registry). ``/metrics`` adds the gauges read from the database and
the broker (``collector``); the worker's exporter does not, so that those are counted once, from the web side.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from ..conf import conf
from . import instruments, multiprocess_dir
from .collector import GaugeCollector

logger = logging.getLogger(__name__)


def counters_registry() -> CollectorRegistry:
    """The counters and histograms to serve: this host's processes' (multiprocess mode) or this process's."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    # A registry of its own: the metrics that processes register in theirs are already in the files.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def render(*, gauges: bool = True) -> bytes:
    """The Prometheus text exposition: counters and histograms, then (``gauges``) the database and broker
    gauges."""
    instruments()  # this process's series exist (at zero) before its first event
    body = generate_latest(counters_registry())
    if gauges:
        registry = CollectorRegistry()
        registry.register(GaugeCollector())
        body += generate_latest(registry)
    return body


_exporter: Any = None


def start_worker_exporter() -> bool:
    """In a worker's main process: serve this host's counters on ``WORKER_METRICS_PORT`` (when set). Returns
    whether it started."""
    global _exporter
    port = conf.WORKER_METRICS_PORT
    if not port or not conf.METRICS or _exporter is not None:
        return False
    instruments()
    if multiprocess_dir() is None:
        logger.warning(
            "Metrics: PROMETHEUS_MULTIPROC_DIR is not set, so the worker's port %s serves its main process's "
            "counters only: with a prefork pool, the child processes that run the tasks are not counted",
            port,
        )
    server, _thread = start_http_server(port, addr=conf.WORKER_METRICS_ADDRESS, registry=counters_registry())
    _exporter = server
    logger.info("Metrics: serving this host's counters on %s:%s", conf.WORKER_METRICS_ADDRESS, port)
    return True


def stop_worker_exporter() -> None:
    global _exporter
    if _exporter is not None:
        _exporter.shutdown()
        _exporter.server_close()
        _exporter = None

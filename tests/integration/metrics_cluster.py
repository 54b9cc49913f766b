"""A small production-shaped cluster for the metrics tests: gunicorn with two worker processes and a prefork Celery
worker with two children, all sharing one ``PROMETHEUS_MULTIPROC_DIR``, on the test database and a Redis database
of their own (``cluster_broker_url``): the session's worker reads the test broker's ``default`` queue too, and the
tasks it ran would be missing from the cluster's counters."""

from __future__ import annotations

import http.client
import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.settings import TEST_REDIS_URL
from tests.workers import WebServer, WorkerProcess, gunicorn, worker_env

SCRAPER_TOKEN = "scraper-token-for-the-tests"  # noqa: S105


def answers(port: int) -> bool:
    """Django answers (401: the API without a token), not only the socket."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/task-types/")
        with conn.getresponse() as response:
            return response.status == 401
    except OSError:
        return False
    finally:
        conn.close()


class Cluster:
    def __init__(self, web: WebServer, worker: WorkerProcess, directory: Path) -> None:
        self.web, self.worker, self.directory = web, worker, directory

    def request(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.web.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            payload = None
            if body is not None:
                payload, headers["Content-Type"] = json.dumps(body), "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """``/metrics`` as {sample name: {sorted labels: value}}."""
        status, body = self.request("GET", "/metrics", SCRAPER_TOKEN)
        assert status == 200, body[:500]
        return parse(body.decode())


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[tuple[tuple[str, str], ...], float], by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """Sums of a sample's values by the labels ``by``, leaving out zeros."""
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in samples.items():
        sums[tuple(dict(labels)[name] for name in by)] += value
    return {key: value for key, value in sums.items() if value}


def cluster_broker_url() -> str:
    """The test broker's Redis with another database number (the test one's plus 8, modulo 16)."""
    base, _, number = TEST_REDIS_URL.rpartition("/")
    return f"{base}/{(int(number or 0) + 8) % 16}"


@contextmanager
def cluster(worker_database: str, directory: Path, logs: Path, **extra_env: Any) -> Iterator[Cluster]:
    directory.mkdir(parents=True, exist_ok=True)
    broker = cluster_broker_url()
    redis.Redis.from_url(broker).flushdb()
    env = worker_env(
        worker_database,
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        LONG_TIME_TASK_METRICS_TOKEN=SCRAPER_TOKEN,
        TEST_REDIS_URL=broker,
        **extra_env,
    )
    worker = WorkerProcess(
        queues="default", concurrency=2, name="metrics", log_path=logs / "worker.log", env=env
    ).start()
    try:
        with WebServer(env, logs / "gunicorn.log", gunicorn(threads=2, workers=2), answers, timeout=60) as web:
            yield Cluster(web, worker, directory)
    finally:
        worker.stop()

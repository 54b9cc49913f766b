from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.workers import WorkerProcess, worker_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def celery_worker(worker_database: str, broker: redis.Redis, tmp_path_factory: Any) -> Iterator[WorkerProcess]:
    """One real worker on the default and heavy queues, for the whole session (the priority queue is left to
    the tests that need to fill it before a worker consumes it)."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = WorkerProcess(
        queues="default,heavy", concurrency=2, name="main", log_path=log, env=worker_env(worker_database)
    ).start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(worker_database: str, broker: redis.Redis, tmp_path: Any) -> Iterator[Any]:
    """Start extra workers inside one test; they are stopped when it ends."""
    started: list[WorkerProcess] = []

    def start(*, queues: str, concurrency: int = 1, name: str = "extra", **env: Any) -> WorkerProcess:
        worker = WorkerProcess(
            queues=queues,
            concurrency=concurrency,
            name=f"{name}{len(started)}",
            log_path=tmp_path / f"{name}{len(started)}.log",
            env=worker_env(worker_database, **env),
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()

"""The hosts suite's fixtures: a network of hosts (``network.py``) around the test database and Redis database,
torn down completely after each test (processes, namespaces, links, forwarders)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings as django_settings

from tests.faults.conftest import BOUNDS

from .network import Network, missing


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hosts/" in str(item.path):
            item.add_marker(pytest.mark.services)


@pytest.fixture
def network(worker_database: str, broker: redis.Redis, tmp_path: Path, settings: Any) -> Iterator[Network]:
    reason = missing()
    if reason:
        if django_settings.CI:
            pytest.fail(f"the hosts suite cannot run: {reason}")
        pytest.skip(f"the hosts suite cannot run here: {reason}")
    for name, value in BOUNDS.items():
        setattr(settings, name, value)  # the test process submits with the same bounds as the hosts
    database = urlsplit(str(django_settings.CELERY_BROKER_URL)).path.lstrip("/") or "0"
    net = Network(tmp_path, database_name=worker_database, redis_db=int(database), bounds=BOUNDS)
    try:
        yield net
    finally:
        net.destroy()
        broker.flushdb()

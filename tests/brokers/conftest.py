"""Brokers the tests start themselves: a Redis master, its replica and three Sentinels on free ports
(``sentinel_broker``), and a worker and beat on them (``sentinel_cluster``), with the fault suite's tight bounds;
each scenario's figures join the fault suite's (docs/reliability.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings as django_settings

from tests.faults.conftest import BOUNDS, Cluster
from tests.test_commands_and_settings import settings_in_subprocess

from .sentinel import MASTER_NAME, SentinelSet, binary


def require_binaries() -> tuple[str, str]:
    """``redis-server`` and ``redis-sentinel`` (Debian's packages of those names; LTT_REDIS_SERVER and
    LTT_REDIS_SENTINEL name others): a failure under CI=true when one is missing, a skip elsewhere."""
    found = {name: binary(name, variable) for name, variable in
             (("redis-server", "LTT_REDIS_SERVER"), ("redis-sentinel", "LTT_REDIS_SENTINEL"))}  # fmt: skip
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)}; make test-deps)"
        if django_settings.CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return str(found["redis-server"]), str(found["redis-sentinel"])


@pytest.fixture
def sentinel_broker(tmp_path: Path) -> Iterator[SentinelSet]:
    redis_server, redis_sentinel = require_binaries()
    folder = tmp_path / "redis"
    folder.mkdir()
    brokers = SentinelSet(folder, redis_server=redis_server, redis_sentinel=redis_sentinel)
    try:
        yield brokers.start()
    finally:
        brokers.stop()


class SentinelCluster(Cluster):
    """The fault suite's workers and beat, on the Sentinel broker."""

    def __init__(self, database: str, tmp_path: Path, brokers: SentinelSet, master: redis.Redis) -> None:
        super().__init__(database, tmp_path, master)
        self.brokers = brokers

    def env(self, **extra: Any) -> dict[str, str]:
        url = self.brokers.url
        return super().env(
            CELERY_BROKER_URL=url, TEST_REDIS_URL=url, CELERY_BROKER_SENTINEL_MASTER=MASTER_NAME, **extra
        )


@pytest.fixture
def sentinel_settings(sentinel_broker: SentinelSet, settings: Any, monkeypatch: Any) -> Iterator[SentinelSet]:
    """This process publishes through ``sentinel_broker`` (the tests' Redis options, and the master's name)."""
    # The demo's options for this URL (its master's name among them) under the tests' own, as a worker gets them.
    env = {"CELERY_BROKER_URL": sentinel_broker.url, "CELERY_BROKER_SENTINEL_MASTER": MASTER_NAME}
    demo = json.loads(settings_in_subprocess(env, "__import__('json').dumps(s.CELERY_BROKER_TRANSPORT_OPTIONS)"))
    settings.CELERY_BROKER_URL = sentinel_broker.url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {**demo, **settings.CELERY_BROKER_TRANSPORT_OPTIONS}
    # Celery reads the settings as they are now, but keeps the pools it made for the session's broker: new ones for
    # this test, closed at its end, and the session's back afterwards (monkeypatch).
    monkeypatch.setattr(current_app, "_pool", None)
    monkeypatch.setattr(current_app.amqp, "_producer_pool", None)
    try:
        yield sentinel_broker
    finally:
        pools: list[Any] = [current_app.amqp.producer_pool, current_app.pool]
        for pool in pools:
            pool.force_close_all()


@pytest.fixture
def sentinel_cluster(
    worker_database: str, sentinel_settings: SentinelSet, tmp_path: Path, settings: Any
) -> Iterator[SentinelCluster]:
    """Workers and beat on ``sentinel_broker``; this process submits through it too, with the same bounds."""
    for name, value in BOUNDS.items():
        setattr(settings, name, value)
    sentinels = [("127.0.0.1", port) for port in sentinel_settings.sentinel_ports]
    sentinel = redis.Sentinel(sentinels, socket_timeout=2)
    master = sentinel.master_for(MASTER_NAME, socket_timeout=2)
    cluster = SentinelCluster(worker_database, tmp_path, sentinel_settings, master)
    try:
        yield cluster
    finally:
        cluster.stop()
        master.close()
        for connection in sentinel.sentinels:
            connection.close()

"""A Redis Sentinel broker in the demo's settings and the app's doors to the broker, without a server: the options
the demo gives kombu (and that kombu's Sentinel transport reads), the maintenance tasks' priority, the priority
mapping, and the system check for a Sentinel URL without a master name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from kombu.transport.redis import SentinelChannel

from long_time_task.checks import check_sentinel_master_name, check_visibility_timeout
from long_time_task.dispatch import broker_priority
from long_time_task.tracing import messaging_system
from tests.test_commands_and_settings import settings_in_subprocess

URL = "sentinel://10.0.0.1:26379/2;sentinel://10.0.0.2:26379/2;sentinel://10.0.0.3:26379/2"
# The broker URL, its transport options and the maintenance tasks' priority, as JSON (printed by a subprocess).
EXPRESSION = (
    "__import__('json').dumps([s.CELERY_BROKER_URL, s.CELERY_BROKER_TRANSPORT_OPTIONS, "
    "s.CELERY_BEAT_SCHEDULE['long-time-task-sweeper']['options']['priority']])"
)


def demo_broker(tmp_path: Path, **env: str) -> tuple[str, dict[str, Any], int]:
    """demo/settings.py in a fresh process, with CELERY_BROKER_URL=URL and ``env``."""
    out = settings_in_subprocess({"DEMO_VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": URL, **env}, EXPRESSION)
    url, options, priority = json.loads(out)
    return url, options, priority


def test_a_sentinel_url_gets_the_redis_options_and_the_master_name(tmp_path):
    url, options, maintenance_priority = demo_broker(tmp_path)
    assert url == URL
    assert options == {
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
        "visibility_timeout": 43200,
        "socket_connect_timeout": 2.0,
        "socket_timeout": 10,
        "socket_keepalive": True,
        "master_name": "mymaster",  # kombu's documented example name, the default
        "health_check_interval": 5,
    }
    assert maintenance_priority == 0  # the highest on Redis, Sentinel or not (9 would be the lowest)
    # Every one of them is an option kombu's Sentinel channel reads (the socket_* ones reach the Sentinels too).
    assert set(options) <= set(SentinelChannel.from_transport_options)


def test_the_master_name_and_the_sentinels_password_come_from_the_environment(tmp_path):
    _, options, _ = demo_broker(
        tmp_path, CELERY_BROKER_SENTINEL_MASTER="tasks", CELERY_BROKER_SENTINEL_PASSWORD="s3ntinel",
        CELERY_BROKER_CONNECTION_TIMEOUT="1.5", CELERY_BROKER_HEALTH_CHECK_INTERVAL="10",
    )  # fmt: skip
    assert (options["master_name"], options["health_check_interval"]) == ("tasks", 10)
    # Given sentinel_kwargs, redis-py no longer copies the socket_* options onto the Sentinel connections: they are
    # given here too, so that a Sentinel that does not answer cannot hang a connect.
    assert options["sentinel_kwargs"] == {
        "socket_connect_timeout": 1.5,
        "socket_timeout": 10,
        "socket_keepalive": True,
        "password": "s3ntinel",
    }


def test_the_other_brokers_get_no_sentinel_option(tmp_path):
    out = settings_in_subprocess(
        {"DEMO_VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": "redis://10.0.0.1:6379/0",
         "CELERY_BROKER_SENTINEL_MASTER": "tasks"},
        "sorted(s.CELERY_BROKER_TRANSPORT_OPTIONS)",
    )  # fmt: skip
    assert "master_name" not in out and "priority_steps" in out


def test_sentinel_is_redis_for_priorities_and_tracing():
    assert [broker_priority(p, URL) for p in (1, 5, 10)] == [9, 5, 0]
    assert messaging_system(URL) == "redis"


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        (URL, {"visibility_timeout": 43200}, ["long_time_task.E006"]),
        (URL, {"visibility_timeout": 43200, "master_name": ""}, ["long_time_task.E006"]),
        (URL, {"visibility_timeout": 43200, "master_name": "mymaster"}, []),
        ("redis://127.0.0.1:6379/0", {"visibility_timeout": 43200}, []),
    ],
)
def test_a_sentinel_url_without_a_master_name_is_an_error(url, options, expected):
    with override_settings(CELERY_BROKER_URL=url, CELERY_BROKER_TRANSPORT_OPTIONS=options):
        errors = check_sentinel_master_name()
        assert [e.id for e in errors] == expected
        assert check_visibility_timeout() == []  # the visibility timeout check reads Sentinel's options too

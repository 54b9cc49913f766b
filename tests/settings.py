"""Settings for the test suite: the demo's, plus the test app, on real services when they answer.

PostgreSQL and Redis are used when they answer (always, when CI=true: there a missing service fails the
run instead of silently falling back). On a laptop without them, the suite runs on SQLite, and the tests
that need the services say so in the skip summary.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from kombu import Exchange, Queue

from demo.settings import *  # noqa: F403
from demo.settings import CELERY_TASK_QUEUES, INSTALLED_APPS, harden_postgres

CI = os.environ.get("CI", "").lower() == "true"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


POSTGRES_AVAILABLE = CI or answers(TEST_DATABASE_URL, 5432)
REDIS_AVAILABLE = CI or answers(TEST_REDIS_URL, 6379)

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
# "operate": a queue only the tests that start their own worker consume (cancel and restart scenarios). Under
# CELERY_QUEUE_TYPE=quorum (tests/brokers/test_quorum.py) it is declared as the demo's queues are.
_QUORUM = (CELERY_TASK_QUEUES[0].queue_arguments or {}).get("x-queue-type") == "quorum"
CELERY_TASK_QUEUES = (
    *CELERY_TASK_QUEUES,
    Queue(
        "operate",
        Exchange("operate", type="topic" if _QUORUM else "direct"),
        routing_key="operate",
        queue_arguments=CELERY_TASK_QUEUES[0].queue_arguments if _QUORUM else None,
    ),
)

if POSTGRES_AVAILABLE:
    DATABASES = {"default": dj_database_url.parse(TEST_DATABASE_URL, conn_max_age=600, conn_health_checks=True)}
    harden_postgres(DATABASES["default"])
    # A worker started by the tests connects straight to the test database pytest-django created.
    if os.environ.get("LTT_WORKER_DATABASE_NAME"):
        DATABASES["default"]["NAME"] = os.environ["LTT_WORKER_DATABASE_NAME"]
        DATABASES["default"]["TEST"] = {"NAME": os.environ["LTT_WORKER_DATABASE_NAME"]}
if REDIS_AVAILABLE:
    CELERY_BROKER_URL = TEST_REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
        "visibility_timeout": float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "43200")),
        # Look for unacknowledged messages past their visibility timeout every second (default: 10 s).
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "socket_keepalive": True,
    }
    if TEST_REDIS_URL.startswith("sentinel://"):
        # A Redis behind Sentinel that a test started (tests/brokers/test_sentinel.py, which gives the worker the same
        # URL as CELERY_BROKER_URL): the options the demo adds for one, the master's name among them.
        import demo.settings as demo_settings

        CELERY_BROKER_TRANSPORT_OPTIONS = {
            **demo_settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            **CELERY_BROKER_TRANSPORT_OPTIONS,
        }

# A worker started by a test on another broker (RabbitMQ: tests/integration/test_consumers_worker.py).
if os.environ.get("LTT_TEST_WORKER_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["LTT_TEST_WORKER_BROKER_URL"]
    CELERY_BROKER_TRANSPORT_OPTIONS = {}

# A worker started by a test may turn off Celery's acknowledgement of failed tasks (acks_late), as a project may.
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = os.environ.get("LTT_TEST_ACKS_ON_FAILURE", "true") == "true"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests  # noqa: S105
LONG_TIME_TASK_FILES_DIR = Path(os.environ.get("LTT_TEST_FILES_DIR", VAR_DIR / "test-files"))  # noqa: F405
LONG_TIME_TASK_RESULTS_DIR = Path(os.environ.get("LTT_TEST_RESULTS_DIR", VAR_DIR / "test-results"))  # noqa: F405

# A worker started by the tracing tests: OpenTelemetry's SDK, exporting to a file (tests/otel_worker.py), and the mode.
if os.environ.get("LTT_TEST_SPANS_FILE"):
    import tests.otel_worker  # noqa: F401
LONG_TIME_TASK_TRACING = os.environ.get("LTT_TEST_TRACING", "parent")

# Django's tasks API on the tracked workers (tests/test_django_tasks*.py; docs/django-tasks.md).
TASKS = {
    "default": {
        "BACKEND": "long_time_task.django_tasks.backend.LongTimeTaskBackend",
        "QUEUES": ["default", "heavy", "priority", "operate"],
    },
}

# A host of the hosts suite whose clock is off (tests/hosts/network.py): the clocks that Python code reads here,
# time.time() (Celery, kombu) and django.utils.timezone.now() (Django and long_time_task), run this many seconds
# off. (libfaketime would be the whole process's wall clock, but Debian 12's 0.9.10 breaks Python's timed waits:
# time.sleep fails with EINVAL and threading.Event.wait never returns.)
if os.environ.get("LTT_TEST_CLOCK_OFFSET"):
    import time as _time
    from datetime import timedelta as _timedelta

    from django.utils import timezone as _timezone

    _offset = float(os.environ["LTT_TEST_CLOCK_OFFSET"])
    _time_time, _time_ns, _timezone_now = _time.time, _time.time_ns, _timezone.now
    setattr(_time, "time", lambda: _time_time() + _offset)  # noqa: B010
    setattr(_time, "time_ns", lambda: _time_ns() + int(_offset * 1e9))  # noqa: B010
    setattr(_timezone, "now", lambda: _timezone_now() + _timedelta(seconds=_offset))  # noqa: B010

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from long_time_task.models import ApiToken

SKIPPED_SERVICES: set[str] = set()


def require_services() -> None:
    """Fail under CI=true, skip elsewhere, unless the test database is PostgreSQL and the broker is Redis."""
    from django.db import connection

    missing = []
    if connection.vendor != "postgresql":
        missing.append(f"PostgreSQL ({settings.TEST_DATABASE_URL})")
    if not str(settings.CELERY_BROKER_URL).startswith("redis"):
        missing.append(f"Redis ({settings.TEST_REDIS_URL})")
    if missing:
        unavailable(missing)


def require_rabbitmq() -> str:
    """The URL of the tests' RabbitMQ (``TEST_AMQP_URL``), failing or skipping as ``require_services`` does."""
    from tests.settings import answers

    url = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    if not answers(url, 5672):
        unavailable([f"RabbitMQ ({url.split('@')[-1]})"])
    return url


def unavailable(missing: list[str]) -> None:
    """Fail under CI=true; elsewhere skip, and name the services in the run's summary."""
    message = "not reachable: " + ", ".join(missing)
    if settings.CI:
        pytest.fail(f"CI=true and a required service is {message}")
    SKIPPED_SERVICES.update(missing)
    pytest.skip(f"needs real services, {message}")


VENDOR_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def services_summary(missing: set[str], vendor: str, broker_url: str) -> str:
    """The skip summary: what was missing, and what the rest of the run used (its database and broker)."""
    scheme = broker_url.split("://", 1)[0]
    database = VENDOR_NAMES.get(vendor, vendor)
    used = f"{database} with a {scheme}:// broker"
    if vendor == "sqlite" and scheme.startswith("sqla"):
        used = f"the embedded default ({used})"
    return (
        "Skipped the tests that need: " + ", ".join(sorted(missing)) + f". The rest ran on {used}; start the "
        "services (or set TEST_DATABASE_URL / TEST_REDIS_URL / TEST_AMQP_URL) to run them."
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LINGERING_SESSIONS:
        terminalreporter.section("lingering database sessions")
        for line in LINGERING_SESSIONS:
            terminalreporter.write_line(
                f"ended at the end of the run, still connected after 15 s (pytest is pid {os.getpid()}): {line}"
            )
    if SKIPPED_SERVICES:
        from django.db import connection

        terminalreporter.section("services")
        terminalreporter.write_line(
            services_summary(SKIPPED_SERVICES, connection.vendor, str(settings.CELERY_BROKER_URL))
        )


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    from django.core.cache import cache

    cache.clear()  # throttle counters


@pytest.fixture(autouse=True)
def _site_language() -> Iterator[None]:
    """A request in another language leaves that language active in the thread (LocaleMiddleware activates it and
    nothing deactivates it): each test starts from the site's, as each request does."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _test_dirs(tmp_path: Any, settings: Any) -> None:
    settings.LONG_TIME_TASK_FILES_DIR = tmp_path / "files"
    settings.LONG_TIME_TASK_RESULTS_DIR = tmp_path / "results"
    (tmp_path / "files").mkdir()


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="alice-password")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="bob", password="bob-password")


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="root", password="root-password", is_staff=True)


def token_client(user: Any) -> APIClient:
    _, raw = ApiToken.issue(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def client_as(who: str, *, user: Any, other_user: Any, staff_user: Any) -> APIClient:
    """An API client for one role of the authorization matrices: anonymous, owner (``user``), other, staff,
    or viewer (a user holding ``long_time_task.view_all_tasks``, created here)."""
    if who == "anonymous":
        return APIClient()
    if who == "viewer":
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Permission

        viewer = get_user_model().objects.create_user("viewer", password="viewer-password")
        viewer.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
        return token_client(viewer)
    return token_client({"owner": user, "other": other_user, "staff": staff_user}[who])


@pytest.fixture
def api(user: Any) -> APIClient:
    return token_client(user)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


# Suites whose outcome does not depend on the Django line, and which take minutes: CI runs them on its first line
# only (`-m "not once"` on the second; .ci/run).
ONCE = (
    "tests/faults/",
    "tests/hosts/",
    "tests/brokers/",
    "tests/browser/",
    "tests/test_api_fuzz.py",
    "tests/integration/test_schedules_worker.py",
    "tests/deploy/",
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.faults.conftest import write_results

    write_results()  # the figures of the fault, hosts and brokers suites, for `make reliability`


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent.parent
    for item in items:
        if str(Path(item.path).resolve().relative_to(root)).startswith(ONCE):
            item.add_marker(pytest.mark.once)
    # The services tests last: they are the slow ones, and a quick failure elsewhere should show first.
    items.sort(key=lambda item: 1 if item.get_closest_marker("services") else 0)


os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for the subprocesses the tests start


@pytest.fixture(scope="session")
def broker() -> Iterator[redis.Redis | None]:
    """The tests' Redis database (15 by default), emptied before and after the session (None without Redis)."""
    if not str(settings.CELERY_BROKER_URL).startswith("redis"):
        yield None
        return
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def worker_database(django_db_setup: Any, django_db_blocker: Any) -> str:
    """The name of the test database, for worker processes to connect to (services required)."""
    require_services()
    from django.db import connection

    return str(connection.settings_dict["NAME"])


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's, and at the end of the run, right before it drops the test database: wait until every session
    has left it (PostgreSQL refuses to drop a database someone is connected to). One still there after 15 s is named
    in the summary, with the process holding it, and ended, so that the drop works."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    name = str(connection.settings_dict["NAME"])
    connection.close()  # this process's own (the drop closes it too; after the fault suite it may be broken)
    import psycopg

    db = connection.settings_dict
    params = {"host": db["HOST"], "port": db["PORT"] or None, "user": db["USER"], "password": db["PASSWORD"]}
    with psycopg.connect(dbname="postgres", autocommit=True, **{k: v for k, v in params.items() if v}) as admin:
        others = sessions_on(admin, name, timeout=15)
        if others:
            LINGERING_SESSIONS.extend(f"{row} {owner_of_port(row[2])}" for row in others)
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [[r[0] for r in others]])
            sessions_on(admin, name, timeout=15)  # ending a backend takes a moment


LINGERING_SESSIONS: list[str] = []


def owner_of_port(port: Any) -> str:
    """The local process holding a TCP connection from ``port`` (``ss -tnp``), for the summary."""
    import subprocess

    try:
        out = subprocess.run(["ss", "-Htnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "(process unknown)"
    return out.strip() or "(process gone)"


def sessions_on(admin: Any, database: str, timeout: float) -> list[tuple[Any, ...]]:
    """Waits until no session is connected to ``database``; those still there after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        others = admin.execute(
            "SELECT pid, application_name, client_port, state, backend_start, left(query, 200)"
            " FROM pg_stat_activity WHERE datname = %s",
            [database],
        ).fetchall()
        if not others or time.monotonic() > deadline:
            return list(others)
        time.sleep(0.2)


class TrackedConnectionPool(redis.ConnectionPool):
    """Remembers its pools, so that a test can close the connections Django's Redis cache opened (it never does)."""

    opened: list[redis.ConnectionPool] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        TrackedConnectionPool.opened.append(self)


@pytest.fixture
def redis_cache(settings: Any) -> Iterator[tuple[redis.Redis, str]]:
    """Django's cache on the tests' Redis (the shared cache of production), under a key prefix of its own that is
    removed afterwards; axes re-creates its handler on it. Yields a Redis client and the prefix."""
    require_services()
    prefix = f"ltt-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.TEST_REDIS_URL,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"pool_class": "tests.conftest.TrackedConnectionPool"},
        }
    }
    settings.AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    yield client, prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()
    while TrackedConnectionPool.opened:
        TrackedConnectionPool.opened.pop().disconnect()

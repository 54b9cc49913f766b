"""The attack suite's live stack (tests/security/stack.py), the people who use it, and the rows they own.

One stack per test run: the fixture is package-scoped, so it starts with the first test here and stops when
the last one ends (before later tests start workers of their own on the same queues). Everything the tests
write is committed, through the ORM with pytest-django's blocker lifted, because the servers read the test
database from other processes; the package's teardown empties the database again (as a transactional test
does), once the servers are stopped.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings

from tests.security.stack import Client, Stack, redis_url_with_db, stack_env
from tests.workers import wait_for_sessions_to_end

CACHE_DB = 11  # the stack's cache (throttle counters) on the tests' Redis, unless TEST_CACHE_URL says otherwise
BROKER_DB = 12  # the stack's broker, likewise (TEST_STACK_BROKER_URL)
STACK_APPLICATION = "ltt-security-stack"  # application_name of the stack's database connections


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "security" in item.path.parts:
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="package")
def stack_database(worker_database: str, django_db_blocker: Any) -> Iterator[str]:
    """The test database's name. pytest-django creates it only when a collected test is marked for the database,
    and these tests are not (a test's transaction would hide its rows from the servers); when it did not, the
    connection still names the configured database, and this creates (and later destroys) the test database."""
    from django.db import connection

    configured = urlsplit(settings.TEST_DATABASE_URL).path.lstrip("/")
    if worker_database != configured:
        yield worker_database
        return
    with django_db_blocker.unblock():
        connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield str(connection.settings_dict["NAME"])
    finally:
        with django_db_blocker.unblock():
            connection.creation.destroy_test_db(configured, verbosity=0)


@pytest.fixture(scope="package")
def stack(stack_database: str, broker: redis.Redis, tmp_path_factory: Any, django_db_blocker: Any) -> Iterator[Stack]:
    """gunicorn gthread + gunicorn uvicorn (+ a Celery worker on demand) on the test database, DEBUG off.

    Its broker and its cache are Redis databases of their own, so that no other test's worker (the integration
    suite's runs for the whole session) takes the stack's tasks. Its database connections carry an application
    name, so that the teardown can wait until every one of them is gone before the database is emptied (and,
    later, dropped)."""
    query = f"application_name={STACK_APPLICATION}"
    database_url = urlunsplit(urlsplit(settings.TEST_DATABASE_URL)._replace(path=f"/{stack_database}", query=query))
    cache_url = os.environ.get("TEST_CACHE_URL") or redis_url_with_db(settings.TEST_REDIS_URL, CACHE_DB)
    broker_url = os.environ.get("TEST_STACK_BROKER_URL") or redis_url_with_db(settings.TEST_REDIS_URL, BROKER_DB)
    stores = [redis.Redis.from_url(url) for url in (cache_url, broker_url)]
    for store in stores:
        store.flushdb()
    root = tmp_path_factory.mktemp("stack")
    env = stack_env(database_url=database_url, broker_url=broker_url, cache_url=cache_url, root=root)
    running = Stack(root=root, env=env)
    try:
        yield running.start()
    finally:
        running.stop()
        for store in stores:
            store.flushdb()
            store.close()
        from django.core.management import call_command

        with django_db_blocker.unblock():
            wait_for_sessions_to_end(STACK_APPLICATION)
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def _no_server_errors(stack: Stack) -> Iterator[None]:
    """Whatever a test sends, no server answers with a 5xx or logs a traceback."""
    since = stack.log_sizes()
    yield
    errors = stack.server_errors(since)
    assert not errors, "\n".join(errors)


@pytest.fixture
def orm(django_db_blocker: Any) -> Iterator[None]:
    """Direct database access for a test, committed at once (the servers read it from other processes)."""
    with django_db_blocker.unblock():
        yield


# ---------------------------------------------------------------- people


@dataclass
class Person:
    """A user of the stack (``user`` None: anonymous), with an address of their own (X-Forwarded-For)."""

    role: str
    stack: Stack
    address: str
    user: Any = None
    password: str = ""
    token: str = ""
    _web: Client | None = field(default=None, repr=False)

    @property
    def username(self) -> str:
        return str(self.user.get_username()) if self.user is not None else ""

    def api(self, *, streams: bool = False) -> Client:
        """A token client of the API (``streams``: of the event-stream server)."""
        client = self.stack.client(self.address, streams=streams)
        return client.with_token(self.token) if self.token else client

    @property
    def web(self) -> Client:
        """A browser: logged in through the dashboard's login page (anonymous: has a CSRF cookie only)."""
        if self._web is None:
            client = self.stack.client(self.address)
            if self.user is not None:
                client.login(self.username, self.password)
            else:
                client.csrf_token()
            self._web = client
        return self._web


# One client address per person (and per client a test asks for), all valid: 198.18.0.0/15, the benchmarking range.
ADDRESSES = (str(ipaddress.ip_address("198.18.0.0") + n) for n in itertools.count(1))


@pytest.fixture(scope="package")
def make_person(stack: Stack, django_db_blocker: Any) -> Callable[..., Person]:
    """``make_person(role, username=None)``: a committed user with a password and an API token. Roles: anonymous,
    user, staff (a superuser: the admin's staff), viewer (holds long_time_task.view_all_tasks)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import Permission

    from long_time_task.models import ApiToken

    def make(role: str, username: str | None = None) -> Person:
        address = next(ADDRESSES)
        if role == "anonymous":
            return Person(role, stack, address)
        password = f"pw-{uuid.uuid4().hex}"
        hasher = PBKDF2PasswordHasher()
        # The servers use the demo's hashers (the tests' settings only MD5): a PBKDF2 hash with few iterations,
        # which the server upgrades to its own count on the first login.
        encoded = hasher.encode(password, hasher.salt(), iterations=1000)
        staff = role == "staff"
        with django_db_blocker.unblock():
            user = get_user_model().objects.create(
                username=username or f"{role}-{uuid.uuid4().hex[:8]}",
                password=encoded,
                is_staff=staff,
                is_superuser=staff,
            )
            if role == "viewer":
                user.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
            _, token = ApiToken.issue(user)
        return Person(role, stack, address, user, password, token)

    return make


ROLES = ("anonymous", "owner", "other", "staff", "viewer")


@pytest.fixture(scope="package")
def people(make_person: Callable[..., Person]) -> dict[str, Person]:
    """One of each role of the authorization matrices; "owner" owns the tasks the tests make."""
    return {role: make_person("user" if role in ("owner", "other") else role) for role in ROLES}


@pytest.fixture(scope="package")
def make_task(django_db_blocker: Any) -> Callable[..., Any]:
    """``make_task(owner_user, **fields)``: a committed task row (test_echo, PENDING unless said otherwise)."""
    from long_time_task.models import LongTimeTask

    def make(owner: Any, **fields: Any) -> LongTimeTask:
        fields.setdefault("task_type", "test_echo")
        fields.setdefault("queue", "default")
        with django_db_blocker.unblock():
            return LongTimeTask.objects.create(owner=owner, **fields)

    return make

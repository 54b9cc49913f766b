"""Failed logins are throttled per username and per client address (django-axes on Django's cache), on the
dashboard's login page and the admin's alike: real requests through the test client, REMOTE_ADDR set."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core.management import call_command
from django.test import AsyncClient, Client, RequestFactory
from django.urls import reverse

from long_time_task.checks import check_login_throttle
from long_time_task.dashboard.lockout import client_ip, username_key

pytestmark = pytest.mark.django_db

DASHBOARD_LOGIN = reverse("ltt_dashboard:login")
ADMIN_LOGIN = reverse("admin:login")
DOORS = [DASHBOARD_LOGIN, ADMIN_LOGIN]
LIMIT = 3
COOL_OFF = 600  # seconds
MESSAGE = "Too many failed login attempts: logins for this username or from this address are blocked for up to"


@pytest.fixture(autouse=True)
def _throttle(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(seconds=COOL_OFF)


def log_in(url: str, username: str, password: str, ip: str) -> tuple[Any, bool]:
    """One login attempt from a fresh browser at ``ip``: the response, and whether it logged in."""
    client = Client()
    response = client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)
    return response, "_auth_user_id" in client.session


def fail(url: str, username: str, ip: str, times: int) -> list[int]:
    return [log_in(url, username, "wrong-password", ip)[0].status_code for _ in range(times)]


def assert_locked_out(response: Any) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == str(COOL_OFF)
    assert MESSAGE in response.content.decode()
    assert "10 minutes" in response.content.decode()


@pytest.fixture
def carol(django_user_model: Any) -> Any:
    """A second staff user (the admin logs in staff only)."""
    return django_user_model.objects.create_user("carol", password="carol-password", is_staff=True)


@pytest.mark.parametrize("url", DOORS)
def test_a_username_is_locked_after_n_failures_even_with_the_right_password(url, staff_user, carol):
    # The form again with its error, and the failure that reaches the limit is answered with the lockout.
    assert fail(url, "root", "10.0.0.1", LIMIT) == [200] * (LIMIT - 1) + [429]
    response, logged_in = log_in(url, "root", "root-password", "10.0.0.2")  # the right password, elsewhere
    assert_locked_out(response)
    assert not logged_in
    response, logged_in = log_in(url, "carol", "carol-password", "10.0.0.3")  # another user, elsewhere: fine
    assert response.status_code == 302 and logged_in
    call_command("axes_reset_username", "root")  # staff unlock
    response, logged_in = log_in(url, "root", "root-password", "10.0.0.2")
    assert response.status_code == 302 and logged_in


@pytest.mark.parametrize("url", DOORS)
def test_an_address_is_locked_after_n_failures_across_usernames(url, staff_user, carol):
    statuses = fail(url, "nobody-1", "10.0.0.9", 1) + fail(url, "nobody-2", "10.0.0.9", LIMIT - 1)
    assert statuses == [200] * (LIMIT - 1) + [429]
    response, logged_in = log_in(url, "root", "root-password", "10.0.0.9")  # any user, from that address
    assert_locked_out(response)
    assert not logged_in
    response, logged_in = log_in(url, "carol", "carol-password", "10.0.0.10")  # elsewhere: fine
    assert response.status_code == 302 and logged_in
    call_command("axes_reset_ip", "10.0.0.9")
    response, logged_in = log_in(url, "root", "root-password", "10.0.0.9")
    assert response.status_code == 302 and logged_in


def test_the_dashboard_shows_its_login_page_with_the_reason(user):
    fail(DASHBOARD_LOGIN, "alice", "10.0.1.1", LIMIT)
    response, _ = log_in(DASHBOARD_LOGIN, "alice", "alice-password", "10.0.1.1")
    assert_locked_out(response)
    page = response.content.decode()
    assert 'role="alert"' in page and "didn&#x27;t match" not in page
    assert 'name="password"' in page and 'value="alice"' in page  # the form, ready for later


@pytest.mark.django_db(transaction=True)
def test_the_lockout_answers_the_same_under_asgi(user):
    """Axes' middleware has an async path (under uvicorn), which calls the lockout response differently."""

    async def attempts() -> list[tuple[int, str | None]]:
        client = AsyncClient()
        answers = []
        for password in ["wrong-1", "wrong-2", "wrong-3", "alice-password"]:
            response = await client.post(DASHBOARD_LOGIN, {"username": "alice", "password": password})
            answers.append((response.status_code, response.get("Retry-After")))
        return answers

    assert async_to_sync(attempts)() == [(200, None), (200, None), (429, str(COOL_OFF)), (429, str(COOL_OFF))]


def test_a_lockout_ends_after_the_cool_off(user, monkeypatch):
    fail(DASHBOARD_LOGIN, "alice", "10.0.2.1", LIMIT)
    assert log_in(DASHBOARD_LOGIN, "alice", "alice-password", "10.0.2.2")[0].status_code == 429

    class Later:
        @staticmethod
        def time() -> float:
            return time.time() + COOL_OFF + 1

    monkeypatch.setattr("django.core.cache.backends.locmem.time", Later)  # the cache's clock, past the cool-off
    response, logged_in = log_in(DASHBOARD_LOGIN, "alice", "alice-password", "10.0.2.2")
    assert response.status_code == 302 and logged_in


def test_attempts_during_a_lockout_hash_no_password(user, monkeypatch):
    hashed: list[str] = []
    real = MD5PasswordHasher.encode

    def counted(self: Any, password: str, salt: str) -> str:  # every check hashes once (verify encodes)
        hashed.append(salt)
        return real(self, password, salt)

    monkeypatch.setattr(MD5PasswordHasher, "encode", counted)
    fail(DASHBOARD_LOGIN, "alice", "10.0.3.1", LIMIT)
    assert len(hashed) == LIMIT  # one check per attempt until the lockout
    statuses = fail(DASHBOARD_LOGIN, "alice", "10.0.3.1", 20) + fail(ADMIN_LOGIN, "alice", "10.0.3.2", 5)
    statuses.append(log_in(DASHBOARD_LOGIN, "alice", "alice-password", "10.0.3.3")[0].status_code)
    assert statuses == [429] * 26
    assert len(hashed) == LIMIT  # refused before the hasher ran


def test_a_username_spelled_as_an_address_does_not_lock_that_address(user):
    fail(DASHBOARD_LOGIN, "10.0.4.1", "10.0.4.2", LIMIT)  # the attacker at .2 is locked, the victim .1 is not
    response, logged_in = log_in(DASHBOARD_LOGIN, "alice", "alice-password", "10.0.4.1")
    assert response.status_code == 302 and logged_in
    assert log_in(DASHBOARD_LOGIN, "alice", "alice-password", "10.0.4.2")[0].status_code == 429


def test_behind_trusted_proxies_the_client_address_is_counted(settings, user, other_user):
    settings.LONG_TIME_TASK_TRUSTED_PROXY_COUNT = 1
    for spoofed in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):  # the client writes what it likes on the left
        forwarded = f"{spoofed}, 203.0.113.7"  # the proxy appended the address it saw
        Client().post(
            DASHBOARD_LOGIN, {"username": f"x{spoofed}", "password": "no"}, REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=forwarded,
        )  # fmt: skip
    client = Client()
    locked = client.post(
        DASHBOARD_LOGIN, {"username": "alice", "password": "alice-password"},
        REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7",
    )  # fmt: skip
    assert locked.status_code == 429
    other = Client()  # another client behind the same proxy
    response = other.post(
        DASHBOARD_LOGIN, {"username": "bob", "password": "bob-password"},
        REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4",
    )  # fmt: skip
    assert response.status_code == 302 and "_auth_user_id" in other.session


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (0, "1.1.1.1", "127.0.0.1"),  # no proxy: the header is the client's own words
        (1, "1.1.1.1, 203.0.113.7", "203.0.113.7"),
        (2, "1.1.1.1, 203.0.113.7, 10.1.1.1", "203.0.113.7"),
        (2, "203.0.113.7", "127.0.0.1"),  # fewer hops than proxies: not through them
        (1, "not-an-address", "127.0.0.1"),
        (1, "", "127.0.0.1"),
    ],
)
def test_client_ip(settings, count, forwarded, expected):
    settings.LONG_TIME_TASK_TRUSTED_PROXY_COUNT = count
    request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_username_key_keeps_usernames_apart_from_addresses():
    request = RequestFactory().post("/", {"username": "alice"})
    assert username_key(request) == "alice"
    assert username_key(request, {"username": "::1"}) == "::1 (username)"
    assert username_key(RequestFactory().post("/")) is None


def test_a_dashboard_without_login_throttling_is_reported(settings):
    assert check_login_throttle() == []
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
    warnings = check_login_throttle()
    assert [w.id for w in warnings] == ["long_time_task.W004"] and "not the first" in warnings[0].msg
    settings.AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        "axes.backends.AxesStandaloneBackend",
    ]
    assert [w.id for w in check_login_throttle()] == ["long_time_task.W004"]
    settings.AXES_ENABLED = False
    assert "not installed" in check_login_throttle()[0].msg


@pytest.mark.services
def test_failures_are_counted_in_the_shared_redis_cache(redis_cache, staff_user):
    client, prefix = redis_cache
    assert fail(ADMIN_LOGIN, "root", "10.0.5.1", LIMIT) == [200] * (LIMIT - 1) + [429]
    keys = sorted(client.scan_iter(f"{prefix}:*"))
    assert len(keys) == 2  # one counter for the username, one for the address
    assert sorted(int(client.get(key)) for key in keys) == [LIMIT, LIMIT]
    assert 0 < client.ttl(keys[0]) <= COOL_OFF
    assert_locked_out(log_in(ADMIN_LOGIN, "root", "root-password", "10.0.5.2")[0])
    assert_locked_out(log_in(DASHBOARD_LOGIN, "root", "root-password", "10.0.5.2")[0])  # same counters
    call_command("axes_reset_username", "root")
    response, logged_in = log_in(DASHBOARD_LOGIN, "root", "root-password", "10.0.5.2")
    assert response.status_code == 302 and logged_in

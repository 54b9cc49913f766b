"""Exhausting the stack, on the live servers: guessing passwords on both login pages, and holding event streams.

The login counters live in the stack's shared Redis cache (django-axes's cache handler), per username and per
client address (each test client has an address of its own, as the trusted proxy reports it). The streams are
capped per web process: under gunicorn gthread one stream per process whoever asks, since each holds a thread;
under uvicorn only per user.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest

from tests.security.conftest import ADDRESSES, Person
from tests.security.stack import Client, Response

FAILURE_LIMIT = 5  # LOGIN_FAILURE_LIMIT, the demo's default
LOGINS = {"dashboard": "/dashboard/login/", "admin": "/admin/login/"}


def log_in(client: Client, door: str, username: str, password: str) -> Response:
    return client.post_form(LOGINS[door], {"username": username, "password": password, "next": "/admin/"})


def logged_in(response: Response, client: Client) -> bool:
    return response.status == 302 and "sessionid" in client.cookies


def assert_locked_out(response: Response) -> None:
    assert response.status == 429, (response.status, response.text[:300])
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many failed login attempts" in response.text


@pytest.mark.parametrize("door", LOGINS)
def test_guessing_one_users_password_locks_that_username_even_from_new_addresses(
    door: str, make_person: Callable[..., Person]
) -> None:
    victim = make_person("staff")  # staff: the admin's login accepts them
    for _ in range(FAILURE_LIMIT - 1):
        response = log_in(victim.stack.client(next(ADDRESSES)), door, victim.username, "wrong")
        assert response.status == 200  # the form again, with its error
    assert_locked_out(log_in(victim.stack.client(next(ADDRESSES)), door, victim.username, "wrong"))
    # The right password, from yet another address: still refused until the cool-off ends or staff reset it.
    fresh = victim.stack.client(next(ADDRESSES))
    response = log_in(fresh, door, victim.username, victim.password)
    assert_locked_out(response)
    assert "sessionid" not in fresh.cookies


@pytest.mark.parametrize("door", LOGINS)
def test_trying_many_usernames_from_one_address_locks_that_address_only(
    door: str, make_person: Callable[..., Person]
) -> None:
    attacker = make_person("anonymous").web
    for n in range(FAILURE_LIMIT - 1):
        assert log_in(attacker, door, f"nobody-{n}", "wrong").status == 200
    assert_locked_out(log_in(attacker, door, "nobody-last", "wrong"))
    # A real user from the attacker's address is refused; from their own address they log in.
    someone = make_person("staff")
    assert_locked_out(log_in(attacker, door, someone.username, someone.password))
    own = someone.stack.client(someone.address)
    assert logged_in(log_in(own, door, someone.username, someone.password), own)


def test_a_flood_of_failed_logins_does_not_slow_the_api_for_others(
    make_person: Callable[..., Person], make_task: Callable[..., Any]
) -> None:
    """Past the limit, a failed login is refused before any password is hashed: 40 more attempts all get 429, and
    another user's API answers throughout."""
    attacker = make_person("anonymous").web
    bystander = make_person("user")
    task = make_task(bystander.user)
    statuses = [log_in(attacker, "dashboard", "admin", f"guess-{n}").status for n in range(FAILURE_LIMIT + 40)]
    assert statuses[: FAILURE_LIMIT - 1] == [200] * (FAILURE_LIMIT - 1)
    assert statuses[FAILURE_LIMIT - 1 :] == [429] * 41
    assert bystander.api().get(f"/api/tasks/{task.id}/").status == 200


# ---------------------------------------------------------------- event streams


def read_until_end(response: Any) -> bool:
    """Reads a held stream until the server ends it with ``event: end`` (bounded by the socket's timeout)."""
    text = b""
    while b"event: end" not in text:
        chunk = response.read1(65536)
        if not chunk:
            return False
        text += chunk
    return True


def test_one_user_holding_streams_on_gthread_gets_one_per_process_and_others_are_served(
    make_person: Callable[..., Person], make_task: Callable[..., Any], orm: None
) -> None:
    """The gthread server runs 2 processes of 4 threads: at most one stream each, whoever asks; the rest are
    refused at once (429 events_busy, Retry-After), and another user's API calls are answered meanwhile."""
    from long_time_task.models import LongTimeTask

    hog, other = make_person("user"), make_person("user")
    task, theirs = make_task(hog.user), make_task(other.user)
    client = hog.api()
    with ExitStack() as held:
        served = []
        for _ in range(10):
            response = held.enter_context(client.hold_stream(f"/api/tasks/{task.id}/events/"))
            if response.status == 200:
                served.append(response)
            else:
                assert response.status == 429 and response.getheader("Retry-After") == "3"
                assert b'"code":"events_busy"' in response.read().replace(b" ", b"")
        assert 1 <= len(served) <= 2, len(served)
        for _ in range(5):
            assert other.api().get(f"/api/tasks/{theirs.id}/", timeout=10).status == 200
        # The task finishes: each stream ends, and the server gives its place back as it closes it (rather than
        # when it next notices the client gone), so the suite's next streams find the places free.
        LongTimeTask.objects.filter(id=task.id).update(state="FINISHED")
        assert all(read_until_end(response) for response in served)


def test_one_user_holding_streams_on_asgi_is_capped_per_user(
    make_person: Callable[..., Person], make_task: Callable[..., Any]
) -> None:
    """uvicorn holds no thread per stream: only the per-user cap (10) applies, and another user still streams."""
    hog, other = make_person("user"), make_person("user")
    task, theirs = make_task(hog.user), make_task(other.user)
    with ExitStack() as held:
        for _ in range(10):
            assert held.enter_context(hog.api(streams=True).hold_stream(f"/api/tasks/{task.id}/events/")).status == 200
        refused = held.enter_context(hog.api(streams=True).hold_stream(f"/api/tasks/{task.id}/events/"))
        assert refused.status == 429 and refused.getheader("Retry-After") == "3"
        assert b"too_many_streams" in refused.read()
        status, text = other.api(streams=True).stream(f"/api/tasks/{theirs.id}/events/", lambda t: "event: task" in t)
        assert status == 200 and f'"id":{theirs.id}' in text

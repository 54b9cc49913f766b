"""Cross-site request forgery and API tokens, against the live stack.

A session (a browser) must prove each unsafe request came from the site's own pages (the CSRF token, from the
site's origin); an API token, which a browser never sends by itself, needs no such proof. A token is accepted
only whole, unrevoked, unexpired, of an active user, in the Authorization header, and only by the API.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from long_time_task.models import ApiToken, LongTimeTask, TaskState
from tests.security.conftest import Person
from tests.security.stack import Response

SUBMIT = {"task_type": "test_echo", "params": {"n": 1}}


def tasks_of(person: Person) -> int:
    return LongTimeTask.objects.filter(owner=person.user).count()


def assert_json_error(response: Response, status: int, code: str) -> None:
    assert response.status == status, (response.status, response.text[:300])
    assert response.content_type.startswith("application/json"), response.content_type
    body = response.json()
    assert body["success"] is False and body["code"] == code, body


# ---------------------------------------------------------------- CSRF


@pytest.fixture
def browser(make_person: Callable[..., Person]) -> Person:
    """A user logged in through the login page: a session cookie and a CSRF cookie."""
    person = make_person("user")
    assert person.web.cookies.keys() >= {"sessionid", "csrftoken"}
    return person


def test_a_session_submit_without_the_csrf_token_is_refused(browser: Person, orm: None) -> None:
    response = browser.web.post_json("/api/tasks/", SUBMIT, headers={"Origin": browser.web.origin})
    assert_json_error(response, 403, "permission_denied")
    assert "CSRF" in response.json()["error"]
    wrong = browser.web.post_json("/api/tasks/", SUBMIT, headers={"X-CSRFToken": "x" * 32})
    assert_json_error(wrong, 403, "permission_denied")
    assert tasks_of(browser) == 0


def test_a_session_submit_with_the_csrf_token_from_the_sites_origin_is_accepted(browser: Person, orm: None) -> None:
    headers = {"X-CSRFToken": browser.web.csrf_token(), "Origin": browser.web.origin}
    response = browser.web.post_json("/api/tasks/", SUBMIT, headers=headers)
    assert response.status == 201, response.text
    assert tasks_of(browser) == 1


def test_a_session_submit_from_another_origin_is_refused_even_with_the_token(browser: Person, orm: None) -> None:
    for origin in ("http://evil.example", "null", f"https://127.0.0.1:{browser.stack.web_port}"):
        headers = {"X-CSRFToken": browser.web.csrf_token(), "Origin": origin}
        response = browser.web.post_json("/api/tasks/", SUBMIT, headers=headers)
        assert_json_error(response, 403, "permission_denied")
        assert "Access-Control-Allow-Origin" not in response.headers  # nor may another site read the answer
    assert tasks_of(browser) == 0


def test_dashboard_forms_need_the_csrf_token(
    browser: Person, make_task: Callable[..., LongTimeTask], orm: None
) -> None:
    task = make_task(browser.user, state=TaskState.PENDING)
    refused = [
        browser.web.post_form(f"/dashboard/tasks/{task.id}/cancel/", {}, csrf=False),
        browser.web.post_form("/dashboard/submit/", {"task_type": "test_echo", "params": "{}"}, csrf=False),
        browser.web.post_form("/dashboard/logout/", {}, csrf=False),
    ]
    for response in refused:
        assert response.status == 403, (response.status, response.text[:300])
        assert "CSRF" in response.text
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.PENDING
    assert tasks_of(browser) == 1
    assert browser.web.get("/dashboard/").status == 200  # still logged in

    cancelled = browser.web.post_form(f"/dashboard/tasks/{task.id}/cancel/", {})
    assert cancelled.status == 302 and LongTimeTask.objects.get(id=task.id).state == TaskState.CANCELLED
    logged_out = browser.web.post_form("/dashboard/logout/", {})
    assert logged_out.status == 302
    assert browser.web.get("/dashboard/").location.startswith("/dashboard/login/")


@pytest.mark.parametrize("login", ["/dashboard/login/", "/admin/login/"])
def test_login_forms_need_the_csrf_token(login: str, make_person: Callable[..., Person]) -> None:
    person = make_person("staff")
    client = person.stack.client(person.address)
    client.csrf_token()
    response = client.post_form(login, {"username": person.username, "password": person.password}, csrf=False)
    assert response.status == 403 and "sessionid" not in client.cookies


def test_logging_in_never_redirects_to_another_site(make_person: Callable[..., Person]) -> None:
    person = make_person("user")
    client = person.stack.client(person.address)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "javascript:alert(1)"):
        client.cookies.clear()
        fields = {"username": person.username, "password": person.password, "next": target}
        response = client.post_form("/dashboard/login/", fields)
        assert response.status == 302 and response.location == "/dashboard/", (target, response.location)


def test_token_clients_need_no_csrf_token(people: dict[str, Person]) -> None:
    assert people["owner"].api().post_json("/api/tasks/", SUBMIT).status == 201


# ---------------------------------------------------------------- tokens


@pytest.fixture
def tokens(people: dict[str, Person], make_person: Callable[..., Person], orm: None) -> dict[str, str]:
    """Tokens that must not work: revoked, expired, and one of a deactivated user."""
    owner = people["owner"].user
    revoked_row, revoked = ApiToken.issue(owner)
    ApiToken.objects.filter(id=revoked_row.id).update(revoked_at=timezone.now())
    _, expired = ApiToken.issue(owner, expires_at=timezone.now() - timedelta(seconds=1))
    inactive = make_person("user")
    type(inactive.user).objects.filter(id=inactive.user.id).update(is_active=False)
    return {"revoked": revoked, "expired": expired, "inactive user": inactive.token}


def authorization(client: Any, value: str | None) -> Any:
    client.headers.pop("Authorization", None)
    if value is not None:
        client.headers["Authorization"] = value
    return client


@pytest.mark.parametrize("server", ["web", "streams"])
def test_tokens_that_must_not_work_are_refused_with_a_json_401(
    server: str, people: dict[str, Person], tokens: dict[str, str]
) -> None:
    person = people["owner"]
    path = "/api/tasks/" if server == "web" else "/api/tasks/events/"
    client = person.stack.client(person.address, streams=server == "streams")
    valid = person.token
    cases = {
        "no header": (None, "not_authenticated"),
        "the keyword alone": ("Bearer", "authentication_failed"),
        "two words": (f"Bearer {valid} extra", "authentication_failed"),
        "an unknown token": ("Bearer ltt_nope", "authentication_failed"),
        "a token cut short": (f"Bearer {valid[:-1]}", "authentication_failed"),
        "a token one character longer": (f"Bearer {valid}x", "authentication_failed"),
        "a huge token": ("Bearer " + "x" * 6000, "authentication_failed"),
        "not ASCII": ("Bearer tök", "authentication_failed"),
        "revoked": (f"Bearer {tokens['revoked']}", "authentication_failed"),
        "expired": (f"Bearer {tokens['expired']}", "authentication_failed"),
        "an inactive user's": (f"Bearer {tokens['inactive user']}", "authentication_failed"),
        "another scheme (Basic)": ("Basic b3duZXI6cGFzc3dvcmQ=", "not_authenticated"),
        "another scheme (Digest)": (f'Digest username="owner", response="{valid}"', "not_authenticated"),
        "the token as the scheme": (valid, "not_authenticated"),
    }
    for case, (header, code) in cases.items():
        response = authorization(client, header).get(path, headers={"Accept": "application/json"})
        assert_json_error(response, 401, code)
        assert response.headers.get("WWW-Authenticate") == 'Bearer realm="api"', case
        assert valid not in response.text, case


def test_a_token_is_read_from_the_authorization_header_only(people: dict[str, Person]) -> None:
    person = people["owner"]
    client = person.stack.client(person.address)
    for path in (f"/api/tasks/?token={person.token}", f"/api/tasks/?access_token={person.token}"):
        assert_json_error(client.get(path), 401, "not_authenticated")
    client.cookies["sessionid"] = person.token
    assert_json_error(client.get("/api/tasks/"), 401, "not_authenticated")
    for keyword in ("Bearer", "bearer", "Token"):
        assert authorization(client, f"{keyword} {person.token}").get("/api/tasks/").status == 200, keyword


def test_a_token_opens_the_api_only_not_the_dashboard_or_the_admin(people: dict[str, Person]) -> None:
    staff = people["staff"]
    client = staff.api()
    assert client.get("/api/tasks/").status == 200
    assert client.get("/dashboard/").location.startswith("/dashboard/login/")
    assert client.get("/admin/").location.startswith("/admin/login/")

"""The demo's security headers: a strict Content-Security-Policy (Django's own on 6.x, long_time_task's on 5.2,
from one setting), a Permissions-Policy that denies devices, and no cache keeping private answers."""

from __future__ import annotations

import re
from typing import Any

import django
import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from long_time_task.models import LongTimeTask, TaskState
from long_time_task.security import build_policy
from tests.conftest import token_client

pytestmark = pytest.mark.django_db

STRICT = {
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
    "form-action 'self'",
}


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")


@pytest.fixture
def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def directives(response: Any) -> set[str]:
    return {part.strip() for part in response["Content-Security-Policy"].split(";")}


def test_pages_and_answers_carry_a_strict_content_security_policy(browser: Client, superuser: Any) -> None:
    admin = Client()
    admin.force_login(superuser)
    for client, url in [
        (browser, "/dashboard/"),
        (browser, "/dashboard/submit/"),
        (browser, "/api/tasks/list/"),
        (browser, "/api/docs/"),
        (Client(), "/dashboard/login/"),
        (admin, "/admin/"),
        (admin, "/admin/long_time_task/longtimetask/"),
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        policy = directives(response)
        assert STRICT <= policy, (url, policy)
        assert "unsafe-inline" not in response["Content-Security-Policy"]
        assert "unsafe-eval" not in response["Content-Security-Policy"]


def test_the_policy_comes_from_django_on_6_and_from_long_time_task_on_5_2() -> None:
    expected = (
        "django.middleware.csp.ContentSecurityPolicyMiddleware"
        if django.VERSION >= (6, 0)
        else "long_time_task.security.ContentSecurityPolicyMiddleware"
    )
    assert expected in settings.MIDDLEWARE


def test_long_time_task_renders_the_policy_as_django_does() -> None:
    config: dict[str, Any] = {
        **settings.SECURE_CSP,
        "upgrade-insecure-requests": True,
        "report-uri": "/csp/",
        "img-src": {"'self'", "data:"},
        "media-src": None,
        "frame-src": [],
    }
    ours = build_policy(config)
    assert "upgrade-insecure-requests; report-uri /csp/" in ours and "img-src 'self' data:" in ours
    assert "media-src" not in ours and "frame-src" not in ours
    if django.VERSION >= (6, 0):  # the same header as Django's own, for the same setting
        from django.utils.csp import build_policy as djangos

        assert ours == djangos(config)
        assert build_policy(settings.SECURE_CSP) == djangos(settings.SECURE_CSP)


def test_a_response_with_its_own_policy_keeps_it(rf: Any) -> None:
    from django.http import HttpResponse

    from long_time_task.security import ContentSecurityPolicyMiddleware

    def own(request: Any) -> HttpResponse:
        response = HttpResponse("x")
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    kept: Any = ContentSecurityPolicyMiddleware(own)(rf.get("/"))
    assert kept["Content-Security-Policy"] == "default-src 'none'"
    plain: Any = ContentSecurityPolicyMiddleware(lambda request: HttpResponse("x"))(rf.get("/"))
    assert plain["Content-Security-Policy"] == build_policy(settings.SECURE_CSP)


def test_permissions_policy_denies_devices_to_every_page(browser: Client) -> None:
    for url in ("/dashboard/", "/api/tasks/list/", "/admin/login/"):
        policy = browser.get(url)["Permissions-Policy"]
        for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
            assert f"{feature}=()" in policy, (url, policy)


def test_the_docs_page_runs_no_inline_script_or_style(browser: Client) -> None:
    page = browser.get("/api/docs/").content.decode()
    assert "<style" not in page
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts and all("src=" in attrs for attrs in scripts), scripts
    start = re.search(r'<script src="([^"]*script=[^"]*)"', page)
    assert start is not None
    script = browser.get(start.group(1).replace("&amp;", "&"))
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_long_time_task_admin_pages_have_no_inline_style(superuser: Any, user: Any) -> None:
    admin = Client()
    admin.force_login(superuser)
    task = LongTimeTask.objects.create(task_type="test_echo", owner=user, state=TaskState.FAILED, progress=40)
    for url in (
        "/admin/long_time_task/longtimetask/",
        f"/admin/long_time_task/longtimetask/{task.id}/change/",
        f"/admin/long_time_task/longtimetask/{task.id}/retry/",
    ):
        html = admin.get(url).content.decode()
        assert "<style" not in html and 'style="' not in html, url
        assert "/static/long_time_task/admin.css" in html, url


# ---------------------------------------------------------------- no cache keeps private answers


def private(response: Any) -> bool:
    directives = {d.strip() for d in response.get("Cache-Control", "").split(",")}
    return {"no-store", "private"} <= directives


def test_every_api_answer_is_no_store_and_private(user: Any, other_user: Any) -> None:
    api = token_client(user)
    mine = LongTimeTask.objects.create(task_type="test_echo", owner=user)
    theirs = LongTimeTask.objects.create(task_type="test_echo", owner=other_user)
    answers = {
        "list": api.get("/api/tasks/list/"),
        "list (seed path)": api.get("/api/tasks/"),
        "detail": api.get(f"/api/tasks/{mine.id}/"),
        "another's task (404)": api.get(f"/api/tasks/{theirs.id}/"),
        "submit": api.post("/api/tasks/", {"task_type": "test_echo", "params": {}}, format="json"),
        "invalid submit (400)": api.post("/api/tasks/", {"task_type": "nope"}, format="json"),
        "cancel": api.post(f"/api/tasks/{mine.id}/cancel/"),
        "task types": api.get("/api/task-types/"),
        "no such endpoint (404)": api.get("/api/nothing/here/"),
        "anonymous (401)": APIClient().get("/api/tasks/list/"),
        "bad page (400)": api.get("/api/tasks/list/?page=abc"),
    }
    for name, response in answers.items():
        assert response["Content-Type"].startswith("application/json"), name
        assert private(response), (name, response.get("Cache-Control"))


def test_dashboard_task_pages_are_no_store_and_private(browser: Client, user: Any) -> None:
    task = LongTimeTask.objects.create(task_type="test_echo", owner=user)
    for url in ("/dashboard/", f"/dashboard/tasks/{task.id}/", "/dashboard/overview/", "/dashboard/submit/"):
        response = browser.get(url)
        assert response.status_code == 200 and private(response), (url, response.get("Cache-Control"))

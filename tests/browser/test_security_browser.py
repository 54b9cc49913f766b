"""Every page works under the site's Content-Security-Policy: the dashboard (with its live updates), the admin
and the API's Swagger UI, in a real browser that reports each violation (``securitypolicyviolation`` events
and the console's "Refused to ..." lines), and no request of theirs fails (the favicon included)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from tests.browser.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

REPORT_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " in " + e.sourceFile);
});
"""


class Watched:
    """A page whose CSP violations, console errors, script errors and failed requests are all kept."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        self.failed: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console.append(f"script error: {error}"))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.console.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")

    def assert_clean(self, where: str) -> None:
        violations = self.page.evaluate("window.__violations")
        assert violations == [], f"{where}: CSP violations {violations}"
        assert self.console == [], f"{where}: console {self.console}"
        assert self.failed == [], f"{where}: failed requests {self.failed}"
        policy = self.page.evaluate("fetch(location.href).then(r => r.headers.get('content-security-policy'))")
        assert policy and "script-src 'self'" in policy, f"{where}: no policy"


@pytest.fixture
def watched(new_page: Callable[..., Any]) -> Iterator[Callable[..., Watched]]:
    def open_page(**options: Any) -> Watched:
        page = new_page(**options)
        page.context.add_init_script(REPORT_VIOLATIONS)
        return Watched(page)

    yield open_page


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="alice-password")


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")


def test_the_dashboard_breaks_no_rule_of_the_policy(
    watched: Callable[..., Watched], alice: Any, start_dashboard_worker: Any
) -> None:
    w = watched()
    page = w.page
    page.goto("/dashboard/login/")
    w.assert_clean("login")
    login(page, "alice", "alice-password")
    page.get_by_role("link", name="Submit", exact=True).click()
    page.get_by_label("Task type").select_option("test_progress")  # the script submits the picker
    page.get_by_label("Steps").fill("6")
    page.get_by_label("Delay").fill("0.3")
    w.assert_clean("submit")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/dashboard/tasks/\d+/$"))
    task = LongTimeTask.objects.get(owner=alice)
    start_dashboard_worker()
    badge = page.locator('[data-live] [data-field="state"]').first
    expect(badge).to_have_text("Running", timeout=30_000)
    expect(page.locator("[data-live-status]")).to_contain_text("Live")  # the event stream is open
    expect(badge).to_have_text("Finished", timeout=30_000)
    expect(page.locator("#task-result pre")).to_contain_text('"steps": 6')  # swapped in by the script
    w.assert_clean("task detail, live")

    running = services.submit("test_progress", {"steps": 40, "delay": 0.2}, owner=alice).task
    page.goto("/dashboard/")
    row = page.locator(f'tr[data-task-id="{running.id}"] [data-field="state"]')
    expect(row).to_have_text("Running", timeout=30_000)  # updated live in the list
    expect(page.locator(f'tr[data-task-id="{task.id}"]')).to_be_visible()
    w.assert_clean("task list, live")
    page.goto("/dashboard/overview/")
    w.assert_clean("overview")
    services.cancel_task(running.id, user=alice)


def test_the_admin_breaks_no_rule_of_the_policy(watched: Callable[..., Watched], admin_user: Any, alice: Any) -> None:
    task = LongTimeTask.objects.create(task_type="test_echo", owner=alice, state=TaskState.RUNNING, progress=30)
    failed = LongTimeTask.objects.create(task_type="test_fail", owner=alice, state=TaskState.FAILED)
    w = watched()
    page = w.page
    page.goto("/admin/")
    w.assert_clean("admin login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Long-running tasks").first).to_be_visible()
    w.assert_clean("admin index")
    page.goto("/admin/long_time_task/longtimetask/")
    expect(page.locator(f'input[name="_selected_action"][value="{task.id}"]')).to_be_visible()
    page.locator(f'input[name="_selected_action"][value="{task.id}"]').check()  # the actions script
    expect(page.locator(".action-counter")).to_contain_text("1 of 2 selected")
    w.assert_clean("admin task list")
    page.goto(f"/admin/long_time_task/longtimetask/{task.id}/change/")
    expect(page.get_by_role("button", name="Cancel task")).to_be_visible()
    w.assert_clean("admin task page")
    page.goto(f"/admin/long_time_task/longtimetask/{failed.id}/retry/")
    expect(page.get_by_label("Parameters (JSON)")).to_be_visible()
    w.assert_clean("admin retry page")


def test_the_api_docs_break_no_rule_of_the_policy(watched: Callable[..., Watched], alice: Any) -> None:
    w = watched()
    page = w.page
    login(page, "alice", "alice-password")
    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("django-celery-task-manage API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()  # the schema was fetched and drawn
    w.assert_clean("API docs")

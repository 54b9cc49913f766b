"""The dashboard in a real browser (Debian's chromium, through Playwright), against a live web server, a real
Celery worker, PostgreSQL and Redis."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from tests.browser.conftest import login, screenshot
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# Every value the page's progress bar shows, and a flag that a reload would wipe.
WATCH = """() => {
  window.__noReload = true;
  window.__progress = [];
  setInterval(() => {
    const bar = document.querySelector('[data-live] [data-field="progress"] progress');
    if (bar && bar.hasAttribute('value')) window.__progress.push(bar.value);
  }, 50);
}"""


def state_badge(page: Any) -> Any:
    return page.locator('[data-live] [data-field="state"]').first


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="alice-password")


def test_submit_through_the_generated_form_and_watch_it_finish_live(
    new_page: Any, alice: Any, start_dashboard_worker: Any
) -> None:
    page = new_page()
    login(page, "alice", "alice-password")
    page.get_by_role("link", name="Submit", exact=True).click()
    page.get_by_label("Task type").select_option("test_progress")  # the form appears (no button with JS)
    steps = page.get_by_label("Steps")
    expect(steps).to_have_value("5")  # the schema's default
    expect(steps).to_have_attribute("min", "1")
    steps.fill("0")
    page.get_by_role("button", name="Submit", exact=True).click()
    assert page.evaluate("document.querySelector('#id_steps').validity.valid") is False  # the browser refused
    assert not LongTimeTask.objects.exists()
    steps.fill("8")
    page.get_by_label("Delay").fill("0.4")
    screenshot(page, "submit")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/dashboard/tasks/\d+/$"))
    task = LongTimeTask.objects.get(owner=alice)
    assert task.task_params == {"steps": 8, "delay": 0.4}

    # No worker consumes the queue yet: the task waits.
    expect(state_badge(page)).to_have_text("Pending")
    page.evaluate(WATCH)
    start_dashboard_worker()
    expect(state_badge(page)).to_have_text("Running", timeout=30_000)
    expect(page.locator("[data-live-status]")).to_contain_text("Live")
    expect(state_badge(page)).to_have_text("Finished", timeout=30_000)
    expect(page.locator("#task-result pre")).to_contain_text('"steps": 8')
    expect(page.locator("[data-live-status]")).to_have_text("")  # the stream has ended: no longer "Live"
    assert page.evaluate("window.__noReload") is True  # all of it without a reload
    moving = sorted({v for v in page.evaluate("window.__progress") if 0 < v < 100})
    assert len(moving) >= 2, f"the progress bar did not move: {moving}"
    assert page.evaluate("document.querySelector('[data-live] [data-field=\"progress\"] progress').value") == 100
    screenshot(page, "detail")


def test_cancel_a_running_task(new_page: Any, alice: Any, start_dashboard_worker: Any) -> None:
    start_dashboard_worker()
    task = services.submit("test_progress", {"steps": 100, "delay": 0.3}, owner=alice).task
    wait_for(
        lambda: LongTimeTask.objects.filter(id=task.id, state=TaskState.RUNNING).exists(),
        timeout=30,
        what="the task to run",
    )
    page = new_page()
    login(page, "alice", "alice-password")
    page.goto(f"/dashboard/tasks/{task.id}/")
    expect(state_badge(page)).to_have_text("Running")
    page.get_by_role("button", name="Cancel task").click()
    page.wait_for_url(f"**/dashboard/tasks/{task.id}/")
    page.evaluate(WATCH)
    expect(state_badge(page)).to_have_text("Cancelled", timeout=15_000)
    assert page.evaluate("window.__noReload") is True
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    # "It has been asked to stop" is no longer true (shown only if the page came before the stop).
    expect(page.get_by_text("asked to stop")).to_have_count(0)


def test_the_asked_to_stop_note_goes_when_the_task_ends(new_page: Any, alice: Any) -> None:
    # A RUNNING row that no worker runs: the note stays until the test ends the task, deterministically.
    task = LongTimeTask.objects.create(task_type="test_progress", owner=alice, state=TaskState.RUNNING, attempts=1)
    page = new_page()
    login(page, "alice", "alice-password")
    page.goto(f"/dashboard/tasks/{task.id}/")
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator(".messages")).to_contain_text("asked to stop")
    expect(page.locator("[data-live-status]")).to_contain_text("Live")
    page.evaluate(WATCH)
    LongTimeTask.objects.filter(id=task.id).update(state=TaskState.CANCELLED, finish_at=timezone.now())
    expect(state_badge(page)).to_have_text("Cancelled", timeout=15_000)
    expect(page.locator(".messages")).to_have_count(0)  # no longer true: gone, without a reload
    assert page.evaluate("window.__noReload") is True


def test_retry_a_failed_task(new_page: Any, alice: Any, start_dashboard_worker: Any) -> None:
    start_dashboard_worker()
    task = services.submit("test_fail", {"message": "it broke"}, owner=alice).task
    wait_for(
        lambda: LongTimeTask.objects.filter(id=task.id, state=TaskState.FAILED).exists(),
        timeout=30,
        what="the task to fail",
    )
    page = new_page()
    login(page, "alice", "alice-password")
    page.goto(f"/dashboard/tasks/{task.id}/")
    expect(page.locator("#task-error")).to_contain_text("handler_error")
    expect(page.locator("#task-error")).not_to_contain_text("Traceback")  # staff only
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(rf"/dashboard/tasks/(?!{task.id}/)\d+/$"))
    new = LongTimeTask.objects.get(retry_of=task)
    assert page.url.endswith(f"/dashboard/tasks/{new.id}/")
    expect(page.get_by_role("link", name=f"#{task.id}")).to_be_visible()
    expect(state_badge(page)).to_have_text("Failed", timeout=30_000)


def test_another_user_cannot_see_the_task(new_page: Any, alice: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_user(username="bob", password="bob-password")
    task = services.submit("test_echo", {}, owner=alice).task
    page = new_page()
    login(page, "bob", "bob-password")
    assert page.goto(f"/dashboard/tasks/{task.id}/").status == 404
    events = page.request.get(f"/api/tasks/{task.id}/events/", headers={"accept": "text/event-stream"})
    assert events.status == 404
    page.goto("/dashboard/")
    expect(page.locator(f'[data-task-id="{task.id}"]')).to_have_count(0)


def test_list_filters_paging_and_phone_layout(new_page: Any, alice: Any, django_user_model: Any) -> None:
    now = timezone.now()
    finished = [
        LongTimeTask.objects.create(
            task_type="test_echo",
            owner=alice,
            state=TaskState.FINISHED,
            start_at=now,
            finish_at=now,
            progress=100,
            result={"ok": True},
        )
        for _ in range(3)
    ]
    failed = LongTimeTask.objects.create(
        task_type="test_fail", owner=alice, state=TaskState.FAILED, error_message="boom", finish_at=now
    )
    LongTimeTask.objects.create(task_type="test_progress", owner=alice, progress=40, progress_message="step 2 of 5")
    page = new_page()
    login(page, "alice", "alice-password")
    expect(page.locator("tbody tr")).to_have_count(5)
    screenshot(page, "list")

    page.get_by_label("State").select_option("FINISHED")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    assert "state=FINISHED" in page.url

    page.get_by_label("State").select_option("")
    page.get_by_label("Type").select_option("test_fail")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f'[data-task-id="{failed.id}"]')).to_be_visible()

    page.goto("/dashboard/")
    page.get_by_label("Task id").fill(f"#{finished[1].id}")
    page.get_by_label("Task id").press("Enter")
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("tbody tr")).to_have_count(5)

    # Keyboard: the first Tab reaches the skip link, and it moves the focus to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    # A phone-width screen: one card per task, nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_works_without_javascript_in_chinese(new_page: Any, alice: Any) -> None:
    page = new_page(java_script_enabled=False, locale="zh-CN")
    page.goto("/dashboard/")
    page.get_by_label("用户名").fill("alice")
    page.get_by_label("密码").fill("alice-password")
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", name="任务")).to_be_visible()
    page.get_by_role("link", name="提交", exact=True).click()
    page.get_by_label("任务类型").select_option("test_echo")
    page.get_by_role("button", name="选择").click()  # without JavaScript, a button shows the form
    page.get_by_role("button", name="提交", exact=True).click()
    expect(page.get_by_text(re.compile(r"任务 \d+ 已提交"))).to_be_visible()
    expect(state_badge(page)).to_have_text(re.compile("等待执行|正在执行|已完成"))


def test_required_fields_are_red_only_once_touched(new_page: Any, alice: Any) -> None:
    page = new_page()
    login(page, "alice", "alice-password")
    page.goto("/dashboard/submit/?task_type=file_processing")
    field = page.get_by_label("File path")
    expect(field).to_have_attribute("required", "")
    red = "rgb(180, 35, 24)"  # --danger
    assert field.evaluate("el => getComputedStyle(el).borderColor") != red  # nothing typed yet: not an error
    field.fill("x")
    field.fill("")
    field.blur()
    expect(field).to_have_css("border-color", red)  # touched and left empty


def test_times_read_the_same_in_the_admin_the_dashboard_and_live(
    new_page: Any, django_user_model: Any, start_dashboard_worker: Any
) -> None:
    import zoneinfo
    from datetime import UTC, datetime
    from urllib.parse import unquote

    from long_time_task.timezones import display_time

    admin = django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")
    instant = datetime(2025, 1, 5, 15, 33, 7, tzinfo=UTC)
    done = LongTimeTask.objects.create(task_type="test_echo", owner=admin, state=TaskState.FINISHED)
    LongTimeTask.objects.filter(id=done.id).update(create_at=instant, start_at=instant, finish_at=instant)
    shown = "2025-01-05 21:03:07 UTC+05:30"
    page = new_page(timezone_id="Asia/Kolkata")

    # The admin first: the site does not know the viewer's zone yet and draws TIME_ZONE; the script redraws
    # the times in the browser's zone, with the server's format, and tells the site the zone.
    page.goto(f"/admin/login/?next=/admin/long_time_task/longtimetask/{done.id}/change/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("time[data-local]").first).to_have_text(shown)
    assert set(page.locator("time[data-local]").all_text_contents()) == {shown}
    told = {c["name"]: c["value"] for c in page.context.cookies()}.get("ltt_tz", "")
    assert unquote(told) in {"Asia/Kolkata", "Asia/Calcutta"}  # (ICU's name for it)
    # Now the server draws the same text itself, on the dashboard and in the admin.
    for url in (f"/dashboard/tasks/{done.id}/", f"/admin/long_time_task/longtimetask/{done.id}/change/"):
        assert f"data-local>{shown}</time>" in page.request.get(url).text(), url
    page.goto(f"/dashboard/tasks/{done.id}/")
    assert set(page.locator("time[data-local]").all_text_contents()) == {shown}

    # A time the script writes from a live update reads the same as the server's.
    task = services.submit("test_progress", {"steps": 20, "delay": 0.2}, owner=admin).task
    page.goto("/dashboard/")
    start_dashboard_worker()
    started = page.locator(f'tr[data-task-id="{task.id}"] [data-field="start_at"] time')
    expect(started).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+05:30$"), timeout=30_000)
    task.refresh_from_db()
    with timezone.override(zoneinfo.ZoneInfo("Asia/Kolkata")):
        assert started.text_content() == display_time(task.start_at)
    services.cancel_task(task.id, user=admin)

"""The dashboard's schedule pages in a real browser (Debian's chromium, through Playwright), against a live web
server, a real Celery worker, PostgreSQL and Redis: the live preview of the next runs in the schedule's zone,
creating, pausing, resuming, running now and deleting, without the script, and in Chinese."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from long_time_task.models import LongTimeTask, Schedule
from long_time_task.schedules import service
from long_time_task.timezones import display_time
from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

REPORT_PROBLEMS = """
window.__problems = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__problems.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline"));
});
"""


def watch(page: Any) -> list[str]:
    """Everything that went wrong on the page: policy violations (read at the end), script errors, console
    errors, failed requests."""
    problems: list[str] = []
    page.context.add_init_script(REPORT_PROBLEMS)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return problems


def assert_clean(page: Any, problems: list[str]) -> None:
    assert problems + page.evaluate("window.__problems || []") == []


def daily_at(hour: int, zone: str, count: int = 5) -> list[str]:
    """The next ``count`` runs of ``0 <hour> * * *`` in ``zone``, as the pages show them."""
    now = timezone.now().astimezone(ZoneInfo(zone))
    first = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if first <= now:
        first += timedelta(days=1)
    with timezone.override(ZoneInfo(zone)):
        return [display_time(first + timedelta(days=i)) for i in range(count)]


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="alice-password")


def preview_times(page: Any) -> Any:
    return page.locator("[data-preview-runs] li")


def test_create_a_schedule_watching_its_next_runs_in_its_zone_as_it_is_typed(new_page: Any, alice: Any) -> None:
    page = new_page(timezone_id="Europe/Paris")  # the viewer's zone: not the schedule's
    problems = watch(page)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/schedules/preview/" in r.url else None)
    login(page, "alice", "alice-password")
    page.get_by_role("link", name="Schedules", exact=True).click()
    expect(page.get_by_role("heading", name="Schedules")).to_be_visible()
    page.get_by_role("link", name="New schedule").click()
    page.get_by_label("Task type").select_option("test_progress")  # the form appears (no button with JS)
    page.get_by_label("Name").fill("nightly progress")
    expect(page.get_by_label("Steps")).to_have_value("5")  # the submit page's generated fields, reused
    page.get_by_label("Steps").fill("3")

    cron = page.get_by_role("textbox", name="Cron expression")
    zone = page.get_by_label("Time zone")
    zone.fill("Asia/Shanghai")
    asked.clear()
    cron.press_sequentially("0 3 * * *", delay=30)
    expect(preview_times(page)).to_have_text(daily_at(3, "Asia/Shanghai"))  # 5 runs, on Shanghai's clock
    expect(page.locator("[data-preview-zone]")).to_have_text("Asia/Shanghai")
    assert 1 <= len(asked) <= 3, asked  # asked once typing pauses, not at every keystroke

    # Another zone: the same wall-clock times there.
    zone.fill("America/New_York")
    expect(preview_times(page)).to_have_text(daily_at(3, "America/New_York"))

    # A bad expression: its error next to the field, no times; fixed, they come back.
    cron.fill("61 * * * *")
    error = page.locator("#id_cron_error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Invalid cron expression")
    expect(cron).to_have_attribute("aria-invalid", "true")
    expect(preview_times(page)).to_have_count(0)
    cron.fill("0 3 * * *")
    expect(error).to_be_hidden()
    expect(preview_times(page)).to_have_count(5)

    # An interval instead: only its field shows, checked as it is typed.
    page.get_by_role("radio", name="Every N seconds").check()
    expect(cron).to_be_hidden()
    every = page.get_by_role("spinbutton", name="Every (seconds)")
    every.fill("30")
    expect(page.locator("#id_interval_seconds_error")).to_contain_text("from 60 to")
    every.fill("600")
    expect(preview_times(page)).to_have_count(5)
    shown = [datetime.strptime(t[:19], "%Y-%m-%d %H:%M:%S") for t in preview_times(page).all_text_contents()]
    assert {b - a for a, b in zip(shown, shown[1:], strict=False)} == {timedelta(minutes=10)}
    page.get_by_role("radio", name="Cron expression").check()
    expect(cron).to_be_visible()
    expect(preview_times(page)).to_have_text(daily_at(3, "America/New_York"))
    screenshot(page, "schedule-new")

    page.get_by_role("button", name="Create schedule").click()
    page.wait_for_url(re.compile(r"/dashboard/schedules/\d+/$"))
    schedule = Schedule.objects.get(owner=alice)
    assert (schedule.name, schedule.cron, schedule.interval_seconds, schedule.timezone, schedule.params) == (
        "nightly progress",
        "0 3 * * *",
        None,
        "America/New_York",
        {"steps": 3, "delay": 0.5},
    )
    expect(page.get_by_text("Schedule “nightly progress” was created.")).to_be_visible()
    expect(page.locator("#next-runs li")).to_have_text(daily_at(3, "America/New_York"))  # what the preview said
    assert_clean(page, problems)


def test_pause_resume_and_run_now(new_page: Any, alice: Any, start_dashboard_worker: Any) -> None:
    schedule = service.create_schedule(
        user=alice,
        name="often",
        task_type="test_progress",
        params={"steps": 2, "delay": 0.2},
        cron="0 3 * * *",
        timezone="Asia/Shanghai",
    ).schedule
    page = new_page()
    problems = watch(page)
    login(page, "alice", "alice-password")
    page.goto("/dashboard/schedules/")
    row = page.locator(f'tr[data-schedule-id="{schedule.id}"]')
    expect(row.locator('[data-field="schedule-state"]')).to_have_text("Enabled")
    row.get_by_role("button", name="Pause often").click()
    expect(page.get_by_text("Schedule “often” was paused.")).to_be_visible()
    expect(row.locator('[data-field="schedule-state"]')).to_have_text("Paused")
    expect(row.locator('[data-field="next-run"]')).to_have_text("–")
    assert not Schedule.objects.get(id=schedule.id).enabled
    screenshot(page, "schedules")

    page.get_by_role("link", name="often").click()
    expect(page.get_by_role("heading", name="Next 5 runs, if resumed now")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_text(re.compile(r"Schedule “often” was resumed; next run: \d{4}-"))).to_be_visible()
    expect(page.locator('[data-field="schedule-state"]')).to_have_text("Enabled")
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    assert Schedule.objects.get(id=schedule.id).enabled

    expect(page.get_by_text("No run yet.")).to_be_visible()
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text(re.compile(r"Schedule “often” started task \d+\."))).to_be_visible()
    task = LongTimeTask.objects.get(schedule=schedule)
    run = page.locator(f'#last-runs tr[data-task-id="{task.id}"]')
    expect(run).to_contain_text("run now")  # a run outside the due times
    expect(run.get_by_role("link", name=f"#{task.id}")).to_have_attribute("href", f"/dashboard/tasks/{task.id}/")
    page.evaluate("window.__noReload = true")
    start_dashboard_worker()
    expect(run.locator('[data-field="state"]')).to_have_text("Finished", timeout=30_000)  # live, as in the list
    assert page.evaluate("window.__noReload") is True
    screenshot(page, "schedule-detail")
    assert_clean(page, problems)


def test_delete_asks_first(new_page: Any, alice: Any) -> None:
    schedule = service.create_schedule(
        user=alice, name="doomed", task_type="test_echo", interval_seconds=3600, timezone="UTC"
    ).schedule
    page = new_page()
    login(page, "alice", "alice-password")
    page.goto("/dashboard/schedules/")
    # A phone-width screen: one card per schedule, nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(page, "schedules-phone")
    asked: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, accept=False))
    page.get_by_role("button", name="Delete doomed").click()
    expect(page.locator(f'tr[data-schedule-id="{schedule.id}"]')).to_be_visible()
    assert asked == ["Delete the schedule “doomed”? Its past runs are kept."]
    assert Schedule.objects.filter(id=schedule.id).exists()
    page.once("dialog", lambda d: answer(d, accept=True))
    page.get_by_role("button", name="Delete doomed").click()
    expect(page.get_by_text("Schedule “doomed” was deleted; its past runs are kept.")).to_be_visible()
    expect(page.locator(f'tr[data-schedule-id="{schedule.id}"]')).to_have_count(0)
    assert not Schedule.objects.filter(id=schedule.id).exists()


def test_works_without_javascript_through_the_preview_button(new_page: Any, alice: Any) -> None:
    page = new_page(java_script_enabled=False)
    login(page, "alice", "alice-password")
    page.goto("/dashboard/schedules/new/")
    page.get_by_label("Task type").select_option("test_echo")
    page.get_by_role("button", name="Choose").click()
    page.get_by_label("Name").fill("nightly echo")
    page.get_by_role("textbox", name="Cron expression").fill("0 3 * * *")
    page.get_by_label("Time zone").fill("Asia/Shanghai")
    page.get_by_role("button", name="Preview").click()
    expect(preview_times(page)).to_have_text(daily_at(3, "Asia/Shanghai"))
    assert not Schedule.objects.exists()
    page.get_by_role("textbox", name="Cron expression").fill("0 3 * *")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#id_cron_error")).to_contain_text("A cron expression has 5 fields")
    page.get_by_role("textbox", name="Cron expression").fill("0 3 * * *")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("heading", name="Schedule: nightly echo")).to_be_visible()
    schedule = Schedule.objects.get()
    page.get_by_role("button", name="Delete").click()  # no dialog without the script: a page asks
    expect(page.get_by_role("heading", name="Delete the schedule?")).to_be_visible()
    assert Schedule.objects.filter(id=schedule.id).exists()
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Schedule “nightly echo” was deleted; its past runs are kept.")).to_be_visible()
    assert not Schedule.objects.exists()


def test_the_schedule_pages_in_chinese(new_page: Any, alice: Any) -> None:
    page = new_page(locale="zh-CN", timezone_id="Asia/Shanghai")
    problems = watch(page)
    page.goto("/dashboard/")
    page.get_by_label("用户名").fill("alice")
    page.get_by_label("密码").fill("alice-password")
    page.get_by_role("button", name="登录").click()
    page.get_by_role("link", name="计划", exact=True).click()
    expect(page.get_by_role("heading", name="计划")).to_be_visible()
    expect(page.get_by_text("还没有计划。")).to_be_visible()
    page.get_by_role("link", name="新建计划").click()
    page.get_by_label("任务类型").select_option("test_echo")
    page.get_by_label("名称").fill("每日回声")
    expect(page.get_by_label("时区")).to_have_value("Asia/Shanghai")  # the viewer's zone, by default
    page.get_by_role("textbox", name="cron 表达式").fill("0 3 * * *")
    expect(page.get_by_role("heading", name="接下来 5 次运行")).to_be_visible()
    expect(preview_times(page)).to_have_text(daily_at(3, "Asia/Shanghai"))
    page.get_by_role("button", name="创建计划").click()
    expect(page.get_by_role("heading", name="计划：每日回声")).to_be_visible()
    expect(page.get_by_text("计划“每日回声”已创建。")).to_be_visible()
    page.get_by_role("button", name="暂停").click()
    expect(page.get_by_text("计划“每日回声”已暂停。")).to_be_visible()
    expect(page.locator('[data-field="schedule-state"]')).to_have_text("已暂停")
    expect(page.get_by_role("heading", name="最近的运行")).to_be_visible()
    assert_clean(page, problems)

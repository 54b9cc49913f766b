"""One instant, one rule: the dashboard and the admin show it in the viewer's zone (TIME_ZONE until the
browser has told it), as ``YYYY-MM-DD HH:MM:SS UTC±HH:MM``; the API answers ISO 8601 with the offset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from long_time_task.models import LongTimeTask, TaskAuditEvent, TaskState
from tests.conftest import token_client

pytestmark = pytest.mark.django_db

INSTANT = datetime(2025, 1, 5, 15, 33, 7, tzinfo=UTC)


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")


@pytest.fixture
def task(superuser: Any) -> LongTimeTask:
    task = LongTimeTask.objects.create(task_type="test_echo", owner=superuser, state=TaskState.FINISHED)
    LongTimeTask.objects.filter(id=task.id).update(create_at=INSTANT, start_at=INSTANT, finish_at=INSTANT)
    TaskAuditEvent.objects.create(task=task, action="rerun", actor_name="admin", at=INSTANT)
    return task


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("America/New_York", "2025-01-05 10:33:07 UTC-05:00"),
        ("America%2FNew_York", "2025-01-05 10:33:07 UTC-05:00"),  # as the script writes it
        ("Asia/Kolkata", "2025-01-05 21:03:07 UTC+05:30"),
        ("Europe/London", "2025-01-05 15:33:07 UTC"),
        (None, "2025-01-05 23:33:07 UTC+08:00"),  # not told yet: TIME_ZONE (the demo's Asia/Shanghai)
        ("Not/AZone", "2025-01-05 23:33:07 UTC+08:00"),
    ],
)
def test_one_instant_reads_the_same_on_the_dashboard_and_in_the_admin(
    client: Client, superuser: Any, task: LongTimeTask, zone: str | None, shown: str
) -> None:
    client.force_login(superuser)
    if zone:
        client.cookies["ltt_tz"] = zone
    pages = {
        "dashboard list": "/dashboard/",
        "dashboard task": f"/dashboard/tasks/{task.id}/",
        "admin list": "/admin/long_time_task/longtimetask/",
        "admin task": f"/admin/long_time_task/longtimetask/{task.id}/change/",
    }
    for name, url in pages.items():
        html = client.get(url).content.decode()
        assert f"data-local>{shown}</time>" in html, name
        assert "a.m." not in html and "p.m." not in html, name  # no 12-hour clock anywhere
    admin_task = client.get(pages["admin task"]).content.decode()
    assert admin_task.count(f">{shown}</time>") >= 4  # created, started, finished, and the audit trail
    # The admin's pages load the script that tells the site the viewer's zone.
    assert "/static/long_time_task/timezone.js" in client.get(pages["admin list"]).content.decode()


def test_the_api_answers_iso_8601_with_the_offset_of_the_same_zone(
    client: Client, superuser: Any, task: LongTimeTask
) -> None:
    body = token_client(superuser).get(f"/api/tasks/{task.id}/").json()["task"]
    assert body["finish_at"] == "2025-01-05T23:33:07+08:00"  # a program has no browser zone: TIME_ZONE
    assert datetime.fromisoformat(body["finish_at"]) == INSTANT
    client.force_login(superuser)
    client.cookies["ltt_tz"] = "America/New_York"  # a browser that has told its zone
    body = client.get(f"/api/tasks/{task.id}/").json()["task"]
    assert body["finish_at"] == "2025-01-05T10:33:07-05:00"
    assert datetime.fromisoformat(body["finish_at"]) == INSTANT


def test_a_naive_run_after_is_read_in_the_servers_zone_whatever_the_browser_said() -> None:
    """The schema says "without an offset, the server's time zone": the viewer's zone (which the middleware
    activates from a browser's cookie) changes how pages show times, not what a submitted time means."""
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    from long_time_task.api.serializers import SubmitSerializer

    with timezone.override("America/New_York"):
        data = SubmitSerializer(data={"task_type": "test_echo", "run_after": "2030-01-01T09:00:00"})
        data.is_valid()
    assert data.validated_data["run_after"] == datetime(2030, 1, 1, 9, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_a_time_past_the_calendars_end_in_the_viewers_zone_is_shown_in_utc(
    client: Client, superuser: Any, task: LongTimeTask
) -> None:
    """9999-12-31 20:00 UTC is already year 10000 in Shanghai: the admin's token list showed a 500."""
    from long_time_task.models import ApiToken

    token, _ = ApiToken.issue(superuser)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=datetime(9999, 12, 31, 20, 0, tzinfo=UTC))
    client.force_login(superuser)
    html = client.get("/admin/long_time_task/apitoken/").content.decode()
    assert "9999-12-31 20:00:00 UTC" in html

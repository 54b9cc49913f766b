"""``manage.py tasks schedules list|add|pause|resume|run|delete``: the schedules' service door from a shell."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from long_time_task.models import LongTimeTask, Schedule

pytestmark = pytest.mark.django_db


def tasks(*args: str) -> str:
    out = io.StringIO()
    call_command("tasks", "schedules", *args, stdout=out)
    return out.getvalue()


def test_add_list_pause_resume_run_delete(user: Any):
    made = json.loads(
        tasks("add", "nightly", "test_echo", "--param", "n=3", "--cron", "0 3 * * *", "--timezone", "Asia/Shanghai",
              "--user", user.username, "--json")
    )  # fmt: skip
    schedule = Schedule.objects.get(id=made["id"])
    assert (schedule.owner, schedule.params, schedule.cron, schedule.timezone) == (
        user,
        {"n": 3},
        "0 3 * * *",
        "Asia/Shanghai",
    )
    assert len(made["next_runs"]) == 5 and made["next_run_at"] == made["next_runs"][0]
    listing = tasks("list", "--user", user.username)
    assert "nightly" in listing and "cron 0 3 * * *" in listing and "enabled" in listing
    assert "paused." in tasks("pause", str(schedule.id), "--user", user.username)
    assert "paused" in tasks("list")  # the system sees every schedule
    assert "resumed; next run:" in tasks("resume", str(schedule.id), "--user", user.username)
    ran = tasks("run", str(schedule.id), "--user", user.username)
    task = LongTimeTask.objects.get(schedule=schedule)
    assert f"as task {task.id}" in ran and task.owner == user and task.scheduled_for is None
    assert "deleted" in tasks("delete", str(schedule.id), "--user", user.username)
    assert not Schedule.objects.exists() and LongTimeTask.objects.filter(id=task.id).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], "cron: Invalid cron expression"),
        (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "timezone: Unknown time zone"),
        (["--every", "5"], "interval_seconds: interval_seconds must be a whole number from 60 to 2147483647"),
        (["--at", "2020-01-01T00:00:00+00:00"], "run_at: run_at must be in the future"),
        (["--at", "tomorrow"], "--at 'tomorrow' is not an ISO 8601 date and time"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args: list[str], message: str):
    with pytest.raises(CommandError, match=message):
        tasks("add", "x", "test_echo", *args)
    assert not Schedule.objects.exists()


def test_another_user_cannot_see_or_touch_a_schedule(user: Any, django_user_model: Any):
    django_user_model.objects.create_user("other", password="x")
    made = json.loads(tasks("add", "mine", "test_echo", "--cron", "0 3 * * *", "--user", user.username, "--json"))
    assert tasks("list", "--user", "other") == "No schedules.\n"
    with pytest.raises(CommandError, match=f"Schedule {made['id']} not found"):
        tasks("pause", str(made["id"]), "--user", "other")

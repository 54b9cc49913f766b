"""Schedules declared in code (a task type's ``schedule=``, ``LONG_TIME_TASK_SCHEDULES``): written by ``migrate``,
kept in step with the code, never touching users' schedules, and checked before anything is written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command

from long_time_task.checks import check_declared_schedules
from long_time_task.models import Schedule
from long_time_task.registry import LongTimeTaskRegister
from long_time_task.schedules import declared, service
from long_time_task.schedules.timing import zone

pytestmark = pytest.mark.django_db

NIGHTLY = {"task_type": "test_echo", "cron": "0 3 * * *", "timezone": "Asia/Shanghai", "params": {"n": 1}}


def noop(task_id: int, params: dict[str, Any]) -> None:
    return None


def test_migrate_writes_the_declared_schedules_of_settings_and_of_task_types(settings):
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": NIGHTLY}
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="declared_hourly", schedule="0 * * * *")(noop)
        call_command("migrate", verbosity=0)  # nothing to migrate: its post_migrate syncs
    rows = {s.code_name: s for s in Schedule.objects.all()}
    assert set(rows) == {"settings:nightly", "type:declared_hourly"}
    nightly = rows["settings:nightly"]
    assert (nightly.name, nightly.task_type, nightly.cron, nightly.params, nightly.owner) == (
        "nightly", "test_echo", "0 3 * * *", {"n": 1}, None,
    )  # fmt: skip
    assert nightly.enabled and nightly.next_run_at is not None
    assert rows["type:declared_hourly"].next_run_at.minute == 0


def test_a_change_in_the_code_updates_the_row_and_an_operators_pause_survives_it(settings):
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": NIGHTLY}
    assert declared.sync() == {"created": 1}
    row = Schedule.objects.get(code_name="settings:nightly")
    Schedule.objects.filter(id=row.id).update(enabled=False)  # paused in the admin
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": {**NIGHTLY, "cron": "30 4 * * *"}}
    assert declared.sync() == {"updated": 1}
    row.refresh_from_db()
    assert row.cron == "30 4 * * *" and not row.enabled
    assert (row.next_run_at.astimezone(zone("Asia/Shanghai")).hour, row.next_run_at.minute) == (4, 30)
    assert declared.sync() == {"unchanged": 1}


def test_a_params_change_keeps_the_pending_due_time(settings):
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": NIGHTLY}
    declared.sync()
    due = Schedule.objects.get().next_run_at - timedelta(days=1)  # as if due now and not yet run
    Schedule.objects.update(next_run_at=due)
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": {**NIGHTLY, "params": {"n": 2}}}
    declared.sync()
    row = Schedule.objects.get()
    assert row.params == {"n": 2} and row.next_run_at == due


def test_a_declaration_that_is_gone_pauses_its_row_and_its_return_resumes_it(settings, user):
    mine = service.create_schedule(user=user, name="mine", task_type="test_echo", cron="0 3 * * *").schedule
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": NIGHTLY}
    declared.sync()
    settings.LONG_TIME_TASK_SCHEDULES = {}
    assert declared.sync() == {"paused": 1}
    row = Schedule.objects.get(code_name="settings:nightly")
    assert not row.enabled and row.paused_reason == declared.GONE
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": NIGHTLY}
    assert declared.sync() == {"resumed": 1}
    row.refresh_from_db()
    assert row.enabled and row.paused_reason == ""
    untouched = Schedule.objects.get(id=mine.id)
    assert (untouched.code_name, untouched.enabled, untouched.updated_at) == (None, True, mine.updated_at)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**NIGHTLY, "cron": "99 * * * *"}, "settings:nightly: cron: Invalid cron expression"),
        ({**NIGHTLY, "timezone": "Mars/Olympus"}, "settings:nightly: timezone: Unknown time zone"),
        ({**NIGHTLY, "task_type": "no_such_type"}, "settings:nightly: "),
        ({**NIGHTLY, "colour": "blue"}, "unknown field(s) colour"),
        ("0 3 * * *", "must be a mapping"),
    ],
)
def test_a_bad_declaration_fails_the_check_that_migrate_runs_and_writes_nothing(settings, spec, message):
    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": spec}
    [error] = check_declared_schedules()
    assert error.id == "long_time_task.E004" and message in error.msg
    with pytest.raises(declared.InvalidDeclaration):
        declared.sync()
    assert not Schedule.objects.exists()


def test_tasks_schedules_sync_says_what_it_did(settings):
    import io

    settings.LONG_TIME_TASK_SCHEDULES = {"nightly": NIGHTLY}
    out = io.StringIO()
    call_command("tasks", "schedules", "sync", stdout=out)
    assert out.getvalue() == "1 created\n"
    out = io.StringIO()
    call_command("tasks", "schedules", "sync", stdout=out)
    assert out.getvalue() == "1 unchanged\n"

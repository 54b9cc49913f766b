"""``manage.py tasks`` and ``manage.py purge_tasks``: what they print, what they change, and how they fail."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from long_time_task import services
from long_time_task.cli import (
    ProgressView,
    Snapshot,
    WatchTimeout,
    follow,
    format_duration,
    parse_duration,
    progress_bar,
    render_table,
)
from long_time_task.conf import conf
from long_time_task.management.commands.tasks import parse_params
from long_time_task.models import AuditAction, LongTimeTask, TaskState
from long_time_task.models.audit import record

pytestmark = pytest.mark.django_db


def tasks(*args: str, stdout: Any = None) -> str:
    out = stdout if stdout is not None else io.StringIO()
    call_command("tasks", *args, stdout=out)
    return str(out.getvalue())


def tasks_json(*args: str) -> Any:
    return json.loads(tasks(*args, "--json"))


def fails(*args: str, command: str = "tasks") -> CommandError:
    with pytest.raises(CommandError) as info:
        call_command(command, *args, stdout=io.StringIO())
    return info.value


def make_task(task_type: str = "test_echo", *, owner: Any = None, **fields: Any) -> LongTimeTask:
    """A task row in any state: submitted through the service, then moved where the test needs it."""
    task = services.submit(task_type, fields.pop("params", {}), owner=owner).task
    if fields:
        LongTimeTask.objects.filter(id=task.id).update(**fields)
    return LongTimeTask.objects.select_related("owner").get(id=task.id)


def finished(task_type: str = "test_echo", *, ago: timedelta = timedelta(0), **fields: Any) -> LongTimeTask:
    end = timezone.now() - ago
    values = {"state": TaskState.FINISHED, "start_at": end - timedelta(seconds=2), "finish_at": end, "progress": 100.0}
    if ago:
        values["create_at"] = end - timedelta(seconds=3)
    return make_task(task_type, **{**values, **fields})


# ---------------------------------------------------------------- submit


def test_submit_creates_a_pending_task_owned_by_the_user(user):
    out = tasks(
        "submit", "data_analysis", "--param", "dataset_id=7", "--param", "analysis_type=full", "--user", "alice"
    )
    task = LongTimeTask.objects.get()
    assert out == f"Task {task.id} submitted: data_analysis (PENDING).\n"
    assert (task.owner, task.task_params, task.state) == (user, {"dataset_id": 7, "analysis_type": "full"}, "PENDING")


def test_submit_without_a_user_submits_as_the_system_with_no_owner():
    tasks("submit", "test_echo", "--params", '{"n": 1}')
    assert LongTimeTask.objects.get().owner is None


def test_submit_json_is_the_api_detail_object_with_created():
    data = tasks_json("submit", "test_echo", "--params", '{"n": 1}', "--param", "label=x")
    task = LongTimeTask.objects.get()
    assert data["id"] == task.id and data["task_type"] == "test_echo" and data["state"] == "PENDING"
    assert data["params"] == {"n": 1, "label": "x"}
    assert data["owner"] is None and data["created"] is True
    assert data["retry_of"] is None and data["retries"] == [] and data["audit"] == []
    assert data["create_at"] == timezone.localtime(task.create_at).isoformat()


def test_submit_with_a_countdown_or_a_start_time_delays_the_task():
    out = tasks("submit", "test_echo", "--countdown", "3600")
    delayed = LongTimeTask.objects.get()
    assert "starts after" in out and delayed.run_after is not None
    assert timedelta(minutes=59) < delayed.run_after - delayed.create_at < timedelta(minutes=61)
    start = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    data = tasks_json("submit", "test_echo", "--run-after", start.isoformat())
    assert LongTimeTask.objects.get(id=data["id"]).run_after == start


def test_submit_rejects_countdown_with_run_after_and_a_bad_date():
    assert "not allowed with argument" in str(fails("submit", "test_echo", "--countdown", "5", "--run-after", "x"))
    assert "not an ISO 8601" in str(fails("submit", "test_echo", "--run-after", "next tuesday"))


def test_submit_of_an_unknown_type_names_the_known_ones():
    error = fails("submit", "no_such_type")
    assert str(error).startswith("Unknown task type: no_such_type (known types: ")
    assert "test_echo" in str(error) and error.returncode == 1


def test_submit_with_invalid_params_names_the_field():
    assert "params.dataset_id" in str(fails("submit", "data_analysis", "--params", '{"dataset_id": 0}'))
    assert "--params is not valid JSON" in str(fails("submit", "test_echo", "--params", "{n: 1}"))
    assert "must be a JSON object" in str(fails("submit", "test_echo", "--params", "[1]"))
    assert "expected key=value" in str(fails("submit", "test_echo", "--param", "novalue"))
    assert not LongTimeTask.objects.exists()


def test_param_values_are_json_when_they_parse_and_strings_otherwise():
    params = parse_params('{"a": 1, "b": 2}', ["b=3", "c=[1, 2]", "d=true", "e=hello", "f=", "g=a=b"])
    assert params == {"a": 1, "b": 3, "c": [1, 2], "d": True, "e": "hello", "f": "", "g": "a=b"}
    assert parse_params(None, None) is None


def test_submit_with_the_same_idempotency_key_returns_the_first_task(user):
    first = tasks_json("submit", "test_echo", "--idempotency-key", "k-1", "--user", "alice")
    out = tasks("submit", "test_echo", "--idempotency-key", "k-1", "--user", "alice")
    assert out == f"Task {first['id']} was already submitted with idempotency key 'k-1' (PENDING).\n"
    assert LongTimeTask.objects.count() == 1
    error = fails("submit", "test_echo", "--params", '{"n": 2}', "--idempotency-key", "k-1", "--user", "alice")
    assert "was already used for task" in str(error)


def test_submit_over_the_quota_is_refused(user, settings):
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 1
    tasks("submit", "test_echo", "--user", "alice")
    assert "You already have 1 unfinished tasks" in str(fails("submit", "test_echo", "--user", "alice"))


def test_submit_of_a_type_the_user_may_not_submit_is_refused(user):
    from long_time_task.registry import LongTimeTaskRegister
    from tests.test_registry import handler

    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="t_restricted", permission="long_time_task.view_all_tasks")(handler)
        error = fails("submit", "t_restricted", "--user", "alice")
        assert str(error) == "You may not submit tasks of type t_restricted."
        assert "t_restricted" not in str(fails("submit", "nope", "--user", "alice"))
        tasks("submit", "t_restricted")  # the system may
    assert LongTimeTask.objects.get().task_type == "t_restricted"


def test_an_unknown_user_is_an_error():
    assert str(fails("list", "--user", "nobody")) == "No user named 'nobody'"


# ---------------------------------------------------------------- list


def test_list_prints_a_table_newest_first(user):
    old = finished(owner=user, ago=timedelta(minutes=5))
    running = make_task("data_analysis", params={"dataset_id": 1}, state=TaskState.RUNNING, progress=45.0)
    LongTimeTask.objects.filter(id=running.id).update(start_at=timezone.now() - timedelta(seconds=75))
    out = tasks("list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATE", "PROGRESS", "OWNER", "CREATED", "DURATION"]
    assert [line.split()[0] for line in lines[1:]] == [str(running.id), str(old.id)]
    assert " 45%" in lines[1] and "RUNNING" in lines[1] and lines[1].split()[4] == "-"
    assert lines[1].endswith(("1m 15s", "1m 16s"))
    assert "100%" in lines[2] and "alice" in lines[2] and lines[2].endswith("2.0s")
    assert timezone.localtime(old.create_at).strftime("%Y-%m-%d %H:%M:%S") in lines[2]


def test_list_filters_by_state_type_limit_and_user(user, other_user, staff_user):
    mine = make_task(owner=user)
    theirs = make_task("data_analysis", params={"dataset_id": 1}, owner=other_user)
    done = finished()
    ids = [item["id"] for item in tasks_json("list")]
    assert ids == [done.id, theirs.id, mine.id]
    assert [item["id"] for item in tasks_json("list", "--state", "pending")] == [theirs.id, mine.id]
    assert [item["id"] for item in tasks_json("list", "--type", "data_analysis")] == [theirs.id]
    assert [item["id"] for item in tasks_json("list", "--limit", "1")] == [done.id]
    assert [item["id"] for item in tasks_json("list", "--user", "alice")] == [mine.id]
    assert len(tasks_json("list", "--user", "root")) == 3
    assert tasks("list", "--user", "alice", "--state", "FAILED") == "No tasks.\n"


def test_list_json_items_are_the_api_list_items(user):
    task = make_task(owner=user, state=TaskState.RUNNING, progress=12.5, progress_message="step 1")
    [item] = tasks_json("list")
    assert item["id"] == task.id and item["task_type"] == "test_echo" and item["state"] == "RUNNING"
    assert item["owner"] == "alice" and item["cancel_requested"] is False and item["retry_of"] is None
    assert item["progress"]["percent"] == 12.5 and item["progress"]["message"] == "step 1"
    assert item["create_at"] == timezone.localtime(task.create_at).isoformat()


def test_list_rejects_an_unknown_state_and_a_bad_limit():
    assert "'DONE' is not a state" in str(fails("list", "--state", "DONE"))
    assert "between 1 and 1000" in str(fails("list", "--limit", "0"))


# ---------------------------------------------------------------- show


def test_show_prints_every_field_of_a_finished_task(user):
    original = make_task(owner=user, state=TaskState.FAILED, error_message="boom", error_code="handler_error")
    task = finished(
        params={"n": 1},
        owner=user,
        retry_of=original,
        result={"echo": {"n": 1}},
        progress_message="done",
        progress_current=3,
        progress_total=3,
    )
    record(original.id, AuditAction.RETRIED, actor=user, new_task_id=task.id, note="with edited params")
    out = tasks("show", str(original.id))
    assert out.splitlines()[0] == f"Task {original.id}: test_echo, FAILED"
    assert "  Error:            boom (handler_error)" in out
    assert f"  Retries:          task {task.id}" in out
    assert f"retried by alice -> task {task.id} (with edited params)" in out
    out = tasks("show", str(task.id))
    assert '  Result:           {"echo": {"n": 1}}' in out
    assert "  Progress:         [####################] 100%  done (3/3)" in out
    assert f"  Retry of:         task {original.id}" in out and "  Owner:            alice" in out
    assert "  Duration:         2.0s" in out


def test_show_indents_a_long_result_below_its_label():
    task = finished(result={"rows": list(range(30))})
    lines = tasks("show", str(task.id)).splitlines()
    start = lines.index("  Result:")
    assert lines[start + 1 : start + 4] == ["    {", '      "rows": [', "        0,"]


def test_show_json_has_params_result_progress_retries_and_audit(user):
    original = make_task(
        owner=user,
        params={"n": 1},
        state=TaskState.CANCELLED,
        error_message="Cancelled by alice",
        error_code="cancelled",
        cancel_requested_at=timezone.now(),
        error_traceback="Traceback ...",
    )
    retry = services.retry_task(original.id, user=user, params={"n": 2})
    data = tasks_json("show", str(original.id))
    assert data["id"] == original.id and data["state"] == "CANCELLED" and data["params"] == {"n": 1}
    assert data["error_message"] == "Cancelled by alice" and data["error_code"] == "cancelled"
    assert data["cancel_requested_at"] is not None and data["retries"] == [retry.id] and "result" not in data
    assert data["error_traceback"] == "Traceback ..."  # the system sees what staff see
    [event] = data["audit"]
    assert (event["action"], event["by"], event["new_task"], event["note"]) == (
        "retried",
        "alice",
        retry.id,
        "with edited params",
    )
    as_owner = tasks_json("show", str(original.id), "--user", "alice")
    assert "error_traceback" not in as_owner and as_owner["retries"] == [retry.id]
    data = tasks_json("show", str(retry.id))
    assert data["retry_of"] == original.id and data["params"] == {"n": 2} and data["owner"] == "alice"
    done = finished(result={"ok": True}, progress_current=1, progress_total=4, progress_message="m")
    data = tasks_json("show", str(done.id))
    assert data["result"] == {"ok": True} and "error_message" not in data
    assert data["progress"]["percent"] == 100.0 and (data["progress"]["current"], data["progress"]["total"]) == (1, 4)


def test_another_users_task_is_not_found(user, other_user):
    theirs = make_task(owner=other_user)
    for action in ("show", "cancel", "retry", "watch"):
        assert str(fails(action, str(theirs.id), "--user", "alice")) == f"Task {theirs.id} not found"
    assert str(fails("show", "999999")) == "Task 999999 not found"
    assert "is not a task id" in str(fails("show", "0"))


# ---------------------------------------------------------------- cancel and retry


def test_cancel_of_a_waiting_task_cancels_it_at_once(user):
    task = make_task(owner=user)
    assert tasks("cancel", str(task.id), "--user", "alice") == f"Task {task.id} cancelled.\n"
    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert list(task.audit_events.values_list("action", "actor_name")) == [("cancelled", "alice")]


def test_cancel_of_a_running_task_requests_it(user):
    task = make_task(owner=user, state=TaskState.RUNNING, attempts=1)
    out = tasks("cancel", str(task.id))
    assert out == f"Task {task.id} is running: cancellation requested; it will stop shortly.\n"
    data = tasks_json("cancel", str(task.id))
    assert data["cancelled"] is False and data["state"] == "RUNNING" and data["cancel_requested_at"] is not None


def test_cancel_of_a_finished_task_is_refused():
    task = finished()
    assert "already FINISHED" in str(fails("cancel", str(task.id)))


def test_cancel_by_a_user_who_sees_but_does_not_own_is_refused(user, other_user, django_user_model):
    from django.contrib.auth.models import Permission

    other_user.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
    task = make_task(owner=user)
    assert "Only the task's owner or staff" in str(fails("cancel", str(task.id), "--user", "bob"))


def test_retry_makes_a_new_task_linked_to_the_failed_one(user):
    failed = make_task(owner=user, params={"n": 1}, state=TaskState.FAILED, error_message="x")
    out = tasks("retry", str(failed.id), "--user", "alice")
    new = LongTimeTask.objects.get(retry_of=failed)
    assert out == f"Task {failed.id} retried as task {new.id} (PENDING).\n"
    assert (new.owner, new.task_params) == (user, {"n": 1})
    data = tasks_json("retry", str(failed.id), "--params", '{"n": 5}')
    assert data["retry_of"] == failed.id and data["params"] == {"n": 5} and data["owner"] == "alice"


def test_retry_of_a_finished_task_needs_rerun():
    done = finished()
    assert "re-run it instead" in str(fails("retry", str(done.id)))
    assert "re-run as task" in tasks("retry", str(done.id), "--rerun")
    assert "only finished, failed or cancelled" in str(fails("retry", str(make_task().id), "--rerun"))


# ---------------------------------------------------------------- watch


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_of_a_finished_task_prints_its_state_and_outcome():
    task = finished(progress_message="all done")
    out = tasks("watch", str(task.id))
    assert out.splitlines() == [f"Task {task.id} FINISHED 100%: all done", f"Task {task.id} finished in 2.0s."]


def test_watch_on_a_terminal_draws_a_bar():
    task = finished()
    out = tasks("watch", str(task.id), stdout=FakeTerminal())
    assert out == f"\r[####################] 100%  FINISHED\x1b[K\nTask {task.id} finished in 2.0s.\n"
    assert tasks("watch", str(task.id), "--progress", "lines", stdout=FakeTerminal()).startswith(f"Task {task.id} ")
    assert tasks("watch", str(task.id), "--progress", "bar").startswith("\r[###")


def test_watch_of_a_failed_or_cancelled_task_exits_1():
    task = make_task(state=TaskState.FAILED, error_message="no such dataset", error_code="handler_error")
    error = fails("watch", str(task.id))
    assert (str(error), error.returncode) == (f"Task {task.id} failed: no such dataset (handler_error)", 1)
    cancelled = make_task(state=TaskState.CANCELLED, error_message="Cancelled by system")
    assert str(fails("watch", str(cancelled.id))) == f"Task {cancelled.id} was cancelled: Cancelled by system"


def test_watch_json_prints_only_the_final_task():
    task = finished(result={"ok": 1})
    data = tasks_json("watch", str(task.id))
    assert (data["id"], data["state"], data["result"]) == (task.id, "FINISHED", {"ok": 1})
    failed = make_task(state=TaskState.FAILED, error_message="x")
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("tasks", "watch", str(failed.id), "--json", stdout=out)
    assert info.value.returncode == 1 and json.loads(out.getvalue())["state"] == "FAILED"


def test_watch_gives_up_after_the_timeout_with_exit_code_2():
    task = make_task()
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("tasks", "watch", str(task.id), "--timeout", "0.2", "--interval", "0.05", stdout=out)
    assert (str(info.value), info.value.returncode) == (
        f"Task {task.id} still PENDING after 0.2s; stopped watching.",
        2,
    )
    assert out.getvalue() == f"Task {task.id} PENDING\n"


def test_submit_wait_submits_then_watches():
    out = io.StringIO()
    with pytest.raises(CommandError) as info:  # no worker here: the task stays PENDING until the timeout
        call_command("tasks", "submit", "test_echo", "--wait", "--timeout", "0.1", "--interval", "0.05", stdout=out)
    task = LongTimeTask.objects.get()
    assert info.value.returncode == 2
    assert out.getvalue().splitlines() == [f"Task {task.id} submitted: test_echo (PENDING).", f"Task {task.id} PENDING"]


def follow_snapshots(snapshots: list[Snapshot], view: ProgressView, timeout: float | None = None) -> list[str]:
    """Run ``follow`` over a scripted sequence of polls, on a fake clock; returns what was written."""
    remaining, written, now = list(snapshots), [], [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    follow(
        lambda: remaining.pop(0),
        lambda s: written.append(view.render(s)),
        interval=1,
        timeout=timeout,
        clock=lambda: now[0],
        sleep=sleep,
    )
    return [text for text in written if text]


STEPS = [
    Snapshot("PENDING"),
    Snapshot("PENDING"),
    Snapshot("RUNNING", 0.0, ""),
    Snapshot("RUNNING", 10.0, "reading", 1, 10),
    Snapshot("RUNNING", 10.2, "reading", 1, 10),  # the same line as before: nothing new to say
    Snapshot("RUNNING", 50.0, "halfway", 5, 10),
    Snapshot("FINISHED", 100.0, "halfway", 5, 10),
]


def test_lines_are_printed_only_when_the_state_percent_or_message_changes():
    assert follow_snapshots(STEPS, ProgressView(7, bar=False)) == [
        "Task 7 PENDING\n",
        "Task 7 RUNNING 0%\n",
        "Task 7 RUNNING 10%: reading (1/10)\n",
        "Task 7 RUNNING 50%: halfway (5/10)\n",
        "Task 7 FINISHED 100%: halfway (5/10)\n",
    ]


def test_the_bar_is_redrawn_in_place():
    view = ProgressView(7, bar=True, columns=120)
    written = follow_snapshots(STEPS, view)
    assert written[0] == "\r[--------------------]    -  PENDING\x1b[K"
    assert written[3] == "\r[##########----------]  50%  RUNNING  halfway  (5/10)\x1b[K"
    assert written[-1] == "\r[####################] 100%  FINISHED  halfway  (5/10)\x1b[K"
    assert view.close() == "\n" and ProgressView(7, bar=True).close() == ""
    narrow = ProgressView(7, bar=True, columns=30).render(Snapshot("RUNNING", 50.0, "a long message"))
    assert narrow == "\r[##########----------]  50%  \x1b[K"  # cut to the terminal's width


def test_follow_times_out_on_its_clock():
    with pytest.raises(WatchTimeout) as info:
        follow_snapshots([Snapshot("RUNNING", 5.0)] * 10, ProgressView(7, bar=False), timeout=2.5)
    assert info.value.snapshot.state == "RUNNING" and str(info.value) == "still RUNNING after 2.5s"


def test_progress_bar_clamps_and_rounds():
    assert progress_bar(None) == progress_bar(-5) == "[" + "-" * 20 + "]"
    assert progress_bar(44.9, width=10) == "[####------]" and progress_bar(250, width=4) == "[####]"


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400), ("1d12h", 129600),
     (" 1.5H ", 5400)],
)  # fmt: skip
def test_durations_parse(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "0s", "3y", "1d x", "1 d", "10000000w"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_and_tables_are_formatted_for_people():
    assert [format_duration(s) for s in (None, 0.42, 4.25, 12, 184, 7500, 273600)] == [
        "-",
        "0.42s",
        "4.2s",
        "12s",
        "3m 04s",
        "2h 05m",
        "3d 04h",
    ]
    assert render_table(["ID", "NAME"], [["7", "a"], ["123", "bb"]], right=[0]) == " ID  NAME\n  7  a\n123  bb"


# ---------------------------------------------------------------- purge_tasks


@pytest.fixture
def aged_tasks() -> dict[str, Any]:
    """Old finished tasks of each final state (one with a result file), a recent one, and an old running one."""
    results = conf.RESULTS_DIR
    (results / "files").mkdir(parents=True)
    report = results / "files" / "report-1.json"
    report.write_text("{}")
    conf.FILES_DIR.mkdir(parents=True, exist_ok=True)
    (conf.FILES_DIR / "in.csv").write_text("a,b\n1,2\n")  # file_processing's input must exist at submit
    month = timedelta(days=31)
    return {
        "report": report,
        "old_finished": finished("file_processing", ago=month, params={"file_path": "in.csv"},
                                 result={"output_file": "files/report-1.json"}),
        "old_failed": finished("report_generation", ago=month, state=TaskState.FAILED),
        "old_cancelled": finished(ago=month, state=TaskState.CANCELLED),
        "recent": finished(ago=timedelta(days=2)),
        "old_running": make_task(state=TaskState.RUNNING, create_at=timezone.now() - month),
    }  # fmt: skip


def purge(*args: str) -> str:
    out = io.StringIO()
    call_command("purge_tasks", *args, stdout=out)
    return out.getvalue()


def test_purge_dry_run_counts_and_deletes_nothing(aged_tasks):
    out = purge("--older-than", "30d", "--dry-run")
    assert out == "Would delete 3 tasks (file_processing: 1, report_generation: 1, test_echo: 1) and 1 result file.\n"
    assert LongTimeTask.objects.count() == 5 and aged_tasks["report"].exists()


def test_purge_deletes_old_finished_tasks_and_their_files(aged_tasks):
    out = purge("--older-than", "30d")
    assert out == "Deleted 3 tasks (file_processing: 1, report_generation: 1, test_echo: 1) and 1 result file.\n"
    kept = set(LongTimeTask.objects.values_list("id", flat=True))
    assert kept == {aged_tasks["recent"].id, aged_tasks["old_running"].id}
    assert not aged_tasks["report"].exists()
    assert purge("--older-than", "30d") == "No tasks to delete.\n"


def test_purge_by_state_and_type(aged_tasks):
    assert purge("--older-than", "4w", "--state", "failed,CANCELLED", "--dry-run").startswith("Would delete 2 tasks")
    out = purge("--older-than", "1d", "--state", "FINISHED", "--type", "test_echo")
    assert out == "Deleted 1 task (test_echo: 1) and 0 result files.\n"
    assert not LongTimeTask.objects.filter(id=aged_tasks["recent"].id).exists()
    data = json.loads(purge("--older-than", "30d", "--state", "FAILED", "--state", "CANCELLED", "--json"))
    assert data["dry_run"] is False and data["tasks"] == 2 and data["files"] == 0
    assert data["by_type"] == {"report_generation": 1, "test_echo": 1}
    assert data["states"] == ["CANCELLED", "FAILED"] and data["task_types"] is None
    assert data["finished_before"] is not None
    assert LongTimeTask.objects.filter(id=aged_tasks["old_finished"].id).exists()


def test_purge_json_dry_run(aged_tasks):
    data = json.loads(purge("--older-than", "30d", "--dry-run", "--json"))
    assert (data["dry_run"], data["tasks"], data["files"]) == (True, 3, 1)
    assert LongTimeTask.objects.count() == 5


def test_purge_expired_follows_the_configured_retention(aged_tasks, settings):
    assert "No retention is configured" in str(fails("--expired", command="purge_tasks"))
    settings.LONG_TIME_TASK_RETENTION_DAYS = 30
    assert purge("--expired", "--dry-run").startswith("Would delete 3 tasks")
    assert purge("--expired").startswith("Deleted 3 tasks")
    assert LongTimeTask.objects.count() == 2


def test_purge_refuses_unfinished_states_and_bad_arguments():
    error = fails("--older-than", "30d", "--state", "FINISHED,RUNNING", command="purge_tasks")
    assert str(error) == "--state RUNNING: only finished tasks can be purged (states CANCELLED, FAILED, FINISHED)"
    assert "one of the arguments --older-than --expired is required" in str(fails(command="purge_tasks"))
    assert "argument --older-than: '30' is not a duration" in str(fails("--older-than", "30", command="purge_tasks"))
    assert "go with --older-than" in str(fails("--expired", "--type", "x", command="purge_tasks"))

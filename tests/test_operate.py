"""Operating tasks without a worker: the service rules, the API's answers, progress throttling, retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from long_time_task import services
from long_time_task.context import TaskCancelled, TaskContext, check_cancelled, report_progress
from long_time_task.models import AuditAction, LongTimeTask, TaskState
from long_time_task.registry import InvalidParams
from long_time_task.retention import expired, purge, purge_expired_tasks, result_files

pytestmark = pytest.mark.django_db


def make(state: str = TaskState.PENDING, owner: Any = None, **fields: Any) -> LongTimeTask:
    task = services.submit_task("test_echo", {"n": 1}, owner=owner)
    LongTimeTask.objects.filter(id=task.id).update(state=state, **fields)
    return LongTimeTask.objects.get(id=task.id)


# ---------------------------------------------------------------- cancel


def test_cancel_of_a_waiting_task_is_immediate_and_audited(user):
    for state in (TaskState.PENDING, TaskState.RETRYING):
        task = make(state, owner=user)
        outcome = services.cancel_task(task.id, user=user)
        assert outcome.cancelled
        row = outcome.task
        assert (row.state, row.error_code, row.redispatch_at, row.retry_at) == (
            TaskState.CANCELLED,
            "cancelled",
            None,
            None,
        )
        assert row.finish_at is not None and row.cancel_requested_at is not None
        assert row.error_message == "Cancelled by its owner before it started."  # no name: the audit has it
        event = row.audit_events.get()
        assert (event.action, event.actor, event.actor_name) == (AuditAction.CANCELLED, user, user.username)


def test_cancel_of_a_running_task_is_a_durable_request(user):
    task = make(TaskState.RUNNING, owner=user, attempts=1)
    outcome = services.cancel_task(task.id, user=user)
    assert not outcome.cancelled and outcome.task.state == TaskState.RUNNING
    first = outcome.task.cancel_requested_at
    assert first is not None
    # Asking again changes nothing and records nothing more.
    again = services.cancel_task(task.id, user=user)
    assert again.task.cancel_requested_at == first
    assert list(task.audit_events.values_list("action", flat=True)) == [AuditAction.CANCEL_REQUESTED]
    # The running attempt can no longer be retried: it ends CANCELLED.
    tasks = LongTimeTask.objects
    now = timezone.now()
    assert not tasks.schedule_retry(task.id, attempt=1, retry_at=now, redispatch_at=now, message="m", code="c")
    assert tasks.finish_cancelled(task.id, attempt=1, message="stopped")
    assert tasks.get(id=task.id).state == TaskState.CANCELLED


@pytest.mark.parametrize("state", [TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED])
def test_cancel_of_a_finished_task_is_refused(state, user):
    task = make(state, owner=user)
    with pytest.raises(services.ActionNotAllowed, match=f"already {state}") as info:
        services.cancel_task(task.id, user=user)
    assert info.value.code == "not_cancellable"
    assert LongTimeTask.objects.get(id=task.id).state == state


def test_only_the_owner_and_staff_may_act(user, other_user, staff_user, django_user_model):
    task = make(owner=user)
    with pytest.raises(services.TaskNotFound):
        services.cancel_task(task.id, user=other_user)
    viewer = django_user_model.objects.create_user("viewer", password="pw")
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_all_tasks"))
    viewer = django_user_model.objects.get(id=viewer.id)
    with pytest.raises(services.NotPermitted):  # may see every task, but act only on its own
        services.cancel_task(task.id, user=viewer)
    assert services.cancel_task(task.id, user=staff_user).cancelled


def test_a_cancelled_row_is_never_claimed():
    task = make()
    services.cancel_task(task.id)
    assert LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30) is None


# ---------------------------------------------------------------- retry and re-run


def test_retry_makes_a_linked_task_owned_by_the_requester(user, staff_user):
    failed = make(TaskState.FAILED, owner=user)
    new = services.retry_task(failed.id, user=staff_user)
    assert (new.state, new.task_type, new.task_params) == (TaskState.PENDING, "test_echo", {"n": 1})
    assert (new.retry_of_id, new.owner_id) == (failed.id, staff_user.id)
    assert LongTimeTask.objects.get(id=failed.id).state == TaskState.FAILED  # the original keeps its history
    event = failed.audit_events.get()
    assert (event.action, event.actor_name, event.new_task_id) == (AuditAction.RETRIED, staff_user.username, new.id)


def test_retry_is_for_failed_and_cancelled_rerun_also_for_finished(user):
    finished = make(TaskState.FINISHED, owner=user)
    with pytest.raises(services.ActionNotAllowed, match="re-run it") as info:
        services.retry_task(finished.id, user=user)
    assert info.value.code == "not_retryable"
    rerun = services.retry_task(finished.id, user=user, rerun=True)
    assert rerun.retry_of_id == finished.id
    assert finished.audit_events.get().action == AuditAction.RERUN
    for state in (TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING):
        with pytest.raises(services.ActionNotAllowed, match=f"is {state}"):
            services.retry_task(make(state, owner=user).id, user=user, rerun=True)


def test_retry_with_edited_params_validates_them(user):
    failed = make(TaskState.CANCELLED, owner=user)
    new = services.retry_task(failed.id, user=user, params={"n": 2})
    assert new.task_params == {"n": 2}
    assert failed.audit_events.get().note == "with edited params"
    with pytest.raises(InvalidParams):
        services.retry_task(failed.id, user=user, params=["not", "an", "object"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- delayed start and idempotency


def test_delays_resolve_to_a_start_time():
    now = timezone.now()
    assert services.resolve_start(None, None, now) is None
    assert services.resolve_start(None, 0, now) is None
    assert services.resolve_start(None, 30, now) == now + timedelta(seconds=30)
    assert services.resolve_start(now - timedelta(hours=1), None, now) is None  # in the past: now
    with pytest.raises(InvalidParams, match="not both"):
        services.resolve_start(now, 5, now)
    with pytest.raises(InvalidParams, match="at most 366 days"):
        services.resolve_start(now + timedelta(days=400), None, now)
    with pytest.raises(InvalidParams, match="countdown"):
        services.resolve_start(None, -1, now)


def test_a_delayed_task_is_not_claimed_before_its_time():
    task = services.submit_task("test_echo", {}, countdown=3600)
    assert task.run_after is not None and task.redispatch_at == task.run_after  # waits in the database
    assert LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30) is None
    assert not LongTimeTask.objects.dispatch_due(timezone.now()).filter(id=task.id).exists()
    LongTimeTask.objects.filter(id=task.id).update(run_after=timezone.now())
    assert LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30) is not None


def test_idempotency_key_returns_the_first_task_and_refuses_other_params(user, other_user):
    first = services.submit("test_echo", {"n": 1}, owner=user, idempotency_key="abc")
    again = services.submit("test_echo", {"n": 1}, owner=user, idempotency_key="abc")
    assert (first.created, again.created, again.task.id) == (True, False, first.task.id)
    with pytest.raises(services.IdempotencyConflict, match="different"):
        services.submit("test_echo", {"n": 2}, owner=user, idempotency_key="abc")
    # Keys are per user.
    assert services.submit("test_echo", {"n": 1}, owner=other_user, idempotency_key="abc").created
    assert LongTimeTask.objects.filter(idempotency_key="abc").count() == 2
    for bad in ("", "has space", "x" * 256, "ünicode"):
        with pytest.raises(InvalidParams, match="Idempotency-Key"):
            services.submit("test_echo", {}, owner=user, idempotency_key=bad)


# ---------------------------------------------------------------- progress context


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_are_throttled_and_the_latest_values_win(settings):
    settings.LONG_TIME_TASK_PROGRESS_INTERVAL = 1.0
    task = make(TaskState.RUNNING, attempts=1)
    clock = Clock()
    context = TaskContext(task.id, 1, clock=clock)
    for i in range(1000):  # a tight loop within one interval
        context.progress(current=i, total=1000, message=f"row {i}")
    assert context.writes == 1  # only the first report was written
    row = LongTimeTask.objects.get(id=task.id)
    assert (row.progress, row.progress_message, row.progress_current) == (0.0, "row 0", 0)
    clock.now = 1.5
    context.progress(50, "half")
    assert context.writes == 2
    row = LongTimeTask.objects.get(id=task.id)
    assert (row.progress, row.progress_message, row.progress_total) == (50.0, "half", None)
    context.progress(75, "later")  # within the interval: kept, written by flush()
    context.flush()
    assert LongTimeTask.objects.get(id=task.id).progress == 75.0
    with pytest.raises(ValueError):
        context.progress(float("nan"))
    context.progress(250)  # clamped
    context.flush()
    assert LongTimeTask.objects.get(id=task.id).progress == 100.0


def test_a_progress_write_reads_the_cancel_request(settings):
    settings.LONG_TIME_TASK_PROGRESS_INTERVAL = 0
    task = make(TaskState.RUNNING, attempts=1)
    context = TaskContext(task.id, 1)
    context.progress(10)
    services.cancel_task(task.id)
    with pytest.raises(TaskCancelled):
        context.progress(20)
    assert context.cancel_requested and not context.lost
    assert LongTimeTask.objects.get(id=task.id).progress == 20.0  # the write that saw it still landed


def test_check_cancelled_notices_a_row_that_moved_on(settings):
    settings.LONG_TIME_TASK_PROGRESS_INTERVAL = 0
    task = make(TaskState.RUNNING, attempts=1)
    context = TaskContext(task.id, 1)
    context.check_cancelled()  # nothing yet
    LongTimeTask.objects.filter(id=task.id).update(state=TaskState.RETRYING)  # e.g. the reaper took it back
    with pytest.raises(TaskCancelled):
        context.check_cancelled()
    assert context.lost


def test_the_helpers_do_nothing_outside_a_task():
    report_progress(50, "no task here")
    check_cancelled()


# ---------------------------------------------------------------- retention


def old(state: str, days: float, task_type: str = "test_echo", result: Any = None) -> LongTimeTask:
    task = LongTimeTask.objects.create(task_type=task_type, task_params={})
    when = timezone.now() - timedelta(days=days)
    LongTimeTask.objects.filter(id=task.id).update(state=state, create_at=when, finish_at=when, result=result)
    return task


def test_purge_deletes_old_finished_tasks_and_their_files_in_batches(settings, tmp_path):
    settings.LONG_TIME_TASK_RESULTS_DIR = tmp_path
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "a.json").write_text("{}")
    gone = [old(TaskState.FINISHED, 40, task_type="file_processing", result={"output_file": "files/a.json"})]
    gone += [old(TaskState.FAILED, 40), old(TaskState.CANCELLED, 40)]
    kept = [old(TaskState.FINISHED, 5), old(TaskState.RUNNING, 40), old(TaskState.PENDING, 40)]
    rows = expired(timedelta(days=30), now=timezone.now())
    preview = purge(rows, dry_run=True)
    assert (preview.tasks, preview.files) == (3, 1)
    assert LongTimeTask.objects.count() == 6
    outcome = purge(rows, batch=2)
    assert (outcome.tasks, outcome.files, outcome.by_type) == (3, 1, {"file_processing": 1, "test_echo": 2})
    assert not (tmp_path / "files" / "a.json").exists()
    assert set(LongTimeTask.objects.values_list("id", flat=True)) == {t.id for t in kept}
    assert not LongTimeTask.objects.filter(id__in=[t.id for t in gone]).exists()


def test_result_files_never_escape_the_results_directory(settings, tmp_path):
    settings.LONG_TIME_TASK_RESULTS_DIR = tmp_path
    assert result_files("file_processing", {"output_file": "../../etc/passwd"}) == []
    assert result_files("file_processing", {"output_file": "/etc/passwd"}) == []
    assert result_files("report_generation", {"report_path": "reports/1.html"}) == [
        tmp_path.resolve() / "reports/1.html"
    ]
    assert result_files("report_generation", None) == []
    # A type that does not declare result_files has none, whatever its result says (it may echo input).
    assert result_files("test_echo", {"output_file": "files/1.json", "report_path": "reports/1.html"}) == []


def test_the_periodic_purge_applies_the_global_retention_and_keeps_everything_without_one(settings):
    task = old(TaskState.FINISHED, 40)
    settings.LONG_TIME_TASK_RETENTION_DAYS = None
    assert purge_expired_tasks().tasks == 0
    settings.LONG_TIME_TASK_RETENTION_DAYS = 60
    assert purge_expired_tasks().tasks == 0
    settings.LONG_TIME_TASK_RETENTION_DAYS = 30
    assert purge_expired_tasks().tasks == 1
    assert not LongTimeTask.objects.filter(id=task.id).exists()


def test_a_types_own_retention_wins_over_the_global_one(settings):
    from long_time_task.registry import LongTimeTaskRegister

    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="short_lived", retention_days=1)(keep_one_day)
        short = old(TaskState.FINISHED, 2, task_type="short_lived")
        echo = old(TaskState.FINISHED, 2)
        settings.LONG_TIME_TASK_RETENTION_DAYS = 30
        assert purge_expired_tasks().by_type == {"short_lived": 1}
        assert not LongTimeTask.objects.filter(id=short.id).exists()
        assert LongTimeTask.objects.filter(id=echo.id).exists()


def keep_one_day(task_id: int, params: dict[str, Any]) -> None:
    return None


# ---------------------------------------------------------------- the hard stop picks the right process


def fake_request(celery_id: str, attempt: int, pid: int) -> Any:
    from types import SimpleNamespace

    from long_time_task.dispatch import EXECUTOR_TASK

    return SimpleNamespace(id=celery_id, args=[0, attempt], worker_pid=pid, type=EXECUTOR_TASK, name="test_shadow")


def overdue(task: LongTimeTask, *, attempt: int, worker: str) -> LongTimeTask:
    LongTimeTask.objects.filter(id=task.id).update(
        state=TaskState.RUNNING, attempts=attempt, worker=worker, cancel_requested_at=timezone.now()
    )
    return LongTimeTask.objects.get(id=task.id)


def test_the_hard_stop_kills_the_current_attempts_process_only(monkeypatch):
    from long_time_task.worker import heartbeat

    task = overdue(make(), attempt=2, worker="A")
    requests = [fake_request(task.celery_task_id, 1, 111), fake_request(task.celery_task_id, 2, 222)]
    monkeypatch.setattr(heartbeat, "active_requests", lambda: requests)
    killed: list[int] = []
    monkeypatch.setattr("long_time_task.worker.heartbeat.os.kill", lambda pid, sig: killed.append(pid))
    assert heartbeat.enforce_cancels(0, "A") == [task.id]
    assert killed == [222]  # attempt 2's process, not the stale attempt 1's
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.CANCELLED


def test_a_stale_attempt_on_another_worker_neither_cancels_nor_kills(monkeypatch):
    from long_time_task.worker import heartbeat

    # Worker A still runs attempt 1 after its lease went to worker B, which runs attempt 2.
    task = overdue(make(), attempt=2, worker="B")
    monkeypatch.setattr(heartbeat, "active_requests", lambda: [fake_request(task.celery_task_id, 1, 111)])
    killed: list[int] = []
    monkeypatch.setattr("long_time_task.worker.heartbeat.os.kill", lambda pid, sig: killed.append(pid))
    assert heartbeat.enforce_cancels(0, "A") == []
    assert killed == [] and LongTimeTask.objects.get(id=task.id).state == TaskState.RUNNING


def test_no_kill_when_the_request_left_between_the_update_and_the_kill(monkeypatch):
    from long_time_task.worker import heartbeat

    task = overdue(make(), attempt=1, worker="A")
    request = fake_request(task.celery_task_id, 1, 333)
    calls = iter([[request], []])  # gone at the second look
    monkeypatch.setattr(heartbeat, "active_requests", lambda: next(calls))
    killed: list[int] = []
    monkeypatch.setattr("long_time_task.worker.heartbeat.os.kill", lambda pid, sig: killed.append(pid))
    assert heartbeat.enforce_cancels(0, "A") == []
    assert killed == []
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.CANCELLED  # its result would be dropped


def five_quick_steps(task_id: int, params: dict[str, Any], context: TaskContext) -> str:
    for step in range(1, 6):
        context.progress(current=step, total=5, message=f"step {step} of 5")
    return "done"


def one_step(task_id: int, params: dict[str, Any], context: TaskContext) -> str:
    context.progress(current=1, total=3, message="only step")  # written at once: nothing held
    return "done"


def test_the_last_report_the_throttle_held_is_written_with_the_finish_in_the_same_statement(
    settings: Any, django_assert_num_queries: Any
) -> None:
    """Found by the django.tasks benchmark: a handler's reports inside one interval were kept, and its last one was
    dropped when it returned; the row said 100 % with the first step's message."""
    from long_time_task.registry import LongTimeTaskRegister
    from long_time_task.worker.executor import Executor

    settings.LONG_TIME_TASK_PROGRESS_INTERVAL = 60.0
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="steps_quickly", timeout=30, soft_timeout=20)(five_quick_steps)
        task = LongTimeTask.objects.create(task_type="steps_quickly", task_params={})
        # The claim, the first report (written at once) and the finish: the held report costs no statement.
        with django_assert_num_queries(3):
            assert Executor(worker="unit@test").run(task.id, 1) == "finished"
    row = LongTimeTask.objects.get(id=task.id)
    assert (row.state, row.progress, row.progress_message) == (TaskState.FINISHED, 100.0, "step 5 of 5")
    assert (row.progress_current, row.progress_total) == (5, 5)
    assert row.progress_at is not None and row.progress_at >= row.start_at


def test_a_handler_whose_reports_were_all_written_finishes_with_the_plain_statement(settings: Any) -> None:
    from long_time_task.registry import LongTimeTaskRegister
    from long_time_task.worker.executor import Executor

    settings.LONG_TIME_TASK_PROGRESS_INTERVAL = 60.0
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="one_step", timeout=30, soft_timeout=20)(one_step)
        task = LongTimeTask.objects.create(task_type="one_step", task_params={})
        assert Executor(worker="unit@test").run(task.id, 1) == "finished"
    row = LongTimeTask.objects.get(id=task.id)
    assert (row.progress, row.progress_message, row.progress_current, row.progress_total) == (100.0, "only step", 1, 3)

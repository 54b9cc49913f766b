"""The django.tasks backend without a worker: validation, what enqueue writes, results read from rows, the priority
mapping, the resolver's limits, and what users may do with these rows through the API.

Each test names the tests of Django's ``tests/tasks/`` (django/django) whose behaviour it checks for this backend.
The worker's side is tests/integration/test_django_tasks_worker.py.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import current_app
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from long_time_task import dispatch, services
from long_time_task.django_tasks import resolver
from long_time_task.django_tasks.backend import LongTimeTaskBackend, broker_priority, owned_by
from long_time_task.django_tasks.compat import (
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
    task_finished,
)
from long_time_task.django_tasks.definition import TrackedTask
from long_time_task.django_tasks.definition import task as tracked_task
from long_time_task.django_tasks.results import exception_path
from long_time_task.models import AttemptCause, LongTimeTask, TaskState
from long_time_task.registry import LongTimeTaskRegister
from long_time_task.signals import task_ended
from long_time_task.worker import recovery
from long_time_task.worker.executor import Executor
from tests.conftest import token_client
from tests.testapp import jobs

pytestmark = pytest.mark.django_db


def test_the_backend_is_the_default_and_supports_everything_it_can():
    """Django: test_tasks.TaskTestCase.test_using_correct_backend, test_immediate_backend's
    .test_using_correct_backend (alias, options)."""
    assert isinstance(task_backends["default"], LongTimeTaskBackend)
    assert default_task_backend.alias == "default" and default_task_backend.options == {}
    flags = ("supports_defer", "supports_priority", "supports_get_result", "supports_async_task")
    assert all(getattr(default_task_backend, flag) is True for flag in flags)
    assert isinstance(jobs.noop_task, TrackedTask) and isinstance(jobs.noop_task_from_bare_decorator, TrackedTask)


def test_enqueue_writes_one_pending_row_and_returns_a_ready_result():
    """Django: test_tasks.TaskTestCase.test_enqueue_task (READY, task, args, kwargs)."""
    result = jobs.noop_task.enqueue(1, two=[3, (4, 5)])
    assert result.status == TaskResultStatus.READY
    assert (result.task, result.args, result.kwargs) == (jobs.noop_task, [1], {"two": [3, [4, 5]]})
    assert (result.started_at, result.finished_at, result.worker_ids, result.errors) == (None, None, [], [])
    assert result.enqueued_at is not None
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    row = LongTimeTask.objects.get(id=int(result.id))
    assert (row.task_type, row.state, row.queue, row.priority) == (jobs.noop_task.module_path, "PENDING", "default", 5)
    assert row.task_params == {"args": [1], "kwargs": {"two": [3, [4, 5]]}}
    assert row.owner is None  # server code's task


def test_get_result_reads_the_row_and_a_missing_id_raises():
    """Django: test_tasks.TaskTestCase.test_get_result, .test_get_missing_result, .test_get_incorrect_result,
    test_dummy_backend's .test_get_result / .test_get_missing_result."""
    result = jobs.calculate_meaning_of_life.enqueue()
    assert jobs.calculate_meaning_of_life.get_result(result.id) == result
    assert default_task_backend.get_result(result.id) == result
    for missing in ("123456789", "abc", "0", "-1"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(missing)
    with pytest.raises(Exception, match="Task does not match"):
        jobs.noop_task.get_result(result.id)


def test_a_row_that_is_not_a_django_task_is_not_a_result():
    registry_row = LongTimeTask.objects.insert(task_type="test_echo", task_params={"n": 1})
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(registry_row.id))


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (TaskState.PENDING, TaskResultStatus.READY),
        (TaskState.RETRYING, TaskResultStatus.READY),
        (TaskState.RUNNING, TaskResultStatus.RUNNING),
        (TaskState.FINISHED, TaskResultStatus.SUCCESSFUL),
        (TaskState.FAILED, TaskResultStatus.FAILED),
        (TaskState.CANCELLED, TaskResultStatus.FAILED),
    ],
)
def test_status_mapping(state, status):
    """The documented mapping of the row's state onto TaskResultStatus (docs/django-tasks.md)."""
    result = jobs.echo.enqueue()
    LongTimeTask.objects.filter(id=int(result.id)).update(state=state, result={"x": 1})
    result.refresh()
    assert result.status == status
    if status == TaskResultStatus.FAILED:
        assert len(result.errors) == 1  # every failed result carries an error, as Django's backends give
    if status == TaskResultStatus.SUCCESSFUL:
        assert result.return_value == {"x": 1}


def test_a_task_cancelled_before_it_started_reads_as_failed_by_taskcancelled():
    from long_time_task import services

    result = jobs.noop_task.enqueue()
    services.cancel_task(int(result.id))
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "long_time_task.context.TaskCancelled"
    assert result.finished_at is not None and result.attempts == 0


def test_arguments_that_do_not_round_trip_through_json_are_refused_before_any_row():
    """Django: test_tasks.TaskTestCase.test_enqueue_with_invalid_argument, .test_aenqueue_with_invalid_argument."""
    before = LongTimeTask.objects.count()
    with pytest.raises(TypeError, match="Unsupported type"):
        jobs.noop_task.enqueue(datetime.now())
    with pytest.raises(TypeError, match="Unsupported type"):
        jobs.noop_task.enqueue(mapping={1: "a"})  # JSON would give back {"1": "a"}
    with pytest.raises(ValueError, match="NaN"):
        jobs.noop_task.enqueue(float("nan"))
    with pytest.raises(ValueError, match="Unsupported value"):
        jobs.noop_task.enqueue(b"\xff")
    assert LongTimeTask.objects.count() == before


def test_validate_task_refuses_what_django_refuses():
    """Django: test_tasks.TaskTestCase.test_naive_datetime, .test_invalid_priority, .test_unknown_queue_name,
    .test_invalid_function, .test_takes_context_without_taking_context; test_immediate_backend's
    .test_validate_on_enqueue."""
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime."):
        jobs.noop_task.using(run_after=datetime.now())
    message = f"priority must be a whole number between {TASK_MIN_PRIORITY} and {TASK_MAX_PRIORITY}."
    for priority in (-101, 101, 3.1):
        with pytest.raises(InvalidTask, match=message.replace(".", r"\.")):
            jobs.noop_task.using(priority=priority)  # type: ignore[arg-type]
    for priority in (-100, 0, 100):
        jobs.noop_task.using(priority=priority)
    with pytest.raises(InvalidTask, match="Queue 'queue-2' is not valid for backend."):
        jobs.noop_task.using(queue_name="queue-2")
    for invalid in (any, test_validate_task_refuses_what_django_refuses.__code__):
        with pytest.raises(InvalidTask, match="Task function must be defined at a module level."):
            task()(invalid)  # type: ignore[arg-type]

    def local():  # not importable by a worker
        return None

    with pytest.raises(InvalidTask, match="module level"):
        task()(local)
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(jobs.calculate_meaning_of_life.func)


def test_options_are_checked_like_the_registrys():
    """Per-task options: a soft limit not below the hard one is refused at decoration, with Django's exception."""
    with LongTimeTaskRegister.isolated(), pytest.raises(InvalidTask, match="soft_timeout"):
        tracked_task(timeout=10, soft_timeout=10)(jobs.sleeps_too_long.func)
    with pytest.raises(TypeError, match="Unknown task options: colour"):
        tracked_task(colour="red")(jobs.noop_task.func)


def test_a_kwargs_schema_refuses_bad_kwargs_before_any_row():
    before = LongTimeTask.objects.count()
    with pytest.raises(ValueError, match="params.kwargs.n"):
        jobs.needs_n.enqueue(n="three")
    assert LongTimeTask.objects.count() == before
    assert jobs.needs_n.enqueue(n=3).kwargs == {"n": 3}


def test_priority_maps_monotonically_onto_the_registrys_and_defaults_meet():
    """supports_priority: -100..100 onto 1..10, never inverted, Django's default 0 on the registry's default 5."""
    mapped = [broker_priority(p) for p in range(TASK_MIN_PRIORITY, TASK_MAX_PRIORITY + 1)]
    assert mapped == sorted(mapped) and (mapped[0], mapped[-1]) == (1, 10) and set(mapped) == set(range(1, 11))
    assert broker_priority(0) == 5 and broker_priority(1) == 6
    assert dispatch.broker_priority(broker_priority(100), "redis://x") == 0  # Redis: 0 first
    result = jobs.noop_task.using(priority=100, queue_name="heavy").enqueue()
    row = LongTimeTask.objects.get(id=int(result.id))
    assert (row.priority, row.queue, row.task_params.get("priority")) == (10, "heavy", 100)
    assert default_task_backend.get_result(result.id).task.priority == 100


def test_run_after_is_stored_and_read_back():
    """Django: test_tasks.TaskTestCase.test_using_run_after, .test_chained_using; supports_defer."""
    later = timezone.now() + timedelta(hours=1)
    result = jobs.noop_task.using(run_after=later).using(priority=10).enqueue()
    row = LongTimeTask.objects.get(id=int(result.id))
    assert row.run_after == later
    fetched = default_task_backend.get_result(result.id)
    assert (fetched.task.run_after, fetched.task.priority) == (later, 10)


@pytest.mark.django_db(transaction=True)
def test_task_enqueued_fires_after_the_commit_with_the_result():
    """Django: test_dummy_backend.DummyBackendTestCase.test_enqueue_logs (task_enqueued, with the id); a rolled
    back enqueue was never enqueued."""
    sent = []

    def receiver(sender, task_result, **kwargs):
        sent.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(receiver)
    try:
        with transaction.atomic():
            inside = jobs.noop_task.enqueue()
            assert sent == []
        assert sent == [(LongTimeTaskBackend, inside.id, TaskResultStatus.READY)]
        outside = jobs.noop_task.enqueue()
        assert sent[-1][1] == outside.id
    finally:
        task_enqueued.disconnect(receiver)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_enqueue_sends_nothing_and_leaves_no_row():
    sent: list = []
    task_enqueued.connect(sent.append, weak=False, dispatch_uid="rollback-test")
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            jobs.noop_task.enqueue()
            raise RuntimeError
    finally:
        task_enqueued.disconnect(dispatch_uid="rollback-test")
    assert sent == [] and not LongTimeTask.objects.exists()


def test_a_broker_that_is_down_leaves_the_row_pending_for_the_sweeper(monkeypatch, django_capture_on_commit_callbacks):
    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")  # what kombu raises when the connection is refused

    monkeypatch.setattr(current_app.tasks[dispatch.EXECUTOR_TASK], "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = jobs.noop_task.enqueue()
    assert len(callbacks) == 1  # the publish was tried, and refused
    row = LongTimeTask.objects.get(id=int(result.id))
    assert row.state == TaskState.PENDING and row.redispatch_at <= timezone.now() + timedelta(seconds=1)
    assert result.status == TaskResultStatus.READY


def test_owned_by_gives_the_row_an_owner_who_sees_it_but_may_not_resubmit_it(user):
    with owned_by(user):
        result = jobs.echo.enqueue(1)
    row = LongTimeTask.objects.get(id=int(result.id))
    assert row.owner == user
    client = token_client(user)
    detail = client.get(f"/api/tasks/{row.id}/").json()["task"]
    assert detail["task_type"] == jobs.echo.module_path
    # A django task is server code: no user submits it through the API, unless the task names a permission.
    response = client.post(
        "/api/tasks/", {"task_type": jobs.echo.module_path, "params": {"args": [], "kwargs": {}}}, format="json"
    )
    assert response.status_code in (400, 403), response.content
    assert not LongTimeTaskRegister.get_task(jobs.echo.module_path).may_submit(user)


def test_the_resolver_imports_nothing_outside_installed_apps_and_only_registers_django_tasks(settings):
    assert "this_module_does_not_exist" not in sys.modules
    outside = ("os.system", "subprocess.run", "this_module_does_not_exist.f", "../etc")
    for name in (*outside, "long_time_task.services.submit"):
        resolver.resolve(name)
        assert LongTimeTaskRegister.get_task(name) is None
    assert "this_module_does_not_exist" not in sys.modules

    LongTimeTaskRegister.unregister(jobs.echo.module_path)
    assert LongTimeTaskRegister.registered(jobs.echo.module_path) is None
    runner: Any = LongTimeTaskRegister.get_task(jobs.echo.module_path).handler
    assert runner.task.func is jobs.echo.func

    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    LongTimeTaskRegister.unregister(jobs.echo.module_path)
    assert LongTimeTaskRegister.get_task(jobs.echo.module_path) is None  # the project does not use the backend


def test_exception_path_reads_the_last_exception_of_a_traceback():
    chained = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "a.py", line 3, in f\n    raise Boom\n'
        "myapp.errors.Boom: it broke\nover two lines\n"
    )
    assert exception_path(chained) == "myapp.errors.Boom"
    assert exception_path('Traceback (most recent call last):\n  File "x"\nValueError\n') == "builtins.ValueError"
    assert exception_path("", "timeout") == "celery.exceptions.TimeLimitExceeded"
    assert exception_path("", "worker_lost") == "billiard.exceptions.WorkerLostError"
    assert exception_path("", "unknown_task_type") == "long_time_task.exceptions.TaskError"


# ---------------------------------------------------------------- an attempt, and the signals of its end


@pytest.fixture
def finished_results() -> Any:
    """The results ``task_finished`` sends in this process, in order."""
    sent: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        sent.append(task_result)

    task_finished.connect(receiver, dispatch_uid="tests.finished_results")
    yield sent
    task_finished.disconnect(dispatch_uid="tests.finished_results")


def test_an_attempt_costs_the_executors_two_statements_its_result_built_from_the_claim(finished_results):
    """No SELECT of the row for the TaskResult that task_started and the context carry: the claim's
    ``UPDATE ... RETURNING`` returns what it needs. Django: test_tasks.TaskTestCase.test_takes_context
    (the context's result), test_immediate_backend.ImmediateBackendTestCase.test_enqueue_task (timestamps,
    worker ids, attempts while it runs)."""
    result = jobs.describes_its_result.using(queue_name="heavy", priority=40).enqueue("a", b=1)
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w@host").run(int(result.id), 1) == "finished"
    assert [q["sql"].split()[0].upper() for q in captured.captured_queries] == ["UPDATE", "UPDATE"]
    row = LongTimeTask.objects.get(id=int(result.id))
    assert row.result == {
        "id": result.id,
        "status": "RUNNING",
        "enqueued_at": row.create_at.isoformat(),
        "started_at": row.start_at.isoformat(),
        "last_attempted_at": row.claimed_at.isoformat(),
        "worker_ids": ["w@host"],
        "attempts": 1,
        "args": ["a"],
        "kwargs": {"b": 1},
        "queue_name": "heavy",
        "priority": 40,
    }
    [sent] = finished_results  # in this process: the one that ran it
    assert sent.id == result.id and sent.status == TaskResultStatus.SUCCESSFUL
    assert sent.return_value == row.result


def claimed(result: Any, worker: str = "w@host") -> int:
    task_id = int(result.id)
    assert LongTimeTask.objects.claim(task_id, attempt=1, worker=worker, lease=30) is not None
    return task_id


def test_a_cancel_before_it_started_sends_task_finished_from_the_canceller(
    finished_results, django_capture_on_commit_callbacks
):
    result = jobs.noop_task.enqueue()
    with django_capture_on_commit_callbacks(execute=True):
        services.cancel_task(int(result.id))
        assert finished_results == []  # after the commit, not before
    [sent] = finished_results
    assert (sent.id, sent.status, sent.attempts) == (result.id, TaskResultStatus.FAILED, 0)
    assert [e.exception_class_path for e in sent.errors] == ["long_time_task.context.TaskCancelled"]


def test_a_recovery_that_gives_up_sends_task_finished_where_it_ran(finished_results):
    """The reaper or the worker's main process fails the attempt of a dead worker: task_finished is sent there,
    once, with the result read from the row; a second recovery of the same attempt sends nothing."""
    result = jobs.kills_its_process.enqueue()  # max_retries=0: the recovery fails it (never called here)
    task_id = claimed(result)
    assert recovery.recover_attempt(task_id, 1, AttemptCause.WORKER_LOST) == "failed"
    assert recovery.recover_attempt(task_id, 1, AttemptCause.LEASE_EXPIRED) == "skipped"
    [sent] = finished_results
    assert (sent.id, sent.status, sent.worker_ids) == (result.id, TaskResultStatus.FAILED, ["w@host"])
    assert [e.exception_class_path for e in sent.errors] == ["billiard.exceptions.WorkerLostError"]


def test_a_hard_time_limit_sends_task_finished_from_the_main_process(finished_results):
    result = jobs.ignores_its_soft_limit.enqueue(30)
    task_id = claimed(result)
    assert Executor.fail_on_hard_time_limit(task_id, 1, 2.0)
    assert not Executor.fail_on_hard_time_limit(task_id, 1, 2.0)
    [sent] = finished_results
    assert [e.exception_class_path for e in sent.errors] == ["celery.exceptions.TimeLimitExceeded"]


def test_task_ended_is_sent_once_per_terminal_write_with_its_attempt():
    ended: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        ended.append({k: kwargs[k] for k in ("task_id", "task_type", "queue", "state", "error_code", "attempt")})

    task_ended.connect(receiver, dispatch_uid="tests.task_ended")
    try:
        ok = jobs.noop_task.enqueue()
        bad = jobs.failing_task_value_error.using(queue_name="heavy").enqueue()
        for result in (ok, bad):
            assert Executor(worker="w").run(int(result.id), 1) in ("finished", "failed")
            assert Executor(worker="w").run(int(result.id), 1) == "skipped"  # a duplicate message: no second end
    finally:
        task_ended.disconnect(dispatch_uid="tests.task_ended")
    assert ended == [
        {
            "task_id": int(ok.id),
            "task_type": jobs.noop_task.module_path,
            "queue": "default",
            "state": "FINISHED",
            "error_code": "",
            "attempt": 1,
        },
        {
            "task_id": int(bad.id),
            "task_type": jobs.failing_task_value_error.module_path,
            "queue": "heavy",
            "state": "FAILED",
            "error_code": "handler_error",
            "attempt": 1,
        },
    ]


def test_a_task_ended_receiver_that_raises_changes_no_outcome(caplog):
    def receiver(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken receiver")

    task_ended.connect(receiver, dispatch_uid="tests.broken")
    try:
        result = jobs.noop_task.enqueue()
        assert Executor(worker="w").run(int(result.id), 1) == "finished"
    finally:
        task_ended.disconnect(dispatch_uid="tests.broken")
    assert LongTimeTask.objects.get(id=int(result.id)).state == TaskState.FINISHED
    assert any("task_ended receiver" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_retry_runs_where_the_original_ran_with_its_priority():
    """A django task's queue and priority are its own (``.using()``), not its type's: a retry or re-run through
    the dashboard, the API or the CLI keeps them. A registered type's retry takes the type's (test_api)."""
    result = jobs.noop_task.using(queue_name="heavy", priority=60).enqueue()
    services.cancel_task(int(result.id))
    new = services.retry_task(int(result.id))
    assert (new.queue, new.priority) == ("heavy", broker_priority(60))
    assert new.task_params["priority"] == 60
    again = default_task_backend.get_result(str(new.id))
    assert (again.task.queue_name, again.task.priority) == ("heavy", 60)

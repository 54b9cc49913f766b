"""The finish sent without waiting for its reply (long_time_task/deferred.py), on a real PostgreSQL.

These tests commit (``transaction=True``): inside a test's transaction the finish is never deferred.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from long_time_task import deferred
from long_time_task.executor import ErrorCode, Executor
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.registry import LongTimeTaskRegister

from .conftest import require_services
from .workers import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def echo(task_id: int, params: dict[str, object]) -> dict[str, object]:
    return {"echo": params, "task_id": task_id}


@pytest.fixture(autouse=True)
def postgresql_and_types():
    require_services()
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="df_echo")(echo)
        yield


def other_connection_sees(task_id: int) -> tuple[str, object]:
    """The row as a second connection sees it: what is committed, whatever the first connection has read."""
    params = connection.get_connection_params()
    plain = {k: v for k, v in params.items() if k not in {"cursor_factory", "context"}}  # psycopg's own loaders
    with psycopg.connect(**plain, autocommit=True) as other:
        row = other.execute("SELECT state, result FROM long_time_task WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def new_task(**fields: object) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="df_echo", task_params={"n": 1}, **fields)


def echoed(task: LongTimeTask) -> dict[str, object]:
    return {"echo": task.task_params, "task_id": task.id}  # what echo returns


def test_the_finish_commits_without_its_reply_being_read_and_the_next_statement_reads_it():
    task = new_task()
    assert Executor(worker="w").run(task.id, 1) == "finished"
    raw = connection.connection
    assert raw in deferred._pending  # sent, reply not read
    # Committed all the same: another connection sees the result (bounded polling, no sleep).
    wait_for(lambda: other_connection_sees(task.id) == ("FINISHED", echoed(task)), timeout=5, what="the commit")
    assert raw in deferred._pending
    # The next statement on this connection, an ordinary ORM query, reads the reply first.
    task.refresh_from_db()
    assert (task.state, task.result, task.progress) == (TaskState.FINISHED, echoed(task), 100.0)
    assert raw not in deferred._pending
    assert "wait" not in raw.__dict__
    assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_task_is_still_two_statements_on_the_worker_the_second_one_deferred():
    task = new_task()
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w").run(task.id, 1) == "finished"
    sql = [q["sql"] for q in captured.captured_queries]
    assert len(sql) == 2, sql
    assert sql[0].startswith('UPDATE "long_time_task"') and "RETURNING" in sql[0]  # the claim
    assert sql[1].startswith('UPDATE "long_time_task"') and "without waiting" in sql[1]  # the finish
    assert LongTimeTask.objects.get(id=task.id).state == TaskState.FINISHED


def test_a_rollback_on_the_connection_does_not_break_the_next_finish():
    # psycopg answers a rollback with DEALLOCATE ALL; the finish is an unnamed statement, so it has nothing
    # there to lose.
    from django.db import IntegrityError, transaction

    first, second = new_task(), new_task()
    assert Executor(worker="w").run(first.id, 1) == "finished"
    with pytest.raises(IntegrityError), transaction.atomic():
        LongTimeTask.objects.create(task_type="df_echo", celery_task_id=first.celery_task_id)  # unique: refused
    assert Executor(worker="w").run(second.id, 1) == "finished"
    deferred.settle()
    states = dict(LongTimeTask.objects.values_list("id", "state"))
    assert states == {first.id: TaskState.FINISHED, second.id: TaskState.FINISHED}


def test_without_persistent_connections_the_finish_waits(settings):
    settings.CELERY_DB_REUSE_MAX = None  # Celery then closes the connection after every task
    task = new_task()
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w").run(task.id, 1) == "finished"
    assert not any("without waiting" in q["sql"] for q in captured.captured_queries)
    assert connection.connection not in deferred._pending


def test_a_finish_for_a_row_that_left_running_changes_nothing_and_is_logged(caplog):
    task = new_task()
    assert LongTimeTask.objects.claim(task.id, attempt=1, worker="w", lease=30) is not None
    assert LongTimeTask.objects.fail(task.id, attempt=1, message="reaped", code=ErrorCode.WORKER_LOST)
    with caplog.at_level(logging.WARNING, logger="long_time_task.deferred"):
        # True: sent. Whether it won is learned when the reply is read, and logged by settle().
        assert LongTimeTask.objects.finish(task.id, attempt=1, result={"late": True}, result_json='{"late": true}')
        task.refresh_from_db()
        deferred.settle()
    assert (task.state, task.result, task.error_code) == (TaskState.FAILED, None, ErrorCode.WORKER_LOST)
    assert "had already left RUNNING" in caplog.text


@pytest.fixture
def refusing_results():
    """A trigger that refuses any result carrying "refuse" with its SQLSTATE (22023 is a data exception)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION ltt_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.result -> 'echo' ? 'refuse' THEN
                    RAISE EXCEPTION 'refused by the test' USING ERRCODE = NEW.result -> 'echo' ->> 'refuse';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER ltt_refuse BEFORE UPDATE ON long_time_task FOR EACH ROW EXECUTE FUNCTION ltt_refuse();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER ltt_refuse ON long_time_task; DROP FUNCTION ltt_refuse();")


@pytest.mark.usefixtures("refusing_results")
def test_a_refused_finish_is_recorded_as_the_tasks_failure_when_the_reply_is_read(caplog):
    task = LongTimeTask.objects.create(task_type="df_echo", task_params={"refuse": "22023"})
    with caplog.at_level(logging.ERROR, logger="long_time_task.deferred"):
        assert Executor(worker="w").run(task.id, 1) == "finished"  # sent; the refusal is not known yet
        deferred.settle()  # what the next task (or the process's shutdown) does first
    task.refresh_from_db()
    assert (task.state, task.error_code) == (TaskState.FAILED, ErrorCode.INVALID_RESULT)
    assert "refused by the test" in task.error_traceback
    assert "refused the result of task" in caplog.text


@pytest.mark.usefixtures("refusing_results")
def test_a_finish_that_fails_for_another_reason_is_written_again_not_failed(caplog):
    # 40001 (a serialization failure) says nothing about the result: settle() runs the finish again, waiting.
    # Here the trigger refuses that too, so the row stays RUNNING for its lease, and is not failed.
    task = LongTimeTask.objects.create(task_type="df_echo", task_params={"refuse": "40001"})
    with caplog.at_level(logging.WARNING, logger="long_time_task.deferred"):
        assert Executor(worker="w").run(task.id, 1) == "finished"
        deferred.settle()
    task.refresh_from_db()
    assert (task.state, task.error_code) == (TaskState.RUNNING, "")
    assert "writing it again" in caplog.text
    assert "Could not record the outcome" in caplog.text


@pytest.mark.usefixtures("refusing_results")
def test_the_next_task_records_a_refused_finish_first():
    refused = LongTimeTask.objects.create(task_type="df_echo", task_params={"refuse": "22023"})
    following = new_task()
    assert Executor(worker="w").run(refused.id, 1) == "finished"
    assert Executor(worker="w").run(following.id, 1) == "finished"
    task = LongTimeTask.objects.get(id=refused.id)
    assert (task.state, task.error_code) == (TaskState.FAILED, ErrorCode.INVALID_RESULT)
    assert LongTimeTask.objects.get(id=following.id).state == TaskState.FINISHED


def test_a_large_result_is_written_the_ordinary_way():
    blob = "x" * deferred.MAX_DEFERRED_RESULT_BYTES
    task = LongTimeTask.objects.create(task_type="df_echo", task_params={"blob": blob})
    with CaptureQueriesContext(connection) as captured:
        assert Executor(worker="w").run(task.id, 1) == "finished"
    assert [q["sql"].split()[0] for q in captured.captured_queries] == ["UPDATE", "UPDATE"]
    assert connection.connection not in deferred._pending


KILLED_AFTER_RETURN = """
import os, signal, sys
import django
django.setup()
from long_time_task.executor import Executor
from django.db import connection
from long_time_task import deferred
outcome = Executor(worker="killed").run(int(sys.argv[1]), 1)
print(outcome, connection.connection in deferred._pending, flush=True)  # finished, and its reply unread
os.kill(os.getpid(), signal.SIGKILL)  # at once: the reply to the finish is never read
"""


def test_a_worker_killed_right_after_sending_the_finish_still_finishes_the_task():
    task = LongTimeTask.objects.create(task_type="test_echo", task_params={"n": 1})  # registered in the process
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "TEST_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_RETURN, str(task.id)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "finished True"
    wait_for(lambda: other_connection_sees(task.id) == ("FINISHED", echoed(task)), timeout=5, what="the commit")

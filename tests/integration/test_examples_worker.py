"""The seed's three example task types on a real worker: each reports progress a person can watch, stops
when cancelled, and a report covers only what its owner may see (real Celery worker, Redis, PostgreSQL).

The examples run on a worker of this module's own, on the "operate" queue (the session worker consumes
"default" and "heavy"), so that it can read the files this module writes and report progress every 0.05 s
instead of every second: then a run of a second or two shows several steps on any machine.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from long_time_task import services
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.registry import LongTimeTaskRegister
from tests.workers import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

DONE: set[str] = {TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED}
EXAMPLES = ("data_analysis", "file_processing", "report_generation")


@pytest.fixture(scope="module")
def example_dirs(tmp_path_factory: Any) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("examples")
    (root / "files").mkdir()
    return root / "files", root / "results"


@pytest.fixture(scope="module")
def examples_worker(
    worker_database: str, broker: Any, example_dirs: tuple[Path, Path], tmp_path_factory: Any
) -> Iterator[WorkerProcess]:
    files, results = example_dirs
    worker = WorkerProcess(
        queues="operate",
        concurrency=1,
        name="examples",
        log_path=tmp_path_factory.mktemp("examples-worker") / "worker.log",
        env=worker_env(
            worker_database,
            LTT_TEST_FILES_DIR=files,
            LTT_TEST_RESULTS_DIR=results,
            LONG_TIME_TASK_PROGRESS_INTERVAL=0.05,
        ),
    ).start()
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def examples_on_the_worker(examples_worker: WorkerProcess, example_dirs: tuple[Path, Path], settings: Any) -> Any:
    """The examples as registered, but routed to this module's worker; the same directories here and there."""
    settings.LONG_TIME_TASK_FILES_DIR, settings.LONG_TIME_TASK_RESULTS_DIR = example_dirs
    with LongTimeTaskRegister.isolated():
        for task_type in EXAMPLES:
            config = LongTimeTaskRegister.require(task_type)
            LongTimeTaskRegister.unregister(task_type)
            LongTimeTaskRegister.add(dataclasses.replace(config, queue="operate"))
        yield examples_worker


def wait_done(task_id: int, timeout: float = 120) -> LongTimeTask:
    return wait_for(
        lambda: row if (row := LongTimeTask.objects.get(id=task_id)).state in DONE else None,
        timeout=timeout,
        what=f"task {task_id} to end",
    )


def watch_progress(task_id: int, timeout: float = 120) -> tuple[list[float], list[str], LongTimeTask]:
    """The progress values seen while the task ran (each change once), their messages, and its final row."""
    values: list[float] = []
    messages: list[str] = []

    def ended() -> LongTimeTask | None:
        row = LongTimeTask.objects.get(id=task_id)
        if row.state == TaskState.RUNNING and row.progress is not None and (not values or values[-1] != row.progress):
            values.append(row.progress)
            messages.append(row.progress_message)
        return row if row.state in DONE else None

    final = wait_for(ended, timeout=timeout, interval=0.01, what=f"task {task_id} to end")
    return values, messages, final


def add_finished_tasks(owner: Any, count: int) -> None:
    """``count`` FINISHED rows of ``owner``, inserted in one statement (the report's durations read them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {LongTimeTask._meta.db_table} (celery_task_id, task_type, task_params, state, result,
                create_at, start_at, finish_at, owner_id, attempts, worker, queue, priority, error_code,
                error_traceback, dispatch_count)
            SELECT 'bulk-' || i, 'bulk_type', '{{}}'::jsonb, 'FINISHED', '{{}}'::jsonb, now(),
                now() - interval '3 seconds', now() - mod(i, 3) * interval '1 second', %s, 1, 'w', 'default',
                5, '', '', 0
            FROM generate_series(1, %s) AS i
            """,  # noqa: S608 - the table name is the model's
            [owner.pk, count],
        )


# ---------------------------------------------------------------- progress and cancellation


def test_a_running_data_analysis_stops_when_cancelled(user):
    task = services.submit_task(
        "data_analysis", {"dataset_id": 11, "analysis_type": "full", "size": 1_000_000}, owner=user
    )
    wait_for(
        lambda: LongTimeTask.objects.get(id=task.id).state != TaskState.PENDING,
        timeout=60,
        interval=0.01,
        what="the analysis to start",
    )
    outcome = services.cancel_task(task.id, user=user)
    assert not outcome.cancelled and outcome.task.cancel_requested_at is not None  # running: asked to stop
    done = wait_done(task.id)
    assert (done.state, done.error_code, done.result) == (TaskState.CANCELLED, "cancelled", None)
    # It stopped by itself between two chunks, not killed after the grace period.
    assert done.error_message == "The task was cancelled while it ran."
    assert done.progress is not None and done.progress < 100


@pytest.mark.parametrize("task_type", EXAMPLES)
def test_each_example_reports_rising_progress_with_a_message(task_type, user, example_dirs):
    files, results = example_dirs
    if task_type == "data_analysis":
        params: dict[str, Any] = {"dataset_id": 12, "analysis_type": "full", "size": 1_000_000}
    elif task_type == "file_processing":
        with (files / "big.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "city", "value"])
            writer.writerows((i, f"city {i % 97}", i * 0.5) for i in range(300_000))
        params = {"file_path": "big.csv", "output_format": "json"}
    else:
        add_finished_tasks(user, 100_000)
        params = {"report_type": "detailed", "format": "json"}
    task = services.submit_task(task_type, params, owner=user)
    values, messages, done = watch_progress(task.id)
    assert done.state == TaskState.FINISHED, done.error_message
    assert len(set(values)) >= 2, values
    assert values == sorted(values) and all(0 <= v <= 100 for v in values)
    assert all(messages), messages
    assert done.progress == 100.0
    if task_type == "file_processing":
        assert len(json.loads((results / done.result["output_file"]).read_text())) == 300_000
    if task_type == "report_generation":
        report = json.loads((results / done.result["report_path"]).read_text())
        assert {t["task_type"]: t["total"] for t in report["types"]}["bulk_type"] == 100_000


# ---------------------------------------------------------------- the report's scope


def failed_task(owner: Any, task_type: str, code: str) -> LongTimeTask:
    return LongTimeTask.objects.create(
        task_type=task_type, owner=owner, state=TaskState.FAILED, error_code=code, celery_task_id=f"seeded-{code}"
    )


def run_report(owner: Any, fmt: str, results: Path) -> tuple[dict[str, Any], str]:
    task = services.submit_task("report_generation", {"report_type": "detailed", "format": fmt}, owner=owner)
    done = wait_done(task.id)
    assert done.state == TaskState.FINISHED, done.error_message
    return done.result, (results / done.result["report_path"]).read_text()


def test_a_detailed_report_covers_only_its_owners_tasks(user, other_user, example_dirs):
    _, results = example_dirs
    mine = failed_task(user, "alice_type", "alice_error")
    theirs = failed_task(other_user, "bob_type", "bob_error")
    for fmt in ("json", "html", "csv"):
        result, text = run_report(user, fmt, results)
        assert "bob_type" not in text and "bob_error" not in text, fmt
        assert "alice_type" in text, fmt
        assert (result["scope"], result["task_types"]) == ("own", 2)  # alice_type and this report's own type
        if fmt == "json":
            report = json.loads(text)
            assert {t["task_type"] for t in report["types"]} == {"alice_type", "report_generation"}
            assert [f["id"] for f in report["recent_failures"]] == [mine.id]
        if fmt == "html":
            assert f"#{theirs.id} " not in text and f"#{mine.id} " in text


@pytest.mark.parametrize("who", ["staff", "no owner"])
def test_a_report_of_staff_or_of_server_code_covers_everyone(who, user, other_user, staff_user, example_dirs):
    _, results = example_dirs
    mine = failed_task(user, "alice_type", "alice_error")
    theirs = failed_task(other_user, "bob_type", "bob_error")
    result, text = run_report(staff_user if who == "staff" else None, "json", results)
    report = json.loads(text)
    assert result["scope"] == report["scope"] == "all"
    assert {"alice_type", "bob_type"} <= {t["task_type"] for t in report["types"]}
    assert {mine.id, theirs.id} <= {f["id"] for f in report["recent_failures"]}

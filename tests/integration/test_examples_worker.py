"""The seed's three example task types on a real worker: a report covers only what its owner may see (real
Celery worker, Redis, PostgreSQL).

The examples run on a worker of this module's own, on the "operate" queue (the session worker consumes
"default" and "heavy"), so that it can read and write this module's directories.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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

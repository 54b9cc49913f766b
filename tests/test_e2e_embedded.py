"""The quick start, end to end, on the embedded default: SQLite plus kombu's SQLAlchemy broker, no server.

Runs the real programs the Procfile runs (a web server and a Celery worker) with no configuration at all,
and submits the three example task types over HTTP with a token from ``create_api_token``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.workers import ROOT, WebServer, WorkerProcess, wait_for


def embedded_env(var_dir: Path) -> dict[str, str]:
    drop = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "LONG_TIME_TASK_", "PYTEST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(DEMO_VAR_DIR=str(var_dir), PYTHONWARNINGS="ignore", CELERY_WORKER_CONCURRENCY="1")
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def call(port: int, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_quick_start_runs_the_three_examples_on_the_embedded_default(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "var")
    manage(env, "migrate", "--noinput", "-v0")
    assert "Demo login" in manage(env, "setup_demo")
    token = manage(env, "create_api_token", "demo").strip().splitlines()[-1]
    assert token.startswith("ltt_")

    worker = WorkerProcess(
        queues="default,heavy,priority", concurrency=1, name="embedded", log_path=tmp_path / "worker.log", env=env
    )
    with WebServer(env, tmp_path / "web.log") as web:
        port = web.port
        try:
            worker.start()
            assert "sqla+sqlite" in worker.output()
            run_the_examples(port, token, tmp_path)
        finally:
            worker.stop()


def run_the_examples(port: int, token: str, tmp_path: Path) -> None:
    submissions = {
        "data_analysis": {"dataset_id": 42, "analysis_type": "full", "size": 2000},
        "file_processing": {"file_path": "sample.csv", "output_format": "json"},
        "report_generation": {"report_type": "detailed", "format": "csv"},
    }
    ids = {}
    for task_type, params in submissions.items():
        status, body = call(port, token, "POST", "/api/tasks/", {"task_type": task_type, "params": params})
        assert status == 201, body
        ids[task_type] = body["task_id"]

    def all_done() -> dict[str, Any] | None:
        tasks = {name: call(port, token, "GET", f"/api/tasks/{i}/")[1]["task"] for name, i in ids.items()}
        return tasks if all(t["state"] in ("FINISHED", "FAILED") for t in tasks.values()) else None

    tasks = wait_for(all_done, timeout=60, interval=0.2, what="the three examples to finish")
    for name, task in tasks.items():
        assert task["state"] == "FINISHED", (name, task)

    stats = tasks["data_analysis"]["result"]["stats"]
    assert stats["count"] == 2000 and stats["min"] < stats["median"] < stats["max"]
    assert sum(b["count"] for b in stats["histogram"]) == 2000

    results_dir = tmp_path / "var" / "results"
    converted = results_dir / tasks["file_processing"]["result"]["output_file"]
    rows = json.loads(converted.read_text())
    assert len(rows) == tasks["file_processing"]["result"]["rows"] == 36
    assert rows[0].keys() == {"city", "month", "rainfall_mm"}

    report = results_dir / tasks["report_generation"]["result"]["report_path"]
    lines = report.read_text().splitlines()
    assert lines[0].startswith("task_type,total") and any(line.startswith("data_analysis,") for line in lines)


@pytest.mark.django_db
def test_migrations_are_committed() -> None:
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)

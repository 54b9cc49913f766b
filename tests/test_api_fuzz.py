"""schemathesis against /api/schema/ of a running server: generated requests (valid and invalid), with an
authenticated user, must never get a 5xx, an undocumented status code, or a body that breaks the schema.

The server runs on the test PostgreSQL database when there is one (some 500s only exist there, such as a
NUL character in a JSON column), else on the embedded SQLite default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from long_time_task.models import ApiToken, LongTimeTask

from .test_e2e_embedded import embedded_env, manage
from .workers import ROOT, WebServer, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = 30
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def server_env(tmp_path: Path, django_user_model: Any) -> tuple[dict[str, str], str]:
    """An environment for the server, and a token of a user with one finished task."""
    if connection.vendor == "postgresql":
        env = worker_env(str(connection.settings_dict["NAME"]))
        user = django_user_model.objects.create_user("fuzzer", password="fuzzer-password")
        LongTimeTask.objects.create(task_type="test_echo", owner=user, state="FINISHED", result={"ok": 1})
        token = ApiToken.issue(user)[1]
    else:
        env = embedded_env(tmp_path / "var")
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "setup_demo")
        token = manage(env, "create_api_token", "demo").strip().splitlines()[-1]
    env["LONG_TIME_TASK_SUBMIT_RATE"] = ""  # the fuzzer submits fast; throttling has its own test
    env["LONG_TIME_TASK_EVENTS_STREAM_SECONDS"] = "1"  # the fuzzer opens event streams too; keep each short
    return env, token


def test_fuzzing_the_api_finds_no_server_error_and_no_schema_violation(tmp_path, django_user_model, broker):
    env, token = server_env(tmp_path, django_user_model)
    with WebServer(env, tmp_path / "web.log") as web:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "run",
                f"http://127.0.0.1:{web.port}/api/schema/?format=json",
                "-H", f"Authorization: Bearer {token}",
                "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
                "--request-timeout", "30",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    summary = result.stdout[-3000:]
    if os.environ.get("LTT_FUZZ_REPORT"):  # for docs/security.md
        Path(os.environ["LTT_FUZZ_REPORT"]).write_text(summary)
    assert result.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.split("SUMMARY")[-1], summary

"""schemathesis against /api/schema/ of a running server, with every check it has (``--checks all``):
generated requests, valid and invalid, from an authenticated user must never get a 5xx, an undocumented
status or content type, or a body that breaks the schema; a request the schema allows must be accepted and
one it refuses must be refused; auth must be enforced where the schema says. So the schema has to say exactly
what the server does, and a new mismatch fails this test.

No check is excluded. Two server rules that depend on state (an input file that exists, a start time at
most 366 days ahead) are met by tests/fuzz_hooks.py for schema-valid requests, as schemathesis advises for
ids that must exist.

The server runs the demo's settings (its three task types) on the test PostgreSQL database when there is one
(some 500s only exist there, such as a NUL character in a JSON column), else on the embedded SQLite default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from long_time_task.models import ApiToken, LongTimeTask

from .test_e2e_embedded import embedded_env, manage
from .workers import ROOT, WebServer

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = 30
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
INPUT_FILE = "fuzz-input.csv"


def server_env(tmp_path: Path, django_user_model: Any) -> tuple[dict[str, str], str]:
    """An environment for the server, and a token of a user with one finished task."""
    if connection.vendor == "postgresql":
        # The demo's settings, on the test database: the task types a user of the demo sees (the schema has a
        # body per type, and the tests' two dozen types would multiply the coverage phase's requests by eight).
        database = connection.settings_dict
        env = embedded_env(tmp_path / "var")
        login = quote(database["USER"]) + (f":{quote(database['PASSWORD'])}" if database.get("PASSWORD") else "")
        host = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
        env["DATABASE_URL"] = f"postgres://{login}@{host}/{database['NAME']}"
        env["CELERY_BROKER_URL"] = settings.TEST_REDIS_URL
        user = django_user_model.objects.create_user("fuzzer", password="fuzzer-password")
        LongTimeTask.objects.create(task_type="report_generation", owner=user, state="FINISHED", result={"ok": 1})
        token = ApiToken.issue(user)[1]
    else:
        env = embedded_env(tmp_path / "var")
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "setup_demo")
        token = manage(env, "create_api_token", "demo").strip().splitlines()[-1]
    env["LONG_TIME_TASK_SUBMIT_RATE"] = ""  # the fuzzer submits fast; throttling has its own test
    env["LONG_TIME_TASK_MAX_UNFINISHED_PER_USER"] = "0"  # nor the cap on unfinished tasks (it submits hundreds)
    env["LONG_TIME_TASK_EVENTS_STREAM_SECONDS"] = "0.05"  # the fuzzer opens hundreds of event streams,
    env["LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS"] = "100"  # one after the other (the cap has its own tests)
    files = tmp_path / "fuzz-files"
    files.mkdir()
    (files / INPUT_FILE).write_text("a,b\n1,2\n")
    env["LONG_TIME_TASK_FILES_DIR"] = env["LTT_TEST_FILES_DIR"] = str(files)
    return env, token


@pytest.mark.timeout(900)
def test_fuzzing_the_api_finds_no_server_error_and_no_schema_violation(tmp_path, django_user_model, broker):
    env, token = server_env(tmp_path, django_user_model)
    with WebServer(env, tmp_path / "web.log") as web:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "run",
                f"http://127.0.0.1:{web.port}/api/schema/?format=json",
                "-H", f"Authorization: Bearer {token}",
                "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
                "--request-timeout", "30",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=840,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "LTT_FUZZ_INPUT_FILE": INPUT_FILE},
        )  # fmt: skip
    summary = result.stdout[-3000:]
    if os.environ.get("LTT_FUZZ_REPORT"):  # for docs/security.md
        Path(os.environ["LTT_FUZZ_REPORT"]).write_text(summary)
    assert result.returncode == 0, result.stdout[-30000:]  # every failure, each with its curl to replay it
    assert " passed" in summary and "failure" not in summary.split("SUMMARY")[-1], summary

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from long_time_task.checks import check_db_reuse, check_task_queues
from long_time_task.dispatch import broker_priority
from long_time_task.models import ApiToken, hash_token
from tests.workers import ROOT


@pytest.mark.django_db
def test_create_api_token_prints_the_token_alone_on_the_last_line(user):
    out = io.StringIO()
    call_command("create_api_token", "alice", "--expires-in", "30", stdout=out)
    raw = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get(key_hash=hash_token(raw))
    assert token.user == user and token.expires_at is not None and " " not in raw


@pytest.mark.django_db
def test_create_api_token_rejects_unknown_users_and_bad_expiry(user):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("create_api_token", "nobody")
    with pytest.raises(CommandError, match="positive number of days"):
        call_command("create_api_token", "alice", "--expires-in", "0")


@pytest.mark.django_db
def test_revoke_api_token_by_token_or_prefix(user):
    first, raw = ApiToken.issue(user)
    second, _ = ApiToken.issue(user)
    call_command("revoke_api_token", raw, stdout=io.StringIO())
    call_command("revoke_api_token", second.key_prefix, stdout=io.StringIO())
    assert not ApiToken.objects.usable().exists()
    with pytest.raises(CommandError):
        call_command("revoke_api_token", raw, stdout=io.StringIO())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", [9, 5, 0]),
        ("rediss://:pw@host:6380/0", [9, 5, 0]),
        ("amqp://guest:guest@localhost:5672//", [1, 5, 10]),
        ("sqla+sqlite:///var/broker.sqlite3", [None, None, None]),
    ],
)
def test_priority_maps_1_to_10_onto_the_brokers_order(url, expected):
    assert [broker_priority(p, url) for p in (1, 5, 10)] == expected


def test_queue_check_catches_a_type_routed_to_an_undeclared_queue():
    from long_time_task.registry import LongTimeTaskRegister
    from tests.test_registry import handler

    assert check_task_queues() == []
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="t_lost", queue="nowhere")(handler)
        errors = check_task_queues()
    assert [e.id for e in errors] == ["long_time_task.E001"] and "'nowhere'" in errors[0].msg


def test_db_reuse_check_warns_when_celery_would_reconnect_per_task():
    assert check_db_reuse() == []
    with override_settings(CELERY_DB_REUSE_MAX=None):
        assert [w.id for w in check_db_reuse()] == ["long_time_task.W001"]


def settings_in_subprocess(env: dict[str, str], expression: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE_URL", "CELERY", "PYTEST"))}
    clean.update(env)
    code = f"import demo.settings as s; print({expression})"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_settings_come_from_the_environment(tmp_path):
    env = {
        "DEMO_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://app:secret@db.internal:5433/tasks",
        "CELERY_BROKER_URL": "rediss://:pw@redis.internal:6380/2",
        "DJANGO_SECRET_KEY": "s3cret",
        "DJANGO_DEBUG": "false",
        "DJANGO_ALLOWED_HOSTS": "tasks.example.com, api.example.com",
        "DJANGO_LANGUAGE_CODE": "zh-hans",
        "DJANGO_TIME_ZONE": "UTC",
    }
    expr = (
        "s.DATABASES['default']['HOST'], s.DATABASES['default']['PORT'], s.DATABASES['default']['NAME'], "
        "s.CELERY_BROKER_URL, s.SECRET_KEY, s.DEBUG, s.ALLOWED_HOSTS, s.LANGUAGE_CODE, s.TIME_ZONE, "
        "s.CELERY_BROKER_TRANSPORT_OPTIONS['priority_steps'][-1]"
    )
    assert settings_in_subprocess(env, expr) == (
        "db.internal 5433 tasks rediss://:pw@redis.internal:6380/2 s3cret False "
        "['tasks.example.com', 'api.example.com'] zh-hans UTC 9"
    )


def test_defaults_are_the_embedded_sqlite_and_serverless_broker(tmp_path):
    out = settings_in_subprocess(
        {"DEMO_VAR_DIR": str(tmp_path)}, "s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.TIME_ZONE"
    )
    assert out == f"django.db.backends.sqlite3 sqla+sqlite:///{tmp_path}/broker.sqlite3 Asia/Shanghai"


def test_production_without_a_secret_key_refuses_to_start(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PYTEST"))}
    clean.update(DEMO_VAR_DIR=str(tmp_path), DJANGO_DEBUG="false")
    result = subprocess.run(
        [sys.executable, "-c", "import demo.settings"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_settings_pass_check_deploy(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PYTEST"))}
    clean.update(
        DEMO_VAR_DIR=str(tmp_path),
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="k" * 20 + "-production-secret-from-the-environment-0123456789",
        DJANGO_ALLOWED_HOSTS="tasks.example.com",
        # Several web processes share the throttle counters (failed logins, submit rate) through it.
        DJANGO_CACHE_URL="redis://cache.internal:6379/1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # Without a shared cache, each web process would count failed logins on its own: axes says so.
    del clean["DJANGO_CACHE_URL"]
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "axes.W001" in result.stderr


def test_a_rediss_broker_verifies_the_certificate(tmp_path):
    env = {"DEMO_VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": "rediss://:pw@redis.internal:6380/0",
           "CELERY_BROKER_SSL_CA_CERTS": "/etc/ssl/ca.pem"}  # fmt: skip
    out = settings_in_subprocess(
        env, "s.CELERY_BROKER_USE_SSL['ssl_cert_reqs'].name, s.CELERY_BROKER_USE_SSL['ssl_ca_certs']"
    )
    assert out == "CERT_REQUIRED /etc/ssl/ca.pem"


def test_the_executor_task_acknowledges_as_the_project_says_the_seeds_late_acknowledgement_by_default(tmp_path):
    # Subprocesses: Celery reads task_acks_late when the task is bound, once per process.
    (tmp_path / "early_ack_settings.py").write_text("from demo.settings import *\nCELERY_TASK_ACKS_LATE = False\n")
    code = (
        "import django; django.setup(); from demo.celery import app; "
        "from long_time_task.worker.tasks import execute_long_time_task as t; print(t.acks_late)"
    )
    seen = {}
    for module in ("demo.settings", "early_ack_settings"):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": module, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seen[module] = done.stdout.strip().splitlines()[-1]
    assert seen == {"demo.settings": "True", "early_ack_settings": "False"}

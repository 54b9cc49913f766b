"""deploy/'s recipes agree with each other and with the app, without starting them: gunicorn reads both of its
config files, systemd accepts every unit, and in every recipe each queue has a worker, there is one beat, and a
worker is given longer to stop than its longest task may run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from honcho.environ import parse_procfile

from demo.settings import CELERY_TASK_QUEUES
from long_time_task.registry import LongTimeTaskRegister
from tests.deploy.conftest import binary
from tests.deploy.recipes import (
    DEPLOY,
    Layout,
    queues_of,
    supervisor_programs,
    systemd_worker_groups,
    unit_setting,
)
from tests.workers import ROOT

DEMO_QUEUES = {queue.name for queue in CELERY_TASK_QUEUES}
UNITS = ("ltt.target", "ltt-web.service", "ltt-events.service", "ltt-worker@.service", "ltt-beat.service")


def gunicorn_config(name: str, **env: str) -> dict[str, str]:
    """gunicorn's own reading of a config file (``--print-config``: its settings, fully resolved)."""
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", f"deploy/{name}", "--print-config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore", **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, flags=re.MULTILINE))


def longest_task(queues: set[str]) -> float:
    """The longest hard timeout of the registered task types sent to ``queues``; 0 for the maintenance queue, which
    carries none: only beat's periodic jobs (the reaper, the sweeper, ...), each sent again at its next tick."""
    configs = LongTimeTaskRegister.get_all_tasks().values()
    return max((config.timeout for config in configs if config.queue in queues), default=0)


def seconds(timespan: str) -> float:
    """A systemd time span (``2h5min``) in seconds, as systemd reads it."""
    analyze = binary("systemd-analyze", "systemd")
    out = subprocess.run([str(analyze), "timespan", timespan], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"μs: (\d+)", out)[1]) / 1_000_000


def test_gunicorn_web_config_is_gthread_with_threads_bound_from_the_environment() -> None:
    config = gunicorn_config("gunicorn.conf.py", LTT_WEB_BIND="127.0.0.1:9000", LTT_WEB_WORKERS="3")
    assert config["wsgi_app"] == "demo.wsgi:application"
    assert (config["worker_class"], config["workers"], config["threads"]) == ("gthread", "3", "4")
    assert config["bind"] == "['127.0.0.1:9000']"
    # A stopping process lets a whole event stream end before its workers are killed.
    assert float(config["graceful_timeout"]) > settings.LONG_TIME_TASK_EVENTS_STREAM_SECONDS
    assert "%(M)s" in config["access_log_format"] and "x-forwarded-for" in config["access_log_format"]


def test_gunicorn_events_config_is_uvicorn_without_persistent_database_connections() -> None:
    config = gunicorn_config("gunicorn-asgi.conf.py")
    assert config["wsgi_app"] == "demo.asgi:application"
    assert config["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert config["bind"] == "['127.0.0.1:8001']"
    assert config["raw_env"] == "['DATABASE_CONN_MAX_AGE=0']"
    assert float(config["graceful_timeout"]) > settings.LONG_TIME_TASK_EVENTS_STREAM_SECONDS


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the units as installed (the template as its three instances), rendered with
    this virtualenv in place of /opt/ltt/venv: verify checks that every ExecStart= program exists."""
    analyze = binary("systemd-analyze", "systemd")
    layout = Layout(tmp_path)
    for unit in UNITS:
        (tmp_path / unit).write_text(layout.systemd((DEPLOY / "systemd" / unit).read_text()))
    instances = [f"ltt-worker@{group}.service" for group in systemd_worker_groups()]
    for instance in instances:
        (tmp_path / instance).symlink_to(tmp_path / "ltt-worker@.service")
    result = subprocess.run(
        [str(analyze), "verify", "--man=no", *(unit for unit in UNITS if not unit.endswith("@.service")), *instances],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_COLOR": "0"},
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_systemd_stops_gracefully_and_gives_a_worker_longer_than_its_longest_task() -> None:
    for unit in ("ltt-web.service", "ltt-events.service", "ltt-worker@.service", "ltt-beat.service"):
        assert unit_setting(unit, "KillMode") == "mixed", unit  # SIGTERM to the main process only
    for unit in ("ltt-web.service", "ltt-events.service", "ltt-worker@.service"):
        assert unit_setting(unit, "Restart") == "on-failure", unit
    # Beat may exit 1 on a stop (a race in Celery): that status is a clean stop, so any exit of its own restarts it.
    assert unit_setting("ltt-beat.service", "SuccessExitStatus") == "1"
    assert unit_setting("ltt-beat.service", "Restart") == "always"
    assert unit_setting("ltt-worker@.service", "KillSignal") == "SIGTERM"  # Celery's warm shutdown
    stop = seconds(unit_setting("ltt-worker@.service", "TimeoutStopSec"))
    for group, queues in systemd_worker_groups().items():
        assert stop > longest_task(queues), group
    web_config = gunicorn_config("gunicorn.conf.py")
    assert seconds(unit_setting("ltt-web.service", "TimeoutStopSec")) > float(web_config["graceful_timeout"])


def test_supervisor_stops_gracefully_and_gives_a_worker_longer_than_its_longest_task() -> None:
    programs = supervisor_programs()
    for name, program in programs.items():
        assert program["stopsignal"] == "TERM", name
        # TERM to the main process only (Celery's pool children must not get it), SIGKILL to the group at last.
        assert (program["stopasgroup"], program["killasgroup"]) == ("false", "true"), name
        assert program["command"].startswith("/opt/ltt/app/deploy/bin/ltt-exec /etc/ltt/env "), name
    workers = {name: program for name, program in programs.items() if " worker " in program["command"]}
    for name, program in workers.items():
        assert int(program["stopwaitsecs"]) > longest_task(queues_of(program["command"])), name
    web_config = gunicorn_config("gunicorn.conf.py")
    assert int(programs["web"]["stopwaitsecs"]) > float(web_config["graceful_timeout"])


def test_every_recipe_runs_a_worker_for_every_queue_and_exactly_one_beat() -> None:
    procfile = parse_procfile((DEPLOY / "Procfile").read_text()).processes
    supervisor = supervisor_programs()
    by_recipe = {
        "Procfile": [queues_of(command) for command in procfile.values() if "celery -A demo worker" in command],
        "supervisor": [queues_of(p["command"]) for p in supervisor.values() if " worker " in p["command"]],
        "systemd": list(systemd_worker_groups().values()),
    }
    for recipe, groups in by_recipe.items():
        consumed = set().union(*groups)
        assert consumed == DEMO_QUEUES, (recipe, consumed)
        assert sum(len(group) for group in groups) == len(consumed), f"{recipe}: a queue in two groups"
    assert [name for name, command in procfile.items() if " beat " in command] == ["beat"]
    assert [name for name, p in supervisor.items() if " beat " in p["command"]] == ["beat"]
    assert "ltt-beat.service" in (DEPLOY / "systemd" / "ltt.target").read_text()


def test_the_procfile_releases_with_migrate_and_serves_with_the_gunicorn_configs() -> None:
    procfile = parse_procfile((DEPLOY / "Procfile").read_text()).processes
    assert procfile["release"].startswith("python manage.py migrate --noinput")
    assert procfile["web"].startswith("gunicorn -c deploy/gunicorn.conf.py --bind 0.0.0.0:$PORT")
    assert procfile["events"].startswith("gunicorn -c deploy/gunicorn-asgi.conf.py ")


@pytest.mark.parametrize("name", ["env", "worker-default.env", "worker-heavy.env", "worker-maintenance.env"])
def test_the_example_environment_files_read_the_same_in_systemd_and_sh(name: str) -> None:
    """systemd reads /etc/ltt/env itself (EnvironmentFile=), Supervisor's programs through sh (deploy/bin/ltt-exec):
    the example must mean the same to both, so every value is plain or single-quoted."""
    for line in (DEPLOY / "etc" / "ltt" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=([^\s'\"$`\\]*|'[^']*')", line), line

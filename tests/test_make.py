"""The quick start's two commands on a fresh machine: ``make run`` (its port, its Ctrl-C) and what ``make test``
installs for its own tests, and what the test run says it used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import services_summary
from tests.workers import ROOT, free_port, wait_for

STUB_APT_GET = """#!/bin/sh
# apt-get that knows no chromium until `update` has run, as on a fresh machine.
echo "${DEBIAN_FRONTEND:-} $*" >> "$STUB_LOG"
case "$1" in
  update) touch "$STUB_STATE/updated" ;;
  install) [ -e "$STUB_STATE/updated" ] || { echo "E: Unable to locate package chromium" >&2; exit 100; } ;;
esac
"""


def stub_bin(tmp_path: Path) -> dict[str, str]:
    """A PATH whose apt-get (and sudo) are stubs recording their calls; chromium is missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(STUB_APT_GET)
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "DEBIAN_FRONTEND"))}
    env.update(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        STUB_LOG=str(tmp_path / "apt-get.log"),
        STUB_STATE=str(tmp_path),
        LTT_CHROMIUM=str(tmp_path / "no-chromium-here"),
        LTT_PROMETHEUS="/bin/sh",  # there (the prometheus tests have their own)
        LTT_PROMTOOL="/bin/sh",
        LTT_NGINX="/bin/sh",  # there (the deployment recipes' tests have their own)
        LTT_SUPERVISORD="/bin/sh",
        LTT_SYSTEMD_ANALYZE="/bin/sh",
        LTT_OPENSSL="/bin/sh",
        LTT_REDIS_SERVER="/bin/sh",  # there (the Sentinel test has its own)
        LTT_REDIS_SENTINEL="/bin/sh",
    )
    return env


def test_make_test_installs_chromium_when_it_is_missing_updating_apt_when_it_must(tmp_path):
    env = stub_bin(tmp_path)
    result = subprocess.run(["make", "-s", "test-deps"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt-get.log").read_text().splitlines()
    assert calls == [
        "noninteractive install -y -qq chromium",
        " update -qq",
        "noninteractive install -y -qq chromium",
    ]


def test_make_test_installs_nothing_when_chromium_is_there(tmp_path):
    env = {**stub_bin(tmp_path), "LTT_CHROMIUM": "/bin/sh"}
    result = subprocess.run(["make", "-s", "test-deps"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "apt-get.log").exists()


def test_make_test_installs_prometheus_and_promtool_when_one_is_missing(tmp_path):
    env = {**stub_bin(tmp_path), "LTT_CHROMIUM": "/bin/sh", "LTT_PROMTOOL": str(tmp_path / "no-promtool-here")}
    result = subprocess.run(["make", "-s", "test-deps"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt-get.log").read_text().splitlines()
    assert calls == [
        "noninteractive install -y -qq prometheus",
        " update -qq",
        "noninteractive install -y -qq prometheus",
    ]


def test_make_test_runs_its_installs_before_the_suite(tmp_path):
    dry_run = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, env=stub_bin(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert dry_run.returncode == 0, dry_run.stderr
    lines = dry_run.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "apt-get install -y -qq chromium" in line)
    suite = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert install < suite


def test_the_skip_summary_names_the_database_and_broker_the_run_used():
    rabbitmq = {"RabbitMQ (127.0.0.1:5672//)"}
    served = services_summary(rabbitmq, "postgresql", "redis://127.0.0.1:6379/15")
    assert "Skipped the tests that need: RabbitMQ (127.0.0.1:5672//)." in served
    assert "The rest ran on PostgreSQL with a redis:// broker;" in served
    assert "embedded" not in served and "SQLite" not in served
    embedded = services_summary({"PostgreSQL (…)", "Redis (…)"}, "sqlite", "sqla+sqlite:///var/broker.sqlite3")
    assert "The rest ran on the embedded default (SQLite with a sqla+sqlite:// broker);" in embedded


# ---------------------------------------------------------------- make run


def processes_with(marker: str) -> list[int]:
    """The processes whose environment holds ``marker`` (everything `make run` started inherits it)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_make_run_serves_on_web_port_and_stops_cleanly_on_ctrl_c(tmp_path):
    port, marker = free_port(), f"LTT_MAKE_RUN_TEST={uuid.uuid4().hex}"
    venv = Path(sys.prefix)
    drop = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "LONG_TIME_TASK_", "PYTEST", "MAKE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(DEMO_VAR_DIR=str(tmp_path / "var"), WEB_PORT=str(port), PYTHONWARNINGS="ignore")
    env[marker.split("=")[0]] = marker.split("=")[1]
    log_path = tmp_path / "run.log"
    # This test's virtualenv, never reinstalled here (-o: its stamp counts as up to date).
    command = ["make", "-o", str(venv / ".installed"), "run", f"VENV={venv}"]
    with log_path.open("wb") as log:
        # A session of its own: SIGINT to its process group is what Ctrl-C in a terminal sends. SIGINT handled as
        # a terminal's Ctrl-C finds it, whatever started this test (a shell's background job ignores SIGINT, and
        # make keeps a signal ignored at its start ignored).
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads started here
        )

    def output() -> str:
        if process.poll() is not None and process.returncode != -signal.SIGINT:
            raise AssertionError(f"make run exited with {process.returncode}:\n{log_path.read_text()}")
        return log_path.read_text(errors="replace")

    try:
        wait_for(lambda: "Dashboard: http://" in output(), timeout=120, what="the URLs")
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/dashboard/login/"), timeout=60, what="the web server")
        wait_for(lambda: " ready." in output() and "beat: Starting" in output(), timeout=60, what="worker and beat")
        os.killpg(process.pid, signal.SIGINT)
        status = process.wait(timeout=60)
        wait_for(lambda: not processes_with(marker), timeout=15, what="every process to be gone")
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=15)
    out = log_path.read_text(errors="replace")
    printed = [line for line in out.splitlines() if "http://127.0.0.1:" in line and "|" not in line]
    assert len(printed) == 3 and all(f"127.0.0.1:{port}/" in line for line in printed), printed
    assert "SIGINT received" in out
    for name in ("web.1", "worker.1", "beat.1"):
        assert f"{name} stopped" in out, out
    assert "ERROR" not in out and "Traceback" not in out, out
    # The recipe ended with 0: make reports no "Error 130" nor "Interrupt" for it. make itself then dies of
    # the SIGINT it received too, as GNU make does, so that the shell sees the interrupt.
    assert "make: ***" not in out, out
    assert status == -signal.SIGINT

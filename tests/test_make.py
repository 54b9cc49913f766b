"""The quick start's commands on a fresh machine: what ``make test`` installs for its own tests, and what the
test run says it used."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import services_summary
from tests.workers import ROOT

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

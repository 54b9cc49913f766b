"""The recipes of deploy/, read and rendered for this machine.

The recipes name the production layout: the project in ``/opt/ltt/app``, its virtualenv in ``/opt/ltt/venv``, the
environment in ``/etc/ltt``, state in ``/var/lib/ltt``, logs in ``/var/log/ltt``, gunicorn on 127.0.0.1:8000
(WSGI) and :8001 (ASGI), nginx on ports 80 and 443. A test renders the very same files with these strings
replaced by this checkout, its virtualenv, directories under the test's temporary directory and free ports; it drops
Supervisor's ``user=`` (the programs run as the test's user) and nginx's IPv6 ``listen`` lines, and gives each
Celery worker one child (``--concurrency 1``). Nothing else is changed.
"""

from __future__ import annotations

import configparser
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.workers import ROOT

DEPLOY = ROOT / "deploy"
VENV = Path(sys.prefix)  # the virtualenv running the tests: its gunicorn and celery


@dataclass(frozen=True)
class Layout:
    """Where a rendered recipe puts things: the production paths, moved under ``root``, and ports."""

    root: Path
    web_port: int = 8000
    events_port: int = 8001
    http_port: int = 80
    https_port: int = 443

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def state(self) -> Path:
        return self.root / "var"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    def paths(self, text: str) -> str:
        for production, here in (
            ("/opt/ltt/venv", VENV),
            ("/opt/ltt/app", ROOT),
            ("/etc/ltt", self.etc),
            ("/var/lib/ltt", self.state),
            ("/var/log/ltt", self.logs),
        ):
            text = text.replace(production, str(here))
        return text

    def systemd(self, text: str) -> str:
        return self.paths(text)

    def supervisor(self, text: str, *, concurrency: int = 1) -> str:
        text = re.sub(r"^user=.*\n", "", self.paths(text), flags=re.MULTILINE)
        return re.sub(r"--concurrency \d+", f"--concurrency {concurrency}", text)

    def nginx(self, text: str) -> str:
        text = re.sub(r"^\s*listen \[::\].*\n", "", self.paths(text), flags=re.MULTILINE)
        text = text.replace("127.0.0.1:8000;", f"127.0.0.1:{self.web_port};")
        text = text.replace("127.0.0.1:8001;", f"127.0.0.1:{self.events_port};")
        text = text.replace("listen 80;", f"listen 127.0.0.1:{self.http_port};")
        return text.replace("listen 443 ", f"listen 127.0.0.1:{self.https_port} ")


def supervisor_programs() -> dict[str, dict[str, str]]:
    """deploy/supervisor/ltt.conf's programs, by name (``%(...)s`` left as written)."""
    parser = configparser.RawConfigParser()
    parser.read(DEPLOY / "supervisor" / "ltt.conf")
    return {
        section.removeprefix("program:"): dict(parser[section])
        for section in parser.sections()
        if section.startswith("program:")
    }


def queues_of(command: str) -> set[str]:
    """The queues of a ``celery worker`` command line (its ``-Q``)."""
    args = shlex.split(command)
    return set(args[args.index("-Q") + 1].split(","))


def systemd_worker_groups() -> dict[str, set[str]]:
    """The queue groups ``ltt.target`` starts (``ltt-worker@GROUP.service``), each with the queues of its
    ``/etc/ltt/worker-GROUP.env`` (deploy/etc/ltt/)."""
    target = (DEPLOY / "systemd" / "ltt.target").read_text()
    groups = re.findall(r"ltt-worker@([\w-]+)\.service", target)
    found = {}
    for group in groups:
        env = (DEPLOY / "etc" / "ltt" / f"worker-{group}.env").read_text()
        match = re.search(r"^LTT_WORKER_QUEUES=(\S+)$", env, flags=re.MULTILINE)
        assert match, f"worker-{group}.env names no LTT_WORKER_QUEUES"
        found[group] = set(match[1].split(","))
    return found


def unit_setting(unit: str, key: str) -> str:
    """A ``[Service]`` setting of a unit in deploy/systemd/ (the last one, as systemd reads it)."""
    values = re.findall(rf"^{key}=(.*)$", (DEPLOY / "systemd" / unit).read_text(), flags=re.MULTILINE)
    assert values, f"{unit} has no {key}="
    return str(values[-1]).strip()

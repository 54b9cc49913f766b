"""The hosts suite's own harness: it says why it cannot run, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from . import network as net


def test_without_root_the_suite_says_why(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in str(net.missing())


@pytest.fixture
def root() -> None:
    reason = net.missing()
    if reason:
        pytest.skip(reason)


def namespaces() -> list[str]:
    return [line.split()[0] for line in net.ip("netns", "list").splitlines() if line.strip()]


def free_pid() -> int:
    return next(pid for pid in range(4_000_000, 4_100_000) if not Path(f"/proc/{pid}").exists())


def test_a_network_leaves_no_namespace_link_or_process(root, tmp_path):
    network = net.Network(tmp_path, database_name="unused", redis_db=0, bounds={})
    host = network.host("h1")
    forwarder = host.forwarder
    assert forwarder is not None and host.namespace in namespaces()
    sleeper = subprocess.Popen([*host.prefix(), "sleep", "600"])  # a process of the host
    network.destroy()
    assert sleeper.wait(15) == -9
    assert forwarder.poll() is not None
    assert host.namespace not in namespaces()
    assert subprocess.run(["ip", "link", "show", host.link], capture_output=True).returncode != 0


def test_the_namespaces_of_a_run_that_died_are_removed(root, tmp_path):
    dead = f"ltt{free_pid()}-h1"
    net.ip("netns", "add", dead)
    try:
        net.Network(tmp_path, database_name="unused", redis_db=0, bounds={}).destroy()
        assert dead not in namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", dead], capture_output=True)
    mine = f"ltt{os.getpid()}-h1"
    assert mine not in namespaces()

"""Hosts for the hosts suite: each one a network namespace of its own, joined to the root namespace by a veth
pair, as a machine is joined to its network by a cable.

The root namespace plays the services' host: PostgreSQL and Redis (which listen on 127.0.0.1 only) are reached
from a host through its link's gateway address, where a forwarder (``forwarder.py``) listens for them. Each host
sees the database at ``10.B.N.1`` and the broker at ``10.B.N.3``, so that a fault can cut one without the other:

- ``cut()``: the link goes down (the root side of the veth): packets are dropped both ways, connections stall,
  new ones time out. A partition, as a switch port or a cable would make it.
- ``cut_broker()``: a blackhole route to the broker's address inside the host: established connections to the
  broker stall, new ones fail at once; the database stays reachable.
- ``kill()``: the link down, then every process of the host killed (SIGKILL): a host lost at once.

A clock offset (``clock=30`` seconds, or ``-30``) puts the host's wall clock off, as with a host whose NTP is
broken: ``time.time()`` and ``django.utils.timezone.now()`` of its processes (tests/settings.py says why these two
rather than libfaketime); the monotonic clock is not off.

Names carry the test process's pid; leftovers of a dead run (its pid gone) are removed when a network starts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.workers import ROOT, WebServer, WorkerProcess, accepts_connections, wait_for, worker_env

NAMESPACE = re.compile(r"^ltt(\d+)-\w+$")


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def missing() -> str | None:
    """Why this machine cannot run the suite, or None."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    return None


def remove_leftovers() -> None:
    """Namespaces of runs whose process is gone (killed before its teardown)."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = NAMESPACE.match(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def free_subnet() -> int:
    """A second octet B such that no interface of this machine has an address in 10.B.0.0/16."""
    used = ip("-o", "-4", "addr")
    for octet in range(200, 250):
        if f" 10.{octet}." not in used:
            return octet
    raise RuntimeError("no free 10.B.0.0/16 for the hosts suite")


class Host:
    def __init__(self, network: Network, index: int, name: str, clock: float | None) -> None:
        self.network, self.index, self.name, self.clock = network, index, name, clock
        token = f"ltt{os.getpid()}"
        self.namespace = f"{token}-{name}"
        self.link = f"lt{os.getpid() % 100000}r{index}"  # the root side (interface names: 15 characters)
        self.peer = f"lt{os.getpid() % 100000}h{index}"
        subnet = f"10.{network.octet}.{index}"
        self.gateway, self.address, self.broker_address = f"{subnet}.1", f"{subnet}.2", f"{subnet}.3"
        self.processes: list[WorkerProcess] = []
        self.forwarder: subprocess.Popen[bytes] | None = None
        self.web_server: WebServer | None = None

    # ------------------------------------------------------------ the machine

    def create(self) -> Host:
        ip("netns", "add", self.namespace)
        ip("link", "add", self.link, "type", "veth", "peer", "name", self.peer)
        ip("link", "set", self.peer, "netns", self.namespace)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.link)
        ip("addr", "add", f"{self.broker_address}/24", "dev", self.link)
        ip("link", "set", self.link, "up")
        ip("-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", self.peer)
        ip("-n", self.namespace, "link", "set", self.peer, "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")
        database, broker = self.network.database_port, self.network.broker_port
        rules = [
            f"{self.gateway}:{database}=127.0.0.1:{database}",
            f"{self.broker_address}:{broker}=127.0.0.1:{broker}",
        ]
        self.forwarder = subprocess.Popen(
            [sys.executable, "-m", "tests.hosts.forwarder", *rules],
            cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert self.forwarder.stdout is not None
        line = self.forwarder.stdout.readline()  # bounded: it prints "ready" or exits
        assert line.strip() == b"ready", line
        return self

    def destroy(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=15)
        self.stop_web()
        self.kill_processes()
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True, timeout=30)  # gone with the namespace
        if self.forwarder is not None:
            os.killpg(self.forwarder.pid, signal.SIGKILL)
            self.forwarder.wait(10)
            assert self.forwarder.stdout is not None
            self.forwarder.stdout.close()
            self.forwarder = None

    def pids(self) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True, timeout=30)
        return [int(pid) for pid in result.stdout.split()]

    def kill_processes(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.pids(), timeout=15, what=f"the processes of {self.name} to die")

    # ------------------------------------------------------------ faults

    def cut(self) -> None:
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        ip("link", "set", self.link, "up")
        wait_for(self.linked, timeout=15, what=f"{self.name}'s link to come back")

    def linked(self) -> bool:
        return "LOWER_UP" in ip("-n", self.namespace, "link", "show", self.peer)

    def cut_broker(self) -> None:
        ip("-n", self.namespace, "route", "add", "blackhole", f"{self.broker_address}/32")

    def restore_broker(self) -> None:
        ip("-n", self.namespace, "route", "del", "blackhole", f"{self.broker_address}/32")

    def kill(self) -> None:
        """Lost at once: no FIN, no goodbye. The link first, so that nothing it sends on dying gets out."""
        self.cut()
        self.kill_processes()

    # ------------------------------------------------------------ processes

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def env(self, **extra: Any) -> dict[str, str]:
        network = self.network
        env = worker_env(network.database_name, **network.bounds, **extra)
        env["TEST_DATABASE_URL"] = f"postgres://postgres@{self.gateway}:{network.database_port}/{network.database_name}"
        env["TEST_REDIS_URL"] = f"redis://{self.broker_address}:{network.broker_port}/{network.redis_db}"
        if self.clock:
            env["LTT_TEST_CLOCK_OFFSET"] = str(self.clock)
        return env

    def worker(self, queues: str, *, concurrency: int = 2, **extra: Any) -> WorkerProcess:
        worker = WorkerProcess(
            queues=queues,
            concurrency=concurrency,
            name=self.name,
            log_path=self.network.tmp_path / f"{self.name}-worker.log",
            env=self.env(**extra),
            prefix=self.prefix(),
        )
        self.processes.append(worker)
        return worker.start()

    def beat(self) -> WorkerProcess:
        from tests.faults.conftest import BeatProcess

        beat = BeatProcess(
            queues="",
            concurrency=0,
            name=f"{self.name}-beat",
            log_path=self.network.tmp_path / f"{self.name}-beat.log",
            env=self.env(),
            prefix=self.prefix(),
        )
        self.processes.append(beat)
        return beat.start()

    def web(self, *, threads: int = 8, **extra: Any) -> str:
        """gunicorn (gthread, as in production) on this host, serving its own address; returns its base URL."""
        env = self.env(DJANGO_ALLOWED_HOSTS=self.address, LONG_TIME_TASK_SUBMIT_RATE="", **extra)

        def command(port: int) -> list[str]:
            return [*self.prefix(), sys.executable, "-m", "gunicorn", "demo.wsgi", "--bind", f"{self.address}:{port}",
                    "--worker-class", "gthread", "--threads", str(threads), "--graceful-timeout", "5"]  # fmt: skip

        self.web_server = WebServer(
            env,
            self.network.tmp_path / f"{self.name}-web.log",
            command=command,
            ready=lambda port: accepts_connections(port, host=self.address),
            timeout=60,
        ).__enter__()
        return f"http://{self.address}:{self.web_server.port}"

    def stop_web(self) -> None:
        if self.web_server is not None:
            self.web_server.__exit__()
            self.web_server = None


class Network:
    def __init__(self, tmp_path: Path, *, database_name: str, redis_db: int, bounds: dict[str, Any]) -> None:
        remove_leftovers()
        self.tmp_path, self.database_name, self.redis_db, self.bounds = tmp_path, database_name, redis_db, bounds
        self.database_port, self.broker_port = 5432, 6379
        self.octet = free_subnet()
        self.hosts: dict[str, Host] = {}

    def host(self, name: str, *, clock: float | None = None) -> Host:
        host = Host(self, len(self.hosts) + 1, name, clock)
        self.hosts[name] = host
        return host.create()

    def destroy(self) -> None:
        errors = []
        for host in reversed(list(self.hosts.values())):
            try:
                host.destroy()
            except Exception as exc:  # clean up every host, then report
                errors.append(f"{host.name}: {exc!r}")
        leftovers = [line for line in ip("netns", "list").splitlines() if f"ltt{os.getpid()}-" in line]
        assert not errors and not leftovers, (errors, leftovers)

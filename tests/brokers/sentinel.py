"""A Redis master, its replica and three Sentinels on free ports, each in a process group of its own, for the
broker failover tests (tests/brokers/test_sentinel.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.workers import free_port, wait_for

MASTER_NAME = "ltt-broker"  # not kombu's "mymaster": the test checks that the name comes from the settings
QUORUM = 2
DOWN_AFTER_MS = 1000  # a master that does not answer for 1 s is subjectively down
FAILOVER_TIMEOUT_MS = 3000  # a failover that stalls is retried by another Sentinel after twice this


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=2)


def answers(port: int) -> bool:
    try:
        with client(port) as connection:
            return bool(connection.ping())
    except redis.RedisError:
        return False


class ServerProcess:
    """``redis-server`` or ``redis-sentinel`` in the foreground, in its own process group, its log in ``log_path``."""

    def __init__(self, args: list[str], *, port: int, log_path: Path) -> None:
        self.args, self.port, self.log_path = args, port, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.log_path.parent
            )
        wait_for(self.answers, timeout=15, what=f"{self.args[0]} to answer on port {self.port}")
        return self

    def answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.args[0]} exited:\n{self.log_path.read_text(errors='replace')}")
        return answers(self.port)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to the whole process group: SIGKILL is a crash (the port closes at once, every connection
        is reset), SIGSTOP a freeze (connections stay open and nothing answers: a host cut off by the network)."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            self.process.wait(15)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)  # a frozen one handles nothing until it runs again
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


class SentinelSet:
    """A master, one replica (``--replicaof``) and three Sentinels monitoring them (quorum 2)."""

    def __init__(self, folder: Path, *, redis_server: str, redis_sentinel: str, sentinels: int = 3) -> None:
        self.folder = folder
        self.redis_server, self.redis_sentinel = redis_server, redis_sentinel
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.processes: list[ServerProcess] = []
        self.master: ServerProcess | None = None
        self.replica: ServerProcess | None = None

    @property
    def url(self) -> str:
        """The broker URL: every Sentinel, ``;``-separated, and database 0 (kombu reads it from the first)."""
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)

    def server(self, name: str, port: int, *extra: str) -> ServerProcess:
        args = [self.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder), "--dbfilename", f"{name}.rdb", *extra]  # fmt: skip
        process = ServerProcess(args, port=port, log_path=self.folder / f"{name}.log")
        self.processes.append(process)
        return process.start()

    def sentinel(self, n: int, port: int) -> ServerProcess:
        config = self.folder / f"sentinel{n}.conf"  # a file of its own: each Sentinel rewrites its configuration
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        process = ServerProcess(
            [self.redis_sentinel, str(config)], port=port, log_path=self.folder / f"sentinel{n}.log"
        )
        self.processes.append(process)
        return process.start()

    def start(self) -> SentinelSet:
        self.master = self.server("master", self.master_port)
        self.replica = self.server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        wait_for(self.replica_in_sync, timeout=20, what="the replica to sync with the master")
        for n, port in enumerate(self.sentinel_ports):
            self.sentinel(n, port)
        wait_for(self.sentinels_agree, timeout=30, what="the Sentinels to see the master, the replica and each other")
        return self

    def replica_in_sync(self) -> bool:
        with client(self.replica_port) as replica:
            info = replica.info("replication")
        return info.get("master_link_status") == "up"

    def sentinels_agree(self) -> bool:
        """Every Sentinel knows the master (not down), the replica and the two other Sentinels: ready to fail over."""
        for port in self.sentinel_ports:
            with client(port) as sentinel:
                state = sentinel.execute_command("SENTINEL MASTER", MASTER_NAME)
                replicas = sentinel.execute_command("SENTINEL SLAVES", MASTER_NAME)
            if state["port"] != self.master_port or state["is_sdown"] or state["num-other-sentinels"] < 2:
                return False
            if not any(r["port"] == self.replica_port and not r["is_sdown"] for r in replicas):
                return False
        return True

    def master_address(self) -> tuple[str, int] | None:
        """What a majority of the Sentinels answer to ``SENTINEL get-master-addr-by-name`` (None: no majority)."""
        answers: dict[tuple[str, int], int] = {}
        for port in self.sentinel_ports:
            try:
                with client(port) as sentinel:
                    host, master_port = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            except (redis.RedisError, TypeError, ValueError):
                continue
            address = (host.decode() if isinstance(host, bytes) else str(host), int(master_port))
            answers[address] = answers.get(address, 0) + 1
        agreed = [address for address, votes in answers.items() if votes >= QUORUM]
        return agreed[0] if agreed else None

    def wait_for_promotion(self, timeout: float) -> float:
        """Polls the Sentinels until they name the replica as the master, and the replica says so too; returns
        the time (``time.monotonic()``) it was first seen."""
        wait_for(lambda: self.master_address() == ("127.0.0.1", self.replica_port), timeout=timeout, interval=0.05,
                 what="the Sentinels to promote the replica")  # fmt: skip
        seen = time.monotonic()
        with client(self.replica_port) as replica:
            assert replica.info("replication")["role"] == "master"
        return seen

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def binary(name: str, variable: str) -> str | None:
    """The path of ``name`` (or of the ``variable`` environment variable's value), or None when not installed."""
    return shutil.which(os.environ.get(variable, name))

"""The throughput benchmark: raw Celery (the ceiling), this project's tracked tasks, and Celery with
django-celery-results, side by side on the same broker, database, concurrency and machine.

    python -m bench.run [--n 2000] [--reps 5] [--concurrency 2] [--layout shared] [--out bench/results.json]

For each repetition the systems run in a rotated (interleaved) order, each twice:
- split: enqueue N tasks with no worker running (enqueue rate), then start a worker and drain them (drain rate);
- end to end: start a worker, then enqueue N tasks while it runs (end-to-end rate, latencies).
Every handler does the same work: one Redis round trip that counts it and records its latency.

``--layout servers-apart`` runs the PostgreSQL and Redis servers on one core and everything else (the
enqueuing process, the worker, this script) on the others, as when the servers have hosts of their own: it
sets the CPU affinity of the servers' running processes (new PostgreSQL backends inherit the postmaster's)
and gives them back every core at the end. It needs the right to do that (root, or the servers' user).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ["raw", "tracked", "dcr", "tracked-no-metrics"]
DEFAULT_SYSTEMS = ["raw", "tracked", "dcr"]
LABELS = {
    "raw": "raw Celery, results ignored (baseline)",
    "tracked": "django-celery-task-manage (tracked rows; Prometheus metrics on, multiprocess mode)",
    "dcr": "Celery + django-celery-results (django-db, track_started)",
    "tracked-no-metrics": "django-celery-task-manage with LONG_TIME_TASK_METRICS = False",
}
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# The benchmark's database (BENCH_DATABASE_URL, as bench/settings.py reads it) and Redis databases.
DB_NAME = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ltt_bench").rsplit("/", 1)[1]
# prometheus-client's multiprocess directory of the tracked runs (emptied before each run), as in production.
MULTIPROC_DIR = ROOT / "var" / "bench" / "prometheus"
BROKER = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
MARKS = redis.Redis.from_url(os.environ.get("BENCH_MARK_URL", "redis://127.0.0.1:6379/13"))


DELIVERY = {"name": "seed"}
DELIVERIES = {
    "seed": "acks_late, prefetch 1 (the seed's settings for long tasks)",
    "celery-defaults": "Celery's defaults: acknowledged when a process starts the task, prefetch 4",
}


LAYOUTS = {
    "shared": "every process on every core",
    "servers-apart": "the PostgreSQL and Redis servers on a core of their own, the enqueuing process and the worker "
    "on the other (as when the servers have hosts of their own)",
}


def env(system: str, concurrency: int) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        BENCH_DELIVERY=DELIVERY["name"],
        DJANGO_SETTINGS_MODULE="bench.settings",
        BENCH_SYSTEM=system,
        BENCH_CONCURRENCY=str(concurrency),
        PYTHONWARNINGS="ignore",
    )
    e.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if system == "tracked":
        e["PROMETHEUS_MULTIPROC_DIR"] = str(MULTIPROC_DIR)
    if system == "tracked-no-metrics":
        e["LONG_TIME_TASK_METRICS"] = "false"
    return e


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def setup() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env("dcr", 2), check=True
    )


def reset() -> None:
    with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE long_time_task, long_time_task_audit, long_time_task_attempt, django_celery_results_taskresult"
        )
    BROKER.flushdb()
    MARKS.flushdb()
    shutil.rmtree(MULTIPROC_DIR, ignore_errors=True)
    MULTIPROC_DIR.mkdir(parents=True)


def db_transactions(name: str = DB_NAME) -> int:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def settled_transactions(name: str = DB_NAME) -> int:
    """pg_stat_database is flushed asynchronously: read until it stops moving."""
    last = db_transactions(name)
    for _ in range(50):
        time.sleep(0.2)
        now = db_transactions(name)
        if now == last:
            return now
        last = now
    return last


def server_of(name: str | None) -> str | None:
    """Which of the servers a process of this name belongs to, if any."""
    name = name or ""
    return "postgresql" if name.startswith("postgres") else "redis" if name.startswith("redis-server") else None


def server_processes() -> list[psutil.Process]:
    return [proc for proc in psutil.process_iter(["name"]) if server_of(proc.info["name"])]


def pin(proc: psutil.Process, cpus: set[int]) -> None:
    """Every thread of ``proc`` (Redis has background threads) on ``cpus``."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for thread in proc.threads():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(thread.id, cpus)


@contextlib.contextmanager
def layout(name: str) -> Iterator[str]:
    """Places the processes for ``name`` (see LAYOUTS); yields what went where."""
    if name == "shared":
        yield LAYOUTS["shared"]
        return
    own = os.sched_getaffinity(0)
    cpus = sorted(own)
    if len(cpus) < 2:
        raise SystemExit("--layout servers-apart needs at least 2 cores")
    servers, others = {cpus[-1]}, set(cpus[:-1])
    before: dict[int, set[int]] = {}
    try:
        try:
            for proc in server_processes():
                before[proc.pid] = os.sched_getaffinity(proc.pid)
                pin(proc, servers)
        except (PermissionError, psutil.AccessDenied) as exc:
            raise SystemExit(
                f"--layout servers-apart sets the CPU affinity of the PostgreSQL and Redis servers: {exc} "
                "(run it as root or as the servers' user)"
            ) from exc
        os.sched_setaffinity(0, others)  # the enqueuer and the worker are started from here: they inherit it
        yield f"PostgreSQL and Redis on core {cpus[-1]}, the rest on {', '.join(map(str, sorted(others)))}"
    finally:
        os.sched_setaffinity(0, own)
        every = set().union(*before.values()) if before else own
        for proc in server_processes():  # those started meanwhile (PostgreSQL backends) get every core back
            with contextlib.suppress(PermissionError, psutil.AccessDenied):
                pin(proc, before.get(proc.pid, every))


def server_cpu() -> dict[str, float]:
    """CPU seconds used so far by the PostgreSQL and Redis servers, with the PostgreSQL backends that have
    exited since (the enqueuer's, the worker's): their time is in the postmaster's children times."""
    total = {"postgresql": 0.0, "redis": 0.0}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        server = server_of(proc.info["name"])
        if server and times:
            total[server] += times.user + times.system + times.children_user + times.children_system
    return total


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy so far (the kernel's work on the loopback included)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def own_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += own_cpu(p)
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss(proc: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)] if p.is_running())


class Worker:
    def __init__(self, system: str, concurrency: int, log: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "demo", "worker", "-Q", "default", "-c", str(concurrency),
             "-P", "prefork", "-l", "WARNING", "--without-mingle", "--without-gossip", "--without-heartbeat",
             "-n", f"bench-{system}@%h"],
            cwd=ROOT, env=env(system, concurrency), stdout=self.handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.proc = psutil.Process(self.popen.pid)
        # -l WARNING hides the "ready" line: wait for the pool's children instead.
        wait_until(lambda: len(self.proc.children()) >= concurrency, 60, "the worker's pool")
        time.sleep(1.0)  # let the consumer connect before timing (the bench, not a test)
        # Start-up is not the tasks' cost.
        self.cpu_at_start, self.main_cpu_at_start = tree_cpu(self.proc), own_cpu(self.proc)

    def stop(self) -> tuple[float, float]:
        """Stops the worker; returns the CPU seconds it used since it was ready: the main process's and its
        pool's."""
        main = own_cpu(self.proc) - self.main_cpu_at_start
        total = tree_cpu(self.proc) - self.cpu_at_start
        self.popen.terminate()
        self.popen.wait(60)
        self.handle.close()
        return main, total - main


def enqueue(system: str, n: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.enqueue", system, str(n)],
        cwd=ROOT, env=env(system, concurrency), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def finish_times() -> list[float]:
    return sorted(float(x) for x in MARKS.lrange("bench:finished", 0, -1))


def done() -> int:
    return int(MARKS.get("bench:done") or 0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_once(system: str, n: int, concurrency: int, mode: str, logs: Path) -> dict[str, Any]:
    """One run. CPU is measured in the end-to-end mode only: there the worker is ready before the first
    task is sent, while in the split mode it may have drained part of the queue before it could be read."""
    reset()
    xacts0 = settled_transactions()
    result: dict[str, Any] = {"system": system, "mode": mode, "n": n}
    if mode == "split":
        enq = enqueue(system, n, concurrency)
        worker = Worker(system, concurrency, logs / f"{system}-{mode}.log")
        wait_until(lambda: done() >= n, 600, f"{system} to drain")
        finished = finish_times()
        result["drain_rate"] = (n - 1) / (finished[-1] - finished[0])
        result["enqueue_rate"] = n / enq["seconds"]
        worker.stop()
    else:
        worker = Worker(system, concurrency, logs / f"{system}-{mode}.log")
        servers0, machine0 = server_cpu(), busy_cpu()
        enq = enqueue(system, n, concurrency)
        wait_until(lambda: done() >= n, 600, f"{system} to finish")
        # Before the worker stops: its shutdown is not the tasks' cost.
        servers, machine = server_cpu(), busy_cpu()
        main, pool = worker.stop()
        # From the first enqueue (not the enqueuing process's start-up) to the last finish.
        result["e2e_rate"] = n / (finish_times()[-1] - enq["started_at"])
        latencies = [float(x) for x in MARKS.lrange("bench:latency", 0, -1)]
        result["latency_p50_ms"] = percentile(latencies, 0.50) * 1000
        result["latency_p99_ms"] = percentile(latencies, 0.99) * 1000
        split = {
            "enqueuer": enq["cpu"],
            "worker_main": main,
            "worker_pool": pool,
            **{name: servers[name] - servers0[name] for name in servers},
        }
        result["cpu_split_per_1000"] = {name: seconds / n * 1000 for name, seconds in split.items()}
        result["cpu_per_1000"] = sum(split.values()) / n * 1000
        # The whole machine, the kernel's work included, less the enqueuing process's start-up.
        result["machine_cpu_per_1000"] = (machine - machine0 - enq["startup_cpu"]) / n * 1000
    result["db_xacts_per_task"] = (settled_transactions() - xacts0) / n
    return result


def memory(system: str, n: int, concurrency: int, logs: Path) -> dict[str, Any]:
    reset()
    worker = Worker(system, concurrency, logs / f"{system}-memory.log")
    idle = tree_rss(worker.proc)
    enqueue(system, n, concurrency)
    wait_until(lambda: done() >= n, 900, f"{system} memory run")
    after = tree_rss(worker.proc)
    worker.stop()
    return {"system": system, "n": n, "rss_idle_mb": idle / 2**20, "rss_after_mb": after / 2**20}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    metrics = ["enqueue_rate", "drain_rate", "e2e_rate", "cpu_per_1000", "machine_cpu_per_1000",
               "db_xacts_per_task", "latency_p50_ms", "latency_p99_ms"]  # fmt: skip
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for system in SYSTEMS:
        summary[system] = {}
        for metric in metrics:
            values = [r[metric] for r in runs if r["system"] == system and metric in r]
            if values:
                summary[system][metric] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
        splits = [r["cpu_split_per_1000"] for r in runs if r["system"] == system and "cpu_split_per_1000" in r]
        if splits:
            summary[system]["cpu_split_per_1000"] = {
                name: statistics.median(split[name] for split in splits) for name in splits[0]
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)  # on a shared 2-core machine single runs move by up to 30 %
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--memory-n", type=int, default=10_000)
    parser.add_argument("--delivery", choices=sorted(DELIVERIES), default="seed", help="the same for every system")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="shared", help="where the processes run")
    parser.add_argument(
        "--out", help="default: bench/results.json, or results-DELIVERY-LAYOUT.json without the defaults (seed, shared)"
    )
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, default=DEFAULT_SYSTEMS, help="a subset, or tracked-no-metrics too"
    )
    parser.add_argument("--modes", nargs="+", choices=["split", "e2e"], default=["split", "e2e"])
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    args = parser.parse_args()
    DELIVERY["name"] = args.delivery
    if args.out is None:
        variant = [v for v in (args.delivery, args.layout) if v not in ("seed", "shared")]
        args.out = str(ROOT / "bench" / ("-".join(["results", *variant]) + ".json"))
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    setup()
    runs = []
    with layout(args.layout) as placement:
        for rep in range(args.reps):
            systems = args.systems
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]  # interleaved: each leads once
            for system in order:
                for mode in args.modes:
                    result = run_once(system, args.n, args.concurrency, mode, logs)
                    result["rep"] = rep
                    runs.append(result)
                    sys.stderr.write(json.dumps(result) + "\n")
        mem = [] if args.no_memory else [memory(s, args.memory_n, args.concurrency, logs) for s in ("raw", "tracked")]
    report = {
        "command": "make bench" if args.systems == DEFAULT_SYSTEMS else "python -m bench.run " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "labels": LABELS,
        "delivery": DELIVERIES[args.delivery],
        "layout": placement,
        "runs": runs,
        "summary": summarise(runs),
        "memory": mem,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""The django.tasks comparison: the same standard ``@task`` functions enqueued through this project's
LongTimeTaskBackend (Celery workers), django-tasks-db's DatabaseBackend (its ``db_worker``) and django-tasks-celery's
CeleryBackend (Celery workers, Redis result backend), with raw Celery as the baseline, in the same run.

    python -m bench.django_tasks [--n 2000] [--reps 5] [--concurrency 2] [--steps 5]
                                 [--out bench/results-django-tasks.json]

Needs Django 6 (Python 3.12: django-tasks-celery supports nothing older); ``make bench-django-tasks`` builds the
``.venv-py312`` it runs in. Two workloads: N no-op tasks, then N tasks that report progress ``--steps`` times
(``bench.django_tasks_workload``). Each run starts the system's workers, enqueues N tasks from one process while
they run, and ends when the last task's ``task_finished`` is received; every repetition runs the systems in a
rotated order (interleaved). The measures are those of ``bench.run``'s end-to-end mode: the rate from the first
enqueue to the last finish, the CPU of every process (the enqueuer, the workers, PostgreSQL and Redis) per task,
PostgreSQL transactions per task, and the submit-to-start latency (``task_started``; the baseline: its handler).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from . import run
from .django_tasks_common import (
    BASELINE,
    LABELS,
    ON_CELERY,
    SYSTEMS,
    WORKLOADS,
    percentile,
    rotated,
    summarise,
    worker_command,
)

ROOT = run.ROOT
# A database of its own: Django 6's migrations must not reach the Django 5.2 benchmark's database.
DATABASE_URL = os.environ.get("BENCH_DJANGO_TASKS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ltt_bench_tasks")
DB_NAME = DATABASE_URL.rsplit("/", 1)[1]
TABLES = ["long_time_task", "long_time_task_audit", "long_time_task_attempt", "django_tasks_database_dbtaskresult"]
PACKAGES = ["django", "celery", "kombu", "redis", "psycopg", "django-tasks-db", "django-tasks-celery"]


def env(system: str, concurrency: int) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        DJANGO_SETTINGS_MODULE="bench.django_tasks_settings",
        BENCH_DATABASE_URL=DATABASE_URL,
        BENCH_SYSTEM=system,
        BENCH_CONCURRENCY=str(concurrency),
        BENCH_DELIVERY="seed",
        PYTHONWARNINGS="ignore",
    )
    e.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if system == "ltt":  # metrics on, in multiprocess mode, as bench.run's tracked system
        e["PROMETHEUS_MULTIPROC_DIR"] = str(run.MULTIPROC_DIR)
    return e


def setup() -> None:
    with psycopg.connect(run.PG_ADMIN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    # dtdb's settings have every app installed (django_tasks_db's too).
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env("dtdb", 2), check=True
    )


def reset() -> None:
    with psycopg.connect(run.PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    run.BROKER.flushdb()
    run.MARKS.flushdb()
    shutil.rmtree(run.MULTIPROC_DIR, ignore_errors=True)
    run.MULTIPROC_DIR.mkdir(parents=True)


class Workers:
    """The worker processes of one system (``worker_command``), ready to take tasks."""

    def __init__(self, system: str, concurrency: int, db_interval: float, logs: Path) -> None:
        self.system = system
        self.handles, self.popens = [], []
        for i, argv in enumerate(worker_command(system, concurrency, sys.executable, db_interval)):
            handle = (logs / f"django-tasks-{system}-{i}.log").open("wb")
            self.handles.append(handle)
            self.popens.append(
                subprocess.Popen(argv, cwd=ROOT, env=env(system, concurrency), stdout=handle, stderr=subprocess.STDOUT)
            )
        self.procs = [psutil.Process(p.pid) for p in self.popens]
        logs_of = [Path(h.name) for h in self.handles]

        def ready() -> bool:
            for p, log in zip(self.popens, logs_of, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"{system}'s worker exited with {p.returncode}; see {log}")
            if system in ON_CELERY:  # -l WARNING hides the "ready" line: wait for the pool's children instead
                return len(self.procs[0].children()) >= concurrency
            return all(b"Starting worker" in log.read_bytes() for log in logs_of)  # db_worker's loop has started

        run.wait_until(ready, 60, f"{system}'s workers")
        time.sleep(1.0)  # let the consumers connect before timing (the bench, not a test)
        self.main0, self.total0 = self.cpu()  # start-up is not the tasks' cost

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: Celery's main process (0 for db_worker, which has none), and all the processes."""
        main = run.own_cpu(self.procs[0]) if self.system in ON_CELERY else 0.0
        return main, sum(run.tree_cpu(proc) for proc in self.procs)

    def stop(self) -> tuple[float, float]:
        """Stops the workers; returns the CPU seconds they used since they were ready: Celery's main process, and
        the processes that ran the tasks (Celery's pool, or every db_worker)."""
        main, total = self.cpu()
        main, total = main - self.main0, total - self.total0
        for p in self.popens:
            p.terminate()
        for p in self.popens:
            p.wait(60)
        for handle in self.handles:
            handle.close()
        return main, total - main


def enqueue(system: str, workload: str, n: int, steps: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.django_tasks_enqueue", system, workload, str(n), str(steps)],
        cwd=ROOT, env=env(system, concurrency), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def failed() -> int:
    return int(run.MARKS.get("bench:failed") or 0)


def run_once(system: str, workload: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    n = args.n
    reset()
    xacts0 = run.settled_transactions(DB_NAME)
    workers = Workers(system, args.concurrency, args.db_interval, logs)
    try:
        servers0, machine0 = run.server_cpu(), run.busy_cpu()
        enq = enqueue(system, workload, n, args.steps, args.concurrency)

        def finished() -> bool:
            if failed():
                raise RuntimeError(f"{system}: {failed()} tasks failed; see {logs}")
            return run.done() >= n

        run.wait_until(finished, args.timeout, f"{system} ({workload}) to finish")
        servers, machine = run.server_cpu(), run.busy_cpu()  # before the workers stop: shutdown is not the tasks'
    finally:
        main, pool = workers.stop()
    latencies = [float(x) for x in run.MARKS.lrange("bench:latency", 0, -1)]
    split = {
        "enqueuer": enq["cpu"],
        **({"worker_main": main} if system in ON_CELERY else {}),
        "worker_pool": pool,
        **{name: servers[name] - servers0[name] for name in servers},
    }
    return {
        "system": system,
        "workload": workload,
        "n": n,
        "e2e_rate": n / (run.finish_times()[-1] - enq["started_at"]),
        "enqueue_rate": n / enq["seconds"],
        "latency_p50_ms": percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_split_per_1000": {name: seconds / n * 1000 for name, seconds in split.items()},
        "cpu_per_1000": sum(split.values()) / n * 1000,
        "machine_cpu_per_1000": (machine - machine0 - enq["startup_cpu"]) / n * 1000,
        "db_xacts_per_task": (run.settled_transactions(DB_NAME) - xacts0) / n,
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="tasks per run")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2, help="Celery's pool processes, or db_worker processes")
    parser.add_argument("--steps", type=int, default=5, help="progress reports per task of the progress workload")
    parser.add_argument(
        "--db-interval", type=float, default=0.1,
        help="db_worker's --interval: seconds it sleeps when it found no task (its own default is 1)",
    )  # fmt: skip
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=SYSTEMS)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-django-tasks.json"))
    args = parser.parse_args()
    import django

    if django.VERSION < (6, 0):
        raise SystemExit(
            f"bench.django_tasks needs Django 6 (django-tasks-celery does), this is {django.get_version()}: "
            "make bench-django-tasks runs it in .venv-py312"
        )
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    setup()
    runs = []
    for rep in range(args.reps):
        for system in rotated(args.systems, rep):
            for workload in args.workloads:
                if system == BASELINE and workload != "noop":
                    continue  # raw Celery has no progress: its no-op runs are the baseline of both workloads
                result = run_once(system, workload, args, logs) | {"rep": rep}
                runs.append(result)
                sys.stderr.write(json.dumps(result) + "\n")
    default = all(value == parser.get_default(name) for name, value in vars(args).items() if name != "out")
    report = {
        "command": "make bench-django-tasks" if default else "python -m bench.django_tasks " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": versions(),
        "labels": {s: LABELS[s] for s in args.systems},
        "workloads": WORKLOADS,
        "runs": runs,
        "summary": summarise(runs),
    }
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

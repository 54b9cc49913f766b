"""Instructions per operation, counted by valgrind's callgrind: the work of each code path, the same on
any machine and whatever else the machine is doing, next to raw Celery's publish.

    python -m bench.instructions [--n 200] [--out bench/instructions.json]

Timings on a shared 2-core machine move by 10-30 % from run to run, and they mix the code's own work with
what the machine charges for each wait (a process that sleeps on a round trip comes back to cold caches).
Instruction counts separate the two. Each operation runs in its own process under callgrind with
instrumentation off for the start-up, Django's set-up and a warm-up; it is switched on
(``callgrind_control -i on``) for exactly N operations, then off. The operations:

- ``raw_publish``: raw Celery's ``apply_async`` of the baseline task (the bench's enqueue);
- ``publish``: this project's publish of a committed row (``dispatch.publish``);
- ``submit``: this project's submit (validation, the INSERT, the publish);
- ``run``: a worker's part of one task, in-process: claim, a handler that does nothing, finish;
- ``submit_no_metrics``, ``run_no_metrics``: the same with ``LONG_TIME_TASK_METRICS = False``. The others count
  their metrics as in production, in prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set):
  the difference is what the metrics cost each task.

Only the Python process is counted; the PostgreSQL and Redis servers are not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ["raw_publish", "publish", "submit", "run", "submit_no_metrics", "run_no_metrics"]
LABELS = {
    "raw_publish": "raw Celery: `apply_async` (the baseline's enqueue)",
    "publish": "tracked: the publish of a committed row",
    "submit": "tracked: submit (validation, INSERT, publish)",
    "run": "tracked: the worker's part of a task (claim, empty handler, finish)",
    "submit_no_metrics": "tracked: submit, `LONG_TIME_TASK_METRICS = False`",
    "run_no_metrics": "tracked: the worker's part, `LONG_TIME_TASK_METRICS = False`",
}
NO_METRICS = "_no_metrics"
MULTIPROC_DIR = ROOT / "var" / "bench" / "instructions-prometheus"
WARM_UP = 20


def operation(name: str, n: int) -> Any:
    """Set up ``name`` for N runs after the warm-up; returns the callable that runs it once."""
    from bench.tasks import raw_noop
    from long_time_task import dispatch, services
    from long_time_task.worker.executor import Executor

    name = name.removesuffix(NO_METRICS)
    if name == "raw_publish":
        return lambda: raw_noop.apply_async((time.time(),), queue="default")
    if name == "submit":
        return lambda: services.submit("bench_noop", {"sent_at": time.time()})
    if name == "publish":
        task = services.submit("bench_noop", {"sent_at": time.time()}).task
        return lambda: dispatch.publish(task, attempt=1)
    if name == "run":
        # Rows submitted without their messages (no worker here), then run in order.
        publish, services.publish = services.publish, lambda *args, **kwargs: True
        try:
            ids = iter([services.submit("bench_nothing", {}).task.id for _ in range(n + WARM_UP)])
        finally:
            services.publish = publish
        executor = Executor(worker="instructions@bench")

        def run() -> None:
            if executor.run(next(ids), 1) != "finished":
                raise RuntimeError("the task did not finish")

        return run
    raise ValueError(name)


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def child(name: str, n: int) -> None:
    """Runs under callgrind: warm up, say "ready", wait, run N times, say "done", wait."""
    import django

    django.setup()
    run = operation(name, n)
    for _ in range(WARM_UP):
        run()
    say("ready")
    sys.stdin.readline()  # instrumentation is on
    for _ in range(n):
        run()
    say("done")
    sys.stdin.readline()  # instrumentation is off


def count(name: str, n: int) -> int:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="bench.settings", BENCH_SYSTEM="tracked", PYTHONWARNINGS="ignore")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(MULTIPROC_DIR)
    if name.endswith(NO_METRICS):
        env["LONG_TIME_TASK_METRICS"] = "false"
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if not valgrind or not control:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind; `make bench-instructions` does)")
    command = [valgrind, "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "bench.instructions", "--child", name, "--n", str(n)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("no pipes")

    def step(expected: str, switch: str) -> None:
        line = stdout.readline().strip()
        if line != expected:
            proc.kill()
            raise RuntimeError(f"{name}: expected {expected!r}, got {line!r}: {proc.communicate()[1][-2000:]}")
        subprocess.run([control, "-i", switch, str(proc.pid)], check=True, capture_output=True)
        stdin.write("\n")
        stdin.flush()

    step("ready", "on")
    step("done", "off")
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: exit {proc.returncode}: {err[-2000:]}")
    return int(re.findall(r"Collected : (\d+)", err)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "instructions.json"))
    parser.add_argument("--child", choices=OPERATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n)
        return
    from bench.run import reset, setup

    setup()
    reset()
    shutil.rmtree(MULTIPROC_DIR, ignore_errors=True)
    MULTIPROC_DIR.mkdir(parents=True)
    results = {}
    for name in OPERATIONS:
        results[name] = count(name, args.n) / args.n
        sys.stderr.write(f"{name}: {results[name]:,.0f} instructions per operation\n")
    reset()
    report = {
        "command": "python -m bench.instructions",
        "n": args.n,
        "labels": LABELS,
        "instructions": results,
        "versions": versions(),
    }
    Path(args.out).write_text(json.dumps(report, indent=2))


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("celery", "kombu", "redis", "django", "psycopg")}


if __name__ == "__main__":
    main()

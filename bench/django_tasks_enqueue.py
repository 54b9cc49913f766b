"""Enqueue N tasks of the django.tasks comparison through ``TASKS``'s default backend (``.enqueue()``), or N raw Celery
tasks for the baseline; prints a JSON line with the enqueue time and the CPU time it took.

Run as ``python -m bench.django_tasks_enqueue SYSTEM WORKLOAD N STEPS`` with
``DJANGO_SETTINGS_MODULE=bench.django_tasks_settings``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main(system: str, workload: str, n: int, steps: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_tasks_settings")
    import django

    django.setup()
    from bench.tasks import raw_noop

    if system != "raw":  # TASKS is empty for the baseline
        from bench.django_tasks_workload import noop, with_progress

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime  # start-up (imports, django.setup) is not the enqueue's cost
    started, wall = time.perf_counter(), time.time()
    if system == "raw":
        for _ in range(n):
            raw_noop.apply_async((time.time(),), queue="default")
    elif workload == "noop":
        for _ in range(n):
            noop.enqueue(time.time())
    else:
        for _ in range(n):
            with_progress.enqueue(time.time(), steps)
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "seconds": elapsed,
        "started_at": wall,
        "cpu": usage.ru_utime + usage.ru_stime - cpu_before,
        "startup_cpu": cpu_before,
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

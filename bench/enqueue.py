"""Enqueue N tasks of one system; prints a JSON line with the enqueue time and the CPU time it took.

Run as ``python -m bench.enqueue SYSTEM N`` with ``DJANGO_SETTINGS_MODULE=bench.settings``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main(system: str, n: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from bench.tasks import dcr_noop, raw_noop
    from long_time_task.services import submit_task

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime  # start-up (imports, django.setup) is not the enqueue's cost
    started, wall = time.perf_counter(), time.time()
    for _ in range(n):
        if system == "raw":
            raw_noop.apply_async((time.time(),), queue="default")
        elif system == "dcr":
            dcr_noop.apply_async((time.time(),), queue="default")
        else:
            submit_task("bench_noop", {"sent_at": time.time()})
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
    main(sys.argv[1], int(sys.argv[2]))

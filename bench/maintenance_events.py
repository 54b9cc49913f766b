"""Monitoring events sent by long_time_task's maintenance jobs (reaper, sweeper, purge), per run and per day.

Starts a real worker with task events on (``-E``) on the maintenance queue, runs each job ``RUNS`` times, and counts
the events of those runs with Celery's own event receiver (what ``celery events`` and Flower consume). The events
a day follow from the demo's schedule (reaper and sweeper every 15 s, purge every hour).

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://.../n python bench/maintenance_events.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

import django  # noqa: E402

django.setup()

from demo.celery import app  # noqa: E402
from long_time_task.worker import recovery  # noqa: E402
from tests.celery_events import EventCapture  # noqa: E402
from tests.workers import WorkerProcess, wait_for  # noqa: E402

RUNS = 5
JOBS = {recovery.REAPER_TASK: 15.0, recovery.SWEEPER_TASK: 15.0, "long_time_task.purge_expired_tasks": 3600.0}


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    log = Path(tempfile.mkdtemp()) / "worker.log"
    worker = WorkerProcess(
        queues="maintenance", concurrency=1, name="events", log_path=log, env=env, extra_args=["-E"]
    ).start()
    try:
        with EventCapture(app) as events:
            hostname = wait_for(
                lambda: next((w for w in app.control.ping(timeout=0.5) for w in w if w.startswith("events@")), None),
                timeout=20,
                what="the worker to answer a ping",
            )
            events.sync(hostname)
            ids = {name: [app.send_task(name, queue="maintenance").id for _ in range(RUNS)] for name in JOBS}
            wait_for(
                lambda: worker.output().count(" succeeded in ") >= RUNS * len(JOBS),
                timeout=60,
                what="every run to finish",
            )
            # The worker logs a run's success after sending its task-succeeded event; a heartbeat it sends now
            # comes after them on the same event stream.
            events.sync(hostname)
            per_day = 0.0
            for name, interval in JOBS.items():
                per_run = sum(len(events.of_task(i)) for i in ids[name]) / RUNS
                runs_a_day = 86400 / interval
                per_day += per_run * runs_a_day
                print(f"{name}: {per_run:g} events a run, {runs_a_day:g} runs a day")  # noqa: T201
            print(f"events a day from maintenance jobs: {per_day:,.0f}")  # noqa: T201
    finally:
        worker.stop()


if __name__ == "__main__":
    main()

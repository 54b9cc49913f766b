"""Settings of the benchmark: the demo's, on a dedicated PostgreSQL database and Redis database.

``BENCH_SYSTEM`` picks what is measured: ``raw`` (plain Celery, results ignored), ``tracked`` (this
project) or ``dcr`` (Celery with django-celery-results, ``django-db`` backend, track_started).
"""

from __future__ import annotations

import os

import dj_database_url

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

BENCH_SYSTEM = os.environ.get("BENCH_SYSTEM", "tracked")
# As in production: with DEBUG on, every process keeps a log of its SQL (and Celery warns about it).
DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_results", "bench"]
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ltt_bench"),
        conn_max_age=600,
        conn_health_checks=True,  # as in production
    )
}
CELERY_BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "priority_steps": list(range(10)),
    "sep": ":",
    "queue_order_strategy": "priority",
    "visibility_timeout": 43200,
}
CELERY_WORKER_CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
CELERY_WORKER_MAX_TASKS_PER_CHILD = 1_000_000
# How messages are delivered, the same for every system: "seed" is the seed's (and the demo's) setting for
# long tasks, acks_late with a prefetch of one; "celery-defaults" is Celery's own, acknowledged when a worker
# process starts the task, four messages reserved per process.
BENCH_DELIVERY = os.environ.get("BENCH_DELIVERY", "seed")
if BENCH_DELIVERY == "celery-defaults":
    CELERY_TASK_ACKS_LATE = False
    CELERY_WORKER_PREFETCH_MULTIPLIER = 4
if BENCH_SYSTEM == "dcr":
    CELERY_RESULT_BACKEND = "django-db"
    CELERY_TASK_TRACK_STARTED = True
    CELERY_TASK_IGNORE_RESULT = False
LONG_TIME_TASK_SUBMIT_RATE = None
LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = None
CELERY_BEAT_SCHEDULE: dict[str, object] = {}
SILENCED_SYSTEM_CHECKS = ["long_time_task.W003"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

"""Settings of the django.tasks comparison (``python -m bench.django_tasks``): the benchmark's, with ``TASKS`` set
to the backend of ``BENCH_SYSTEM`` (``bench.django_tasks_common``) and what that backend needs.

- ``ltt``: this project's backend; nothing else.
- ``dtdb``: django-tasks-db's app (its table and ``db_worker`` command).
- ``dtc``: django-tasks-celery, set up as its README says: a result backend (Redis, the broker's server and
  database: Celery's result keys do not clash with its queues) with extended results.
"""

from __future__ import annotations

from bench.settings import *  # noqa: F403
from bench.settings import BENCH_SYSTEM, CELERY_BROKER_URL, INSTALLED_APPS

from .django_tasks_common import tasks_setting

TASKS = tasks_setting(BENCH_SYSTEM)
# The Celery workers import the workload at start (django-tasks-celery registers a Celery task for each Django task
# when its module is imported; this project's backend would find it by its path anyway).
CELERY_IMPORTS = ["bench.django_tasks_workload"] if TASKS else []
if BENCH_SYSTEM == "dtdb":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
if BENCH_SYSTEM == "dtc":
    CELERY_RESULT_BACKEND = CELERY_BROKER_URL
    CELERY_RESULT_EXTENDED = True
    CELERY_TASK_IGNORE_RESULT = False

"""The demo project's Celery application."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

app = Celery("demo")
app.config_from_object("django.conf:settings", namespace="CELERY")
# long_time_task registers its executor itself (AppConfig.ready); this finds the `tasks.py` of other apps.
app.autodiscover_tasks()

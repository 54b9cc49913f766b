from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LongTimeTaskConfig(AppConfig):
    name = "long_time_task"
    verbose_name = _("Long-running tasks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import celery_tasks, checks, openapi  # noqa: F401 - Celery tasks, system checks, OpenAPI extension

        # Every installed app's tasks_definitions.py, in the web process and in the worker alike.
        autodiscover_modules("tasks_definitions")

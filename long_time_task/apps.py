from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class LongTimeTaskConfig(AppConfig):
    name = "long_time_task"
    verbose_name = _("Long-running tasks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks  # noqa: F401 - system checks
        from .api import openapi  # noqa: F401 - the OpenAPI extension
        from .conf import conf
        from .django_tasks import resolver
        from .observability import liveness, logs  # noqa: F401 - liveness: beat's liveness file (Celery signals)
        from .registry import LongTimeTaskRegister
        from .worker import tasks  # noqa: F401 - the Celery tasks

        # A row of a django.tasks function names it by module path: found in a process that has not imported it yet.
        LongTimeTaskRegister.add_resolver(resolver.resolve)
        if resolver.uses_backend():
            # Its task_ended receiver sends Django's task_finished, also in a process that has not run a Django task
            # yet (a worker's main process after a hard time limit, the reaper's worker, a web process cancelling).
            from .django_tasks import runner  # noqa: F401
        logs.install(conf.LOG_FORMAT)  # LONG_TIME_TASK_LOG_FORMAT; nothing unless it is set

        # Schedules declared in code are written by every migrate (deploys run it), after this app's migrations.
        post_migrate.connect(_sync_declared_schedules, sender=self, dispatch_uid="long_time_task.declared_schedules")
        # Every installed app's tasks_definitions.py, in the web process and in the worker alike.
        autodiscover_modules("tasks_definitions")


def _sync_declared_schedules(sender: Any = None, **kwargs: Any) -> None:
    from .schedules.declared import sync

    sync()

"""System checks for configuration mistakes, with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from .registry import LongTimeTaskRegister


def _queue_names() -> set[str] | None:
    queues = getattr(settings, "CELERY_TASK_QUEUES", None)
    if not queues:
        return None
    if isinstance(queues, dict):
        return set(queues)
    return {getattr(queue, "name", str(queue)) for queue in queues}


@register()
def check_task_queues(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    names = _queue_names()
    if names is None:
        return []
    return [
        Error(
            f"Task type {config.name!r} is routed to queue {config.queue!r}, "
            "which CELERY_TASK_QUEUES does not declare.",
            hint=f"Declared queues: {', '.join(sorted(names))}. Add the queue, or register the type on one of them.",
            id="long_time_task.E001",
        )
        for config in LongTimeTaskRegister.get_all_tasks().values()
        if config.queue not in names
    ]


@register()
def check_db_reuse(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if getattr(settings, "CELERY_DB_REUSE_MAX", None):
        return []
    return [
        Warning(
            "CELERY_DB_REUSE_MAX is not set: Celery workers will open a new database connection for every task.",
            hint="Set CELERY_DB_REUSE_MAX (e.g. 1000000); long_time_task still honours CONN_MAX_AGE and health checks.",
            id="long_time_task.W001",
        )
    ]

"""A Django task with this project's per-task options, and the ``@task`` decorator that sets them on any Django.

Django 6.1 (and the backport) pass ``@task(...)``'s extra keyword arguments to the backend's ``task_class``, so
``@task(timeout=600, max_retries=2, retry_on=(ConnectionError,))`` works there with Django's own decorator.
Django 6.0's decorator refuses them: ``long_time_task.django_tasks.definition.task`` takes the same arguments on
every version. Options left unset come from the backend's ``OPTIONS``, then from the registry's defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

from .compat import DEFAULT_TASK_PRIORITY, DEFAULT_TASK_QUEUE_NAME, Task, task_backends

if TYPE_CHECKING:
    from .compat import AnyTask

# The per-task options, as ``@task(...)`` keyword arguments and as lower-case ``OPTIONS`` keys of the backend.
OPTION_NAMES = (
    "timeout",
    "soft_timeout",
    "max_retries",
    "retry_delay",
    "retry_backoff",
    "retry_backoff_max",
    "retry_on",
    "kwargs_schema",
    "permission",
    "retention_days",
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrackedTask(Task):  # type: ignore[type-arg]
    """A ``Task`` with the options Django's API has no word for. ``None``: the backend's ``OPTIONS``, else the
    registry's default (docs/django-tasks.md, "Per-task options")."""

    timeout: int | None = None  # hard time limit, seconds (Celery's time_limit)
    soft_timeout: int | None = None  # soft time limit, seconds (Celery's soft_time_limit); below timeout
    max_retries: int | None = None  # attempts after the first, on a retry_on exception
    retry_delay: int | None = None
    retry_backoff: bool | None = None
    retry_backoff_max: int | None = None
    retry_on: tuple[type[BaseException], ...] | None = None  # exceptions that retry (default: none)
    kwargs_schema: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)  # JSON Schema of kwargs
    permission: str | None = None  # who may submit or retry it through the API, dashboard or CLI (default: no one)
    retention_days: float | None = None

    def options(self) -> dict[str, Any]:
        """The options set on this task (not None)."""
        return {name: getattr(self, name) for name in OPTION_NAMES if getattr(self, name) is not None}


@overload
def task(function: Callable[..., Any], **options: Any) -> AnyTask: ...


@overload
def task(function: None = None, **options: Any) -> Callable[[Callable[..., Any]], AnyTask]: ...


def task(
    function: Callable[..., Any] | None = None,
    *,
    priority: int = DEFAULT_TASK_PRIORITY,
    queue_name: str = DEFAULT_TASK_QUEUE_NAME,
    backend: str = "default",
    takes_context: bool = False,
    **options: Any,
) -> Any:
    """Django's ``@task`` with this project's options, on Django 5.2 (backport), 6.0 and 6.1 alike."""
    unknown = set(options) - set(OPTION_NAMES)
    if unknown:
        raise TypeError(f"Unknown task options: {', '.join(sorted(unknown))} (known: {', '.join(OPTION_NAMES)})")

    def wrapper(func: Callable[..., Any]) -> Any:
        return task_backends[backend].task_class(
            func=func,
            priority=priority,
            queue_name=queue_name,
            backend=backend,
            takes_context=takes_context,
            run_after=None,
            **options,
        )

    return wrapper(function) if function is not None else wrapper

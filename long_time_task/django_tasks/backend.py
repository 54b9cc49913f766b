"""``LongTimeTaskBackend``: Django's tasks API on this project's tracked Celery workers.

``enqueue`` writes one ``LongTimeTask`` row through ``services.submit`` (the door every other submit takes) and
publishes it after the commit; the executor runs it on a Celery worker; ``get_result`` reads the row. Each task
function is a task type named by its module path, registered with the registry when the backend first validates
it (docs/django-tasks.md).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from .. import services
from ..models import LongTimeTask
from ..registry import MAX_PRIORITY, MIN_PRIORITY, LongTimeTaskRegister, RegistryError, TaskConfig
from .compat import (
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    TaskResultDoesNotExist,
    normalize_json,
    task_enqueued,
)
from .definition import OPTION_NAMES, TrackedTask
from .results import result_from_row
from .runner import TaskRunner

_owner: contextvars.ContextVar[Any] = contextvars.ContextVar("long_time_task_django_tasks_owner", default=None)

# Every task type's params: the function's arguments, and the Django priority and run_after it was enqueued with
# (the row's priority and run_after are the broker's and the database's versions of them).
PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "priority": {"type": "integer", "minimum": TASK_MIN_PRIORITY, "maximum": TASK_MAX_PRIORITY},
        "run_after": {"type": "string"},
    },
    "required": ["args", "kwargs"],
    "additionalProperties": False,
}
MAX_TASK_TYPE = 100  # the row's task_type column

if TYPE_CHECKING:
    from .compat import AnyResult, AnyTask


def broker_priority(priority: int) -> int:
    """Django's priority (-100..100, higher first) as the registry's (1..10, 10 first): 201 levels in 10 bands of
    20 or 21, in order; 0, Django's default, is 5, the registry's default. ``dispatch`` then maps 1..10 onto the
    broker's own scale."""
    span = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY + 1
    levels = MAX_PRIORITY - MIN_PRIORITY + 1
    return MIN_PRIORITY + (priority - TASK_MIN_PRIORITY) * levels // span


@contextmanager
def owned_by(user: Any) -> Iterator[None]:
    """Tasks enqueued inside the block belong to ``user`` (None: to no one, as server code's do): the owner sees
    them in the API and the dashboard and may cancel them."""
    token = _owner.set(user)
    try:
        yield
    finally:
        _owner.reset(token)


def json_round_trip(value: Any, path: str) -> Any:
    """``value`` as Django's ``normalize_json`` makes it, refusing what JSON would not give back unchanged (a
    dictionary key that is not a string) with Django's error."""
    normalized = normalize_json(value)

    def check(item: Any) -> None:
        if isinstance(item, dict):
            for key, nested in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"Unsupported type: {type(key)} (a key in {path}; JSON keys are strings)")
                check(nested)
        elif isinstance(item, list):
            for nested in item:
                check(nested)

    check(normalized)
    return normalized


def options_of(task: AnyTask) -> dict[str, Any]:
    return task.options() if isinstance(task, TrackedTask) else {}


class LongTimeTaskBackend(BaseTaskBackend):
    task_class = TrackedTask

    supports_defer = True
    """``run_after``: the row waits in the database or on the broker with an ETA, and is never claimed earlier."""

    supports_async_task = True
    """``async def`` functions run in the worker (``async_to_sync``)."""

    supports_get_result = True
    """Results are read from the task row, from any process."""

    supports_priority = True
    """Django's -100..100 is mapped onto the broker's priorities (``broker_priority``)."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = {str(key) for key in self.options} - set(OPTION_NAMES)
        if unknown:
            raise InvalidTask(f"Unknown OPTIONS for backend {alias!r}: {', '.join(sorted(unknown))}")
        self.defaults = {name: self.options[name] for name in OPTION_NAMES if name in self.options}
        if isinstance(self.defaults.get("retry_on"), list | tuple):
            self.defaults["retry_on"] = tuple(
                import_string(path) if isinstance(path, str) else path for path in self.defaults["retry_on"]
            )

    # ------------------------------------------------------------ the task type
    def validate_task(self, task: AnyTask) -> None:
        super().validate_task(task)
        self.config_for(task)

    def config_for(self, task: AnyTask) -> TaskConfig:
        """The task type of ``task``'s function, registered on first use (``InvalidTask`` if it can't be)."""
        name = task.module_path
        config = LongTimeTaskRegister.registered(name)
        if config is not None:
            runner = config.handler
            if (
                isinstance(runner, TaskRunner)
                and runner.task.func is task.func
                and runner.alias == self.alias
                and runner.options == options_of(task)
            ):
                return config
            if not isinstance(runner, TaskRunner):
                raise InvalidTask(f"{name!r} is already a task type registered by {runner.__module__}.")
        if len(name) > MAX_TASK_TYPE:
            raise InvalidTask(f"The task's module path is longer than {MAX_TASK_TYPE} characters: {name!r}.")
        options = {**self.defaults, **options_of(task)}
        schema = options.pop("kwargs_schema", None)
        permission = options.pop("permission", None)
        retry_on = options.pop("retry_on", ())
        try:
            config = TaskConfig(
                name=name,
                handler=TaskRunner(task, self.alias, type(self)),
                description=(task.func.__doc__ or "").strip().split("\n", 1)[0],
                queue=task.queue_name,
                priority=broker_priority(task.priority),
                param_schema=(
                    {**PARAMS_SCHEMA, "properties": {**PARAMS_SCHEMA["properties"], "kwargs": dict(schema)}}
                    if schema is not None
                    else PARAMS_SCHEMA
                ),
                retryable_exceptions=tuple(retry_on),
                permission=permission,
                server_only=permission is None,
                placement_per_task=True,
                **options,
            )
        except (RegistryError, TypeError) as exc:
            raise InvalidTask(str(exc)) from exc
        LongTimeTaskRegister.unregister(name)  # the function was redefined (a reload)
        LongTimeTaskRegister.add(config)
        return config

    # ------------------------------------------------------------ enqueue
    def enqueue(self, task: AnyTask, args: Any, kwargs: Any) -> AnyResult:  # type: ignore[override]
        self.validate_task(task)
        config = self.config_for(task)
        params: dict[str, Any] = {
            "args": json_round_trip(list(args), "args"),
            "kwargs": json_round_trip(dict(kwargs), "kwargs"),
        }
        if task.priority:
            params["priority"] = task.priority
        if task.run_after is not None:
            params["run_after"] = task.run_after.isoformat()
        sent: list[AnyResult] = []
        submission = services.submit(
            config.name,
            params,
            owner=_owner.get(),
            run_after=task.run_after,
            queue=task.queue_name,
            priority=broker_priority(task.priority),
            check_permission=False,  # the developer's code enqueues it; the owner only decides who sees it
            enqueued=functools.partial(self.enqueued, task, sent),
        )
        # Outside a transaction the row is committed and the signal sent already: the same result object.
        return sent[0] if sent else result_from_row(task, submission.task, self.alias, as_enqueued=True)

    def enqueued(self, task: AnyTask, sent: list[AnyResult], row: LongTimeTask) -> None:
        """The row is committed: ``task_enqueued``, in this process, before the message is published."""
        result = result_from_row(task, row, self.alias, as_enqueued=True)
        sent.append(result)
        task_enqueued.send(sender=type(self), task_result=result)

    # ------------------------------------------------------------ results
    def get_result(self, result_id: str) -> AnyResult:
        try:
            pk = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        row = LongTimeTask.objects.filter(id=pk).first() if 0 < pk < 2**63 else None
        config = LongTimeTaskRegister.get_task(row.task_type) if row is not None else None
        if row is None or config is None or not isinstance(config.handler, TaskRunner):
            raise TaskResultDoesNotExist(result_id)
        return result_from_row(config.handler.task, row, self.alias)

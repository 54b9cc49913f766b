"""The task-type registry: ``@LongTimeTaskRegister.register(...)`` turns a function into a task type.

Every argument is checked when the decorator runs, which is import time: a duplicate ``task_type``, a
``soft_timeout`` that is not below ``timeout``, a priority outside 1..10 or an invalid JSON Schema fails
loudly, with the task type in the message. The config it stores is a frozen dataclass.
"""

from __future__ import annotations

import copy
import inspect
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import jsonschema
from django.core.exceptions import ImproperlyConfigured
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

logger = logging.getLogger(__name__)

Handler = Callable[[int, dict[str, Any]], Any]
F = TypeVar("F", bound=Callable[..., Any])

MIN_PRIORITY = 1
MAX_PRIORITY = 10


class RegistryError(ImproperlyConfigured):
    """A task type was declared wrongly. Raised at import time."""


class UnknownTaskType(ValueError):  # noqa: N818 - reads better at the call site
    def __init__(self, task_type: object) -> None:
        super().__init__(f"Unknown task type: {task_type}")
        self.task_type = task_type


class InvalidParams(ValueError):  # noqa: N818
    """Params do not match the task type's schema. ``field`` is the dotted path of the offending value."""

    def __init__(self, message: str, field: str = "params") -> None:
        super().__init__(message)
        self.field = field


def _default_retryable() -> tuple[type[BaseException], ...]:
    return (ConnectionError, TimeoutError)


@dataclass(frozen=True)
class TaskConfig:
    """One registered task type. Build it through ``LongTimeTaskRegister.register``."""

    name: str
    handler: Handler
    description: str = ""
    timeout: int = 3600
    soft_timeout: int = 3300
    max_retries: int = 3
    retry_delay: int = 60
    retry_backoff: bool = True
    retry_backoff_max: int = 600
    queue: str = "default"
    priority: int = 5
    param_schema: Mapping[str, Any] | None = None
    retryable_exceptions: tuple[type[BaseException], ...] = field(default_factory=_default_retryable)
    # Extra checks beyond JSON Schema (e.g. a path must stay inside a directory). Raises InvalidParams.
    param_validator: Callable[[dict[str, Any]], None] | None = None
    # Who may submit this type: a permission name ("app_label.codename"); None lets every user submit it.
    permission: str | None = None
    # Days a finished task of this type is kept (overrides LONG_TIME_TASK_RETENTION_DAYS; None: the global).
    retention_days: float | None = None
    # A schedule declared with the type: a cron expression, or a mapping of Schedule fields (``cron`` or
    # ``interval_seconds``, ``timezone``, ``params``, ``misfire``...). Written to the database on ``migrate``
    # (docs/schedules.md, "Declared in code").
    schedule: str | Mapping[str, Any] | None = None
    # The result files of a result, relative to RESULTS_DIR, deleted with the row by the purge.
    result_files: Callable[[Any], Iterable[str]] | None = None
    # Only server code submits it (a django.tasks function without a ``permission``): no user may submit or retry
    # it through the API, the dashboard or the CLI, whatever their permissions.
    server_only: bool = False
    # Queue and priority belong to each task, not to the type (a django.tasks function enqueued with
    # ``.using(queue_name=..., priority=...)``): a retry or re-run keeps the original's.
    placement_per_task: bool = False

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise RegistryError(f"Task type {self.name!r}: {message}")

        if not isinstance(self.name, str) or not self.name or len(self.name) > 100:
            raise RegistryError(f"task_type must be a non-empty string of at most 100 characters, not {self.name!r}")
        if not callable(self.handler):
            fail("handler is not callable")
        qualname = getattr(self.handler, "__qualname__", "")
        if "<lambda>" in qualname or "<locals>" in qualname:
            fail("the handler must be a module-level function, so that every worker can import it")
        for attr in ("timeout", "soft_timeout", "retry_delay", "retry_backoff_max"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                fail(f"{attr} must be a positive integer of seconds, not {value!r}")
        if self.soft_timeout >= self.timeout:
            fail(f"soft_timeout ({self.soft_timeout}s) must be less than timeout ({self.timeout}s)")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            fail(f"max_retries must be an integer >= 0, not {self.max_retries!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            fail(f"priority must be an integer, not {self.priority!r}")
        if not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            fail(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY} (10 is the highest), not {self.priority}")
        if not isinstance(self.queue, str) or not self.queue:
            fail(f"queue must be a non-empty string, not {self.queue!r}")
        if not isinstance(self.retryable_exceptions, tuple) or not all(
            isinstance(exc, type) and issubclass(exc, BaseException) for exc in self.retryable_exceptions
        ):
            fail("retryable_exceptions must be a tuple of exception classes")
        if self.param_schema is not None:
            if not isinstance(self.param_schema, Mapping):
                fail("param_schema must be a JSON Schema object (a dict)")
            try:
                validator_for(self.param_schema).check_schema(dict(self.param_schema))
            except jsonschema.SchemaError as exc:
                fail(f"param_schema is not a valid JSON Schema: {exc.message}")
            # A private copy: the caller's dict can't change a registered type behind our back.
            object.__setattr__(self, "param_schema", copy.deepcopy(dict(self.param_schema)))
        if self.param_validator is not None and not callable(self.param_validator):
            fail("param_validator must be callable")
        if self.permission is not None and (not isinstance(self.permission, str) or self.permission.count(".") != 1):
            fail(f"permission must be 'app_label.codename', not {self.permission!r}")
        if self.retention_days is not None and (
            isinstance(self.retention_days, bool)
            or not isinstance(self.retention_days, int | float)
            or self.retention_days <= 0
        ):
            fail(f"retention_days must be a positive number of days, not {self.retention_days!r}")
        if self.result_files is not None and not callable(self.result_files):
            fail("result_files must be callable")

    @cached_property
    def wants_context(self) -> bool:
        """Whether the handler declares a ``context`` parameter (then it gets the TaskContext)."""
        try:
            return "context" in inspect.signature(self.handler).parameters
        except (TypeError, ValueError):
            return False

    @property
    def task_type(self) -> str:
        return self.name

    @cached_property
    def _validator(self) -> Any:
        """The JSON Schema validator, built once per type (not per submit)."""
        if self.param_schema is None:
            return None
        cls = validator_for(self.param_schema)
        return cls(self.param_schema, format_checker=cls.FORMAT_CHECKER)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def validate_params(self, params: Any) -> None:
        """Raise InvalidParams, naming the offending field, unless ``params`` is acceptable."""
        if not isinstance(params, dict):
            raise InvalidParams("params must be a JSON object", field="params")
        if self._validator is not None:
            error = best_match(self._validator.iter_errors(params))
            if error is not None:
                path = ".".join(["params", *(str(part) for part in error.absolute_path)])
                raise InvalidParams(f"Invalid params at {path}: {error.message}", field=path)
        if self.param_validator is not None:
            self.param_validator(params)

    def may_submit(self, user: Any) -> bool:
        if self.server_only:
            return False
        return self.permission is None or bool(user and user.has_perm(self.permission))

    def is_retryable(self, exc: BaseException) -> bool:
        from celery.exceptions import SoftTimeLimitExceeded

        # A soft time limit means "this attempt took too long": retrying it would only take too long again.
        if isinstance(exc, SoftTimeLimitExceeded):
            return False
        return isinstance(exc, self.retryable_exceptions)

    def retry_countdown(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``attempt`` (1-based).

        Without backoff: ``retry_delay``. With backoff: ``retry_delay * 2**(attempt-1)``, capped by
        ``retry_backoff_max``, then jittered into [50%, 100%] of that, so retries of many tasks that failed
        together spread out instead of arriving together.
        """
        if not self.retry_backoff:
            return float(self.retry_delay)
        delay = min(self.retry_backoff_max, self.retry_delay * 2 ** max(attempt - 1, 0))
        return (rng or random).uniform(delay / 2, delay)


class LongTimeTaskRegister:
    """The registry of task types (a process-wide singleton, as in the seed)."""

    _instance: ClassVar[LongTimeTaskRegister | None] = None
    _tasks: ClassVar[dict[str, TaskConfig]] = {}
    # Called with a name that is not registered, and may register it (the django.tasks backend's resolver).
    _resolvers: ClassVar[list[Callable[[str], None]]] = []

    def __new__(cls) -> LongTimeTaskRegister:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    @classmethod
    def register(
        cls,
        task_type: str,
        description: str = "",
        timeout: int = 3600,
        soft_timeout: int = 3300,
        max_retries: int = 3,
        retry_delay: int = 60,
        retry_backoff: bool = True,
        retry_backoff_max: int = 600,
        queue: str = "default",
        priority: int = 5,
        param_schema: Mapping[str, Any] | None = None,
        retryable_exceptions: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError),
        param_validator: Callable[[dict[str, Any]], None] | None = None,
        permission: str | None = None,
        retention_days: float | None = None,
        result_files: Callable[[Any], Iterable[str]] | None = None,
        schedule: str | Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated ``handler(task_id, params) -> result`` as ``task_type``.

        The handler's return value must be JSON-serialisable; it becomes the task's ``result``. A handler
        that declares a ``context`` parameter gets a ``TaskContext`` (progress, cancellation) as
        ``context=``.
        """

        def decorator(func: F) -> F:
            config = TaskConfig(
                name=task_type,
                handler=func,
                description=description,
                timeout=timeout,
                soft_timeout=soft_timeout,
                max_retries=max_retries,
                retry_delay=retry_delay,
                retry_backoff=retry_backoff,
                retry_backoff_max=retry_backoff_max,
                queue=queue,
                priority=priority,
                param_schema=param_schema,
                retryable_exceptions=retryable_exceptions,
                param_validator=param_validator,
                permission=permission,
                retention_days=retention_days,
                result_files=result_files,
                schedule=schedule,
            )
            cls.add(config)
            return func

        return decorator

    @classmethod
    def add(cls, config: TaskConfig) -> None:
        existing = cls._tasks.get(config.name)
        if existing is not None:
            handler = existing.handler
            where = f"{handler.__module__}.{getattr(handler, '__qualname__', type(handler).__qualname__)}"
            raise RegistryError(f"Task type {config.name!r} is already registered by {where}")
        cls._tasks[config.name] = config
        logger.debug("Registered task type %s", config.name)

    @classmethod
    def unregister(cls, task_type: str) -> None:
        cls._tasks.pop(task_type, None)

    @classmethod
    @contextmanager
    def isolated(cls) -> Iterator[None]:
        """For tests: registrations made inside the block are dropped when it ends."""
        saved = dict(cls._tasks)
        try:
            yield
        finally:
            cls._tasks.clear()
            cls._tasks.update(saved)

    @classmethod
    def add_resolver(cls, resolver: Callable[[str], None]) -> None:
        """Ask ``resolver(name)`` about a name that is not registered, before saying it is unknown (once each)."""
        if resolver not in cls._resolvers:
            cls._resolvers.append(resolver)

    @classmethod
    def get_task(cls, task_type: str) -> TaskConfig | None:
        if not isinstance(task_type, str):
            return None
        config = cls._tasks.get(task_type)
        if config is None and cls._resolvers:
            for resolve in cls._resolvers:
                resolve(task_type)
            config = cls._tasks.get(task_type)
        return config

    @classmethod
    def registered(cls, task_type: str) -> TaskConfig | None:
        """The type registered as ``task_type``, without asking the resolvers."""
        return cls._tasks.get(task_type)

    @classmethod
    def get_all_tasks(cls) -> dict[str, TaskConfig]:
        return cls._tasks.copy()

    @classmethod
    def require(cls, task_type: Any) -> TaskConfig:
        config = cls.get_task(task_type)
        if config is None:
            raise UnknownTaskType(task_type)
        return config

    @classmethod
    def validate_params(cls, task_type: str, params: Any) -> bool:
        cls.require(task_type).validate_params(params)
        return True

    @classmethod
    def is_retryable(cls, task_type: str, exception: BaseException) -> bool:
        config = cls.get_task(task_type)
        return bool(config and config.is_retryable(exception))

"""System checks for configuration mistakes, with stable ids."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError
from django.utils.module_loading import import_string

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


def _longest_hold(configs: Any) -> tuple[int, str]:
    """The longest a message can stay unacknowledged: a retry's countdown, then the whole run."""
    longest, name = 0, ""
    for config in configs:
        delay = config.retry_backoff_max if config.retry_backoff else config.retry_delay
        hold = config.timeout + (delay if config.max_retries else 0)
        if hold > longest:
            longest, name = hold, config.name
    return longest, name


@register()
def check_visibility_timeout(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    broker = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    if not broker.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://")):
        return []
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    visibility = float(options.get("visibility_timeout", 3600))  # kombu's default
    longest, name = _longest_hold(LongTimeTaskRegister.get_all_tasks().values())
    if visibility > longest:
        return []
    return [
        Warning(
            f"The Redis visibility_timeout ({visibility:g}s) is not above the longest hard time limit plus retry "
            f"delay ({longest}s, task type {name!r}): Redis will redeliver messages that are still running or waiting.",
            hint="Raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] (CELERY_VISIBILITY_TIMEOUT in the demo). "
            "Duplicates lose the claim, but every one costs a delivery.",
            id="long_time_task.W002",
        )
    ]


@register()
def check_sentinel_master_name(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """kombu refuses a Sentinel broker without ``master_name`` only when it connects: every publish would fail (each
    submit's row left PENDING, each sweep failing again) and no worker would start. Say so at start-up instead."""
    broker = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    if not broker.startswith("sentinel://") or options.get("master_name"):
        return []
    return [
        Error(
            "CELERY_BROKER_URL is a Redis Sentinel URL (sentinel://), but CELERY_BROKER_TRANSPORT_OPTIONS has no "
            "'master_name': kombu cannot ask the Sentinels which server is the master, so no message can be sent.",
            hint="Set CELERY_BROKER_TRANSPORT_OPTIONS['master_name'] to the name the Sentinels monitor "
            "(`sentinel monitor <name> ...`; CELERY_BROKER_SENTINEL_MASTER in the demo).",
            id="long_time_task.E006",
        )
    ]


@register()
def check_lease_heartbeat(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """The heartbeat must renew a lease well within it: with the fence on, a worker kills an attempt whose lease
    went two thirds of ``LEASE_SECONDS`` unrenewed, so a heartbeat that slow would kill healthy tasks."""
    from .conf import conf

    interval, lease = conf.HEARTBEAT_INTERVAL, conf.LEASE_SECONDS
    if interval <= lease / 3:
        return []
    hint = (
        "Set LONG_TIME_TASK_HEARTBEAT_INTERVAL to at most a third of LONG_TIME_TASK_LEASE_SECONDS (10 and 30 by "
        "default): a failed renewal then has time to be retried before anything expires."
    )
    if conf.LEASE_FENCE and interval >= lease * 2 / 3:
        return [
            Error(
                f"LONG_TIME_TASK_HEARTBEAT_INTERVAL ({interval:g}s) is not below two thirds of LEASE_SECONDS "
                f"({lease:g}s): the lease fence would kill running tasks between two healthy renewals.",
                hint=hint,
                id="long_time_task.E005",
            )
        ]
    return [
        Warning(
            f"LONG_TIME_TASK_HEARTBEAT_INTERVAL ({interval:g}s) is above a third of LEASE_SECONDS ({lease:g}s): one "
            "slow or failed renewal lets a lease expire (or the fence kill the task) on a healthy worker.",
            hint=hint,
            id="long_time_task.W009",
        )
    ]


@register()
def check_maintenance_scheduled(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    from .schedules.scheduler import SCHEDULER_TASK
    from .worker.recovery import REAPER_TASK, SWEEPER_TASK

    schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None) or {}
    scheduled = {entry.get("task") for entry in schedule.values() if isinstance(entry, dict)}
    missing = [name for name in (REAPER_TASK, SWEEPER_TASK) if name not in scheduled]
    warnings = []
    if SCHEDULER_TASK not in scheduled:
        warnings.append(
            Warning(
                f"Celery beat does not run {SCHEDULER_TASK}: schedules never run.",
                hint="Add it to CELERY_BEAT_SCHEDULE (see demo/settings.py), every second or so.",
                id="long_time_task.W008",
            )
        )
    if not missing:
        return warnings
    return [
        *warnings,
        Warning(
            f"Celery beat does not run {', '.join(missing)}: tasks of a lost worker stay RUNNING, and tasks whose "
            "publish failed stay PENDING.",
            hint="Add them to CELERY_BEAT_SCHEDULE (see demo/settings.py) and run `celery -A <project> beat`.",
            id="long_time_task.W003",
        ),
    ]


AXES_BACKEND = "axes.backends.AxesStandaloneBackend"


def _first_backend_is_axes() -> bool:
    backends = list(getattr(settings, "AUTHENTICATION_BACKENDS", None) or [])
    if not backends:
        return False
    try:
        from axes.backends import AxesStandaloneBackend

        first = import_string(backends[0])
    except ImportError:
        return False
    return isinstance(first, type) and issubclass(first, AxesStandaloneBackend)


@register()
def check_login_throttle(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """The dashboard has a login page: without a throttle, passwords can be guessed at the speed of the hasher."""
    if not apps.is_installed("long_time_task.dashboard"):
        return []
    if not apps.is_installed("axes") or not getattr(settings, "AXES_ENABLED", True):
        problem = "django-axes is not installed (or AXES_ENABLED is off)"
    elif not _first_backend_is_axes():
        problem = f"{AXES_BACKEND} is not the first of AUTHENTICATION_BACKENDS, so the password is checked first"
    else:
        return []
    return [
        Warning(
            f"The dashboard's login page does not throttle failed logins: {problem}.",
            hint=f"Add 'axes' to INSTALLED_APPS, 'axes.middleware.AxesMiddleware' to MIDDLEWARE and {AXES_BACKEND} "
            "first in AUTHENTICATION_BACKENDS (see demo/settings.py), or silence this check if something else "
            "throttles logins.",
            id="long_time_task.W004",
        )
    ]


@register()
def check_submit_rate(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A rate the service cannot read would fail every submit: say so at start-up instead."""
    from django.core.exceptions import ImproperlyConfigured

    from .conf import conf
    from .ratelimit import Rate

    text = conf.SUBMIT_RATE
    if text is None:
        return []
    try:
        Rate.parse(text)
    except ImproperlyConfigured as exc:
        return [
            Error(
                f"LONG_TIME_TASK_SUBMIT_RATE: {exc}",
                hint="A number, a slash and a period: 60/min, 10/s, 1000/hour, 5000/day (None: no limit).",
                id="long_time_task.E002",
            )
        ]
    return []


HEALTH_MIDDLEWARE = "long_time_task.observability.health.HealthCheckMiddleware"


@register()
def check_health_middleware_first(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Behind another middleware, a probe of /healthz or /readyz may meet ALLOWED_HOSTS or the HTTPS redirect first."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if HEALTH_MIDDLEWARE not in middleware or middleware[0] == HEALTH_MIDDLEWARE:
        return []
    return [
        Warning(
            f"{HEALTH_MIDDLEWARE} is not first in MIDDLEWARE: a probe of /healthz or /readyz that uses the pod's IP "
            f"as its Host, or plain HTTP, may get 400 (ALLOWED_HOSTS) or 301 (SECURE_SSL_REDIRECT) from "
            f"{middleware[0]} or another middleware before it.",
            hint="Move it to the top of MIDDLEWARE: it answers only GET and HEAD on /healthz and /readyz and passes "
            "every other request on untouched.",
            id="long_time_task.W005",
        )
    ]


@register(Tags.database)
def check_queues_consumed(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Warning]:
    """Each queue that tasks or the maintenance jobs are sent to has a live worker reading it.

    A database check: Django runs it on ``manage.py check --database default`` and before ``migrate``, not on
    every start-up. It says nothing before any worker has ever started (a new installation), nor when the
    table of workers does not exist yet (the migration that adds it has not run).
    """
    if not databases or "default" not in databases:
        return []
    from .models import WorkerHeartbeat
    from .observability.consumers import unconsumed_queues

    try:
        if not WorkerHeartbeat.objects.exists():
            return []
        missing = unconsumed_queues()
    except DatabaseError:
        return []
    return [
        Warning(
            f"No live worker consumes queue {queue.name!r} ({queue.purpose}): "
            + (
                "the reaper and the sweeper never run, so lost tasks are not recovered."
                if "maintenance" in queue.purpose
                else "tasks sent there wait until a worker reads it."
            ),
            hint=f"Start a worker with `celery -A <project> worker -Q {queue.name}` (or add it to a worker's -Q).",
            id="long_time_task.W006",
        )
        for queue in missing
    ]


@register()
def check_tracing_mode(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """An unknown mode would trace as ``"parent"``: say so at start-up instead."""
    from .conf import conf
    from .tracing import MODES

    mode = conf.TRACING
    if mode in MODES:
        return []
    return [
        Error(
            f"LONG_TIME_TASK_TRACING is {mode!r}.",
            hint='"parent" (the default), "link" or "off"; True and False mean "parent" and "off".',
            id="long_time_task.E003",
        )
    ]


@register()
def check_metrics_directory(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """With PROMETHEUS_MULTIPROC_DIR naming no directory, prometheus-client cannot write its files: metrics are off."""
    import os

    from . import metrics
    from .conf import conf

    path = metrics.multiprocess_dir()
    if not conf.METRICS or path is None or os.path.isdir(path):
        return []
    return [
        Warning(
            f"PROMETHEUS_MULTIPROC_DIR is {path!r}, which is not a directory: no process can record metrics.",
            hint="Create the directory before the web and worker processes start (empty it when they all restart), "
            "or unset the variable for single-process metrics.",
            id="long_time_task.W007",
        )
    ]


@register()
def check_declared_schedules(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every schedule declared in code (a type's ``schedule=``, LONG_TIME_TASK_SCHEDULES) passes the checks a user's
    schedule passes, before ``migrate`` writes them."""
    from .schedules.declared import InvalidDeclaration, candidate, declarations

    try:
        declared = declarations()
        for code_name, spec in declared.items():
            candidate(code_name, spec, None)
    except InvalidDeclaration as exc:
        return [
            Error(
                f"A schedule declared in code is invalid: {exc}",
                hint="Fix the task type's schedule= or LONG_TIME_TASK_SCHEDULES (docs/schedules.md).",
                id="long_time_task.E004",
            )
        ]
    return []


def _quorum_queues() -> dict[str, tuple[dict[str, Any], str]]:
    """The queues CELERY_TASK_QUEUES declares as RabbitMQ quorum queues (``x-queue-type: quorum``): by name, their
    arguments and their exchange's type."""
    queues = getattr(settings, "CELERY_TASK_QUEUES", None) or ()
    if isinstance(queues, dict):  # Celery's other form: {name: {"exchange": ..., "queue_arguments": ...}}
        declared = [
            (name, options.get("queue_arguments"), options.get("exchange_type")) for name, options in queues.items()
        ]
    else:
        declared = [
            (
                getattr(q, "name", str(q)),
                getattr(q, "queue_arguments", None),
                getattr(getattr(q, "exchange", None), "type", None),
            )
            for q in queues
        ]
    return {
        name: (dict(arguments), str(exchange_type or "direct"))
        for name, arguments, exchange_type in declared
        if isinstance(arguments, dict) and arguments.get("x-queue-type") == "quorum"
    }


@register()
def check_quorum_queues(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Quorum queues deliver in order of arrival (RabbitMQ 3.x has no priorities on them), and Celery delays a
    countdown or a retry on them through topic exchanges only (native delayed delivery)."""
    quorum = _quorum_queues()
    if not quorum:
        return []
    warnings = []
    priorities: dict[str, dict[int, list[str]]] = {}
    for config in LongTimeTaskRegister.get_all_tasks().values():
        if config.queue in quorum:
            priorities.setdefault(config.queue, {}).setdefault(config.priority, []).append(config.name)
    for queue, by_priority in sorted(priorities.items()):
        if len(by_priority) < 2:
            continue
        types = "; ".join(f"{p}: {', '.join(sorted(names))}" for p, names in sorted(by_priority.items(), reverse=True))
        warnings.append(
            Warning(
                f"Queue {queue!r} is a RabbitMQ quorum queue, and task types of different priorities share it "
                f"({types}): on RabbitMQ 3.x the broker delivers them in order of arrival, whatever their priority.",
                hint="RabbitMQ 3.x ignores message priorities on quorum queues (and refuses x-max-priority on "
                'them); 4.x has some (docs/deployment.md, "Quorum queues"). Give the types that must overtake others '
                "a queue of their own, read by workers of their own, or silence long_time_task.W010 if order of "
                "arrival is fine.",
                id="long_time_task.W010",
            )
        )
    for queue, (_arguments, exchange_type) in sorted(quorum.items()):
        if exchange_type == "direct":
            warnings.append(
                Warning(
                    f"Queue {queue!r} is a RabbitMQ quorum queue on a direct exchange: Celery's native delayed "
                    "delivery does not serve it, so each countdown or retry delay is held by a worker, in one of its "
                    "prefetch slots (quorum queues have no global QoS to raise), until it is due.",
                    hint="Declare the queue's exchange as a topic exchange: Exchange(name, type='topic') (as the demo "
                    "does under CELERY_QUEUE_TYPE=quorum).",
                    id="long_time_task.W011",
                )
            )
    return warnings

"""Settings of long_time_task: one declaration each, read lazily so that ``override_settings`` works.

Each ``Setting`` on ``Conf`` names one Django setting, ``LONG_TIME_TASK_<name>``, with its default, the conversion
applied to whatever the project sets, and a line saying what it means. Reading ``conf.<name>`` reads Django's
settings at that moment. The README's table of settings is ``markdown_table()``'s output (tests/test_conf.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from django.conf import settings

PREFIX = "LONG_TIME_TASK_"

T = TypeVar("T")


class Setting(Generic[T]):
    """``LONG_TIME_TASK_<name>`` passed through ``convert``; ``default`` (converted too) when the project leaves
    it unset. ``shown`` stands for the default in the README when the default is worked out at each read."""

    def __init__(self, default: object, convert: Callable[[Any], T], doc: str, *, shown: str | None = None) -> None:
        self.default = default
        self.convert = convert
        self.doc = doc
        self.shown = shown
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def setting_name(self) -> str:
        return PREFIX + self.name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Setting[T] | T:
        if instance is None:
            return self
        return self.convert(getattr(settings, self.setting_name, self.default))


def _var_dir(leaf: str) -> Callable[[Any], Path]:
    def convert(value: Any) -> Path:
        if value is None:
            return Path(getattr(settings, "BASE_DIR", Path.cwd())) / "var" / leaf
        return Path(value)

    return convert


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if value else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if value not in (None, "") else None


def _non_negative_int(value: Any) -> int:
    return max(int(value or 0), 0)


def _whole(value: Any) -> int:
    return int(float(value))


def _non_negative_whole(value: Any) -> int:
    return max(0, int(float(value)))


def _path_or_none(value: Any) -> Path | None:
    return Path(value) if value else None


LOG_FORMATS = ("plain", "json")


def _log_format(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if value not in LOG_FORMATS:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f'{PREFIX}LOG_FORMAT must be None, "plain" or "json", not {value!r}')
    return str(value)


def _tracing_mode(value: Any) -> str:
    if value is True or value is None:
        return "parent"
    if value is False:
        return "off"
    return str(value).lower()


class Conf:
    FILES_DIR = Setting(
        None,
        _var_dir("files"),
        "where `file_processing` may read its inputs and `data_analysis` its datasets; paths outside it are refused",
        shown='BASE_DIR / "var" / "files"',
    )
    RESULTS_DIR = Setting(
        None,
        _var_dir("results"),
        "where handlers write result files (`file_processing` outputs, reports), deleted with their task by the purge",
        shown='BASE_DIR / "var" / "results"',
    )
    MAX_PAGE_SIZE = Setting(100, int, "largest `page_size` the list accepts (a larger one is clamped)")
    DEFAULT_PAGE_SIZE = Setting(20, int, "`page_size` of a list request that gives none")
    LIST_COUNT_CAP = Setting(10_000, int, "the list counts tasks exactly up to this many, then estimates `total`")
    MAX_LIST_OFFSET = Setting(
        10_000, int, "rows deep that page numbers reach (then 400 `page_too_deep`; deeper pages go by cursor)"
    )
    MAX_PARAMS_DEPTH = Setting(32, int, "deepest nesting of `params` accepted at submit")
    MAX_BODY_BYTES = Setting(65_536, int, "largest request body the API reads (413 above it)")
    MAX_PARAMS_BYTES = Setting(16_384, int, "largest `params` a task may carry, as JSON")
    SUBMIT_RATE = Setting(
        "60/min",
        _str_or_none,
        "submissions per user, whatever the door (API submit, retry and re-run, dashboard, admin actions, "
        "`tasks --user`): `n/s`, `n/min`, `n/hour` or `n/day`, counted in Django's cache; `None` or empty: unlimited",
    )
    MAX_UNFINISHED_PER_USER = Setting(
        100,
        _int_or_none,
        "unfinished (`PENDING`, `RUNNING`, `RETRYING`) tasks a user may have at once; `None` or `0`: unlimited",
    )
    PUBLISH_TIMEOUT = Setting(
        2.0,
        float,
        "seconds a publish may spend on its two retries before the submit gives up on it (the row stays `PENDING`)",
    )
    LEASE_SECONDS = Setting(
        30.0, float, "lease of a running task; a worker that stops renewing it for this long is considered lost"
    )
    HEARTBEAT_INTERVAL = Setting(
        10.0, float, "how often a worker renews the leases of its running tasks (keep well below the lease)"
    )
    LEASE_FENCE = Setting(
        True,
        bool,
        "a worker that could not renew a running task's lease for two thirds of `LEASE_SECONDS` kills the process "
        "running it before the lease runs out, so that a worker cut off from the database never runs an attempt "
        "while its retry runs elsewhere (prefork pool)",
    )
    REDISPATCH_AFTER = Setting(
        120.0,
        float,
        "a waiting task whose message has not started after this long is published again (then 2×, 4×, … up to 64×)",
    )
    CONNECTION_CHECK_INTERVAL = Setting(
        10.0,
        float,
        "how often a worker process lets Django check its database connection (`CONN_MAX_AGE`, health check)",
    )
    MAINTENANCE_BATCH = Setting(
        500, int, "rows the reaper and the sweeper handle per run, and due schedules the scheduler per tick"
    )
    SCHEDULE_MISFIRE_GRACE = Setting(
        60.0,
        float,
        "a schedule's due time is on time while the scheduler finds it less than this many seconds late; an older one "
        "is a missed run, handled by the schedule's misfire policy",
    )
    SCHEDULE_MIN_INTERVAL = Setting(60, int, "the shortest `interval_seconds` a schedule may have")
    SCHEDULES = Setting(
        {},
        dict,
        "schedules declared in code: a name for each, mapped to its fields (`task_type`, `cron` or "
        "`interval_seconds`, `timezone`, `params`, ...); written to the database by `migrate` "
        "([docs/schedules.md](docs/schedules.md#declared-in-code))",
        shown="{}",
    )
    PROGRESS_INTERVAL = Setting(
        1.0, float, "seconds between two progress writes of one task (also how often `check_cancelled` reads)"
    )
    CANCEL_GRACE_SECONDS = Setting(
        30.0, float, "a running task asked to cancel that has not stopped after this long is killed (its process only)"
    )
    ETA_MAX_SECONDS = Setting(
        300.0,
        float,
        "delayed starts up to this far are published at once with a broker ETA; later ones wait in the database",
    )
    RETENTION_DAYS = Setting(
        None,
        _float_or_none,
        "finished tasks older than this many days are deleted by the purge, with their result files; `None` keeps "
        "them (a task type's `retention_days` overrides it)",
    )
    PURGE_BATCH = Setting(1000, int, "rows the purge deletes per transaction")
    PREPARED_STATEMENTS = Setting(
        True,
        bool,
        "PostgreSQL: the submit's INSERT and the worker's claim, progress and finish are prepared once per "
        "connection, not parsed and planned for every task; turn it off behind PgBouncer older than 1.21 in "
        "transaction mode, which cannot keep prepared statements",
    )
    TRACING = Setting(
        "parent",
        _tracing_mode,
        "OpenTelemetry spans for submit, publish and the worker's run, with the trace context carried in the message, "
        "when `opentelemetry-api` is installed: `\"parent\"` (the worker's spans continue the submit's trace), "
        '`"link"` (they start a trace of their own, linked to it) or `"off"` (nothing imported) '
        "([Tracing](docs/operations.md#tracing))",
    )
    TRUSTED_PROXY_COUNT = Setting(
        0,
        _non_negative_int,
        "reverse proxies in front of Django that append to `X-Forwarded-For` (`1` behind one nginx); the login "
        "throttle counts the client address they saw ([Login throttling](#login-throttling))",
    )
    EVENTS_ENABLED = Setting(True, bool, "`False`: no live-update streams (503); the dashboard polls")
    EVENTS_STREAM_SECONDS = Setting(
        30.0, float, "how long one live-update stream stays open before the browser reconnects"
    )
    EVENTS_POLL_INTERVAL = Setting(0.5, float, "how often a web process reads the rows its open streams watch")
    EVENTS_MAX_PER_USER = Setting(10, _whole, "open event streams per user and web process (429 above it)")
    EVENTS_WSGI_MAX_STREAMS = Setting(
        1,
        _non_negative_whole,
        "open event streams per WSGI process, all users together (429 above it; `0`: none, the pages poll); each "
        "holds a server thread. Not applied under ASGI",
    )
    READY_TIMEOUT = Setting(
        2.0,
        float,
        "seconds `/readyz` waits for the database and the broker (checked side by side) before it answers 503 "
        "naming the one that did not answer ([docs/operations.md](docs/operations.md))",
    )
    WORKER_LIVENESS_FILE = Setting(
        None,
        _path_or_none,
        "a file the worker's main process touches at every lease heartbeat, for its liveness probe "
        "(`python -m long_time_task.observability.probe worker`); one per worker process; `None`: none",
    )
    BEAT_LIVENESS_FILE = Setting(
        None,
        _path_or_none,
        "a file Celery beat touches when it starts and whenever it sends a scheduled task, for its liveness probe "
        "(`python -m long_time_task.observability.probe beat`); `None`: none",
    )
    METRICS = Setting(
        True,
        bool,
        "count submits, starts, outcomes, retries and recoveries in Prometheus metrics (`prometheus-client`), "
        "served at `/metrics` ([docs/operations.md](docs/operations.md#metrics)); `False`: nothing is counted",
    )
    METRICS_TOKEN = Setting(
        None,
        _str_or_none,
        "a bearer token that may read `/metrics` besides staff API tokens (the scraper's: "
        "`Authorization: Bearer <token>`); `None`: staff API tokens only",
    )
    METRICS_QUERY_TIMEOUT = Setting(
        1.0,
        float,
        "seconds a `/metrics` scrape waits for each database query and for the broker's queue lengths before it "
        "leaves those gauges out",
    )
    WORKER_METRICS_PORT = Setting(
        None,
        _int_or_none,
        "a port on which each worker's main process serves its host's counters for Prometheus (no database or "
        "broker gauges, no authentication); `None`: none",
    )
    WORKER_METRICS_ADDRESS = Setting(
        "0.0.0.0",  # noqa: S104 - opt-in (WORKER_METRICS_PORT), and the scraper is usually on another host
        str,
        "the address the worker's metrics port listens on",
    )

    LOG_FORMAT = Setting(
        None,
        _log_format,
        '`"plain"` or `"json"`: the log lines of the library (logger `long_time_task`) go to standard error in that '
        "format, timestamps in UTC ISO 8601, JSON with the task's fields; `None`: left to the project's `LOGGING`, "
        "which wins whenever it configures that logger ([docs/operations.md](docs/operations.md#logs))",
    )

    @classmethod
    def settings(cls) -> Iterator[Setting[Any]]:
        """Every declaration, in the order declared."""
        for value in vars(cls).values():
            if isinstance(value, Setting):
                yield value


def _literal(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def markdown_table() -> str:
    """The README's table of settings: one row per declaration, in the order declared."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for setting in Conf.settings():
        default = setting.shown if setting.shown is not None else _literal(setting.default)
        meaning = setting.doc.replace("|", r"\|")
        rows.append(f"| `{setting.setting_name}` | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"


conf = Conf()

"""Settings of long_time_task, read lazily so that ``override_settings`` works.

Every name is read from Django settings with the ``LONG_TIME_TASK_`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Where file_processing may read inputs; paths outside it are refused.
    "FILES_DIR": None,  # default: <BASE_DIR>/var/files
    # Where handlers write result files (file_processing outputs, reports).
    "RESULTS_DIR": None,  # default: <BASE_DIR>/var/results
    # Largest page_size the list endpoint accepts (larger values are clamped).
    "MAX_PAGE_SIZE": 100,
    "DEFAULT_PAGE_SIZE": 20,
    # The list counts exactly up to this many tasks, then estimates; page numbers reach this many rows deep.
    "LIST_COUNT_CAP": 10_000,
    "MAX_LIST_OFFSET": 10_000,
    # Deepest nesting of params accepted at submit.
    "MAX_PARAMS_DEPTH": 32,
    # Largest request body the API reads (413 above it), and largest params (as JSON) a task may carry.
    "MAX_BODY_BYTES": 65_536,
    "MAX_PARAMS_BYTES": 16_384,
    # Submissions per user, whatever the door (API, dashboard, admin, CLI with --user): "n/s", "n/min", "n/hour"
    # or "n/day", e.g. "60/min"; None: unlimited. Counted in Django's cache (share it between processes).
    "SUBMIT_RATE": "60/min",
    # Unfinished (PENDING, RUNNING, RETRYING) tasks a user may have at once (None: unlimited).
    "MAX_UNFINISHED_PER_USER": 100,
    # Seconds a broker publish may take before the submit gives up on it (the row stays PENDING).
    "PUBLISH_TIMEOUT": 2.0,
    # A RUNNING row holds a lease this long; its worker renews it every HEARTBEAT_INTERVAL seconds.
    # When a lease expires (worker or host lost), the reaper requeues the task or fails it.
    "LEASE_SECONDS": 30.0,
    "HEARTBEAT_INTERVAL": 10.0,
    # A waiting row whose message has not started after this many seconds is published again (messages
    # lost with the broker); later re-publishes of the same row back off exponentially.
    "REDISPATCH_AFTER": 120.0,
    # How often a worker process lets Django check its database connection (CONN_MAX_AGE, health check).
    "CONNECTION_CHECK_INTERVAL": 10.0,
    # Rows the reaper and the sweeper handle per run.
    "MAINTENANCE_BATCH": 500,
    # Progress: at most one write per task per this many seconds (also how often check_cancelled reads).
    "PROGRESS_INTERVAL": 1.0,
    # A RUNNING task whose cancel was requested and which has not stopped after this many seconds is
    # stopped hard: its worker kills the process running it.
    "CANCEL_GRACE_SECONDS": 30.0,
    # Delayed starts up to this many seconds away are published at once with a broker ETA; longer ones wait
    # in the database and the sweeper publishes them when due (long ETA messages duplicate on Redis once
    # they outlive the visibility timeout).
    "ETA_MAX_SECONDS": 300.0,
    # Finished (FINISHED, FAILED, CANCELLED) tasks older than this many days are deleted by the periodic
    # purge, with their result files; None keeps them. A task type's ``retention_days`` overrides it.
    "RETENTION_DAYS": None,
    # Rows the purge deletes per batch (per transaction).
    "PURGE_BATCH": 1000,
    # PostgreSQL: prepare the hot path's statements on the server (off behind PgBouncer < 1.21 in
    # transaction mode, which cannot keep prepared statements).
    "PREPARED_STATEMENTS": True,
    # Reverse proxies in front of the web server that append the client's address to X-Forwarded-For (0: none,
    # REMOTE_ADDR is the client). The login throttle counts failures per client address found this way.
    "TRUSTED_PROXY_COUNT": 0,
}


class Conf:
    def _get(self, name: str) -> Any:
        return getattr(settings, f"LONG_TIME_TASK_{name}", DEFAULTS[name])

    def _dir(self, name: str, fallback: str) -> Path:
        value = self._get(name)
        if value is None:
            base = Path(getattr(settings, "BASE_DIR", Path.cwd()))
            return base / "var" / fallback
        return Path(value)

    @property
    def FILES_DIR(self) -> Path:  # noqa: N802 - settings-style names
        return self._dir("FILES_DIR", "files")

    @property
    def RESULTS_DIR(self) -> Path:  # noqa: N802
        return self._dir("RESULTS_DIR", "results")

    @property
    def MAX_PAGE_SIZE(self) -> int:  # noqa: N802
        return int(self._get("MAX_PAGE_SIZE"))

    @property
    def DEFAULT_PAGE_SIZE(self) -> int:  # noqa: N802
        return int(self._get("DEFAULT_PAGE_SIZE"))

    @property
    def LIST_COUNT_CAP(self) -> int:  # noqa: N802
        return int(self._get("LIST_COUNT_CAP"))

    @property
    def MAX_LIST_OFFSET(self) -> int:  # noqa: N802
        return int(self._get("MAX_LIST_OFFSET"))

    @property
    def MAX_PARAMS_DEPTH(self) -> int:  # noqa: N802
        return int(self._get("MAX_PARAMS_DEPTH"))

    @property
    def MAX_BODY_BYTES(self) -> int:  # noqa: N802
        return int(self._get("MAX_BODY_BYTES"))

    @property
    def MAX_PARAMS_BYTES(self) -> int:  # noqa: N802
        return int(self._get("MAX_PARAMS_BYTES"))

    @property
    def SUBMIT_RATE(self) -> str | None:  # noqa: N802
        value = self._get("SUBMIT_RATE")
        return str(value) if value else None

    @property
    def MAX_UNFINISHED_PER_USER(self) -> int | None:  # noqa: N802
        value = self._get("MAX_UNFINISHED_PER_USER")
        return int(value) if value else None

    @property
    def PUBLISH_TIMEOUT(self) -> float:  # noqa: N802
        return float(self._get("PUBLISH_TIMEOUT"))

    @property
    def LEASE_SECONDS(self) -> float:  # noqa: N802
        return float(self._get("LEASE_SECONDS"))

    @property
    def HEARTBEAT_INTERVAL(self) -> float:  # noqa: N802
        return float(self._get("HEARTBEAT_INTERVAL"))

    @property
    def REDISPATCH_AFTER(self) -> float:  # noqa: N802
        return float(self._get("REDISPATCH_AFTER"))

    @property
    def CONNECTION_CHECK_INTERVAL(self) -> float:  # noqa: N802
        return float(self._get("CONNECTION_CHECK_INTERVAL"))

    @property
    def MAINTENANCE_BATCH(self) -> int:  # noqa: N802
        return int(self._get("MAINTENANCE_BATCH"))

    @property
    def PROGRESS_INTERVAL(self) -> float:  # noqa: N802
        return float(self._get("PROGRESS_INTERVAL"))

    @property
    def CANCEL_GRACE_SECONDS(self) -> float:  # noqa: N802
        return float(self._get("CANCEL_GRACE_SECONDS"))

    @property
    def ETA_MAX_SECONDS(self) -> float:  # noqa: N802
        return float(self._get("ETA_MAX_SECONDS"))

    @property
    def RETENTION_DAYS(self) -> float | None:  # noqa: N802
        value = self._get("RETENTION_DAYS")
        return float(value) if value not in (None, "") else None

    @property
    def PURGE_BATCH(self) -> int:  # noqa: N802
        return int(self._get("PURGE_BATCH"))

    @property
    def PREPARED_STATEMENTS(self) -> bool:  # noqa: N802
        return bool(self._get("PREPARED_STATEMENTS"))

    @property
    def TRUSTED_PROXY_COUNT(self) -> int:  # noqa: N802
        return max(int(self._get("TRUSTED_PROXY_COUNT") or 0), 0)


conf = Conf()

"""The library's log lines, for people and for machines: two formatters, and the setting that installs one.

``PlainFormatter``: ``2026-05-01T04:00:00.123+00:00 INFO long_time_task.worker.executor: Task 12 (report) attempt 1
finished in 840 ms``: the time in UTC with its offset, whatever the process's local zone (Django sets it to
``TIME_ZONE``).

``JsonFormatter``: one JSON object a line: ``timestamp`` (UTC, ISO 8601 with its offset), ``level``, ``logger``,
``message``, every field the line was given with ``extra=`` (each executor line has ``task_id``, ``task_type``,
``attempt``, ``worker``, ``queue``, ``outcome`` and ``duration_ms``, null when not known yet), and ``exception``
(the formatted traceback) when there is one.

A project may name either class in its own ``LOGGING`` (``"()": "long_time_task.observability.logs.JsonFormatter"``).
``LONG_TIME_TASK_LOG_FORMAT`` (``"plain"`` or ``"json"``) does it for the library's lines only: ``install()`` (called
when the app is ready, in every process) gives the ``long_time_task`` logger a handler of its own on standard error
with that format, and stops its lines from also reaching the root logger's handlers (they would be printed twice).
The project's configuration wins: if its ``LOGGING`` gives the ``long_time_task`` logger a handler, nothing is
installed. Celery's worker resets only the root logger's handlers (``worker_hijack_root_logger``), so the handler
stays in the worker and its pool processes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER = "long_time_task"

# What every LogRecord carries; anything else on a record came from ``extra=``, which the logging docs define as
# populating "the __dict__ of the LogRecord" (Logger.debug, ``extra``): that dictionary is the documented place.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def utc_timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) in UTC, ISO 8601 to the millisecond: ``2026-05-01T04:00:00.123+00:00``."""
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")


class PlainFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s``, with ``asctime`` in UTC and its offset."""

    default_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt or self.default_format, datefmt, *args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return utc_timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


FORMATTERS: dict[str, type[logging.Formatter]] = {"plain": PlainFormatter, "json": JsonFormatter}


class LibraryHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``install()`` adds: standard error as the process started with it (``sys.__stderr__``), not the
    logging proxy Celery's worker puts in ``sys.stderr``, which would log each line a second time."""

    def __init__(self) -> None:
        super().__init__(sys.__stderr__ or sys.stderr)


def install(log_format: str | None) -> logging.Handler | None:
    """Give the ``long_time_task`` logger a handler in ``log_format``, unless the project gave it one; the handler
    added, or None. Called again, it replaces its own handler (a changed format)."""
    logger = logging.getLogger(LOGGER)
    ours = [handler for handler in logger.handlers if isinstance(handler, LibraryHandler)]
    if len(ours) != len(logger.handlers):
        return None  # the project's LOGGING configures this logger: its configuration wins
    for handler in ours:
        logger.removeHandler(handler)
        logger.propagate = True  # as it was before this handler was installed
    if log_format is None:
        return None
    handler = LibraryHandler()
    handler.setFormatter(FORMATTERS[log_format]())
    logger.addHandler(handler)
    logger.propagate = False
    return handler

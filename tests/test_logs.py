"""The library's log formats (long_time_task/observability/logs.py), the setting that installs one, and the fields on
the executor's lines."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from long_time_task.conf import conf
from long_time_task.models import LongTimeTask
from long_time_task.observability import logs
from long_time_task.registry import LongTimeTaskRegister
from long_time_task.worker.executor import Executor

EXECUTOR_FIELDS = {"task_id", "task_type", "attempt", "worker", "queue", "outcome", "duration_ms"}


def make_record(message: str = "Task %s finished", *args: Any, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("long_time_task.worker.executor")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args or (12,), None, extra=extra)


@pytest.fixture
def local_zone_far_from_utc() -> Iterator[None]:
    """The process's local zone as Django sets it from TIME_ZONE (the demo's: Asia/Shanghai, UTC+8)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_a_json_line_is_one_object_with_a_utc_timestamp_level_logger_message_and_the_extra_fields(
    local_zone_far_from_utc,
):
    record = make_record(task_id=12, task_type="report", attempt=2, outcome=None, duration_ms=None)
    line = logs.JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "Task 12 finished"
    assert (entry["level"], entry["logger"]) == ("INFO", "long_time_task.worker.executor")
    assert entry["task_id"] == 12 and entry["task_type"] == "report" and entry["attempt"] == 2
    assert entry["outcome"] is None and "duration_ms" in entry
    moment = datetime.fromisoformat(entry["timestamp"])
    assert moment.utcoffset() == timedelta(0)  # UTC, whatever the local zone
    assert abs(moment.timestamp() - record.created) < 0.001
    assert entry["timestamp"].endswith("+00:00")
    assert not {"args", "msg", "levelno", "pathname", "created"} & entry.keys()  # the record's own attributes


def test_a_json_line_stays_one_line_with_newlines_a_traceback_and_values_json_cannot_hold():
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        import sys

        record = make_record("two\nlines %s", 1, when=datetime(2026, 1, 1))
        record.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "two\nlines 1"
    assert entry["when"] == "2026-01-01 00:00:00"  # str() of what JSON cannot hold
    assert entry["exception"].startswith("Traceback") and "ValueError: first\nsecond" in entry["exception"]


def test_the_plain_format_shows_utc_with_its_offset(local_zone_far_from_utc):
    record = make_record()
    line = logs.PlainFormatter().format(record)
    stamp, level, name, message = line.split(" ", 3)
    assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0) and stamp.endswith("+00:00")
    assert (level, name, message) == ("INFO", "long_time_task.worker.executor:", "Task 12 finished")


def test_the_formatters_work_from_a_projects_logging_dict():
    stream = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "long_time_task.observability.logs.JsonFormatter"}},
            "handlers": {"mine": {"class": "logging.StreamHandler", "formatter": "json", "stream": stream}},
            "loggers": {"project.test_logs": {"handlers": ["mine"], "level": "INFO", "propagate": False}},
        }
    )
    logging.getLogger("project.test_logs").info("hello %s", "world", extra={"order": 7})
    assert json.loads(stream.getvalue()) | {"timestamp": None} == {
        "timestamp": None,
        "level": "INFO",
        "logger": "project.test_logs",
        "message": "hello world",
        "order": 7,
    }


@pytest.fixture
def library_logger() -> Iterator[logging.Logger]:
    """The ``long_time_task`` logger, restored afterwards."""
    logger = logging.getLogger(logs.LOGGER)
    handlers, propagate = list(logger.handlers), logger.propagate
    yield logger
    logger.handlers[:] = handlers
    logger.propagate = propagate


def test_the_setting_installs_one_handler_on_the_library_logger_and_stops_propagation(library_logger):
    handler = logs.install("json")
    assert handler is not None and library_logger.handlers == [handler] and not library_logger.propagate
    assert isinstance(handler.formatter, logs.JsonFormatter)
    again = logs.install("plain")  # installed again (a changed format): replaced, never two
    assert again is not None and library_logger.handlers == [again] and isinstance(again.formatter, logs.PlainFormatter)
    assert logs.install(None) is None
    assert library_logger.handlers == [] and library_logger.propagate


def test_a_projects_own_handler_on_the_library_logger_wins(library_logger):
    mine = logging.StreamHandler(io.StringIO())
    library_logger.addHandler(mine)
    assert logs.install("json") is None
    assert library_logger.handlers == [mine] and library_logger.propagate


def test_the_setting_takes_none_plain_or_json_only(settings):
    settings.LONG_TIME_TASK_LOG_FORMAT = "json"
    assert conf.LOG_FORMAT == "json"
    settings.LONG_TIME_TASK_LOG_FORMAT = ""
    assert conf.LOG_FORMAT is None
    settings.LONG_TIME_TASK_LOG_FORMAT = "xml"
    with pytest.raises(ImproperlyConfigured, match="LONG_TIME_TASK_LOG_FORMAT"):
        _ = conf.LOG_FORMAT


# ---------------------------------------------------------------- the executor's fields


def logs_ok(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    return {}


def logs_fail(task_id: int, params: dict[str, Any]) -> None:
    raise ValueError("no")


@pytest.fixture
def executor_types() -> Iterator[None]:
    LongTimeTaskRegister.register(task_type="logs_ok", timeout=30, soft_timeout=20, queue="heavy")(logs_ok)
    LongTimeTaskRegister.register(task_type="logs_fail", timeout=30, soft_timeout=20, max_retries=0)(logs_fail)
    yield
    LongTimeTaskRegister.unregister("logs_ok")
    LongTimeTaskRegister.unregister("logs_fail")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("task_type", "outcome", "queue"), [("logs_ok", "finished", "heavy"), ("logs_fail", "failed", "default")]
)
def test_every_executor_line_carries_the_attempts_fields(executor_types, caplog, task_type, outcome, queue):
    task = LongTimeTask.objects.create(task_type=task_type, queue=queue)
    with caplog.at_level(logging.INFO, logger="long_time_task"):
        assert Executor(worker="w1@host").run(task.id, 1) == outcome
    lines = [r for r in caplog.records if r.name == "long_time_task.worker.executor"]
    assert len(lines) >= 2  # the start and the end, at least
    for record in lines:
        fields = {name: getattr(record, name) for name in EXECUTOR_FIELDS}
        assert fields | {"outcome": None, "duration_ms": None} == {
            "task_id": task.id,
            "task_type": task_type,
            "attempt": 1,
            "worker": "w1@host",
            "queue": queue,
            "outcome": None,
            "duration_ms": None,
        }
    last = lines[-1]
    assert last.outcome == outcome and isinstance(last.duration_ms, float) and last.duration_ms >= 0
    assert lines[0].outcome is None and lines[0].duration_ms is None
    assert f"Task {task.id} ({task_type}) attempt 1 {outcome}" in last.getMessage()


@pytest.mark.django_db
def test_a_message_that_claims_nothing_logs_a_skipped_line_with_its_fields(caplog):
    with caplog.at_level(logging.INFO, logger="long_time_task"):
        assert Executor(worker="w1@host").run(999_999, 3) == "skipped"
    (record,) = [r for r in caplog.records if r.name == "long_time_task.worker.executor"]
    assert (record.task_id, record.attempt, record.worker, record.outcome) == (999_999, 3, "w1@host", "skipped")
    assert record.task_type is None and record.queue is None  # unknown: nothing was claimed

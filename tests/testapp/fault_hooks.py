"""Faults the integration tests inject into real worker processes, switched on by environment variables.

``LTT_TEST_KILL_IN_TICK=<marker file>``: the first scheduler tick (``long_time_task.run_schedules``) that is about
to move a schedule's ``next_run_at`` (its runs inserted, nothing committed yet) SIGKILLs its own process, once
(the marker file says it happened). The next tick, in a new process, must redo exactly that work.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from celery import signals
from django.db import connection

SCHEDULER_TASK = "long_time_task.run_schedules"
_open: list[Any] = []


def _kill_before_the_move(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    marker = Path(os.environ["LTT_TEST_KILL_IN_TICK"])
    if sql.startswith('UPDATE "long_time_task_schedule"') and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return execute(sql, params, many, context)


@signals.task_prerun.connect(dispatch_uid="tests.fault_hooks.prerun")
def _arm(sender: Any = None, **kwargs: Any) -> None:
    if os.environ.get("LTT_TEST_KILL_IN_TICK") and getattr(sender, "name", None) == SCHEDULER_TASK:
        wrapper = connection.execute_wrapper(_kill_before_the_move)
        wrapper.__enter__()
        _open.append(wrapper)


@signals.task_postrun.connect(dispatch_uid="tests.fault_hooks.postrun")
def _disarm(**kwargs: Any) -> None:
    while _open:
        _open.pop().__exit__(None, None, None)

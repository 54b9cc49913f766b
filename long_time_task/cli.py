"""What the ``tasks`` and ``purge_tasks`` commands share: parsing durations, rendering tables, progress bars
and tasks as JSON, and following a task until it ends.

The rendering functions return text instead of writing it, so the tests check exactly what a terminal or a
log file receives, without a terminal.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .models import TERMINAL_STATES, LongTimeTask, TaskState

# ---------------------------------------------------------------- durations

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``, or a sum such as ``1d12h``. ValueError unless it is positive:
    ``--older-than 0s`` would purge every finished task, which is never what a typo meant."""
    compact = text.strip().lower()
    if not compact or _DURATION.sub("", compact):
        raise ValueError(f"{text!r} is not a duration: use a number and a unit (s, m, h, d, w), e.g. 30d or 12h")
    seconds = sum(float(number) * DURATION_UNITS[unit] for number, unit in _DURATION.findall(compact))
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be longer than zero")
    if seconds > 1000 * 365 * 86400:
        raise ValueError(f"{text!r}: the duration is too long")
    return timedelta(seconds=seconds)


def duration_argument(text: str) -> timedelta:
    """``parse_duration`` for argparse, which turns ArgumentTypeError into a usage error naming the option."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``0.42s``, ``4.2s``, ``12s``, ``3m 04s``, ``2h 05m``, ``3d 04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{max(seconds, 0.0):.2f}s"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ---------------------------------------------------------------- tables and task fields


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()) -> str:
    """A plain-text table, columns padded to their widest cell; the columns in ``right`` are right-aligned."""
    body = [list(row) for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    aligned = set(right)

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in aligned else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in body)])


def format_time(value: datetime | None) -> str:
    """A timestamp in the current time zone, to the second (the table's width matters more than microseconds)."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def format_percent(percent: float | None) -> str:
    return "   -" if percent is None else f"{percent:3.0f}%"


def elapsed(task: LongTimeTask, now: datetime | None = None) -> float | None:
    """How long the task ran: start to finish, or start to now while it runs."""
    if task.start_at is None:
        return None
    if task.finish_at is not None:
        return (task.finish_at - task.start_at).total_seconds()
    return ((now or timezone.now()) - task.start_at).total_seconds() if task.state == TaskState.RUNNING else None


def owner_name(task: LongTimeTask) -> str:
    return task.owner.get_username() if task.owner else "-"


TASK_TABLE_HEADERS = ("ID", "TYPE", "STATE", "PROGRESS", "OWNER", "CREATED", "DURATION")


def task_table(tasks: Iterable[LongTimeTask]) -> str:
    now = timezone.now()
    rows = [
        (
            str(task.id),
            task.task_type,
            task.state,
            format_percent(task.progress),
            owner_name(task),
            format_time(task.create_at),
            format_duration(elapsed(task, now)),
        )
        for task in tasks
    ]
    return render_table(TASK_TABLE_HEADERS, rows, right=(0, 3, 6))


def is_privileged(user: Any) -> bool:
    """The trusted system (no user) and staff see what the API shows staff: traceback, worker, Celery id."""
    return user is None or bool(getattr(user, "is_staff", False))


def task_detail(task: LongTimeTask, *, user: Any) -> dict[str, Any]:
    """The API's detail object (``TaskDetailSerializer``), as ``user`` (None: the system) may see it.

    The serializer takes the caller from a request, which a command has not: the fields that depend on the
    caller are filled in here instead. ``retries`` lists the retries ``user`` may see; ``audit`` is always
    included (the command line is an operator's tool); ``error_traceback``, ``worker`` and
    ``celery_task_id`` only for the system and staff, as in the API.
    """
    from .api.serializers import AuditEventSerializer, TaskDetailSerializer

    data = dict(TaskDetailSerializer(task, context={"request": None}).data)
    retries = LongTimeTask.objects.all() if user is None else LongTimeTask.objects.visible_to(user)
    data["retries"] = list(retries.filter(retry_of=task.id).order_by("id").values_list("id", flat=True)[:100])
    if is_privileged(user):
        if task.state in (TaskState.FAILED, TaskState.RETRYING, TaskState.CANCELLED):
            data["error_traceback"] = task.error_traceback
        data["worker"] = task.worker
        data["celery_task_id"] = task.celery_task_id
    data["audit"] = list(AuditEventSerializer(task.audit_events.all()[:200], many=True).data)
    return data


# ---------------------------------------------------------------- following a task


@dataclass(frozen=True)
class Snapshot:
    """What a watcher shows of a task at one poll."""

    state: str
    percent: float | None = None
    message: str = ""
    current: int | None = None
    total: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("state", "progress", "progress_message", "progress_current", "progress_total")

    @classmethod
    def read(cls, task_id: int) -> Snapshot | None:
        """The task's row now (one small query), or None if it no longer exists."""
        row = LongTimeTask.objects.filter(id=task_id).values_list(*cls.FIELDS).first()
        return cls(row[0], row[1], row[2] or "", row[3], row[4]) if row else None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


BAR_WIDTH = 20


def progress_bar(percent: float | None, width: int = BAR_WIDTH) -> str:
    """``[##########----------]`` for 50; an empty bar until the handler reports a percent."""
    filled = 0 if percent is None else round(width * min(100.0, max(0.0, percent)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def status_text(snapshot: Snapshot) -> str:
    """``RUNNING  message (3/7)``: the state, then what the handler said, if anything."""
    counts = f"({snapshot.current}/{snapshot.total})" if snapshot.current is not None and snapshot.total else ""
    return "  ".join(part for part in (snapshot.state, snapshot.message, counts) if part)


class ProgressView:
    """Turns successive snapshots of a task into the text to write.

    On a terminal (``bar=True``), one line redrawn in place with ``\\r`` (and cleared to its end, as a shorter
    line would leave the tail of the previous one): ``[##########----------]  50%  RUNNING  message``.
    Elsewhere (a log file, a pipe), one plain line each time what it would say changes, and nothing otherwise,
    so a log shows each step once.
    """

    def __init__(self, task_id: int, *, bar: bool, columns: int = 80) -> None:
        self.task_id, self.bar, self.columns = task_id, bar, columns
        self._last: str | None = None

    def line(self, snapshot: Snapshot) -> str:
        if self.bar:
            line = f"{progress_bar(snapshot.percent)} {format_percent(snapshot.percent)}  {status_text(snapshot)}"
            return line[: max(self.columns - 1, 1)]  # a wrapped line cannot be redrawn with \r
        percent = "" if snapshot.percent is None else f" {snapshot.percent:.0f}%"
        message = f": {snapshot.message}" if snapshot.message else ""
        counts = f" ({snapshot.current}/{snapshot.total})" if snapshot.current is not None and snapshot.total else ""
        return f"Task {self.task_id} {snapshot.state}{percent}{message}{counts}"

    def render(self, snapshot: Snapshot) -> str:
        """The text to write for ``snapshot``: empty if the output would not change."""
        line = self.line(snapshot)
        if line == self._last:
            return ""
        self._last = line
        return f"\r{line}\x1b[K" if self.bar else line + "\n"

    def close(self) -> str:
        """Ends the redrawn line, so what is written next starts on a line of its own."""
        return "\n" if self.bar and self._last is not None else ""


class TaskGone(LookupError):  # noqa: N818
    """The task's row disappeared while it was being watched (purged)."""


class WatchTimeout(TimeoutError):
    """The task did not end within the timeout; ``snapshot`` is how it was last seen."""

    def __init__(self, snapshot: Snapshot, timeout: float) -> None:
        super().__init__(f"still {snapshot.state} after {timeout:g}s")
        self.snapshot = snapshot


def follow(
    read: Callable[[], Snapshot | None],
    emit: Callable[[Snapshot], None],
    *,
    interval: float,
    timeout: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Snapshot:
    """Poll ``read`` every ``interval`` seconds and ``emit`` each snapshot, until the task ends; return the
    last snapshot. Raises TaskGone if the row disappears and WatchTimeout after ``timeout`` seconds."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        snapshot = read()
        if snapshot is None:
            raise TaskGone("the task no longer exists")
        emit(snapshot)
        if snapshot.is_terminal:
            return snapshot
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                raise WatchTimeout(snapshot, timeout or 0)
            sleep(min(interval, left))
        else:
            sleep(interval)


def outcome_text(task: LongTimeTask) -> str:
    """One sentence on how a finished task ended."""
    if task.state == TaskState.FINISHED:
        return f"Task {task.id} finished in {format_duration(task.duration)}."
    code = f" ({task.error_code})" if task.error_code else ""
    error = task.error_message or "no message"
    verb = "was cancelled" if task.state == TaskState.CANCELLED else "failed"
    return f"Task {task.id} {verb}: {error}{code}"


# ---------------------------------------------------------------- one task, in words


def _json_text(value: Any, indent: str) -> str:
    """Compact JSON when it fits on a line; indented below the label otherwise."""
    compact = json.dumps(value, ensure_ascii=False, cls=DjangoJSONEncoder)
    if len(compact) <= 80:
        return compact
    pretty = json.dumps(value, ensure_ascii=False, cls=DjangoJSONEncoder, indent=2)
    return "\n" + "\n".join(indent + line for line in pretty.splitlines())


def describe(task: LongTimeTask, detail: dict[str, Any]) -> str:
    """``manage.py tasks show``: the task's fields as labelled lines (those that apply), then its audit trail.
    ``detail`` is ``task_detail(task, ...)``: it decides what the caller may see (retries, traceback)."""
    pad = " " * 4
    fields: list[tuple[str, str]] = [
        ("Owner", owner_name(task)),
        ("Params", _json_text(task.task_params, pad)),
        ("Queue", f"{task.queue or '-'}, priority {task.priority}"),
        ("Attempts", f"{task.attempts}" + (f" of {detail['max_attempts']}" if detail.get("max_attempts") else "")),
        ("Created", format_time(task.create_at)),
        ("Started", format_time(task.start_at)),
        ("Finished", format_time(task.finish_at)),
        ("Duration", format_duration(elapsed(task))),
    ]
    if task.run_after:
        fields.append(("Starts after", format_time(task.run_after)))
    if task.retry_at and task.state == TaskState.RETRYING:
        fields.append(("Next attempt at", format_time(task.retry_at)))
    if task.progress is not None or task.progress_message:
        current, total = task.progress_current, task.progress_total
        counts = f" ({current}/{total})" if current is not None and total else ""
        message = f"  {task.progress_message}" if task.progress_message else ""
        fields.append(("Progress", f"{progress_bar(task.progress)} {format_percent(task.progress)}{message}{counts}"))
    if task.cancel_requested_at:
        fields.append(("Cancel requested", format_time(task.cancel_requested_at)))
    if task.retry_of_id:
        fields.append(("Retry of", f"task {task.retry_of_id}"))
    if detail.get("retries"):
        fields.append(("Retries", ", ".join(f"task {i}" for i in detail["retries"])))
    if "result" in detail:
        fields.append(("Result", _json_text(detail["result"], pad)))
    if "error_message" in detail:
        code = f" ({detail['error_code']})" if detail.get("error_code") else ""
        fields.append(("Error", f"{detail['error_message']}{code}"))
    if detail.get("worker"):
        fields.append(("Worker", detail["worker"]))
    lines = [f"Task {task.id}: {task.task_type}, {task.state}"]
    lines += [f"  {label + ':':<18}".rstrip() + value if value.startswith("\n") else f"  {label + ':':<18}{value}"
              for label, value in fields]  # fmt: skip
    if detail.get("error_traceback"):
        lines.append("  Traceback:")
        lines += ["    " + line for line in detail["error_traceback"].rstrip().splitlines()]
    if detail.get("audit"):
        lines.append("  Audit trail:")
        for event in detail["audit"]:
            new = f" -> task {event['new_task']}" if event["new_task"] else ""
            note = f" ({event['note']})" if event["note"] else ""
            at = format_time(parse_datetime(event["at"]) if event["at"] else None)
            lines.append(f"    {at}  {event['action']} by {event['by'] or '-'}{new}{note}")
    return "\n".join(lines)

"""``manage.py purge_tasks``: delete finished tasks (and their result files) older than a duration, or past
their configured retention (``--expired``, what Celery beat runs). ``--dry-run`` only counts them."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from long_time_task import retention
from long_time_task.cli import duration_argument, plural
from long_time_task.conf import conf
from long_time_task.models import TERMINAL_STATES
from long_time_task.registry import LongTimeTaskRegister


def split_values(values: list[str] | None) -> list[str]:
    """``--state A --state B,C`` -> ``["A", "B", "C"]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def summary(outcome: retention.PurgeResult, *, dry_run: bool) -> str:
    """``Deleted 12 tasks (data_analysis: 5, report_generation: 7) and 7 result files.``"""
    if not outcome.tasks:
        return "No tasks to delete."
    types = ", ".join(f"{name}: {count}" for name, count in sorted(outcome.by_type.items()))
    verb = "Would delete" if dry_run else "Deleted"
    return f"{verb} {plural(outcome.tasks, 'task')} ({types}) and {plural(outcome.files, 'result file')}."


class Command(BaseCommand):
    help = (
        "Delete finished tasks (FINISHED, FAILED, CANCELLED) and their result files: those that finished more "
        "than --older-than ago (e.g. 30d, 12h, 90m, 45s, 2w), or with --expired those past their configured "
        "retention. --dry-run only counts them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--older-than", type=duration_argument, metavar="DURATION",
                           help="finished more than this long ago: 30d, 12h, 90m, 45s, 2w")  # fmt: skip
        which.add_argument("--expired", action="store_true",
                           help="past each type's retention_days, or LONG_TIME_TASK_RETENTION_DAYS")  # fmt: skip
        parser.add_argument("--state", action="append", metavar="STATE",
                            help="only this final state (repeatable, or comma-separated)")  # fmt: skip
        parser.add_argument("--type", action="append", dest="task_types", metavar="TYPE",
                            help="only this task type (repeatable, or comma-separated)")  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument("--json", action="store_true", help="print the counts as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        states = sorted({state.upper() for state in split_values(options["state"])})
        task_types = sorted(set(split_values(options["task_types"])))
        wrong = [state for state in states if state not in TERMINAL_STATES]
        if wrong:
            raise CommandError(
                f"--state {', '.join(wrong)}: only finished tasks can be purged "
                f"(states {', '.join(sorted(TERMINAL_STATES))})"
            )
        dry_run: bool = options["dry_run"]
        now = timezone.now()
        if options["expired"]:
            if states or task_types:
                raise CommandError("--state and --type go with --older-than; --expired follows each type's retention")
            if conf.RETENTION_DAYS is None and not any(
                c.retention_days is not None for c in LongTimeTaskRegister.get_all_tasks().values()
            ):
                raise CommandError(
                    "No retention is configured (LONG_TIME_TASK_RETENTION_DAYS or a task type's retention_days); "
                    "use --older-than."
                )
            outcome = retention.purge_expired_tasks(now=now, dry_run=dry_run)
            cutoff = None
        else:
            older_than = options["older_than"]
            rows = retention.expired(older_than, now=now, states=states or None, task_types=task_types or None)
            outcome = retention.purge(rows, dry_run=dry_run)
            cutoff = now - older_than
        if options["json"]:
            data = {
                "dry_run": dry_run,
                "tasks": outcome.tasks,
                "files": outcome.files,
                "by_type": dict(sorted(outcome.by_type.items())),
                "finished_before": timezone.localtime(cutoff).isoformat() if cutoff else None,
                "states": states or sorted(TERMINAL_STATES),
                "task_types": task_types or None,
            }
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(summary(outcome, dry_run=dry_run))

"""``manage.py tasks submit|list|show|cancel|retry|watch|queues|schedules``: tasks (and their schedules) from a
shell, through the service layer.

Exit codes: 0 on success; 1 for any error (printed as ``CommandError: ...``, never a traceback), for a
watched task (``watch``, ``submit --wait``) that ends FAILED or CANCELLED, and from ``queues`` when a queue that
tasks or the maintenance jobs go to has no live worker; 2 when ``--timeout`` runs out first; 130 when
interrupted with Ctrl-C (the task itself goes on).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.dateparse import parse_datetime

from long_time_task import services
from long_time_task.api.serializers import TaskListItemSerializer
from long_time_task.cli import (
    ProgressView,
    Snapshot,
    TaskGone,
    WatchTimeout,
    follow,
    format_time,
    outcome_text,
    render_table,
    task_detail,
    task_table,
)
from long_time_task.cli import describe as describe_task
from long_time_task.models import LongTimeTask, MisfirePolicy, Schedule, TaskState
from long_time_task.observability.consumers import live_workers, queue_consumers
from long_time_task.registry import InvalidParams, LongTimeTaskRegister, UnknownTaskType
from long_time_task.schedules import declared
from long_time_task.schedules import service as schedule_service
from long_time_task.schedules.timing import InvalidSchedule

# What the service layer raises for a request it refuses: each becomes a one-line CommandError.
SERVICE_ERRORS = (
    InvalidParams,
    UnknownTaskType,
    services.QuotaExceeded,
    services.SubmitRateExceeded,
    services.IdempotencyConflict,
    services.ActionNotAllowed,
    services.NotPermitted,
    services.TaskNotFound,
    schedule_service.ScheduleNotFound,
)

MAX_TASK_ID = 2**63 - 1
MAX_LIST_LIMIT = 1000
EXIT_FAILED, EXIT_TIMEOUT, EXIT_INTERRUPTED = 1, 2, 130


def task_id_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task id") from None
    if not 0 < value <= MAX_TASK_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task id")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def limit_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIST_LIMIT}")
    return value


def state_argument(text: str) -> str:
    state = text.strip().upper()
    if state not in TaskState.values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a state ({', '.join(TaskState.values)})")
    return state


def parse_params(raw: str | None, items: list[str] | None) -> dict[str, Any] | None:
    """``--params JSON`` then each ``--param key=value`` on top of it (a value is JSON if it parses, else a
    string: ``n=3`` is a number, ``name=abc`` a string). None when neither is given."""
    if raw is None and not items:
        return None
    params: Any = {}
    if raw is not None:
        try:
            params = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise CommandError("--params must be a JSON object, e.g. '{\"n\": 1}'")
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--param {item!r}: expected key=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return dict(params)


def iso_argument(text: str, option: str) -> datetime:
    """``--at``, ``--start``, ``--end``: an ISO 8601 date and time with its offset (the service refuses a naive one)."""
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None:
        raise CommandError(f"--{option} {text!r} is not an ISO 8601 date and time")
    return value


def timing_text(schedule: Schedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron}"
    if schedule.interval_seconds:
        return f"every {schedule.interval_seconds}s"
    return f"once at {format_time(schedule.run_at)}"


def schedule_json(made: Any) -> dict[str, Any]:
    """A schedule as ``--json`` prints it (with its next due times)."""
    s = made.schedule
    return {
        "id": s.id,
        "name": s.name,
        "task_type": s.task_type,
        "params": s.params,
        "cron": s.cron or None,
        "interval_seconds": s.interval_seconds,
        "run_at": s.run_at,
        "timezone": s.timezone,
        "enabled": s.enabled,
        "paused_reason": s.paused_reason,
        "owner": s.owner.get_username() if s.owner else None,
        "misfire": s.misfire,
        "misfire_limit": s.misfire_limit,
        "skip_if_running": s.skip_if_running,
        "start_at": s.start_at,
        "end_at": s.end_at,
        "next_run_at": s.next_run_at,
        "last_run_at": s.last_run_at,
        "next_runs": made.next_runs,
    }


class Command(BaseCommand):
    help = "Submit, list, show, cancel, retry and watch long-running tasks. See `tasks ACTION --help`."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        submit = actions.add_parser("submit", help="submit a task")
        submit.add_argument("task_type", metavar="TYPE", help="a registered task type")
        self.add_params_arguments(submit)
        submit.add_argument("--param", action="append", dest="param_items", metavar="KEY=VALUE",
                            help="one parameter (repeatable); VALUE is JSON if it parses, else a string")  # fmt: skip
        when = submit.add_mutually_exclusive_group()
        when.add_argument("--countdown", type=float, metavar="SECONDS", help="start no earlier than in SECONDS")
        when.add_argument("--run-after", metavar="ISO8601", help="start no earlier than this time")
        submit.add_argument("--idempotency-key", metavar="KEY", help="submitting the same key again returns the task")
        submit.add_argument("--wait", action="store_true", help="then watch it until it ends")
        self.add_watch_arguments(submit)

        listing = actions.add_parser("list", help="list tasks, newest first")
        listing.add_argument("--state", type=state_argument)
        listing.add_argument("--type", dest="task_type", metavar="TYPE")
        listing.add_argument("--limit", type=limit_argument, default=20, help="how many (default 20)")

        show = actions.add_parser("show", help="everything about one task")
        cancel = actions.add_parser("cancel", help="cancel a waiting task, or ask a running one to stop")
        retry = actions.add_parser("retry", help="run a failed or cancelled task again, as a new task")
        retry.add_argument("--rerun", action="store_true", help="also accept a FINISHED task")
        self.add_params_arguments(retry)
        watch = actions.add_parser("watch", help="follow a task until it ends")
        self.add_watch_arguments(watch)
        queues = actions.add_parser(
            "queues", help="the queues tasks go to, the live workers reading each (exit 1 if one has none)"
        )
        queues.add_argument("--json", action="store_true", help="print JSON instead of text")
        for sub in (show, cancel, retry, watch):
            sub.add_argument("task_id", type=task_id_argument, metavar="ID")
        subs: list[argparse.ArgumentParser] = [submit, listing, show, cancel, retry, watch]
        subs += self.add_schedule_arguments(actions)
        for each in subs:
            each.add_argument("--user", metavar="USERNAME", help="act as this user (default: the system)")
            each.add_argument("--json", action="store_true", help="print JSON instead of text")

    def add_schedule_arguments(self, actions: Any) -> list[argparse.ArgumentParser]:
        """``tasks schedules list|add|pause|resume|run|delete`` (docs/schedules.md)."""
        schedules = actions.add_parser("schedules", help="periodic schedules: list, add, pause, resume, run, delete")
        verbs = schedules.add_subparsers(dest="schedule_action", required=True, metavar="ACTION")
        listing = verbs.add_parser("list", help="the schedules, with their next and last runs")
        add = verbs.add_parser("add", help="a new schedule (checked as a submit is, and planned)")
        add.add_argument("name", help="shown in lists")
        add.add_argument("task_type", metavar="TYPE", help="a registered task type")
        self.add_params_arguments(add)
        add.add_argument("--param", action="append", dest="param_items", metavar="KEY=VALUE",
                         help="one parameter (repeatable); VALUE is JSON if it parses, else a string")  # fmt: skip
        timing = add.add_mutually_exclusive_group(required=True)
        timing.add_argument("--cron", metavar="EXPR", help='a 5-field cron expression, e.g. "0 3 * * *"')
        timing.add_argument("--every", type=int, metavar="SECONDS", help="a fixed interval")
        timing.add_argument("--at", metavar="ISO8601", help="once, at this time (with its offset)")
        add.add_argument("--timezone", metavar="ZONE", help="the IANA zone of --cron (default: TIME_ZONE)")
        add.add_argument("--misfire", choices=MisfirePolicy.values, default=MisfirePolicy.RUN_ONCE,
                         help="missed runs: skip, run_once (default) or catch_up")  # fmt: skip
        add.add_argument("--misfire-limit", type=int, default=10, metavar="N", help="catch_up makes at most N (10)")
        add.add_argument("--skip-if-running", action="store_true", help="skip a run while the last is unfinished")
        add.add_argument("--start", metavar="ISO8601", help="no run before this time")
        add.add_argument("--end", metavar="ISO8601", help="no run after this time")
        add.add_argument("--paused", action="store_true", help="create it paused")
        sync = verbs.add_parser("sync", help="write the schedules declared in code (migrate does it too)")
        by_id = [verbs.add_parser(verb, help=text) for verb, text in (
            ("pause", "stop making runs"),
            ("resume", "make runs again, from the next due time"),
            ("run", "one run now, as its own task"),
            ("delete", "delete it (its past runs stay)"),
        )]  # fmt: skip
        for sub in by_id:
            sub.add_argument("schedule_id", type=task_id_argument, metavar="ID")
        return [listing, add, sync, *by_id]

    @staticmethod
    def add_params_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--params", metavar="JSON", help="the parameters, a JSON object")

    @staticmethod
    def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--interval", type=positive_number, default=0.5, metavar="SECONDS", help="between polls (0.5)"
        )
        parser.add_argument("--timeout", type=positive_number, metavar="SECONDS", help="give up (exit code 2)")
        parser.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                            help="a redrawn bar (default on a terminal) or one line per change")  # fmt: skip

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        user = self.find_user(options.get("user"))
        try:
            getattr(self, f"do_{action}")(user, options)
        except InvalidSchedule as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        except SERVICE_ERRORS as exc:
            raise CommandError(str(exc)) from None

    # ------------------------------------------------------------ helpers

    @staticmethod
    def find_user(username: str | None) -> Any:
        if username is None:
            return None
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {username!r}") from None
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive")
        return user

    @staticmethod
    def find_task(task_id: int, user: Any) -> LongTimeTask:
        """The task as ``user`` may see it; the system sees every task."""
        if user is None:
            task = LongTimeTask.objects.select_related("owner").filter(id=task_id).first()
        else:
            task = services.get_task(task_id, user=user)
        if task is None:
            raise services.TaskNotFound(f"Task {task_id} not found")
        return task

    def print_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2))

    # ------------------------------------------------------------ actions

    def do_submit(self, user: Any, options: dict[str, Any]) -> None:
        task_type = options["task_type"]
        config = LongTimeTaskRegister.get_task(task_type)
        if config is None:
            known = [
                c.name for c in LongTimeTaskRegister.get_all_tasks().values() if user is None or c.may_submit(user)
            ]
            raise CommandError(f"Unknown task type: {task_type} (known types: {', '.join(sorted(known)) or '-'})")
        if user is not None and not config.may_submit(user):
            # services.submit does not check the type's permission: the API's serializer does, and so does this.
            raise CommandError(f"You may not submit tasks of type {task_type}.")
        run_after: datetime | None = None
        if options["run_after"] is not None:
            try:
                run_after = parse_datetime(options["run_after"])
            except ValueError:
                run_after = None
            if run_after is None:
                raise CommandError(f"--run-after {options['run_after']!r} is not an ISO 8601 date and time")
        submission = services.submit(
            task_type,
            parse_params(options["params"], options["param_items"]),
            owner=user,
            run_after=run_after,
            countdown=options["countdown"],
            idempotency_key=options["idempotency_key"],
        )
        task = submission.task
        if not options["json"]:
            if submission.created:
                starts = f", starts after {format_time(task.run_after)}" if task.run_after else ""
                self.stdout.write(f"Task {task.id} submitted: {task.task_type} ({task.state}{starts}).")
            else:
                key = options["idempotency_key"]
                self.stdout.write(f"Task {task.id} was already submitted with idempotency key {key!r} ({task.state}).")
        if options["wait"]:
            self.watch(task.id, user, options, extra={"created": submission.created})
        elif options["json"]:
            self.print_json({**task_detail(task, user=user), "created": submission.created})

    def do_list(self, user: Any, options: dict[str, Any]) -> None:
        rows = LongTimeTask.objects.all() if user is None else services.visible_tasks(user)
        if options["state"]:
            rows = rows.filter(state=options["state"])
        if options["task_type"]:
            rows = rows.filter(task_type=options["task_type"])
        tasks = list(rows.select_related("owner").order_by("-create_at", "-id")[: options["limit"]])
        if options["json"]:
            self.print_json(TaskListItemSerializer(tasks, many=True).data)
        elif tasks:
            self.stdout.write(task_table(tasks))
        else:
            self.stdout.write("No tasks.")

    def do_show(self, user: Any, options: dict[str, Any]) -> None:
        task = self.find_task(options["task_id"], user)
        detail = task_detail(task, user=user)
        if options["json"]:
            self.print_json(detail)
        else:
            self.stdout.write(describe_task(task, detail))

    def do_cancel(self, user: Any, options: dict[str, Any]) -> None:
        outcome = services.cancel_task(options["task_id"], user=user)
        task = outcome.task
        if options["json"]:
            self.print_json({**task_detail(task, user=user), "cancelled": outcome.cancelled})
        elif outcome.cancelled:
            self.stdout.write(f"Task {task.id} cancelled.")
        else:
            self.stdout.write(f"Task {task.id} is running: cancellation requested; it will stop shortly.")

    def do_retry(self, user: Any, options: dict[str, Any]) -> None:
        params = parse_params(options["params"], None)
        new = services.retry_task(options["task_id"], user=user, params=params, rerun=options["rerun"])
        if options["json"]:
            self.print_json(task_detail(new, user=user))
        else:
            original = LongTimeTask.objects.filter(id=options["task_id"]).values_list("state", flat=True).first()
            verb = "re-run" if original == TaskState.FINISHED else "retried"
            self.stdout.write(f"Task {options['task_id']} {verb} as task {new.id} ({new.state}).")

    def do_watch(self, user: Any, options: dict[str, Any]) -> None:
        task = self.find_task(options["task_id"], user)
        self.watch(task.id, user, options)

    # ------------------------------------------------------------ watching

    def watch(self, task_id: int, user: Any, options: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """Follow the task until it ends, then say how; exit code 1 unless it FINISHED, 2 on timeout."""
        quiet = options["json"]
        mode = options["progress"]
        bar = mode == "bar" or (mode == "auto" and self.stdout.isatty())
        view = ProgressView(task_id, bar=bar, columns=shutil.get_terminal_size().columns)

        def emit(snapshot: Snapshot) -> None:
            text = "" if quiet else view.render(snapshot)
            if text:
                self.stdout.write(text, ending="")
                self.stdout.flush()

        try:
            follow(lambda: Snapshot.read(task_id), emit, interval=options["interval"], timeout=options["timeout"])
        except WatchTimeout as exc:
            self.stdout.write(view.close(), ending="")
            raise CommandError(f"Task {task_id} {exc}; stopped watching.", returncode=EXIT_TIMEOUT) from None
        except TaskGone:
            self.stdout.write(view.close(), ending="")
            raise CommandError(f"Task {task_id} no longer exists.") from None
        except KeyboardInterrupt:
            self.stdout.write(view.close(), ending="")
            raise CommandError(f"Stopped watching; task {task_id} goes on.", returncode=EXIT_INTERRUPTED) from None
        self.stdout.write(view.close(), ending="")
        task = LongTimeTask.objects.select_related("owner").get(id=task_id)
        if quiet:
            self.print_json({**task_detail(task, user=user), **(extra or {})})
        if task.state != TaskState.FINISHED:
            raise CommandError(outcome_text(task), returncode=EXIT_FAILED)
        if not quiet:
            self.stdout.write(outcome_text(task))

    # ------------------------------------------------------------ schedules

    def do_schedules(self, user: Any, options: dict[str, Any]) -> None:
        getattr(self, f"schedule_{options['schedule_action']}")(user, options)

    def schedule_list(self, user: Any, options: dict[str, Any]) -> None:
        schedules = list(schedule_service.visible_schedules(user).select_related("owner").order_by("name", "id"))
        if options["json"]:
            self.print_json([schedule_json(schedule_service.preview(s, count=1)) for s in schedules])
            return
        if not schedules:
            self.stdout.write("No schedules.")
            return
        rows = [
            (
                str(s.id),
                s.name,
                s.task_type,
                timing_text(s),
                s.timezone,
                "enabled" if s.enabled else "paused",
                format_time(s.next_run_at) if s.enabled else "-",
                format_time(s.last_run_at),
                s.owner.get_username() if s.owner else "-",
            )
            for s in schedules
        ]
        headers = ["ID", "NAME", "TYPE", "TIMING", "ZONE", "STATE", "NEXT RUN", "LAST RUN", "OWNER"]
        self.stdout.write(render_table(headers, rows, right=[0]))

    def schedule_add(self, user: Any, options: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "name": options["name"],
            "task_type": options["task_type"],
            "params": parse_params(options["params"], options["param_items"]) or {},
            "misfire": options["misfire"],
            "misfire_limit": options["misfire_limit"],
            "skip_if_running": options["skip_if_running"],
            "enabled": not options["paused"],
        }
        if options["cron"] is not None:
            fields["cron"] = options["cron"]
        if options["every"] is not None:
            fields["interval_seconds"] = options["every"]
        for option, field in (("at", "run_at"), ("start", "start_at"), ("end", "end_at")):
            if options[option] is not None:
                fields[field] = iso_argument(options[option], option)
        if options["timezone"] is not None:
            fields["timezone"] = options["timezone"]
        made = schedule_service.create_schedule(user=user, **fields)
        if options["json"]:
            self.print_json(schedule_json(made))
            return
        schedule = made.schedule
        self.stdout.write(
            f"Schedule {schedule.id} created: {schedule.name} ({schedule.task_type}, {timing_text(schedule)})."
        )
        if schedule.enabled and made.next_runs:
            self.stdout.write("Next runs: " + ", ".join(format_time(t) for t in made.next_runs))

    def schedule_sync(self, user: Any, options: dict[str, Any]) -> None:
        if user is not None:
            raise CommandError("Schedules declared in code are the system's: sync them without --user.")
        try:
            counts = declared.sync()
        except declared.InvalidDeclaration as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.print_json(counts)
        else:
            self.stdout.write(
                ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "No declared schedules."
            )

    def schedule_pause(self, user: Any, options: dict[str, Any]) -> None:
        self.schedule_enable(user, options, enabled=False)

    def schedule_resume(self, user: Any, options: dict[str, Any]) -> None:
        self.schedule_enable(user, options, enabled=True)

    def schedule_enable(self, user: Any, options: dict[str, Any], *, enabled: bool) -> None:
        made = schedule_service.set_enabled(options["schedule_id"], enabled, user=user)
        if options["json"]:
            self.print_json(schedule_json(made))
        elif enabled:
            when = format_time(made.schedule.next_run_at) if made.schedule.next_run_at else "none left"
            self.stdout.write(f"Schedule {made.schedule.id} resumed; next run: {when}.")
        else:
            self.stdout.write(f"Schedule {made.schedule.id} paused.")

    def schedule_run(self, user: Any, options: dict[str, Any]) -> None:
        task = schedule_service.run_now(options["schedule_id"], user=user)
        if options["json"]:
            self.print_json(task_detail(task, user=user))
        else:
            self.stdout.write(f"Schedule {options['schedule_id']} run now as task {task.id} ({task.state}).")

    def schedule_delete(self, user: Any, options: dict[str, Any]) -> None:
        schedule_service.delete_schedule(options["schedule_id"], user=user)
        if options["json"]:
            self.print_json({"deleted": options["schedule_id"]})
        else:
            self.stdout.write(f"Schedule {options['schedule_id']} deleted; its past runs stay.")

    def do_queues(self, user: Any, options: dict[str, Any]) -> None:
        workers = live_workers()
        queues = queue_consumers(workers)
        if options["json"]:
            self.print_json(
                {
                    "queues": [asdict(queue) for queue in queues],
                    "workers": [
                        {"hostname": w.hostname, "queues": w.queues, "concurrency": w.concurrency,
                         "last_seen_at": w.last_seen_at}
                        for w in workers
                    ],
                }
            )  # fmt: skip
        else:
            queue_rows = [(q.name, str(q.consumers) if q.consumers else "NONE", q.purpose or "-") for q in queues]
            self.stdout.write(render_table(["QUEUE", "LIVE CONSUMERS", "SENT THERE"], queue_rows, right=[1]))
            worker_rows = [
                (w.hostname, ",".join(w.queues), str(w.concurrency or "-"), format_time(w.last_seen_at))
                for w in workers
            ]
            headers = ["WORKER", "QUEUES", "CONCURRENCY", "LAST HEARTBEAT"]
            self.stdout.write(render_table(headers, worker_rows) if worker_rows else "No live worker.")
        unread = [queue.name for queue in queues if queue.purpose and not queue.consumers]
        if unread:
            raise CommandError(f"No live worker consumes: {', '.join(unread)}")

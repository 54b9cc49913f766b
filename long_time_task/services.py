"""The one door to tasks: the API, the admin and the management commands submit and read through here."""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import Count
from django.utils import timezone

from . import metrics, signals
from .conf import conf
from .dispatch import publish
from .models import TERMINAL_STATES, AuditAction, LongTimeTask, TaskState, new_celery_task_id
from .models.audit import SYSTEM, record
from .models.querysets import LongTimeTaskQuerySet
from .ratelimit import Rate, RateExceeded, Reservation, reserve
from .registry import InvalidParams, LongTimeTaskRegister, TaskConfig, UnknownTaskType
from .tracing import traced_submit, traceparent

logger = logging.getLogger(__name__)


def check_text(text: str, path: str) -> None:
    """Text every database can store: no NUL character, no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        raise InvalidParams(f"Invalid params at {path}: NUL characters are not allowed", field=path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParams(f"Invalid params at {path}: not valid Unicode (a lone surrogate)", field=path) from None


def check_json_value(value: Any, *, max_depth: int, path: str = "params", depth: int = 1) -> None:
    """Reject what no database can store (NUL characters) and absurd nesting, naming the field."""
    if depth > max_depth:
        raise InvalidParams(f"Invalid params at {path}: nested deeper than {max_depth} levels", field=path)
    if isinstance(value, str):
        check_text(value, path)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidParams(f"Invalid params at {path}: NaN and infinite numbers are not JSON", field=path)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, path)
            check_json_value(item, max_depth=max_depth, path=f"{path}.{key}", depth=depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json_value(item, max_depth=max_depth, path=f"{path}.{index}", depth=depth + 1)


class QuotaExceeded(Exception):  # noqa: N818
    """The owner has too many unfinished tasks."""


def validate_submission(task_type: Any, params: Any) -> TaskConfig:
    """Raise UnknownTaskType or InvalidParams unless ``task_type`` may run with ``params``."""
    config = LongTimeTaskRegister.require(task_type)
    if not isinstance(params, dict):
        raise InvalidParams("params must be a JSON object", field="params")
    check_json_value(params, max_depth=conf.MAX_PARAMS_DEPTH)
    size = len(json.dumps(params, ensure_ascii=False).encode())
    if size > conf.MAX_PARAMS_BYTES:
        raise InvalidParams(f"params is {size} bytes as JSON; the limit is {conf.MAX_PARAMS_BYTES}", field="params")
    config.validate_params(params)
    return config


def check_quota(owner: Any) -> None:
    """Raise QuotaExceeded if ``owner`` already has the maximum of unfinished tasks (a soft cap: two
    concurrent submits can both pass the count)."""
    limit = conf.MAX_UNFINISHED_PER_USER
    if limit is None or owner is None or not getattr(owner, "is_authenticated", False):
        return
    if LongTimeTask.objects.filter(owner=owner).unfinished().count() >= limit:
        raise over_quota(limit)


def over_quota(limit: int) -> QuotaExceeded:
    return QuotaExceeded(f"You already have {limit} unfinished tasks; wait for some to finish.")


class SubmitRateExceeded(Exception):  # noqa: N818
    """The owner submitted more than ``LONG_TIME_TASK_SUBMIT_RATE`` allows; ``wait`` seconds until a slot is free
    (HTTP 429 with Retry-After). ``reason`` says it without the wait."""

    def __init__(self, rate: Rate, wait: int) -> None:
        self.reason = f"Too many submissions: the limit is {rate.text} per user."
        super().__init__(f"{self.reason} Try again in {wait} seconds.")
        self.rate = rate
        self.wait = wait


def reserve_submit(owner: Any) -> Reservation | None:
    """Take one of ``owner``'s submissions at ``LONG_TIME_TASK_SUBMIT_RATE`` (None: not counted: no rate, or
    trusted server code); SubmitRateExceeded when none is left. Atomic in the shared cache."""
    text = conf.SUBMIT_RATE
    if text is None or owner is None:
        return None
    rate = Rate.parse(text)
    try:
        return reserve(f"submit:{owner.pk}", rate)
    except RateExceeded as exc:
        raise SubmitRateExceeded(rate, exc.wait) from None


class TaskNotFound(LookupError):  # noqa: N818
    """No such task, or one the user may not see (the two are indistinguishable)."""


class ActionNotAllowed(Exception):  # noqa: N818
    """The task's state does not allow the action (HTTP 409). ``code`` is stable, for clients."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class NotPermitted(PermissionError):
    """The user may see the task but not act on it (HTTP 403)."""


class IdempotencyConflict(Exception):  # noqa: N818
    """An Idempotency-Key was reused for a different request (HTTP 409)."""


@dataclass(frozen=True)
class Submission:
    task: LongTimeTask
    created: bool  # False: an earlier submit with the same idempotency key, returned again


MAX_DELAY = timedelta(days=366)
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def resolve_start(run_after: datetime | None, countdown: float | None, now: datetime) -> datetime | None:
    """When a delayed task may start (None: now). ``run_after`` (aware) or ``countdown`` seconds, not both."""
    if run_after is not None and countdown is not None:
        raise InvalidParams("Give run_after or countdown, not both.", field="run_after")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float) or not 0 <= countdown < 1e9:
            raise InvalidParams("countdown must be a number of seconds >= 0.", field="countdown")
        run_after = now + timedelta(seconds=countdown)
    if run_after is None:
        return None
    if timezone.is_naive(run_after):
        run_after = timezone.make_aware(run_after)
    if run_after - now > MAX_DELAY:
        raise InvalidParams(f"A task can be delayed by at most {MAX_DELAY.days} days.", field="run_after")
    return run_after if run_after > now else None


def check_idempotency_key(key: str) -> None:
    if not IDEMPOTENCY_KEY.match(key):
        raise InvalidParams(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.", field="Idempotency-Key"
        )


def _replay(owner: Any, key: str, task_type: str, params: dict[str, Any]) -> Submission | None:
    """The earlier task submitted with this key, if any; IdempotencyConflict if it was a different request."""
    existing = LongTimeTask.objects.filter(owner=owner, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.task_type != task_type or existing.task_params != params:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for task {existing.id} with a different task type or params."
        )
    return Submission(existing, created=False)


@traced_submit
def submit(
    task_type: str,
    params: dict[str, Any] | None = None,
    *,
    owner: Any = None,
    run_after: datetime | None = None,
    countdown: float | None = None,
    idempotency_key: str | None = None,
    retry_of: LongTimeTask | None = None,
    check_permission: bool = True,
    count_rate: bool = True,
    queue: str | None = None,
    priority: int | None = None,
    enqueued: Callable[[LongTimeTask], None] | None = None,
    schedule: Any = None,
    scheduled_for: datetime | None = None,
) -> Submission:
    """Validate, write the row once, and publish it after the transaction commits.

    The Celery id is generated before the insert, so there is exactly one write. If the broker refuses the
    message, the committed row stays PENDING (and is logged); the caller still gets the row.

    A delayed task (``run_after``, or ``countdown`` seconds) up to ``ETA_MAX_SECONDS`` away is published at
    once with a broker ETA; a later one waits in the database and the sweeper publishes it when due. With an
    ``idempotency_key``, the same key from the same owner returns the first task (``created=False``).

    An owner's submissions are limited to ``LONG_TIME_TASK_SUBMIT_RATE`` (SubmitRateExceeded), whatever the
    door: only those that get this far are counted (just before the insert), not the rejected ones nor the
    replays; ``count_rate=False`` (a retry by server code) and ``owner=None`` are not counted.

    ``queue`` and ``priority`` (1..10) override the type's for this task (the django.tasks backend's
    ``queue_name`` and priority); ``enqueued(task)`` is called once the row is committed, just before it is
    published (the backend's ``task_enqueued`` signal).

    ``schedule`` and ``scheduled_for``: the row is that schedule's run for that due time (the scheduler's);
    a second row for the same pair fails the insert (IntegrityError), which the scheduler expects.
    """
    params = {} if params is None else params
    owner = owner if owner is not None and getattr(owner, "is_authenticated", False) else None
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
        replay = _replay(owner, idempotency_key, task_type, params)
        if replay is not None:
            return replay
    config = validate_submission(task_type, params)
    if check_permission and owner is not None and not config.may_submit(owner):
        raise NotPermitted(f"You may not submit tasks of type {config.name}.")
    now = timezone.now()
    start = resolve_start(run_after, countdown, now)
    # The rate first: a client over it costs a few cache round trips, not the quota's count query.
    reservation = reserve_submit(owner) if count_rate else None
    try:
        check_quota(owner)
    except BaseException:
        if reservation is not None:
            reservation.release()  # a refused submit does not use up the rate
        raise
    delay = (start - now).total_seconds() if start else 0.0
    held = delay > conf.ETA_MAX_SECONDS  # waits in the database; the sweeper publishes it when due
    # If the publish after commit never happens (broker down, process killed), the sweeper publishes the row
    # once redispatch_at is due. A successful publish leaves it: one INSERT and one publish per submit.
    redispatch_at = start if held and start else (start or now) + timedelta(seconds=conf.REDISPATCH_AFTER)
    fields = {
        "redispatch_at": redispatch_at,
        "task_type": config.name,
        "task_params": params,
        "state": TaskState.PENDING,
        "owner": owner,
        "queue": queue or config.queue,
        "priority": config.priority if priority is None else priority,
        "run_after": start,
        "idempotency_key": idempotency_key,
        "retry_of": retry_of,
        "traceparent": traceparent(),  # "" unless tracing is on
    }
    if schedule is not None:  # other submits keep their column set (and their compiled INSERT)
        fields.update(schedule=schedule, scheduled_for=scheduled_for)
    try:
        if idempotency_key is None:
            # One INSERT, in its own implicit transaction (no BEGIN/COMMIT round trips), or in the caller's: then
            # the publish waits for the caller's commit.
            task = LongTimeTask.objects.insert(**fields)
        else:
            try:
                # A savepoint only inside a caller's transaction (an error would abort it on PostgreSQL).
                with transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext():
                    task = LongTimeTask.objects.insert(**fields)
            except IntegrityError:
                # A concurrent submit with the same key won the unique constraint: return its task (a replay,
                # which does not count).
                replay = _replay(owner, idempotency_key, task_type, params)
                if replay is None:
                    raise
                if reservation is not None:
                    reservation.release()
                return replay
    except BaseException:
        if reservation is not None:
            reservation.release()  # nothing was submitted
        raise
    # Once the row is committed (at once outside a transaction): published, and counted in the metrics (a
    # caller's rollback publishes and counts nothing).
    transaction.on_commit(functools.partial(committed, task, config, None if held else delay, enqueued))
    logger.info("Task %s submitted: %s%s", task.id, task_type, f" (starts at {start.isoformat()})" if start else "")
    return Submission(task, created=True)


def committed(
    task: LongTimeTask,
    config: TaskConfig,
    delay: float | None,
    enqueued: Callable[[LongTimeTask], None] | None = None,
) -> None:
    """After a submit's commit: count it, and publish it unless it waits in the database (``delay`` None)."""
    metrics.submitted(config.name, task.queue)
    try:
        if enqueued is not None:
            enqueued(task)
    finally:
        if delay is not None:
            publish(task, attempt=1, countdown=delay or None)


@dataclass(frozen=True)
class NewTask:
    """One task for ``submit_many``: a type, its params and its owner, and the schedule and due time it is a run
    of (or none)."""

    task_type: str
    params: dict[str, Any]
    owner: Any = None
    schedule: Any = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What ``submit_many`` did with one ``NewTask``: ``task``, the row it created; or ``refused``, the error
    ``submit`` would have raised (UnknownTaskType, InvalidParams, NotPermitted, QuotaExceeded); or neither: a
    duplicate, a run whose (schedule, due time) has a row already."""

    task: LongTimeTask | None = None
    refused: Exception | None = None

    @property
    def duplicate(self) -> bool:
        return self.task is None and self.refused is None


INSERT_BATCH = 500  # rows per INSERT (fewer where the database takes fewer parameters: Django splits them)


def submit_many(new: Sequence[NewTask], *, check_permission: bool = True) -> list[Outcome]:
    """Submit many tasks at once, as ``submit`` submits one (no delay, no idempotency key, not counted against
    the submit rate: the scheduler's runs), and say what became of each, in order.

    Each is validated and its owner's permission and quota checked, as by ``submit``, once per type and params
    object, per type and owner, and per owner (the quota counts the owner's unfinished tasks once, then those
    this call adds). A refused one is an ``Outcome`` with the error, not an exception: the others go on.

    The rest are inserted ``INSERT_BATCH`` rows per statement, a run that conflicts with an existing one for
    its (schedule, due time) doing nothing (``ON CONFLICT DO NOTHING``, SQLite's ``INSERT OR IGNORE``, MySQL's
    ``INSERT IGNORE``): the unique constraint decides, even against a concurrent scheduler's uncommitted
    insert, which the database makes this one wait for. The rows it did create are then read back by their
    Celery ids, chosen before the insert as ``submit`` chooses them, and published after the commit of the
    caller's transaction (or of this call's own, outside one); a row whose publish is lost is published by the
    sweeper at its ``redispatch_at``, as any submit's.
    """
    limit = conf.MAX_UNFINISHED_PER_USER
    owners = [t.owner if t.owner is not None and getattr(t.owner, "is_authenticated", False) else None for t in new]
    unfinished = unfinished_counts({owner.pk for owner in owners if owner is not None}) if limit else {}
    configs: dict[tuple[str, int], TaskConfig | InvalidParams | UnknownTaskType] = {}
    permitted: dict[tuple[str, Any], bool] = {}
    now = timezone.now()
    fixed = {
        "redispatch_at": now + timedelta(seconds=conf.REDISPATCH_AFTER),  # the sweeper's, if the publish is lost
        "state": TaskState.PENDING,
        "traceparent": traceparent(),  # "" unless tracing is on
    }
    outcomes = [Outcome()] * len(new)
    rows: list[tuple[int, LongTimeTask, TaskConfig]] = []
    for index, (task, owner) in enumerate(zip(new, owners, strict=True)):
        key = (task.task_type, id(task.params))  # each schedule's params: one object for all its runs
        config = configs.get(key)
        if config is None:
            try:
                config = configs[key] = validate_submission(task.task_type, task.params)
            except (UnknownTaskType, InvalidParams) as exc:
                config = configs[key] = exc
        if not isinstance(config, TaskConfig):
            outcomes[index] = Outcome(refused=config)
            continue
        if check_permission and owner is not None:
            may = permitted.get((config.name, owner.pk))
            if may is None:
                may = permitted[config.name, owner.pk] = config.may_submit(owner)
            if not may:
                outcomes[index] = Outcome(refused=NotPermitted(f"You may not submit tasks of type {config.name}."))
                continue
        if limit is not None and owner is not None:
            if unfinished.get(owner.pk, 0) >= limit:
                outcomes[index] = Outcome(refused=over_quota(limit))
                continue
            unfinished[owner.pk] = unfinished.get(owner.pk, 0) + 1
        row = LongTimeTask(
            **fixed,
            celery_task_id=new_celery_task_id(),  # what the rows created are read back by
            task_type=config.name,
            task_params=task.params,
            owner=owner,
            queue=config.queue,
            priority=config.priority,
            schedule=task.schedule,
            scheduled_for=task.scheduled_for,
        )
        rows.append((index, row, config))
    if not rows:
        return outcomes
    db = router.db_for_write(LongTimeTask)
    tasks = LongTimeTask.objects.using(db)
    created: list[tuple[LongTimeTask, TaskConfig]] = []
    with transaction.atomic(using=db, savepoint=False):
        for start in range(0, len(rows), INSERT_BATCH):
            batch = rows[start : start + INSERT_BATCH]
            # With ignore_conflicts Django sets no primary keys: the ids come from the read below.
            tasks.bulk_create([row for _, row, _ in batch], ignore_conflicts=True)
            ids = dict(
                tasks.filter(celery_task_id__in=[row.celery_task_id for _, row, _ in batch]).values_list(
                    "celery_task_id", "id"
                )
            )
            for index, row, config in batch:
                if row.celery_task_id not in ids:
                    continue  # a duplicate: its Outcome stays empty
                row.pk = ids[row.celery_task_id]
                outcomes[index] = Outcome(task=row)
                created.append((row, config))
                logger.info("Task %s submitted: %s", row.id, row.task_type)
        if created:
            transaction.on_commit(functools.partial(committed_many, created), using=db)
    return outcomes


def unfinished_counts(owner_ids: set[Any]) -> dict[Any, int]:
    """How many unfinished tasks each of these owners has (those with none are left out): one query."""
    if not owner_ids:
        return {}
    rows = LongTimeTask.objects.filter(owner_id__in=owner_ids).unfinished().order_by().values("owner_id")
    return dict(rows.annotate(n=Count("id")).values_list("owner_id", "n"))


def committed_many(created: list[tuple[LongTimeTask, TaskConfig]]) -> None:
    """After ``submit_many``'s commit: count and publish each task it created, as ``committed`` does one."""
    for task, config in created:
        committed(task, config, 0.0)


def submit_task(
    task_type: str,
    params: dict[str, Any] | None = None,
    *,
    owner: Any = None,
    run_after: datetime | None = None,
    countdown: float | None = None,
    idempotency_key: str | None = None,
) -> LongTimeTask:
    """The seed's submit: ``submit(...)``'s task."""
    return submit(
        task_type, params, owner=owner, run_after=run_after, countdown=countdown, idempotency_key=idempotency_key
    ).task


# ---------------------------------------------------------------- acting on a task


def may_manage(user: Any, task: LongTimeTask) -> bool:
    """Who may cancel, retry or re-run a task: its owner and staff (``user=None``: trusted server code)."""
    if user is None:
        return True
    return bool(user.is_authenticated and (user.is_staff or (task.owner_id is not None and task.owner_id == user.pk)))


def _task_for_action(task_id: int, user: Any) -> LongTimeTask:
    task = get_task(task_id, user=user)
    if task is None:
        raise TaskNotFound(f"Task {task_id} not found")
    if not may_manage(user, task):
        raise NotPermitted("Only the task's owner or staff may do this.")
    return task


def canceller(user: Any, task: LongTimeTask) -> str:
    """Who cancelled, as the row's message says it to everyone who reads it (the owner included): the owner,
    staff or the system, never another person's name. The audit trail (staff only) keeps the name."""
    if user is None or not user.is_authenticated:
        return "the system"
    if task.owner_id is not None and task.owner_id == user.pk:
        return "its owner"
    return "staff"


@dataclass(frozen=True)
class CancelOutcome:
    task: LongTimeTask
    cancelled: bool  # True: CANCELLED now; False: it is running, and its cancel was requested


def cancel_task(task_id: int, *, user: Any = None, note: str = "") -> CancelOutcome:
    """Cancel a task. A waiting one (PENDING, RETRYING, delayed) becomes CANCELLED at once and its handler
    never runs, even if its message is already queued. A RUNNING one gets a durable cancel request: its
    handler sees it (``check_cancelled``, ``progress``), and if it has not stopped after
    ``CANCEL_GRACE_SECONDS`` its worker kills the process running it. A finished task: ActionNotAllowed.
    ``note`` goes into the audit trail (a Celery revoke, by the worker that received it)."""
    tasks = LongTimeTask.objects
    task = _task_for_action(task_id, user)
    who = user.get_username() if user is not None and user.is_authenticated else SYSTEM
    message = f"Cancelled by {canceller(user, task)} before it started."
    for _ in range(3):  # the state may move between the read and the guarded write: read again
        if task.is_terminal:
            raise ActionNotAllowed(
                f"Task {task.id} is already {task.state}; only waiting or running tasks can be cancelled.",
                code="not_cancellable",
            )
        with transaction.atomic():
            if task.is_waiting:
                if tasks.cancel_waiting(task.id, message=message):
                    record(task.id, AuditAction.CANCELLED, actor=user, note=note)
                    counted = (task.id, task.task_type, task.queue, TaskState.CANCELLED, "cancelled")
                    transaction.on_commit(functools.partial(signals.ended, *counted))
                    logger.info("Task %s cancelled by %s before it started%s", task.id, who, f" ({note})" * bool(note))
                    return CancelOutcome(tasks.get(id=task.id), cancelled=True)
            elif tasks.request_cancel(task.id):
                if task.cancel_requested_at is None:
                    record(task.id, AuditAction.CANCEL_REQUESTED, actor=user, note=note)
                logger.info("Task %s: cancel requested by %s while running%s", task.id, who, f" ({note})" * bool(note))
                return CancelOutcome(tasks.get(id=task.id), cancelled=False)
        task = tasks.get(id=task.id)
    raise ActionNotAllowed(f"Task {task.id} is changing state; try again.", code="state_changed")


RETRYABLE_STATES = frozenset({TaskState.FAILED, TaskState.CANCELLED})


def retry_task(
    task_id: int, *, user: Any = None, params: dict[str, Any] | None = None, rerun: bool = False
) -> LongTimeTask:
    """A new task with the same type and params (or ``params``), linked to the original by ``retry_of`` and
    owned by ``user`` (by the original's owner when ``user`` is None). The original keeps its history; the
    audit trail records who did it.

    Retry is for FAILED and CANCELLED tasks; ``rerun=True`` also accepts FINISHED ones.
    """
    task = _task_for_action(task_id, user)
    allowed = TERMINAL_STATES if rerun else RETRYABLE_STATES
    if task.state not in allowed:
        if task.state == TaskState.FINISHED:
            message = f"Task {task.id} finished; re-run it instead of retrying it."
        else:
            message = f"Task {task.id} is {task.state}; only finished, failed or cancelled tasks can run again."
        raise ActionNotAllowed(message, code="not_retryable")
    config = LongTimeTaskRegister.get_task(task.task_type)
    if config is not None and user is not None and not config.may_submit(user):
        raise NotPermitted(f"You may not submit tasks of type {task.task_type}.")
    owner = user if user is not None else task.owner
    action = AuditAction.RERUN if task.state == TaskState.FINISHED else AuditAction.RETRIED
    with transaction.atomic():
        new_params = task.task_params if params is None else params
        # The requester's permission was checked above; a system retry keeps the original owner.
        # A retry by server code (user None) is not counted against the original owner's submit rate.
        # A type whose tasks each choose their queue and priority (a django.tasks function) runs again where it ran.
        keep = config is not None and config.placement_per_task
        new = submit(
            task.task_type,
            new_params,
            owner=owner,
            retry_of=task,
            check_permission=False,
            count_rate=user is not None,
            queue=task.queue if keep else None,
            priority=task.priority if keep else None,
        ).task
        note = "" if params is None or params == task.task_params else "with edited params"
        record(task.id, action, actor=user, new_task_id=new.id, note=note)
    logger.info("Task %s %s as task %s", task.id, action, new.id)
    return new


def visible_tasks(user: Any) -> LongTimeTaskQuerySet:
    """The tasks ``user`` may see (a QuerySet)."""
    return LongTimeTask.objects.visible_to(user)


def get_task(task_id: int, *, user: Any) -> LongTimeTask | None:
    """The task, if it exists and ``user`` may see it; None otherwise (the two are indistinguishable).
    ``user=None``: trusted server code, which sees every task."""
    if not 0 < task_id < 2**63:
        return None
    tasks = LongTimeTask.objects.all() if user is None else visible_tasks(user)
    task: LongTimeTask | None = tasks.select_related("owner").filter(id=task_id).first()
    return task


def get_task_status(task_id: int, *, user: Any = None) -> dict[str, Any] | None:
    """The seed's status call: ``{"id": ..., "state": ...}``, or None if there is no such task.

    Without ``user`` every task is visible (for trusted server-side code); with it, only what the user may see.
    """
    if not 0 < task_id < 2**63:
        return None
    tasks = LongTimeTask.objects.all() if user is None else visible_tasks(user)
    row = tasks.filter(id=task_id).values("id", "state", "attempts").first()
    return dict(row) if row else None

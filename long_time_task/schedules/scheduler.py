"""The scheduler's tick: create the runs of the due schedules, exactly one per due time.

A tick runs as a Celery job on the ``maintenance`` queue, sent by beat (``long_time_task.run_schedules``), like
the sweeper; any number of ticks may run at once, on any hosts. Each one:

1. reads the due schedules through the partial index on ``next_run_at`` (enabled ones only), oldest first, at
   most ``MAINTENANCE_BATCH``, locking them with ``FOR UPDATE SKIP LOCKED`` where the database has it, so that
   concurrent ticks share the work instead of queueing on it;
2. works out, for each, the due times to run from its misfire policy (and, for the ``skip_if_running`` ones,
   whether their last run has ended: one query for all of them), and submits all the runs at once through
   ``services.submit_many`` (validation, the owner's permission and quota, the outbox), 500 rows per INSERT: a
   run that exists already for its (schedule, due time) is not inserted (the unique constraint, ``ON CONFLICT
   DO NOTHING``) and is counted as a duplicate, so even a tick that read the schedule before another one
   committed creates nothing twice;
3. moves each schedule's ``next_run_at`` to the first due time after now (one UPDATE for them all, each row
   guarded by the ``next_run_at`` the tick read), and pauses those whose owner or runs were refused (one more),
   in the same transaction as the runs.

So a tick runs the same few statements whether 1 or 500 schedules are due.

A tick killed anywhere rolls back its transaction (no run, no move) and the next tick does the work; a run whose
publish is lost after the commit is published by the sweeper, as any submit's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.models import Case, F, Field, Value, When
from django.utils import timezone

from .. import services
from ..conf import conf
from ..models import TERMINAL_STATES, LongTimeTask, MisfirePolicy, Schedule
from ..models.querysets import database_now
from ..models.schedules import Move
from ..registry import InvalidParams, UnknownTaskType
from .timing import InvalidSchedule, timing_of

logger = logging.getLogger(__name__)

SCHEDULER_TASK = "long_time_task.run_schedules"


def tick(now: datetime | None = None) -> dict[str, int]:
    """Create the runs of the schedules due at ``now`` (the current time). Returns counts: ``created``,
    ``duplicate`` (made by a concurrent tick), ``skipped`` (a due time left out: missed, or its previous run
    unfinished), ``paused`` (schedules that paused themselves), ``schedules`` (those handled). The current time is
    the database's, not this host's: a worker whose clock is off runs nothing early or late."""
    db = router.db_for_write(Schedule)
    now = now or database_now(db)
    with transaction.atomic(using=db):
        due = Schedule.objects.using(db).due(now).select_related("owner")
        if connections[db].features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        schedules = list(due[: conf.MAINTENANCE_BATCH])
        counts = run_batch(schedules, now, db)
    counts["schedules"] += len(schedules)
    counts = +counts  # without the zeros
    if counts["created"] or counts["paused"]:
        logger.info("Scheduler: %s", dict(counts))
    return dict(counts)


def due_times(schedule: Schedule, now: datetime) -> tuple[list[datetime], int]:
    """The due times of ``schedule`` to run at ``now``, oldest first, and how many older ones its misfire policy
    leaves out (at least; the count stops at the policy's limit). Due times less than the misfire grace late are
    on time and all run; older ones are missed: none run (``skip``), the newest runs (``run_once``), or the newest
    ``misfire_limit`` run (``catch_up``)."""
    if schedule.next_run_at is None:
        return [], 0
    grace = timedelta(seconds=conf.SCHEDULE_MISFIRE_GRACE)
    limits: dict[str, int] = {MisfirePolicy.SKIP: 0, MisfirePolicy.RUN_ONCE: 1}
    limit = limits.get(schedule.misfire, schedule.misfire_limit)
    on_time: list[datetime] = []
    missed: list[datetime] = []
    left_out = 0
    for due in timing_of(schedule).newest_first(until=now, since=schedule.next_run_at):
        if now - due <= grace:
            on_time.append(due)
        elif len(missed) < limit:
            missed.append(due)
        else:
            left_out = 1  # at least one; not counted further (there may be a great many)
            break
    return sorted(missed + on_time), left_out


@dataclass
class Plan:
    """What a tick does with one schedule: the runs it submits, where it moves it, or why it pauses it."""

    schedule: Schedule
    runs: list[datetime] = field(default_factory=list)
    next_run_at: datetime | None = None
    last_task: LongTimeTask | None = None
    paused: str = ""  # the reason


def run_due(schedule: Schedule, now: datetime, db: str) -> Counter[str]:
    """Create the runs ``schedule`` owes at ``now`` and move its ``next_run_at`` (a batch of one)."""
    return run_batch([schedule], now, db)


def run_batch(schedules: Sequence[Schedule], now: datetime, db: str) -> Counter[str]:
    """Create the runs ``schedules`` owe at ``now``, move their ``next_run_at`` and pause those refused (inside
    the tick's transaction)."""
    counts: Counter[str] = Counter()
    plans = [plan_of(schedule, now, counts) for schedule in schedules]
    waiting = [p for p in plans if p.schedule.skip_if_running and p.runs]
    running = unfinished_tasks({p.schedule.last_task_id for p in waiting if p.schedule.last_task_id is not None}, db)
    for plan in waiting:
        if plan.schedule.last_task_id in running:  # one at a time, whatever it owes
            counts["skipped"] += 1
            plan.runs = []
    planned = [(plan, due) for plan in plans if not plan.paused for due in plan.runs]
    outcomes = services.submit_many(
        [
            services.NewTask(
                plan.schedule.task_type,
                plan.schedule.params,
                owner=plan.schedule.owner,
                schedule=plan.schedule,
                scheduled_for=due,
            )
            for plan, due in planned
        ]
    )
    for (plan, due), outcome in zip(planned, outcomes, strict=True):
        if plan.paused:
            continue  # an earlier run was refused: the rest are too
        if outcome.task is not None:
            counts["created"] += 1
            plan.last_task = outcome.task
        elif isinstance(outcome.refused, services.NotPermitted | UnknownTaskType | InvalidParams):
            plan.paused = f"Its run of {due.isoformat()} was refused: {outcome.refused}"
        elif outcome.refused is not None:  # QuotaExceeded
            logger.warning(
                "Schedule %s: the run of %s was skipped: %s", plan.schedule.id, due.isoformat(), outcome.refused
            )
            counts["skipped"] += 1
        else:
            counts["duplicate"] += 1  # a concurrent tick made it: the unique constraint held
    paused = [plan for plan in plans if plan.paused]
    counts["paused"] += len(paused)
    pause_all(paused, db)
    move_all([plan for plan in plans if not plan.paused], now, db)
    return +counts  # without the zeros


def plan_of(schedule: Schedule, now: datetime, counts: Counter[str]) -> Plan:
    """The runs ``schedule`` owes at ``now`` by its timing and misfire policy, and its next due time; or why it
    pauses (its owner deactivated, its timing no longer valid). Counts the due times left out."""
    owner = schedule.owner
    if owner is not None and not owner.is_active:
        return Plan(schedule, paused=f"Its owner {owner.get_username()} is deactivated.")
    try:
        timing = timing_of(schedule)
        runs, left_out = due_times(schedule, now)
    except InvalidSchedule as exc:  # a zone that left the system's tz database, an edited row
        return Plan(schedule, paused=exc.message)
    counts["skipped"] += left_out
    if schedule.skip_if_running and len(runs) > 1:
        counts["skipped"] += len(runs) - 1
        runs = runs[-1:]
    return Plan(schedule, runs=runs, next_run_at=timing.after(now))


def unfinished_tasks(ids: set[int], db: str) -> set[int]:
    """Which of the tasks ``ids`` have not ended yet: one query."""
    if not ids:
        return set()
    rows = LongTimeTask.objects.using(db).filter(id__in=ids).exclude(state__in=TERMINAL_STATES)
    return set(rows.values_list("id", flat=True))


def move_all(plans: Sequence[Plan], now: datetime, db: str) -> None:
    """Move each schedule to its next due time, and record its last due time run and last run: one UPDATE, each
    row guarded by the due time the tick read (a tick that read a schedule before another one moved it moves
    nothing)."""
    moves = [
        Move(
            id=plan.schedule.id,
            read=plan.schedule.next_run_at,
            next_run_at=plan.next_run_at,
            last_run_at=plan.runs[-1] if plan.runs else None,
            last_task_id=plan.last_task.id if plan.last_task is not None else None,
        )
        for plan in plans
        if plan.schedule.next_run_at is not None
    ]
    Schedule.objects.using(db).move(moves, now)


def by_id(values: Sequence[tuple[int, Any]], name: str) -> Case:
    """``name``'s new value for each schedule id, as a CASE; the others keep theirs."""
    model_field = cast("Field[Any, Any]", Schedule._meta.get_field(name))
    whens = [When(id=id_, then=Value(value, output_field=model_field)) for id_, value in values]
    return Case(*whens, default=F(name), output_field=model_field)


def pause_all(plans: Sequence[Plan], db: str) -> None:
    """Disable each schedule, saying why (shown with it; resuming it clears the reason): one UPDATE."""
    if not plans:
        return
    Schedule.objects.using(db).filter(id__in=[p.schedule.id for p in plans]).update(
        enabled=False,
        paused_reason=by_id([(p.schedule.id, p.paused[:255]) for p in plans], "paused_reason"),
        updated_at=timezone.now(),
    )
    for plan in plans:
        logger.warning("Schedule %s (%s) paused: %s", plan.schedule.id, plan.schedule.name, plan.paused)

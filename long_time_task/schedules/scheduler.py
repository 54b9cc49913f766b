"""The scheduler's tick: create the runs of the due schedules, exactly one per due time.

A tick runs as a Celery job on the ``maintenance`` queue, sent by beat (``long_time_task.run_schedules``), like
the sweeper; any number of ticks may run at once, on any hosts. Each one:

1. reads the due schedules through the partial index on ``next_run_at`` (enabled ones only), oldest first, at
   most ``MAINTENANCE_BATCH``, locking them with ``FOR UPDATE SKIP LOCKED`` where the database has it, so that
   concurrent ticks share the work instead of queueing on it;
2. for each, works out the due times to run from its misfire policy, and submits one run per due time through
   ``services.submit`` (validation, the owner's permission, the outbox), each in a savepoint: a run that exists
   already for that (schedule, due time) fails the unique constraint and is counted as a duplicate, so even a
   tick that read the schedule before another one committed creates nothing twice;
3. moves ``next_run_at`` to the first due time after now, in the same transaction as the runs.

A tick killed anywhere rolls back its transaction (no run, no move) and the next tick does the work; a run whose
publish is lost after the commit is published by the sweeper, as any submit's.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from .. import services
from ..conf import conf
from ..models import TERMINAL_STATES, LongTimeTask, MisfirePolicy, Schedule
from ..registry import InvalidParams, UnknownTaskType
from .timing import InvalidSchedule, timing_of

logger = logging.getLogger(__name__)

SCHEDULER_TASK = "long_time_task.run_schedules"


def tick(now: datetime | None = None) -> dict[str, int]:
    """Create the runs of the schedules due at ``now`` (the current time). Returns counts: ``created``,
    ``duplicate`` (made by a concurrent tick), ``skipped`` (a due time left out: missed, or its previous run
    unfinished), ``paused`` (schedules that paused themselves), ``schedules`` (those handled)."""
    now = now or timezone.now()
    db = router.db_for_write(Schedule)
    counts: Counter[str] = Counter()
    with transaction.atomic(using=db):
        due = Schedule.objects.using(db).due(now).select_related("owner")
        if connections[db].features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        for schedule in due[: conf.MAINTENANCE_BATCH]:
            counts["schedules"] += 1
            counts.update(run_due(schedule, now, db))
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


def run_due(schedule: Schedule, now: datetime, db: str) -> Counter[str]:
    """Create the runs ``schedule`` owes at ``now`` and move its ``next_run_at`` (inside the tick's transaction)."""
    counts: Counter[str] = Counter()
    owner = schedule.owner
    if owner is not None and not owner.is_active:
        pause(schedule, f"Its owner {owner.get_username()} is deactivated.", db)
        counts["paused"] += 1
        return counts
    try:
        timing = timing_of(schedule)
        runs, left_out = due_times(schedule, now)
    except InvalidSchedule as exc:  # a zone that left the system's tz database, an edited row
        pause(schedule, exc.message, db)
        counts["paused"] += 1
        return counts
    if left_out:
        counts["skipped"] += left_out
    if schedule.skip_if_running and len(runs) > 1:
        counts["skipped"] += len(runs) - 1
        runs = runs[-1:]
    if schedule.skip_if_running and runs:  # one at a time, whatever it owes
        if previous_unfinished(schedule, db):
            counts["skipped"] += 1
            runs = []
    last_task: LongTimeTask | None = None
    for due in runs:
        try:
            with transaction.atomic(using=db):
                last_task = services.submit(
                    schedule.task_type,
                    schedule.params,
                    owner=owner,
                    schedule=schedule,
                    scheduled_for=due,
                    count_rate=False,  # the schedule's own pace, checked when it was made
                ).task
            counts["created"] += 1
        except IntegrityError:
            counts["duplicate"] += 1  # a concurrent tick made it: the unique constraint held
        except (services.NotPermitted, UnknownTaskType, InvalidParams) as exc:
            pause(schedule, f"Its run of {due.isoformat()} was refused: {exc}", db)
            counts["paused"] += 1
            return counts
        except (services.QuotaExceeded, services.SubmitRateExceeded) as exc:
            logger.warning("Schedule %s: the run of %s was skipped: %s", schedule.id, due.isoformat(), exc)
            counts["skipped"] += 1
    values: dict[str, Any] = {"next_run_at": timing.after(now)}
    if runs:
        values["last_run_at"] = runs[-1]
    if last_task is not None:
        values["last_task"] = last_task
    # Guarded by the due time it read: a tick that read the schedule before another one moved it moves nothing.
    Schedule.objects.using(db).filter(id=schedule.id, next_run_at=schedule.next_run_at).update(**values, updated_at=now)
    return counts


def previous_unfinished(schedule: Schedule, db: str) -> bool:
    """Whether the schedule's last run has not ended yet."""
    if schedule.last_task_id is None:
        return False
    state = LongTimeTask.objects.using(db).filter(id=schedule.last_task_id).values_list("state", flat=True).first()
    return state is not None and state not in TERMINAL_STATES


def pause(schedule: Schedule, reason: str, db: str) -> None:
    """Disable ``schedule``, saying why (shown with it; resuming it clears the reason)."""
    Schedule.objects.using(db).filter(id=schedule.id).update(
        enabled=False, paused_reason=reason[:255], updated_at=timezone.now()
    )
    logger.warning("Schedule %s (%s) paused: %s", schedule.id, schedule.name, reason)

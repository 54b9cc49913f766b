"""Attempt history: the attempts recorded in ``TaskAttempt``, plus the current or last one from the task row.

An attempt is recorded only when it ends without being the task's last word (a retry is scheduled) or when
recovery ends it (its worker process died, its lease expired): ``ending_attempt`` runs the guarded
transition and, if it won, copies what that transition left on the task row into a new ``TaskAttempt``, in
one transaction. The attempt that ends the task in its own worker (finished, failed, cancelled, killed by its
hard time limit) is described by the task row and costs nothing more.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import connections, models, transaction

from .statements import task_model
from .states import AttemptCause, AttemptOutcome, TaskState

if TYPE_CHECKING:
    from . import LongTimeTask, TaskAttempt

HISTORY_LIMIT = 200  # attempts shown; max_retries bounds them long before

# The outcome of the current or last attempt, from the task row's state (RETRYING: a row from before the
# history existed, whose retry was not recorded).
OUTCOME_OF_STATE = {
    TaskState.RUNNING: AttemptOutcome.RUNNING,
    TaskState.FINISHED: AttemptOutcome.FINISHED,
    TaskState.FAILED: AttemptOutcome.FAILED,
    TaskState.CANCELLED: AttemptOutcome.CANCELLED,
    TaskState.RETRYING: AttemptOutcome.RETRY,
}


def attempt_model() -> type[TaskAttempt]:
    """The TaskAttempt model, from Django's app registry (the models module imports this one)."""
    return apps.get_model("long_time_task", "TaskAttempt")


def ending_attempt(
    rows: models.QuerySet[Any],
    values: dict[str, Any],
    *,
    db: str,
    task_id: int,
    ended_at: datetime,
    outcome: str,
    cause: str,
) -> bool:
    """Run the guarded UPDATE of ``rows`` with ``values`` and, if it won, record the attempt it ended, in
    one transaction. Returns whether it won.

    The attempt's number, worker, start and error are read back from the task row inside the transaction
    (the UPDATE holds its lock), so they are what the winning transition left there: one INSERT ... SELECT,
    no extra read.
    """
    with transaction.atomic(using=db):
        if not rows.update(**values):
            return False
        record_attempt(db, task_id, ended_at=ended_at, outcome=outcome, cause=cause)
    return True


def record_attempt(db: str, task_id: int, *, ended_at: datetime, outcome: str, cause: str) -> None:
    """Copy the task row's current attempt into the history, unless that attempt is recorded already."""
    connection = connections[db]
    quote = connection.ops.quote_name
    task_meta: Any = task_model()._meta
    attempt_meta: Any = attempt_model()._meta
    tasks, attempts = quote(task_meta.db_table), quote(attempt_meta.db_table)

    def t(name: str) -> str:
        return f"{tasks}.{quote(task_meta.get_field(name).column)}"

    def a(name: str) -> str:
        return quote(attempt_meta.get_field(name).column)

    columns = ", ".join(a(name) for name in ("task", "number", "worker", "started_at", "ended_at", "outcome", "cause"))
    columns += ", " + ", ".join(a(name) for name in ("error_code", "error_message", "error_traceback"))
    selected = f"{t('id')}, {t('attempts')}, {t('worker')}, {t('claimed_at')}, %s, %s, %s, {t('error_code')}, "
    selected += f"COALESCE({t('error_message')}, ''), {t('error_traceback')}"
    # An attempt is ended by one guarded transition only, and this one holds the task row's lock; the
    # NOT EXISTS is for rows loaded from elsewhere, which must not make the transition fail.
    same = f"{attempts}.{a('task')} = {t('id')} AND {attempts}.{a('number')} = {t('attempts')}"
    where = f"{t('id')} = %s AND {t('attempts')} > 0 AND NOT EXISTS (SELECT 1 FROM {attempts} WHERE {same})"  # noqa: S608
    # Quoted names from the models' options; every value is a parameter.
    statement = f"INSERT INTO {attempts} ({columns}) SELECT {selected} FROM {tasks} WHERE {where}"  # noqa: S608
    ended = attempt_meta.get_field("ended_at").get_db_prep_value(ended_at, connection)
    with connection.cursor() as cursor:
        cursor.execute(statement, [ended, outcome, cause, task_id])


def attempt_history(task: LongTimeTask) -> list[TaskAttempt]:
    """Every attempt of ``task`` that is known, oldest first: the recorded ones, then the current or last
    one from the task row when it is not recorded (that one is unsaved: ``recorded`` is False).

    One query. Attempts from before the history existed are missing, except the task row's own.
    """
    attempts = list(attempt_model().objects.filter(task_id=task.id).order_by("number")[:HISTORY_LIMIT])
    if task.attempts and task.attempts not in {a.number for a in attempts} and task.state in OUTCOME_OF_STATE:
        attempts.append(current_attempt(task))
    return attempts


def current_attempt(task: LongTimeTask) -> TaskAttempt:
    """The task row's attempt, as an unsaved TaskAttempt."""
    ended = task.state in (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED)
    # A RUNNING row still carries the error of the attempt before it (the claim leaves it): not this one's.
    errored = task.state in (TaskState.FAILED, TaskState.CANCELLED, TaskState.RETRYING)
    return attempt_model()(
        task=task,
        number=task.attempts,
        worker=task.worker,
        started_at=task.claimed_at,
        ended_at=task.finish_at if ended else None,
        outcome=OUTCOME_OF_STATE[TaskState(task.state)],
        cause=AttemptCause.NONE,
        error_code=task.error_code if errored else "",
        error_message=(task.error_message or "") if errored else "",
        error_traceback=task.error_traceback if errored else "",
    )

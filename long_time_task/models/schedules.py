"""Periodic schedules: a task type and its params, run by a cron expression, a fixed interval or once.

Each run is an ordinary ``LongTimeTask`` row that names its schedule and the due time it is for
(``schedule``, ``scheduled_for``), under a unique constraint on the pair: however many schedulers run, and
whatever kills one mid-tick, a due time gets one row at most. The scheduler (``long_time_task.schedules``) finds
the due schedules through the partial index on ``next_run_at`` (enabled schedules only), so a tick reads only
what is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, cast

from django.conf import settings
from django.db import connections, models
from django.utils.translation import gettext_lazy as _


class MisfirePolicy(models.TextChoices):
    """What a scheduler that finds due times older than ``LONG_TIME_TASK_SCHEDULE_MISFIRE_GRACE`` does."""

    SKIP = "skip", _("skip the missed runs")
    RUN_ONCE = "run_once", _("run once for all the missed runs")
    CATCH_UP = "catch_up", _("run each missed run, up to a limit")


@dataclass(frozen=True)
class Move:
    """A tick's move of one schedule: from the due time it read (``read``) to ``next_run_at``, recording the last
    due time it ran and its run (None: unchanged)."""

    id: int
    read: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None = None
    last_task_id: int | None = None


class ScheduleQuerySet(models.QuerySet["Schedule"]):
    def due(self, now: object) -> ScheduleQuerySet:
        """Enabled schedules whose next run is due at ``now`` (the partial index, oldest first)."""
        return self.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at", "id")

    def move(self, moves: Sequence[Move], now: datetime) -> int:
        """Apply ``moves``, each guarded by the due time it read: a schedule another tick moved first is left as it
        is. One UPDATE (per few thousand schedules; per 111 on SQLite, whose statements take 999 parameters) with a
        ``CASE`` on the id per column, as Django's ``bulk_update`` writes it. Returns the schedules moved.

        The statement is written here rather than by the ORM: its ``Case(When(...))`` expressions cost about 1.5 ms
        of Python per schedule to build (measured at 500), more than the one-at-a-time UPDATE this replaces.
        """
        connection = connections[self.db]
        size = max((connection.features.max_query_params or 65_535) // 9, 1)  # at most 9 parameters a schedule
        return sum(self._move(moves[start : start + size], now, connection) for start in range(0, len(moves), size))

    def _move(self, moves: Sequence[Move], now: datetime, connection: Any) -> int:
        if not moves:
            return 0
        meta = self.model._meta
        quote = connection.ops.quote_name
        key = quote(meta.pk.column)
        params: list[Any] = []

        def field(name: str) -> models.Field[Any, Any]:
            return cast("models.Field[Any, Any]", meta.get_field(name))

        def column(name: str) -> str:
            return str(quote(field(name).column))

        def case(name: str, values: list[tuple[int, Any]]) -> str:
            """The value of ``name`` for each id; the ELSE types the CASE (every row has a WHEN, a NULL alone
            has no type)."""
            for id_, value in values:
                params.extend((id_, field(name).get_db_prep_save(value, connection)))
            return f"CASE {key} {' '.join(['WHEN %s THEN %s'] * len(values))} ELSE {column(name)} END"

        sets = [f"{column('next_run_at')} = {case('next_run_at', [(m.id, m.next_run_at) for m in moves])}"]
        last_run = [(m.id, m.last_run_at) for m in moves if m.last_run_at is not None]
        if last_run:
            sets.append(f"{column('last_run_at')} = {case('last_run_at', last_run)}")
        last_task = [(m.id, m.last_task_id) for m in moves if m.last_task_id is not None]
        if last_task:
            sets.append(f"{column('last_task')} = {case('last_task', last_task)}")
        sets.append(f"{column('updated_at')} = %s")
        params.append(field("updated_at").get_db_prep_save(now, connection))
        params.extend(m.id for m in moves)
        marks = ", ".join(["%s"] * len(moves))
        guard = (
            f"{key} IN ({marks}) AND {column('next_run_at')} = {case('next_run_at', [(m.id, m.read) for m in moves])}"
        )
        # Only quoted names from the model go into the text; values are parameters.
        statement = f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} WHERE {guard}"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return int(cursor.rowcount)


class Schedule(models.Model):
    """A task type and its params, run at the due times of ``cron``, ``interval_seconds`` or ``run_at``."""

    name = models.CharField(max_length=200, verbose_name=_("name"))
    task_type = models.CharField(max_length=100, verbose_name=_("task type"))
    params = models.JSONField(default=dict, blank=True, verbose_name=_("task parameters"))
    # Exactly one of the three (a check constraint below).
    cron = models.CharField(max_length=100, blank=True, default="", verbose_name=_("cron expression"))
    interval_seconds = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("interval (seconds)"))
    run_at = models.DateTimeField(null=True, blank=True, verbose_name=_("run once at"))
    timezone = models.CharField(max_length=64, verbose_name=_("time zone"))
    enabled = models.BooleanField(default=True, verbose_name=_("enabled"))
    paused_reason = models.CharField(max_length=255, blank=True, default="", verbose_name=_("paused because"))
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="long_time_task_schedules",
        verbose_name=_("owner"),
    )
    start_at = models.DateTimeField(null=True, blank=True, verbose_name=_("first run not before"))
    end_at = models.DateTimeField(null=True, blank=True, verbose_name=_("no run after"))
    misfire = models.CharField(
        max_length=20, choices=MisfirePolicy.choices, default=MisfirePolicy.RUN_ONCE, verbose_name=_("missed runs")
    )
    misfire_limit = models.PositiveIntegerField(default=10, verbose_name=_("missed runs caught up at most"))
    skip_if_running = models.BooleanField(default=False, verbose_name=_("skip while the last run is unfinished"))
    # The scheduler's state: the next due time (None: none left), and the last run it created.
    next_run_at = models.DateTimeField(null=True, blank=True, verbose_name=_("next run at"))
    last_run_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last due time run"))
    last_task = models.ForeignKey(
        "long_time_task.LongTimeTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        verbose_name=_("last run"),
    )
    # Declared in code (``"settings:<name>"`` for LONG_TIME_TASK_SCHEDULES, ``"type:<task type>"`` for a register's
    # ``schedule=``): kept in step with the code by ``migrate``. None: made by a user.
    code_name = models.CharField(  # noqa: DJ001 - NULL: made by a user (NULLs never collide)
        max_length=200, null=True, blank=True, unique=True, editable=False, verbose_name=_("declared in code as")
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    objects: ClassVar[ScheduleQuerySet] = ScheduleQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        db_table = "long_time_task_schedule"
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        ordering = ["name", "id"]
        indexes = [
            # The tick's one read: only enabled schedules have an entry, in due order.
            models.Index(fields=["next_run_at", "id"], name="ltt_schedule_due", condition=models.Q(enabled=True)),
            models.Index(fields=["owner", "name"], name="ltt_schedule_owner"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(cron__gt="", interval_seconds__isnull=True, run_at__isnull=True)
                    | models.Q(cron="", interval_seconds__isnull=False, run_at__isnull=True)
                    | models.Q(cron="", interval_seconds__isnull=True, run_at__isnull=False)
                ),
                name="ltt_schedule_one_timing",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.task_type})"

"""The model layer: the task row, its audit trail, API tokens. It imports nothing from the worker or HTTP sides."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .querysets import LongTimeTaskQuerySet
from .states import TERMINAL_STATES as TERMINAL_STATES
from .states import WAITING_STATES as WAITING_STATES
from .states import AttemptCause as AttemptCause
from .states import AttemptOutcome as AttemptOutcome
from .states import TaskState as TaskState


def new_celery_task_id() -> str:
    """The Celery id is chosen before the insert, so a submit is one write."""
    return str(uuid.uuid4())


class LongTimeTask(models.Model):
    """A long-running task: one row per submitted task, the source of truth for its state."""

    id = models.BigAutoField(primary_key=True)
    celery_task_id = models.CharField(
        max_length=255,
        unique=True,
        db_index=True,
        default=new_celery_task_id,
        verbose_name=_("Celery task ID"),
    )
    # The seed's single-column indexes on task_type and state are the prefixes of its two composite indexes
    # below, which serve the same filters: dropping them (and their `_like` twins on PostgreSQL) spares every
    # state transition four index updates.
    task_type = models.CharField(max_length=100, verbose_name=_("task type"))
    task_params = models.JSONField(default=dict, blank=True, verbose_name=_("task parameters"))
    state = models.CharField(
        max_length=20,
        choices=TaskState.choices,
        default=TaskState.PENDING,
        verbose_name=_("task state"),
    )
    result = models.JSONField(null=True, blank=True, verbose_name=_("task result"))
    create_at = models.DateTimeField(auto_now_add=True, db_index=True, verbose_name=_("created at"))
    start_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    finish_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))
    error_message = models.TextField(null=True, blank=True, verbose_name=_("error message"))  # noqa: DJ001 - the seed's field

    # Added to the seed's fields.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        db_index=False,  # covered by the (owner, create_at) index below
        on_delete=models.SET_NULL,
        related_name="long_time_tasks",
        verbose_name=_("owner"),
    )
    attempts = models.PositiveIntegerField(default=0, verbose_name=_("attempts"))
    worker = models.CharField(max_length=255, blank=True, default="", verbose_name=_("worker"))
    queue = models.CharField(max_length=100, blank=True, default="", verbose_name=_("queue"))
    priority = models.PositiveSmallIntegerField(default=5, verbose_name=_("priority"))
    retry_at = models.DateTimeField(null=True, blank=True, verbose_name=_("next attempt at"))
    error_code = models.CharField(max_length=50, blank=True, default="", verbose_name=_("error code"))
    error_traceback = models.TextField(blank=True, default="", verbose_name=_("traceback"))
    # Reliability: the current attempt's start and lease, and when a waiting row is due to be published again.
    claimed_at = models.DateTimeField(null=True, blank=True, verbose_name=_("attempt started at"))
    lease_expires_at = models.DateTimeField(null=True, blank=True, verbose_name=_("lease expires at"))
    redispatch_at = models.DateTimeField(null=True, blank=True, verbose_name=_("publish again at"))
    dispatch_count = models.PositiveIntegerField(default=0, verbose_name=_("publications"))
    # Operating tasks. The columns carry database defaults, so rows written by other tools (bulk loads,
    # older code during a rolling deploy) stay valid. None of them is indexed except the idempotency key:
    # progress writes stay HOT updates on PostgreSQL.
    progress = models.FloatField(null=True, blank=True, verbose_name=_("progress (%)"))
    progress_message = models.CharField(
        max_length=255, blank=True, default="", db_default="", verbose_name=_("progress message")
    )
    progress_current = models.BigIntegerField(null=True, blank=True, verbose_name=_("items done"))
    progress_total = models.BigIntegerField(null=True, blank=True, verbose_name=_("items in all"))
    progress_at = models.DateTimeField(null=True, blank=True, verbose_name=_("progress reported at"))
    cancel_requested_at = models.DateTimeField(null=True, blank=True, verbose_name=_("cancel requested at"))
    run_after = models.DateTimeField(null=True, blank=True, verbose_name=_("starts after"))
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        db_index=False,  # a partial index below: only the few rows that are retries
        on_delete=models.SET_NULL,
        related_name="retries",
        verbose_name=_("retry of"),
    )
    idempotency_key = models.CharField(  # noqa: DJ001 - NULL: no key (NULLs never collide in the unique constraint)
        max_length=255, null=True, blank=True, verbose_name=_("idempotency key")
    )
    # The W3C traceparent of the submit's span (tracing on; "" otherwise): a task published again later by the
    # sweeper or the reaper continues its submit's trace (long_time_task/tracing.py).
    traceparent = models.CharField(
        max_length=64, blank=True, default="", db_default="", editable=False, verbose_name=_("trace")
    )
    # A run of a schedule: which one, and the due time it is for (both NULL for every other task). The unique
    # constraint on the pair is what makes a due time run once, whatever runs the schedulers.
    schedule = models.ForeignKey(
        "long_time_task.Schedule",
        null=True,
        blank=True,
        db_index=False,  # the unique constraint's index leads with it
        on_delete=models.SET_NULL,
        related_name="runs",
        verbose_name=_("schedule"),
    )
    scheduled_for = models.DateTimeField(null=True, blank=True, verbose_name=_("scheduled for"))

    objects: ClassVar[LongTimeTaskQuerySet] = LongTimeTaskQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        db_table = "long_time_task"
        verbose_name = _("long-running task")
        verbose_name_plural = _("long-running tasks")
        ordering = ["-create_at", "-id"]
        # Each filter of the list (owner, state, task type) has an index in the list's exact order, ending in
        # id, so its first page is a short backward index scan whatever the data looks like. With an index
        # only on the filter column, PostgreSQL may prefer walking create_at backwards and filtering, which
        # reads millions of rows when the matching tasks are all old (measured: 2.3 s at 10M rows).
        indexes = [
            models.Index(fields=["state", "create_at", "id"], name="ltt_state_create_at"),
            models.Index(fields=["task_type", "create_at", "id"], name="ltt_type_create_at"),
            models.Index(fields=["owner", "create_at", "id"], name="ltt_owner_created"),
            # Partial: the rows that are not retries (nearly all) have no entry, so no transition pays for it.
            models.Index(fields=["retry_of"], name="ltt_retry_of", condition=models.Q(retry_of__isnull=False)),
            # A schedule's runs, newest first (the API's ?schedule=, the dashboard's schedule page): only runs have
            # an entry.
            models.Index(
                fields=["schedule", "create_at", "id"],
                name="ltt_schedule_runs",
                condition=models.Q(schedule__isnull=False),
            ),
        ]
        constraints = [
            # One task per (user, Idempotency-Key): a resubmission with the same key finds the first task.
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="ltt_owner_idempotency_key",
            ),
            # One run per (schedule, due time). NULLs never collide: tasks that are not runs have no entry.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"],
                condition=models.Q(schedule__isnull=False),
                name="ltt_schedule_due_time",
            ),
        ]
        permissions = [("view_all_tasks", _("Can view every user's tasks"))]

    def __str__(self) -> str:
        return f"{self.task_type}#{self.id} - {self.state}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def is_waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def duration(self) -> float | None:
        if self.start_at and self.finish_at:
            return (self.finish_at - self.start_at).total_seconds()
        return None


class AuditAction(models.TextChoices):
    CANCELLED = "cancelled", _("Cancelled")
    CANCEL_REQUESTED = "cancel_requested", _("Cancel requested")
    CANCEL_ENFORCED = "cancel_enforced", _("Stopped after the cancel grace period")
    RETRIED = "retried", _("Retried")
    RERUN = "rerun", _("Re-run")


class TaskAuditEvent(models.Model):
    """Who did what to a task, and when: cancels, retries and re-runs. Rows go with their task."""

    task = models.ForeignKey(
        LongTimeTask,
        on_delete=models.CASCADE,
        db_index=False,  # the (task, at) index serves it
        related_name="audit_events",
        verbose_name=_("task"),
    )
    action = models.CharField(max_length=30, choices=AuditAction.choices, verbose_name=_("action"))
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("by"),
    )
    # The actor's name at the time, kept if the user is deleted; "system" for the worker and commands.
    actor_name = models.CharField(max_length=150, blank=True, default="", verbose_name=_("by (name)"))
    at = models.DateTimeField(default=timezone.now, verbose_name=_("at"))
    new_task = models.ForeignKey(
        LongTimeTask,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("new task"),
    )
    note = models.CharField(max_length=255, blank=True, default="", verbose_name=_("note"))

    class Meta:
        db_table = "long_time_task_audit"
        verbose_name = _("task audit event")
        verbose_name_plural = _("task audit events")
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["task", "at"], name="ltt_audit_task_at")]

    def __str__(self) -> str:
        return f"{self.task_id} {self.action} by {self.actor_name or '-'}"


class TaskAttempt(models.Model):
    """One attempt of a task that ended without being the task's last word (a retry was scheduled), or that
    recovery ended (its worker process died, its lease expired). Written in the transaction of the guarded
    transition that ended it, with the worker, start and error that transition left on the task row.

    The current or last attempt of a task is described by the task row itself (``worker``, ``claimed_at``,
    ``finish_at``, ``state``, the error fields): a task that runs once and ends costs no row here.
    ``models.attempts.attempt_history`` puts both together. Rows go with their task.
    """

    task = models.ForeignKey(
        LongTimeTask,
        on_delete=models.CASCADE,
        db_index=False,  # the unique (task, number) index serves it
        related_name="recorded_attempts",
        verbose_name=_("task"),
    )
    number = models.PositiveIntegerField(verbose_name=_("attempt"))
    worker = models.CharField(max_length=255, blank=True, default="", verbose_name=_("worker"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    ended_at = models.DateTimeField(null=True, blank=True, verbose_name=_("ended at"))
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices, verbose_name=_("outcome"))
    cause = models.CharField(
        max_length=20, choices=AttemptCause.choices, blank=True, default="", verbose_name=_("ended by")
    )
    error_code = models.CharField(max_length=50, blank=True, default="", verbose_name=_("error code"))
    error_message = models.TextField(blank=True, default="", verbose_name=_("error message"))
    error_traceback = models.TextField(blank=True, default="", verbose_name=_("traceback"))

    class Meta:
        db_table = "long_time_task_attempt"
        verbose_name = _("task attempt")
        verbose_name_plural = _("task attempts")
        ordering = ["task_id", "number"]
        constraints = [models.UniqueConstraint(fields=["task", "number"], name="ltt_attempt_task_number")]

    def __str__(self) -> str:
        return f"{self.task_id} attempt {self.number}: {self.outcome}"

    @property
    def recorded(self) -> bool:
        """False for the current or last attempt, described by the task row rather than stored here."""
        return self.pk is not None

    @property
    def duration(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


TOKEN_PREFIX = "ltt_"  # noqa: S105 - a label, not a secret


def hash_token(raw: str) -> str:
    # Tokens are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """An API token. Only its SHA-256 is stored; the token itself is shown once, when it is created."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("user")
    )
    name = models.CharField(max_length=100, blank=True, default="", verbose_name=_("name"))
    key_prefix = models.CharField(max_length=12, verbose_name=_("key prefix"))
    key_hash = models.CharField(max_length=64, unique=True, verbose_name=_("key hash"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    expires_at = models.DateTimeField(null=True, blank=True, verbose_name=_("expires at"))
    revoked_at = models.DateTimeField(null=True, blank=True, verbose_name=_("revoked at"))

    objects: ClassVar[ApiTokenQuerySet] = ApiTokenQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: Any, *, name: str = "", expires_at: Any = None) -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns the row and the raw token (not stored anywhere)."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, key_prefix=raw[:12], key_hash=hash_token(raw), expires_at=expires_at
        )
        return token, raw


from .schedules import MisfirePolicy as MisfirePolicy  # noqa: E402
from .schedules import Schedule as Schedule  # noqa: E402
from .workers import WorkerHeartbeat as WorkerHeartbeat  # noqa: E402 - after the models it does not need

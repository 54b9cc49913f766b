"""The states of a task: the one vocabulary of the model layer, imported by the model and its QuerySet."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class TaskState(models.TextChoices):
    """States of a task. PENDING -> RUNNING -> FINISHED | FAILED | CANCELLED; RETRYING waits between attempts.

    A waiting task (PENDING, RETRYING) can be CANCELLED at once; a RUNNING one gets a cancel request first.
    """

    PENDING = "PENDING", _("Pending")
    RUNNING = "RUNNING", _("Running")
    RETRYING = "RETRYING", _("Waiting to retry")
    FINISHED = "FINISHED", _("Finished")
    FAILED = "FAILED", _("Failed")
    CANCELLED = "CANCELLED", _("Cancelled")


TERMINAL_STATES = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED})
WAITING_STATES = frozenset({TaskState.PENDING, TaskState.RETRYING})


class AttemptOutcome(models.TextChoices):
    """What became of the task when one attempt ended."""

    RETRY = "retry", _("Retry scheduled")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")
    FINISHED = "finished", _("Finished")
    RUNNING = "running", _("Running")  # only the current attempt, described by the task row


class AttemptCause(models.TextChoices):
    """Who ended an attempt, when its own worker could not: empty when the worker recorded the outcome itself."""

    NONE = "", _("Ended in its worker")
    WORKER_LOST = "worker_lost", _("Worker lost")  # the worker's main process saw the child running it die
    LEASE_EXPIRED = "lease_expired", _("Lease expired")  # the reaper found its lease not renewed

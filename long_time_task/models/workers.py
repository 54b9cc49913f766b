"""Which workers are alive, and which queues each consumes: one row per worker, kept by its lease heartbeat.

The broker cannot say who consumes a queue on every transport (Redis has no notion of a consumer), and asking
the workers (``celery inspect``) is a broadcast round trip of a second or more that the SQLAlchemy transport
cannot carry. The heartbeat thread in every worker's main process already writes to the database every
``HEARTBEAT_INTERVAL``; it also writes this row. A worker is alive while its row was written within
``LEASE_SECONDS`` by the database's clock: the same rule by which its running tasks are considered lost, so
the two never disagree. A worker that stops cleanly marks its row stopped at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import ClassVar

from django.db import IntegrityError, models, transaction
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _


def _db_now_minus(seconds: float) -> models.Expression:
    return models.ExpressionWrapper(
        Now() - models.Value(timedelta(seconds=seconds)), output_field=models.DateTimeField()
    )


class WorkerHeartbeatQuerySet(models.QuerySet["WorkerHeartbeat"]):
    def alive(self, within: float) -> WorkerHeartbeatQuerySet:
        """Workers that wrote their row less than ``within`` seconds ago and have not stopped."""
        return self.filter(stopped_at__isnull=True, last_seen_at__gte=_db_now_minus(within))

    def beat(self, hostname: str, *, queues: Iterable[str], pid: int, concurrency: int | None) -> None:
        """The worker ``hostname`` is alive and consumes ``queues``: one UPDATE (an INSERT the first time)."""
        values = {"queues": sorted(set(queues)), "pid": pid, "concurrency": concurrency}
        if self.filter(hostname=hostname).update(**values, last_seen_at=Now(), stopped_at=None):
            return
        try:
            with transaction.atomic(using=self.db):
                self.create(hostname=hostname, **values, started_at=Now(), last_seen_at=Now())
        except IntegrityError:  # another process of the same name won the insert: write over it
            self.filter(hostname=hostname).update(**values, last_seen_at=Now(), stopped_at=None)

    def started(self, hostname: str, *, queues: Iterable[str], pid: int, concurrency: int | None) -> None:
        """A worker (re)started: its row says so, with a new start time."""
        self.beat(hostname, queues=queues, pid=pid, concurrency=concurrency)
        self.filter(hostname=hostname).update(started_at=Now())

    def stopped(self, hostname: str) -> int:
        """A clean shutdown: the worker no longer consumes anything, from now on."""
        return self.filter(hostname=hostname, stopped_at__isnull=True).update(stopped_at=Now())

    def stale(self, older_than: float) -> WorkerHeartbeatQuerySet:
        """Rows not written for ``older_than`` seconds: workers long gone (the purge deletes them)."""
        return self.filter(last_seen_at__lt=_db_now_minus(older_than))


class WorkerHeartbeat(models.Model):
    """A Celery worker, as its lease heartbeat last described it."""

    hostname = models.CharField(max_length=255, unique=True, verbose_name=_("worker"))
    queues = models.JSONField(default=list, verbose_name=_("queues"))
    pid = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("main process ID"))
    concurrency = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("concurrency"))
    started_at = models.DateTimeField(verbose_name=_("started at"))
    last_seen_at = models.DateTimeField(verbose_name=_("last heartbeat at"))
    stopped_at = models.DateTimeField(null=True, blank=True, verbose_name=_("stopped at"))

    objects: ClassVar[WorkerHeartbeatQuerySet] = WorkerHeartbeatQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        db_table = "long_time_task_worker"
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname

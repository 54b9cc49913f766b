"""Retention: finished tasks older than their retention are deleted in batches, with their result files.

Run periodically by Celery beat (``purge_expired_tasks``, with each type's ``retention_days`` or
``LONG_TIME_TASK_RETENTION_DAYS``) and on demand by ``manage.py purge_tasks --older-than 30d``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import conf
from .models import TERMINAL_STATES, LongTimeTask, WorkerHeartbeat
from .models.querysets import LongTimeTaskQuerySet
from .registry import LongTimeTaskRegister

logger = logging.getLogger(__name__)

FORGET_WORKERS_AFTER = 7 * 86400  # seconds: the row of a worker not seen for a week goes with the periodic purge


@dataclass
class PurgeResult:
    tasks: int = 0
    files: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def result_files(task_type: str, result: Any) -> list[Path]:
    """The files a result names, resolved inside RESULTS_DIR (anything pointing outside it is ignored).

    Only task types that declare ``result_files`` in the registry have files: a result is the handler's
    output, and a handler that echoed its input into a key such as ``output_file`` would otherwise let one
    user download (and the purge delete) a file of another user's task.
    """
    config = LongTimeTaskRegister.get_task(task_type)
    if config is None or config.result_files is None or not isinstance(result, dict):
        return []
    names: Iterable[Any] = config.result_files(result)
    root = conf.RESULTS_DIR.resolve()
    files = []
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        path = (root / name).resolve()
        if path.is_relative_to(root) and path != root:
            files.append(path)
    return files


def expired(
    older_than: timedelta,
    *,
    now: datetime,
    states: Iterable[str] | None = None,
    task_types: Iterable[str] | None = None,
) -> LongTimeTaskQuerySet:
    """Finished tasks whose finish is older than ``older_than``."""
    cutoff = now - older_than
    chosen = TERMINAL_STATES if states is None else frozenset(states)
    if not chosen <= TERMINAL_STATES:
        raise ValueError(f"only finished tasks can be purged, not {sorted(chosen - TERMINAL_STATES)}")
    # finish_at >= create_at, so the create_at bound changes nothing but lets the (state, create_at) index help.
    rows = LongTimeTask.objects.filter(state__in=sorted(chosen), finish_at__lt=cutoff, create_at__lt=cutoff)
    if task_types is not None:
        rows = rows.filter(task_type__in=sorted(task_types))
    return rows


def retention_groups(now: datetime) -> Iterator[LongTimeTaskQuerySet]:
    """One queryset per retention: each registered type with its own, then every other type with the global."""
    own = {}
    for config in LongTimeTaskRegister.get_all_tasks().values():
        if config.retention_days is not None:
            own[config.name] = config.retention_days
            yield expired(timedelta(days=config.retention_days), now=now, task_types=[config.name])
    if conf.RETENTION_DAYS is not None:
        yield expired(timedelta(days=conf.RETENTION_DAYS), now=now).exclude(task_type__in=sorted(own))


def purge(rows: LongTimeTaskQuerySet, *, dry_run: bool = False, batch: int | None = None) -> PurgeResult:
    """Delete ``rows`` (and their result files) in batches, one transaction each; or only count them."""
    batch = batch or conf.PURGE_BATCH
    outcome = PurgeResult()
    last_id = 0
    while True:
        chunk = list(rows.filter(id__gt=last_id).order_by("id").values_list("id", "task_type", "result")[:batch])
        if not chunk:
            return outcome
        last_id = chunk[-1][0]
        files = [path for _, task_type, result in chunk for path in result_files(task_type, result)]
        if not dry_run:
            with transaction.atomic():
                LongTimeTask.objects.filter(id__in=[row[0] for row in chunk]).delete()
            for path in files:  # after the commit: a rolled-back delete keeps its files
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError:
                    logger.exception("Could not delete result file %s", path)
                    continue
                outcome.files += 1
        else:
            outcome.files += sum(1 for path in files if path.exists())
        outcome.tasks += len(chunk)
        for _, task_type, _ in chunk:
            outcome.by_type[task_type] = outcome.by_type.get(task_type, 0) + 1


def purge_expired_tasks(*, now: datetime | None = None, dry_run: bool = False) -> PurgeResult:
    """The periodic purge: every type by its retention. Does nothing when no retention is set."""
    now = now or timezone.now()
    total = PurgeResult()
    for rows in retention_groups(now):
        outcome = purge(rows, dry_run=dry_run)
        total.tasks += outcome.tasks
        total.files += outcome.files
        for name, count in outcome.by_type.items():
            total.by_type[name] = total.by_type.get(name, 0) + count
    if total.tasks and not dry_run:
        logger.info("Purged %s expired task(s) and %s result file(s)", total.tasks, total.files)
    if not dry_run:
        WorkerHeartbeat.objects.stale(FORGET_WORKERS_AFTER).delete()
    return total

"""Schedules declared in code, kept in step with the database by ``migrate`` (and ``tasks schedules sync``).

Two places declare them: a task type's ``schedule=`` (``LongTimeTaskRegister.register(..., schedule="0 3 * * *")``,
or a mapping of fields), and the setting ``LONG_TIME_TASK_SCHEDULES`` (a name for each, mapped to its fields).
Each becomes a ``Schedule`` row with a ``code_name`` (``"type:<task type>"``, ``"settings:<name>"``); rows without
one are users' and are never touched here.

On each sync, a declared schedule that has no row gets one (enabled, planned from now); one whose row differs gets
the code's fields (re-planned when its timing changed), keeping whether it is paused: an operator who paused it in
the admin keeps it paused across deploys. A row whose declaration is gone is paused, saying so (not deleted: its
runs keep their link), and resumed if the declaration comes back.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..conf import conf
from ..models import Schedule
from ..registry import InvalidParams, LongTimeTaskRegister, UnknownTaskType
from . import service
from .timing import InvalidSchedule

logger = logging.getLogger(__name__)

GONE = "No longer declared in the code."
# What a declaration may set; ``enabled`` is the operator's, and the owner is none (server code's).
FIELDS = tuple(name for name in service.EDITABLE if name != "enabled")


class InvalidDeclaration(ValueError):  # noqa: N818 - reads better at the call site
    pass


def declarations() -> dict[str, dict[str, Any]]:
    """Every schedule the code declares, by ``code_name``, as Schedule fields."""
    found: dict[str, dict[str, Any]] = {}
    for config in LongTimeTaskRegister.get_all_tasks().values():
        if config.schedule is None:
            continue
        spec = {"cron": config.schedule} if isinstance(config.schedule, str) else dict(config.schedule)
        found[f"type:{config.name}"] = {"name": config.name, "task_type": config.name, **spec}
    declared: Any = conf.SCHEDULES
    for name, spec in (declared or {}).items():
        if not isinstance(spec, Mapping):
            raise InvalidDeclaration(f"LONG_TIME_TASK_SCHEDULES[{name!r}] must be a mapping of schedule fields.")
        found[f"settings:{name}"] = {"name": str(name), **spec}
    return found


class Schema:
    """The model's defaults for what a declaration leaves out."""

    misfire = Schedule._meta.get_field("misfire").default
    misfire_limit = Schedule._meta.get_field("misfire_limit").default


def candidate(code_name: str, spec: dict[str, Any], existing: Schedule | None) -> Schedule:
    """The row as the code says it should be (``existing`` updated in memory, or a new one)."""
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise InvalidDeclaration(f"{code_name}: unknown field(s) {', '.join(sorted(unknown))}.")
    schedule = existing or Schedule(code_name=code_name, owner=None, enabled=True)
    defaults: dict[str, Any] = {
        "params": {},
        "cron": "",
        "interval_seconds": None,
        "run_at": None,
        "timezone": settings.TIME_ZONE or "UTC",
        "start_at": None,
        "end_at": None,
        "misfire": Schema.misfire,
        "misfire_limit": Schema.misfire_limit,
        "skip_if_running": False,
    }
    for name, value in {**defaults, **spec}.items():
        setattr(schedule, name, value)
    try:
        service.validate(schedule, user=None)
    except InvalidSchedule as exc:
        raise InvalidDeclaration(f"{code_name}: {exc.field}: {exc.message}") from None
    except (InvalidParams, UnknownTaskType) as exc:
        raise InvalidDeclaration(f"{code_name}: {exc}") from None
    return schedule


TIMING = ("cron", "interval_seconds", "run_at", "timezone", "start_at", "end_at")


def sync() -> dict[str, int]:
    """Bring the declared schedules' rows in step with the code. Returns counts: created, updated, unchanged,
    paused (declarations gone), resumed (declarations back). InvalidDeclaration for a declaration that a user's
    schedule would be refused for (the same checks)."""
    declared = declarations()
    counts: Counter[str] = Counter()
    now = timezone.now()
    with transaction.atomic():
        rows = {str(s.code_name): s for s in Schedule.objects.select_for_update().filter(code_name__isnull=False)}
        for code_name, spec in declared.items():
            existing = rows.get(code_name)
            before = {name: getattr(existing, name) for name in FIELDS} if existing else None
            schedule = candidate(code_name, spec, existing)
            after = {name: getattr(schedule, name) for name in FIELDS}
            resumed = existing is not None and existing.paused_reason == GONE
            if resumed:
                schedule.enabled, schedule.paused_reason = True, ""
                counts["resumed"] += 1
            elif before == after:
                counts["unchanged"] += 1
                continue
            # A new timing (or a comeback) is planned from now; other changes keep the pending due time.
            replan = before is None or resumed or any(before[name] != after[name] for name in TIMING)
            service.save_planned(schedule, now, replan=replan)
            if not resumed:
                counts["created" if before is None else "updated"] += 1
        for name, row in rows.items():
            if name not in declared and row.paused_reason != GONE:
                Schedule.objects.filter(id=row.id).update(enabled=False, paused_reason=GONE, updated_at=now)
                counts["paused"] += 1
    if counts["created"] or counts["updated"] or counts["paused"] or counts["resumed"]:
        logger.info("Declared schedules: %s", dict(counts))
    return dict(counts)

"""The one door to tasks: the API, the admin and the management commands submit and read through here."""

from __future__ import annotations

import functools
import json
import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import conf
from .dispatch import publish
from .models import LongTimeTask, TaskState
from .querysets import LongTimeTaskQuerySet
from .registry import InvalidParams, LongTimeTaskRegister, TaskConfig

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
        raise QuotaExceeded(f"You already have {limit} unfinished tasks; wait for some to finish.")


def submit_task(task_type: str, params: dict[str, Any] | None = None, *, owner: Any = None) -> LongTimeTask:
    """Validate, write the row once, and publish it after the transaction commits.

    The Celery id is generated before the insert, so there is exactly one write. If the broker refuses the
    message, the committed row stays PENDING (and is logged); the caller still gets the row.
    """
    params = {} if params is None else params
    config = validate_submission(task_type, params)
    check_quota(owner)
    # If the publish after commit never happens (broker down, process killed), the sweeper publishes the row
    # once redispatch_at is due. A successful publish leaves it: one INSERT and one publish per submit.
    redispatch_at = timezone.now() + timedelta(seconds=conf.REDISPATCH_AFTER)
    # One INSERT, in its own implicit transaction (no BEGIN/COMMIT round trips), or in the caller's: then the
    # publish waits for the caller's commit.
    task = LongTimeTask.objects.create(
        redispatch_at=redispatch_at,
        task_type=config.name,
        task_params=params,
        state=TaskState.PENDING,
        owner=owner if owner is not None and getattr(owner, "is_authenticated", False) else None,
        queue=config.queue,
        priority=config.priority,
    )
    transaction.on_commit(functools.partial(publish, task, attempt=1))
    logger.info("Task %s submitted: %s", task.id, task_type)
    return task


def visible_tasks(user: Any) -> LongTimeTaskQuerySet:
    """The tasks ``user`` may see (a QuerySet)."""
    return LongTimeTask.objects.visible_to(user)


def get_task(task_id: int, *, user: Any) -> LongTimeTask | None:
    """The task, if it exists and ``user`` may see it; None otherwise (the two are indistinguishable)."""
    if not 0 < task_id < 2**63:
        return None
    task: LongTimeTask | None = visible_tasks(user).select_related("owner").filter(id=task_id).first()
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

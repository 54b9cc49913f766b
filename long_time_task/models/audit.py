"""The audit trail: one row per cancel, retry or re-run, with who did it and when."""

from __future__ import annotations

from typing import Any

from . import TaskAuditEvent

SYSTEM = "system"


def actor_fields(actor: Any) -> dict[str, Any]:
    """The actor of an action: a user, or the system (the worker, a management command without --user)."""
    if actor is not None and getattr(actor, "is_authenticated", False):
        return {"actor": actor, "actor_name": actor.get_username()[:150]}
    return {"actor": None, "actor_name": SYSTEM}


def record(task_id: int, action: str, *, actor: Any, new_task_id: int | None = None, note: str = "") -> TaskAuditEvent:
    return TaskAuditEvent.objects.create(
        task_id=task_id, action=action, new_task_id=new_task_id, note=note[:255], **actor_fields(actor)
    )

"""What a handler's context says about who submitted its task (in-process: the executor against the test database)."""

from __future__ import annotations

from typing import Any

import pytest

from long_time_task.context import TaskContext, activate, current_context, current_owner, deactivate
from long_time_task.models import LongTimeTask
from long_time_task.registry import LongTimeTaskRegister
from long_time_task.worker.executor import Executor

pytestmark = pytest.mark.django_db


def who_submitted(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """A seed-signature handler: the module-level helpers tell it who submitted the task."""
    context = current_context()
    assert context is not None
    owner = current_owner()
    return {"owner_id": context.owner_id, "username": owner.username if owner is not None else None}


def who_submitted_with_context(task_id: int, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {"owner_id": context.owner_id, "username": context.owner.username if context.owner else None}


@pytest.fixture
def registered() -> Any:
    with LongTimeTaskRegister.isolated():
        LongTimeTaskRegister.register(task_type="ctx_owner_helper")(who_submitted)
        LongTimeTaskRegister.register(task_type="ctx_owner_param")(who_submitted_with_context)
        yield


@pytest.mark.parametrize("task_type", ["ctx_owner_helper", "ctx_owner_param"])
def test_a_handler_knows_who_submitted_its_task(registered, user, task_type):
    task = LongTimeTask.objects.create(task_type=task_type, task_params={}, owner=user)
    assert Executor(worker="unit@test").run(task.id, 1) == "finished"
    task.refresh_from_db()
    assert task.result == {"owner_id": user.pk, "username": "alice"}


def test_a_task_without_owner_has_none(registered):
    task = LongTimeTask.objects.create(task_type="ctx_owner_helper", task_params={})
    assert Executor(worker="unit@test").run(task.id, 1) == "finished"
    task.refresh_from_db()
    assert task.result == {"owner_id": None, "username": None}


def test_the_owner_is_loaded_only_when_asked_and_once(user, django_assert_num_queries):
    with django_assert_num_queries(0):
        context = TaskContext(1, 1, owner_id=user.pk)
        assert context.owner_id == user.pk
    with django_assert_num_queries(1):
        assert context.owner == user
    with django_assert_num_queries(0):
        assert context.owner == user


def test_an_owner_deleted_since_the_submit_is_no_one(user):
    context = TaskContext(1, 1, owner_id=user.pk)
    user.delete()
    assert context.owner is None and context.owner_id is not None


def test_current_owner_is_none_outside_a_task_and_the_owner_inside(user):
    assert current_owner() is None
    token = activate(TaskContext(1, 1, owner_id=user.pk))
    try:
        assert current_owner() == user
    finally:
        deactivate(token)
    assert current_owner() is None

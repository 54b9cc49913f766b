"""The JSON API of the seed (§5): submit, detail and list, behind authentication; plus the task types."""

from __future__ import annotations

import math
from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from . import services
from .conf import conf
from .errors import ApiError
from .limits import SubmitRateThrottle
from .pagination import InvalidCursor, after_cursor, capped_count, encode_cursor
from .registry import InvalidParams, LongTimeTaskRegister, UnknownTaskType
from .serializers import (
    ErrorResponseSerializer,
    ListQuerySerializer,
    SubmitResponseSerializer,
    SubmitSerializer,
    TaskDetailResponseSerializer,
    TaskDetailSerializer,
    TaskListItemSerializer,
    TaskListResponseSerializer,
    TaskTypesResponseSerializer,
)

QUOTA_RETRY_AFTER = 30  # seconds: a hint, the cap frees up as tasks finish


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error envelope, documented for each of ``statuses`` (401 everywhere: all endpoints need a login)."""
    return {code: OpenApiResponse(ErrorResponseSerializer) for code in sorted({401, *statuses})}


LIST_SCHEMA: dict[str, Any] = {
    "parameters": [ListQuerySerializer],
    "responses": {200: TaskListResponseSerializer, **errors(400, 404, 405, 406)},
    "description": (
        "The caller's tasks (staff: everyone's), newest first. `total` is exact up to 10,000 tasks, then an "
        "estimate (`total_is_estimate`). Page numbers reach 10,000 tasks deep; beyond, follow `next_cursor` "
        "(pass it as `cursor`), which stays fast at any depth. A page beyond the last answers 404."
    ),
}


class TaskListView(APIView):
    """``GET``: the tasks the caller may see, newest first, filtered by ``state`` and ``task_type``."""

    @extend_schema(operation_id="tasks_list", **LIST_SCHEMA)
    def get(self, request: Request) -> Response:
        query = ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        tasks = services.visible_tasks(request.user).select_related("owner")
        if "state" in q:
            tasks = tasks.filter(state=q["state"])
        if "task_type" in q:
            tasks = tasks.filter(task_type=q["task_type"])
        page, page_size = q["page"], q["page_size"]
        total, estimated = capped_count(tasks, conf.LIST_COUNT_CAP)
        total_pages = max(1, math.ceil(total / page_size))
        if "cursor" in q:
            if page != 1:
                raise ApiError(_("Use either page or cursor, not both."), code="invalid_request")
            try:
                tasks = after_cursor(tasks, q["cursor"])
            except InvalidCursor as exc:
                raise ApiError(str(exc), code="invalid_cursor") from None
            offset = 0
        else:
            if page > total_pages and not estimated:
                raise ApiError(
                    _("Page %(page)s is out of range: the last page is %(last)s.")
                    % {"page": page, "last": total_pages},
                    code="page_out_of_range",
                    status_code=status.HTTP_404_NOT_FOUND,
                )
            offset = (page - 1) * page_size
            if offset > conf.MAX_LIST_OFFSET:
                raise ApiError(
                    _("Page %(page)s is too deep for page numbers: follow next_cursor instead.") % {"page": page},
                    code="page_too_deep",
                )
        rows = list(tasks[offset : offset + page_size + 1])
        more = len(rows) > page_size
        rows = rows[:page_size]
        if estimated and not more and "cursor" not in q:
            # The last page: the estimate is replaced by the exact total.
            total, estimated = offset + len(rows), False
            total_pages = max(1, math.ceil(total / page_size))
            if not rows and page > 1:
                raise ApiError(
                    _("Page %(page)s is out of range: the last page is %(last)s.")
                    % {"page": page, "last": total_pages},
                    code="page_out_of_range",
                    status_code=status.HTTP_404_NOT_FOUND,
                )
        return Response(
            {
                "success": True,
                "tasks": TaskListItemSerializer(rows, many=True, context={"request": request}).data,
                "total": total,
                "page": page,
                "page_size": page_size,
                "total_pages": total_pages,
                "total_is_estimate": estimated,
                "next_cursor": encode_cursor(rows[-1].create_at, rows[-1].id) if more else None,
            }
        )


class TaskSubmitView(TaskListView):
    """``POST``: submit a task. ``GET``: the list, as on ``/api/tasks/list/``."""

    def get_throttles(self) -> list[BaseThrottle]:
        return [SubmitRateThrottle()] if self.request.method == "POST" else []

    @extend_schema(operation_id="tasks_list_root", **LIST_SCHEMA)
    def get(self, request: Request) -> Response:
        return super().get(request)

    @extend_schema(
        operation_id="tasks_submit",
        request=SubmitSerializer,
        responses={201: SubmitResponseSerializer, **errors(400, 403, 405, 406, 413, 415, 429)},
        description=(
            "Submit a task. `params` must match the task type's JSON Schema (see the per-type request schemas "
            "and GET /api/task-types/). The queue and priority come from the registry."
        ),
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApiError(_("The request body must be a JSON object."), code="invalid_request")
        data = SubmitSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        try:
            task = services.submit_task(
                data.validated_data["task_type"], data.validated_data["params"], owner=request.user
            )
        except (InvalidParams, UnknownTaskType) as exc:  # e.g. the input file vanished since validation
            raise ApiError(str(exc), code="invalid_params") from None
        except services.QuotaExceeded as exc:
            raise Throttled(wait=QUOTA_RETRY_AFTER, detail=str(exc), code="too_many_unfinished") from None
        return Response(
            {
                "success": True,
                "task_id": task.id,
                "state": task.state,
                "message": _("Task submitted successfully"),
            },
            status=status.HTTP_201_CREATED,
        )


class TaskDetailView(APIView):
    """``GET``: one task. Another user's task answers 404, exactly like a task that does not exist."""

    @extend_schema(
        operation_id="tasks_detail",
        responses={200: TaskDetailResponseSerializer, **errors(404, 405, 406)},
        description="One task. Another user's task answers 404, exactly like one that does not exist.",
    )
    def get(self, request: Request, task_id: int) -> Response:
        task = services.get_task(task_id, user=request.user)
        if task is None:
            raise ApiError(_("Task not found"), code="not_found", status_code=status.HTTP_404_NOT_FOUND)
        return Response({"success": True, "task": TaskDetailSerializer(task, context={"request": request}).data})


class TaskTypeListView(APIView):
    """``GET``: the task types the caller may submit, with their limits and JSON Schemas."""

    @extend_schema(operation_id="task_types_list", responses={200: TaskTypesResponseSerializer, **errors(405, 406)})
    def get(self, request: Request) -> Response:
        types: list[dict[str, Any]] = [
            {
                "task_type": config.name,
                "description": config.description,
                "queue": config.queue,
                "priority": config.priority,
                "timeout": config.timeout,
                "soft_timeout": config.soft_timeout,
                "max_retries": config.max_retries,
                "param_schema": config.param_schema,
            }
            for config in sorted(LongTimeTaskRegister.get_all_tasks().values(), key=lambda c: c.name)
            if config.may_submit(request.user)
        ]
        return Response({"success": True, "task_types": types})

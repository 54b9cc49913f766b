"""The JSON API of the seed (§5): submit, detail and list, behind authentication."""

from __future__ import annotations

import math

from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .errors import ApiError
from .serializers import ListQuerySerializer, SubmitSerializer, TaskDetailSerializer, TaskListItemSerializer


class TaskListView(APIView):
    """``GET``: the tasks the caller may see, newest first, filtered by ``state`` and ``task_type``."""

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
        total = tasks.count()
        total_pages = max(1, math.ceil(total / page_size))
        if page > total_pages:
            raise ApiError(
                _("Page %(page)s is out of range: the last page is %(last)s.") % {"page": page, "last": total_pages},
                code="page_out_of_range",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        offset = (page - 1) * page_size
        rows = tasks[offset : offset + page_size]
        return Response(
            {
                "success": True,
                "tasks": TaskListItemSerializer(rows, many=True, context={"request": request}).data,
                "total": total,
                "page": page,
                "page_size": page_size,
                "total_pages": total_pages,
            }
        )


class TaskSubmitView(TaskListView):
    """``POST``: submit a task. ``GET``: the list, as on ``/api/tasks/list/``."""

    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApiError(_("The request body must be a JSON object."), code="invalid_request")
        data = SubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task = services.submit_task(data.validated_data["task_type"], data.validated_data["params"], owner=request.user)
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

    def get(self, request: Request, task_id: int) -> Response:
        task = services.get_task(task_id, user=request.user)
        if task is None:
            raise ApiError(_("Task not found"), code="not_found", status_code=status.HTTP_404_NOT_FOUND)
        return Response({"success": True, "task": TaskDetailSerializer(task, context={"request": request}).data})

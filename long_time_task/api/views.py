"""The JSON API of the seed (§5): submit, detail and list, behind authentication; plus the task types."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from ..conf import conf
from ..pagination import InvalidCursor, after_cursor, capped_count, encode_cursor, fetch_page
from ..registry import InvalidParams, LongTimeTaskRegister, UnknownTaskType
from .errors import ApiError
from .serializers import (
    CancelResponseSerializer,
    ErrorResponseSerializer,
    ListQuerySerializer,
    RetryResponseSerializer,
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
        "(pass it as `cursor`), which stays fast at any depth; a page reached by cursor has `page: null`, and "
        "`page` is ignored when `cursor` is given. A page beyond the last answers 404. An empty query "
        "parameter (`?task_type=`) is refused like any other invalid value. `schedule` lists one schedule's "
        "runs: each task names its `schedule` and the due time it ran for (`scheduled_for`; null for a run "
        "started by hand)."
    ),
}


class TaskListView(APIView):
    """``GET``: the tasks the caller may see, newest first, filtered by ``state`` and ``task_type``."""

    @extend_schema(operation_id="tasks_list", **LIST_SCHEMA)
    def get(self, request: Request) -> Response:
        query = ListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        q = query.validated_data
        # The list shows no params, result or error text: leave those (possibly large) columns unread.
        tasks = (
            services.visible_tasks(request.user)
            .select_related("owner")
            .defer("task_params", "result", "error_message", "error_traceback")
        )
        if "state" in q:
            tasks = tasks.filter(state=q["state"])
        if "task_type" in q:
            tasks = tasks.filter(task_type=q["task_type"])
        if "schedule" in q:
            tasks = tasks.filter(schedule_id=q["schedule"])
        page_size = q["page_size"]
        page: int | None = None  # unknown on a cursor page; a cursor makes ``page`` ignored
        total, estimated = capped_count(tasks, conf.LIST_COUNT_CAP)
        total_pages = max(1, math.ceil(total / page_size))
        if "cursor" in q:
            try:
                tasks = after_cursor(tasks, q["cursor"])
            except InvalidCursor as exc:
                raise ApiError(str(exc), code="invalid_cursor") from None
            offset = 0
        else:
            page = number = q["page"]
            if number > total_pages and not estimated:
                raise ApiError(
                    _("Page %(page)s is out of range: the last page is %(last)s.")
                    % {"page": number, "last": total_pages},
                    code="page_out_of_range",
                    status_code=status.HTTP_404_NOT_FOUND,
                )
            offset = (number - 1) * page_size
            if offset > conf.MAX_LIST_OFFSET:
                raise ApiError(
                    _("Page %(page)s is too deep for page numbers: follow next_cursor instead.") % {"page": number},
                    code="page_too_deep",
                )
        rows = fetch_page(tasks, offset, page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        if estimated and not more and "cursor" not in q:
            # The last page: the estimate is replaced by the exact total.
            total, estimated = offset + len(rows), False
            total_pages = max(1, math.ceil(total / page_size))
            if not rows and page is not None and page > 1:
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

    @extend_schema(operation_id="tasks_list_root", **LIST_SCHEMA)
    def get(self, request: Request) -> Response:
        return super().get(request)

    @extend_schema(
        operation_id="tasks_submit",
        request=SubmitSerializer,
        responses={
            201: SubmitResponseSerializer,
            200: OpenApiResponse(SubmitResponseSerializer, description="A replay of an earlier Idempotency-Key."),
            **errors(400, 403, 405, 406, 409, 413, 415, 429),
        },
        description=(
            "Submit a task. `params` must match the task type's JSON Schema (see the per-type request schemas "
            "and GET /api/task-types/). The queue and priority come from the registry. `run_after` or "
            "`countdown` delays the start. With an `Idempotency-Key` header, a repeat of the same request by the "
            "same user returns the first task (200, `Idempotent-Replayed: true`) instead of creating another; "
            "the same key with a different task type or params answers 409."
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                pattern=services.IDEMPOTENCY_KEY.pattern,
                description="1-255 printable ASCII characters, no spaces; one task per key and user.",
            )
        ],
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApiError(_("The request body must be a JSON object."), code="invalid_request")
        data = SubmitSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        q = data.validated_data
        key = request.headers.get("Idempotency-Key")
        with service_errors():
            submission = services.submit(
                q["task_type"],
                q["params"],
                owner=request.user,
                run_after=q.get("run_after"),
                countdown=q.get("countdown"),
                idempotency_key=key,
            )
        task = submission.task
        response = Response(
            {
                "success": True,
                "task_id": task.id,
                "state": task.state,
                "message": _("Task submitted successfully"),
            },
            status=status.HTTP_201_CREATED if submission.created else status.HTTP_200_OK,
        )
        if key is not None:
            response["Idempotent-Replayed"] = "false" if submission.created else "true"
        return response


@contextmanager
def service_errors() -> Iterator[None]:
    """The service layer's exceptions as API errors (a status and a stable code)."""
    try:
        yield
    except services.TaskNotFound:
        raise ApiError(_("Task not found"), code="not_found", status_code=status.HTTP_404_NOT_FOUND) from None
    except services.NotPermitted as exc:
        raise ApiError(str(exc), code="permission_denied", status_code=status.HTTP_403_FORBIDDEN) from None
    except services.ActionNotAllowed as exc:
        raise ApiError(str(exc), code=exc.code, status_code=status.HTTP_409_CONFLICT) from None
    except services.IdempotencyConflict as exc:
        raise ApiError(str(exc), code="idempotency_key_reused", status_code=status.HTTP_409_CONFLICT) from None
    except (InvalidParams, UnknownTaskType) as exc:  # e.g. the input file vanished since validation
        raise ApiError(str(exc), code="invalid_params") from None
    except services.QuotaExceeded as exc:
        raise Throttled(wait=QUOTA_RETRY_AFTER, detail=str(exc), code="too_many_unfinished") from None
    except services.SubmitRateExceeded as exc:  # DRF adds the wait to the message, and Retry-After
        raise Throttled(wait=exc.wait, detail=exc.reason, code="throttled") from None


class TaskCancelView(APIView):
    """``POST``: cancel a task (see ``services.cancel_task``)."""

    @extend_schema(
        operation_id="tasks_cancel",
        request=None,
        responses={
            200: OpenApiResponse(CancelResponseSerializer, description="Cancelled: it had not started."),
            202: OpenApiResponse(CancelResponseSerializer, description="Running: asked to stop."),
            **errors(403, 404, 405, 406, 409, 413),
        },
        description=(
            "Cancel a task. A waiting task (PENDING, RETRYING, or delayed) becomes CANCELLED at once (200) and "
            "never runs. A RUNNING task is asked to stop (202): its handler sees the request, and if it has not "
            "stopped after the grace period (LONG_TIME_TASK_CANCEL_GRACE_SECONDS) the process running it is "
            "killed; it then ends CANCELLED. A finished task answers 409. Owner and staff only (403)."
        ),
    )
    def post(self, request: Request, task_id: int) -> Response:
        with service_errors():
            outcome = services.cancel_task(task_id, user=request.user)
        task = outcome.task
        return Response(
            {
                "success": True,
                "task_id": task.id,
                "state": task.state,
                "cancel_requested": not outcome.cancelled,
                "message": _("Task cancelled")
                if outcome.cancelled
                else _("Cancellation requested; the task is stopping"),
            },
            status=status.HTTP_200_OK if outcome.cancelled else status.HTTP_202_ACCEPTED,
        )


class TaskRetryView(APIView):
    """``POST``: a new task with the same type and params, linked to this one (FAILED or CANCELLED)."""

    rerun = False

    @extend_schema(
        operation_id="tasks_retry",
        request=None,
        responses={201: RetryResponseSerializer, **errors(400, 403, 404, 405, 406, 409, 413, 429)},
        description=(
            "Retry a FAILED or CANCELLED task: a new task with the same type and params, owned by the caller, "
            "with `retry_of` pointing at this one (which keeps its history). A FINISHED task answers 409: "
            "re-run it. Owner and staff only."
        ),
    )
    def post(self, request: Request, task_id: int) -> Response:
        with service_errors():
            new = services.retry_task(task_id, user=request.user, rerun=self.rerun)
        return Response(
            {
                "success": True,
                "task_id": new.id,
                "state": new.state,
                "retry_of": task_id,
                "message": _("Task submitted successfully"),
            },
            status=status.HTTP_201_CREATED,
        )


class TaskRerunView(TaskRetryView):
    """``POST``: run a finished (or failed, or cancelled) task again, as a new linked task."""

    rerun = True

    @extend_schema(
        operation_id="tasks_rerun",
        request=None,
        responses={201: RetryResponseSerializer, **errors(400, 403, 404, 405, 406, 409, 413, 429)},
        description=(
            "Re-run a FINISHED, FAILED or CANCELLED task: a new task with the same type and params, owned by the "
            "caller, with `retry_of` pointing at this one. A waiting or running task answers 409."
        ),
    )
    def post(self, request: Request, task_id: int) -> Response:
        return super().post(request, task_id)


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
                "retention_days": config.retention_days if config.retention_days is not None else conf.RETENTION_DAYS,
                "param_schema": config.param_schema,
            }
            for config in sorted(LongTimeTaskRegister.get_all_tasks().values(), key=lambda c: c.name)
            if config.may_submit(request.user)
        ]
        return Response({"success": True, "task_types": types})

"""The schedules' JSON API: ``/api/schedules/`` (list, create), ``/api/schedules/{id}/`` (detail, change, delete)
and ``/api/schedules/{id}/run/`` (one run now). Thin views over the schedules' service door
(``long_time_task.schedules.service``), which the dashboard, the admin and the CLI use too, so a schedule is
checked the same way whoever makes it.

The fields are strict about JSON types, as the schema says: ``"60"`` is not an interval, ``1`` is not ``true``,
``42`` is not a name (DRF's own fields would take all three).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conf import conf
from ..models import MisfirePolicy, Schedule, TaskState
from ..schedules import service
from ..schedules.timing import InvalidSchedule
from .errors import ApiError
from .serializers import IsoDateTimeField, TaskTypeQueryField
from .views import errors, service_errors

if TYPE_CHECKING:
    Serializer = serializers.Serializer[Any]
    ScheduleModelSerializer = serializers.ModelSerializer[Schedule]
else:
    Serializer = serializers.Serializer
    ScheduleModelSerializer = serializers.ModelSerializer

INT32_MAX = 2**31 - 1  # the interval column's range (PositiveIntegerField)


# ---------------------------------------------------------------- strict JSON fields


class StrictCharField(serializers.CharField):
    """A JSON string, not a number made into one."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (``60`` or ``60.0``), not a string or a boolean."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``, not ``1`` or ``"yes"``."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class ScheduleTimeField(IsoDateTimeField):
    """``run_at``, ``start_at``, ``end_at``: an ISO 8601 date and time; without an offset, the server's zone."""

    code = "invalid_schedule"
    refusal = gettext_lazy("must be an ISO 8601 date and time, e.g. 2026-12-01T09:00:00+08:00.")
    out_of_range = gettext_lazy("is out of range.")


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00]*\\S[^\\x00]*$"})
class NameField(StrictCharField):
    """A name with something besides spaces in it (kept as given)."""


class ScheduleWriteSerializer(Serializer):
    """A schedule's fields as a client sets them. On create, ``name``, ``task_type`` and exactly one of ``cron``,
    ``interval_seconds`` or ``run_at`` are required; on change, every field is optional, a new timing replaces
    the old one, and ``task_type`` and ``params`` change together (both or neither)."""

    name = NameField(max_length=200, trim_whitespace=False)
    task_type = StrictCharField(
        min_length=1, max_length=100, help_text="A registered task type (GET /api/task-types/)."
    )
    params = serializers.JSONField(
        required=False, help_text="The task's parameters: a JSON object matching its param_schema."
    )
    cron = StrictCharField(
        required=False,
        min_length=1,
        max_length=100,
        trim_whitespace=False,
        help_text="A 5-field cron expression (minute hour day-of-month month day-of-week), in `timezone`.",
    )
    interval_seconds = StrictIntegerField(
        required=False,
        max_value=INT32_MAX,
        help_text="Run every this many seconds (at least LONG_TIME_TASK_SCHEDULE_MIN_INTERVAL), from start_at "
        "or else from the schedule's creation.",
    )
    run_at = ScheduleTimeField(required=False, help_text="Run once, at this time (in the future).")
    timezone = StrictCharField(
        required=False,
        min_length=1,
        max_length=64,
        trim_whitespace=False,
        help_text="The IANA zone the cron expression reads its times in (default: the server's TIME_ZONE).",
    )
    enabled = StrictBooleanField(required=False, help_text="false: paused (default true).")
    start_at = ScheduleTimeField(required=False, help_text="No run before this time.")
    end_at = ScheduleTimeField(required=False, help_text="No run after this time (after start_at).")
    misfire = serializers.ChoiceField(
        choices=MisfirePolicy.choices,
        required=False,
        help_text="Due times found more than LONG_TIME_TASK_SCHEDULE_MISFIRE_GRACE late (a scheduler that was "
        "down): skip them, run once for all of them (default), or catch up on up to misfire_limit of them.",
    )
    misfire_limit = StrictIntegerField(required=False, min_value=0, max_value=1000)
    skip_if_running = StrictBooleanField(
        required=False, help_text="Skip a due time while the previous run has not ended (default false)."
    )

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        fields = super().get_fields()
        fields["interval_seconds"].min_value = conf.SCHEDULE_MIN_INTERVAL  # type: ignore[attr-defined]
        if self.partial:
            for field in fields.values():
                field.required = False
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                serializers.ErrorDetail(_("Unknown field(s): %s.") % ", ".join(unknown), code="unknown_field")
            )
        timings = [name for name in service.TIMING if name in attrs]
        if len(timings) > 1 or (not self.partial and not timings):
            raise bad(_("Give exactly one of cron, interval_seconds or run_at."), "cron")
        if self.partial and ("params" in attrs) != ("task_type" in attrs):
            raise bad(_("Change task_type and params together: give both, or neither."), "params")
        if not self.partial:
            attrs.setdefault("params", {})
        return attrs


def bad(message: str, field: str) -> serializers.ValidationError:
    return serializers.ValidationError({field: [serializers.ErrorDetail(message, code="invalid_schedule")]})


class UtcDateTimeField(serializers.DateTimeField):
    """A time in UTC (``Z``): a schedule's times may be centuries away, where a zone's offset has seconds (local
    mean time before standard time), which RFC 3339 cannot write."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)


class ScheduleSerializer(ScheduleModelSerializer):
    """A schedule as the API shows it, its times in UTC; its timing fields that are not used are null."""

    serializer_field_mapping = {  # noqa: RUF012 - DRF's own class attribute
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: UtcDateTimeField,
    }

    owner = serializers.SerializerMethodField()
    cron = serializers.SerializerMethodField()
    declared = serializers.CharField(
        source="code_name", allow_null=True, help_text="Set for a schedule declared in code (pause/resume only)."
    )
    last_task = serializers.IntegerField(source="last_task_id", allow_null=True, help_text="Its newest run's task.")

    class Meta:
        model = Schedule
        fields = [
            "id",
            "name",
            "task_type",
            "params",
            "cron",
            "interval_seconds",
            "run_at",
            "timezone",
            "enabled",
            "paused_reason",
            "owner",
            "start_at",
            "end_at",
            "misfire",
            "misfire_limit",
            "skip_if_running",
            "next_run_at",
            "last_run_at",
            "last_task",
            "declared",
            "created_at",
            "updated_at",
        ]

    def get_owner(self, obj: Schedule) -> str | None:
        return obj.owner.get_username() if obj.owner else None

    @extend_schema_field({"type": "string", "nullable": True})
    def get_cron(self, obj: Schedule) -> str | None:
        return obj.cron or None


class ScheduleDetailSerializer(ScheduleSerializer):
    next_runs = serializers.ListField(child=UtcDateTimeField(), help_text="The next 5 due times (fewer if it ends).")

    class Meta(ScheduleSerializer.Meta):
        fields = [*ScheduleSerializer.Meta.fields, "next_runs"]


def detail(preview: service.Preview) -> dict[str, Any]:
    schedule = preview.schedule
    schedule.next_runs = preview.next_runs  # type: ignore[attr-defined]
    return dict(ScheduleDetailSerializer(schedule).data)


class ScheduleListQuerySerializer(Serializer):
    """The list's query (give it ``query_params.dict()``, as the tasks' list does)."""

    task_type = TaskTypeQueryField(required=False, max_length=100, trim_whitespace=False)
    enabled = serializers.ChoiceField(choices=["true", "false"], required=False)
    page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=10**9)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=10**9)

    def validate_page_size(self, value: int) -> int:
        return min(value, conf.MAX_PAGE_SIZE)


# ---------------------------------------------------------------- response envelopes (documentation)


class ScheduleResponseSerializer(Serializer):
    success = serializers.BooleanField()
    schedule = ScheduleDetailSerializer()


class ScheduleListResponseSerializer(Serializer):
    success = serializers.BooleanField()
    schedules = ScheduleSerializer(many=True)
    total = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    total_pages = serializers.IntegerField()


class ScheduleDeletedSerializer(Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()


class ScheduleRunResponseSerializer(Serializer):
    success = serializers.BooleanField()
    task_id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=TaskState.choices)
    schedule = serializers.IntegerField()
    message = serializers.CharField()


# ---------------------------------------------------------------- views


@contextmanager
def schedule_errors() -> Iterator[None]:
    """The schedules' service errors as API errors (and the tasks' ones, through ``service_errors``)."""
    try:
        with service_errors():
            yield
    except service.ScheduleNotFound:
        raise ApiError(_("Schedule not found."), code="not_found", status_code=status.HTTP_404_NOT_FOUND) from None
    except InvalidSchedule as exc:
        raise ApiError(f"{exc.field}: {exc.message}", code="invalid_schedule") from None


class ScheduleListView(APIView):
    """``GET``: the schedules the caller may see. ``POST``: a new schedule."""

    @extend_schema(
        operation_id="schedules_list",
        parameters=[ScheduleListQuerySerializer],
        responses={200: ScheduleListResponseSerializer, **errors(400, 404, 405, 406)},
        description="The caller's schedules (staff: every schedule), by name. A page beyond the last answers 404.",
    )
    def get(self, request: Request) -> Response:
        query = ScheduleListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        q = query.validated_data
        schedules = service.visible_schedules(request.user).select_related("owner")
        if "task_type" in q:
            schedules = schedules.filter(task_type=q["task_type"])
        if "enabled" in q:
            schedules = schedules.filter(enabled=q["enabled"] == "true")
        page, page_size = q["page"], q.get("page_size", conf.DEFAULT_PAGE_SIZE)
        total = schedules.count()
        total_pages = max(1, math.ceil(total / page_size))
        if page > total_pages:
            raise ApiError(
                _("Page %(page)s is out of range: the last page is %(last)s.") % {"page": page, "last": total_pages},
                code="page_out_of_range",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        rows = schedules[(page - 1) * page_size : page * page_size]
        return Response(
            {
                "success": True,
                "schedules": ScheduleSerializer(rows, many=True).data,
                "total": total,
                "page": page,
                "page_size": page_size,
                "total_pages": total_pages,
            }
        )

    @extend_schema(
        operation_id="schedules_create",
        request=ScheduleWriteSerializer,
        responses={201: ScheduleResponseSerializer, **errors(400, 403, 405, 406, 413, 415)},
        description=(
            "A new schedule, owned by the caller: `name`, `task_type` and its `params` (checked like a submit's, "
            "and the caller's permission to submit that type, again at every run), and exactly one of `cron`, "
            "`interval_seconds` or `run_at`. Answered with the schedule, its `next_run_at` and its next 5 due "
            "times (`next_runs`). A bad cron expression, an unknown zone or an interval under the minimum answer "
            "400 `invalid_schedule`, naming the field."
        ),
    )
    def post(self, request: Request) -> Response:
        data = write_data(request, partial=False)
        with schedule_errors():
            preview = service.create_schedule(user=request.user, **data)
        return Response({"success": True, "schedule": detail(preview)}, status=status.HTTP_201_CREATED)


def write_data(request: Request, *, partial: bool) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ApiError(_("The request body must be a JSON object."), code="invalid_request")
    data = ScheduleWriteSerializer(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    return dict(data.validated_data)


class ScheduleDetailView(APIView):
    """``GET``, ``PATCH``, ``DELETE`` one schedule. Another user's answers 404, like one that does not exist."""

    @extend_schema(
        operation_id="schedules_detail",
        responses={200: ScheduleResponseSerializer, **errors(404, 405, 406)},
        description="One schedule with its next 5 due times. Another user's answers 404.",
    )
    def get(self, request: Request, schedule_id: int) -> Response:
        with schedule_errors():
            preview = service.preview(service.get_schedule(schedule_id, user=request.user))
        return Response({"success": True, "schedule": detail(preview)})

    @extend_schema(
        operation_id="schedules_update",
        request=ScheduleWriteSerializer,
        responses={200: ScheduleResponseSerializer, **errors(400, 403, 404, 405, 406, 409, 413, 415)},
        description=(
            "Change some fields. A new timing (one of `cron`, `interval_seconds`, `run_at`) replaces the old one; "
            "`task_type` and `params` change together. A change of timing, zone, start, end or `enabled` plans "
            "the schedule again from now (a resumed schedule does not run what it missed while paused). A "
            "schedule declared in code only takes `enabled` (409 `declared_in_code`)."
        ),
    )
    def patch(self, request: Request, schedule_id: int) -> Response:
        data = write_data(request, partial=True)
        with schedule_errors():
            preview = service.update_schedule(schedule_id, user=request.user, **data)
        return Response({"success": True, "schedule": detail(preview)})

    @extend_schema(
        operation_id="schedules_delete",
        request=None,
        responses={200: ScheduleDeletedSerializer, **errors(404, 405, 406, 409, 413)},
        description="Delete a schedule; its runs stay (their `schedule` becomes null). A schedule declared in code "
        "answers 409 `declared_in_code`: take its declaration out instead.",
    )
    def delete(self, request: Request, schedule_id: int) -> Response:
        with schedule_errors():
            service.delete_schedule(schedule_id, user=request.user)
        return Response({"success": True, "message": _("Schedule deleted.")})


class ScheduleRunView(APIView):
    """``POST``: one run now, as its own task (outside the due times)."""

    @extend_schema(
        operation_id="schedules_run",
        request=None,
        responses={
            201: OpenApiResponse(ScheduleRunResponseSerializer, description="The run's task."),
            **errors(400, 403, 404, 405, 406, 413, 429),
        },
        description="Run the schedule now, as a task of its own linked to it (`schedule`, with no "
        "`scheduled_for`): submitted like any task (the owner's permission, the submit rate, the cap on "
        "unfinished tasks). Its due times are unchanged.",
    )
    def post(self, request: Request, schedule_id: int) -> Response:
        with schedule_errors():
            task = service.run_now(schedule_id, user=request.user)
        return Response(
            {
                "success": True,
                "task_id": task.id,
                "state": task.state,
                "schedule": schedule_id,
                "message": _("Task submitted successfully"),
            },
            status=status.HTTP_201_CREATED,
        )

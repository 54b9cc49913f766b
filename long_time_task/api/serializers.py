"""Input validation and output shapes of the JSON API (the seed's response shapes, extended)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.core.validators import RegexValidator
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from ..conf import conf
from ..models import AttemptCause, AttemptOutcome, LongTimeTask, TaskAuditEvent, TaskState
from ..models.attempts import attempt_history
from ..pagination import CURSOR_PATTERN
from ..registry import InvalidParams, LongTimeTaskRegister, UnknownTaskType
from ..services import MAX_DELAY, validate_submission

if TYPE_CHECKING:
    Serializer = serializers.Serializer[Any]
    TaskSerializer = serializers.ModelSerializer[LongTimeTask]
    AuditSerializer = serializers.ModelSerializer[TaskAuditEvent]
else:
    Serializer = serializers.Serializer
    TaskSerializer = AuditSerializer = serializers.ModelSerializer


def _is_staff(context: Mapping[str, Any]) -> bool:
    request = context.get("request")
    user = getattr(request, "user", None)
    return bool(user and user.is_staff)


def _bad_start(message: str) -> serializers.ValidationError:
    """Every refusal of ``run_after`` or ``countdown`` has one code, as the service's own (too far ahead)."""
    return serializers.ValidationError(serializers.ErrorDetail(message, code="invalid_params"))


class _StartField(serializers.Field):  # type: ignore[type-arg]
    """What ``run_after`` and ``countdown`` share: ``null`` is refused with their code, as any bad value."""

    refusal: Any = ""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data is None:
            raise _bad_start(str(self.refusal))
        return super().run_validation(data)


class IsoDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date and time (or a date: its midnight); without an offset, in the server's time zone
    (``TIME_ZONE``). Returned in UTC. A time that does not exist in UTC (year 1 ahead of UTC, year 9999 behind
    it) is refused here, where DRF's own field raised OverflowError (a 500). Refusals carry ``code``."""

    code = "invalid_params"
    refusal: Any = gettext_lazy("must be an ISO 8601 date and time, e.g. 2026-12-01T09:00:00+08:00.")
    out_of_range: Any = gettext_lazy("is out of range.")

    def refuse(self, message: Any) -> serializers.ValidationError:
        return serializers.ValidationError(serializers.ErrorDetail(str(message), code=self.code))

    def to_internal_value(self, value: Any) -> datetime:
        try:
            parsed = parse_datetime(value.strip().upper()) if isinstance(value, str) else None  # RFC 3339: t, z
        except ValueError:  # well formed, but not a time: 2026-02-30, an offset of 24 hours
            parsed = None
        if parsed is None:
            raise self.refuse(self.refusal)
        try:
            if timezone.is_naive(parsed):
                # The server's zone, as the schema says: not the zone a browser's cookie chose for its pages.
                parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
            return parsed.astimezone(UTC)
        except OverflowError:
            raise self.refuse(self.out_of_range) from None


class StartTimeField(_StartField, IsoDateTimeField):
    """``run_after``: refused with the submit's code (``invalid_params``), as a start too far ahead is."""

    refusal = gettext_lazy("run_after must be an ISO 8601 date and time, e.g. 2026-12-01T09:00:00+08:00.")
    out_of_range = gettext_lazy("run_after is out of range.")


class CountdownField(_StartField, serializers.FloatField):
    """``countdown``: a JSON number of seconds, 0 to 366 days. Not a boolean (``true`` is not 1 second), not
    a string."""

    refusal = gettext_lazy("countdown must be a number of seconds.")

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise _bad_start(str(self.refusal))
        most = MAX_DELAY.total_seconds()
        if not 0 <= data <= most:  # False for NaN too; no float() of a huge integer (OverflowError)
            raise _bad_start(_("countdown must be between 0 and %(max)s seconds.") % {"max": int(most)})
        return float(data)


class SubmitSerializer(Serializer):
    task_type = serializers.CharField(max_length=100, help_text="A registered task type (GET /api/task-types/).")
    params = serializers.JSONField(
        required=False, default=dict, help_text="The task's parameters: a JSON object matching its param_schema."
    )
    run_after = StartTimeField(
        required=False,
        help_text="Start no earlier than this time (ISO 8601; without an offset, the server's time zone), "
        "at most 366 days ahead; a time in the past means now.",
    )
    countdown = CountdownField(
        required=False,
        min_value=0,
        max_value=MAX_DELAY.total_seconds(),
        help_text="Start no earlier than this many seconds from now (at most 366 days).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            # Queue, priority and the rest are decided by the server: say so instead of ignoring them.
            raise serializers.ValidationError(
                serializers.ErrorDetail(_("Unknown field(s): %s.") % ", ".join(unknown), code="unknown_field")
            )
        request = self.context.get("request")
        config = LongTimeTaskRegister.get_task(attrs["task_type"])
        if config is not None and not config.may_submit(getattr(request, "user", None)):
            raise PermissionDenied(
                _("You may not submit tasks of type %(type)s.") % {"type": config.name}, code="permission_denied"
            )
        if "run_after" in attrs and "countdown" in attrs:
            raise _bad_start(_("Give run_after or countdown, not both."))
        try:
            validate_submission(attrs["task_type"], attrs["params"])
        except UnknownTaskType as exc:
            user = getattr(request, "user", None)
            allowed = [c.name for c in LongTimeTaskRegister.get_all_tasks().values() if c.may_submit(user)]
            known = ", ".join(sorted(allowed)) or "-"
            raise serializers.ValidationError(
                {"task_type": [serializers.ErrorDetail(f"{exc} (known types: {known})", code="unknown_task_type")]}
            ) from None
        except InvalidParams as exc:
            # The message already names the field (params.<path>).
            raise serializers.ValidationError(serializers.ErrorDetail(str(exc), code="invalid_params")) from None
        return attrs


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\x00]*$"})
class TaskTypeQueryField(serializers.CharField):
    """A task type in the query: what DRF's CharField takes, and the schema says so, NUL characters included
    (refused, ``null_characters_not_allowed``, as a NUL anywhere in a query is)."""


class ListQuerySerializer(Serializer):
    """The list's query. Give it ``query_params.dict()``: from a QueryDict, DRF reads an empty value as an
    absent one (``?task_type=`` would list every type), which the schema (minLength 1) does not allow."""

    state = serializers.ChoiceField(choices=TaskState.choices, required=False)
    # Not trimmed: " " is a (matching nothing) type name to the schema, and a cursor ends where its pattern does.
    task_type = TaskTypeQueryField(required=False, max_length=100, trim_whitespace=False)
    schedule = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Only the runs of this schedule."
    )
    page = serializers.IntegerField(
        required=False, default=1, min_value=1, max_value=10**9, help_text="Ignored when cursor is given."
    )
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=10**9)
    cursor = serializers.CharField(
        required=False,
        trim_whitespace=False,
        validators=[RegexValidator(CURSOR_PATTERN, _("not a cursor this API gave out"), code="invalid_cursor")],
        help_text="next_cursor of the previous page (opaque).",
    )

    def validate_page_size(self, value: int) -> int:
        # The seed clamps: page_size above the maximum gives the maximum.
        return min(value, conf.MAX_PAGE_SIZE)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("page_size", conf.DEFAULT_PAGE_SIZE)
        return attrs


class ProgressSerializer(Serializer):
    percent = serializers.FloatField(allow_null=True, help_text="0-100, or null if only a message was reported.")
    message = serializers.CharField(allow_blank=True)
    current = serializers.IntegerField(allow_null=True, help_text="Items done, if the handler counts.")
    total = serializers.IntegerField(allow_null=True, help_text="Items in all, if the handler counts.")
    updated_at = serializers.DateTimeField(allow_null=True)


def progress_of(task: LongTimeTask) -> dict[str, Any] | None:
    """The progress object of the API; None until the handler reports (a finished task shows 100)."""
    if task.progress is None and task.progress_at is None:
        return None
    return {
        "percent": task.progress,
        "message": task.progress_message,
        "current": task.progress_current,
        "total": task.progress_total,
        "updated_at": serializers.DateTimeField().to_representation(task.progress_at) if task.progress_at else None,
    }


class TaskListItemSerializer(TaskSerializer):
    owner = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    cancel_requested = serializers.SerializerMethodField()

    class Meta:
        model = LongTimeTask
        fields = [
            "id",
            "task_type",
            "state",
            "attempts",
            "create_at",
            "start_at",
            "finish_at",
            "run_after",
            "owner",
            "progress",
            "cancel_requested",
            "retry_of",
            "schedule",
            "scheduled_for",
        ]

    def get_owner(self, obj: LongTimeTask) -> str | None:
        return obj.owner.get_username() if obj.owner else None

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, obj: LongTimeTask) -> dict[str, Any] | None:
        return progress_of(obj)

    def get_cancel_requested(self, obj: LongTimeTask) -> bool:
        return obj.cancel_requested_at is not None


class AuditEventSerializer(AuditSerializer):
    by = serializers.CharField(source="actor_name")

    class Meta:
        model = TaskAuditEvent
        fields = ["action", "by", "at", "new_task", "note"]


class AttemptSerializer(Serializer):
    """One attempt of a task (staff only: it names the worker host and carries the traceback)."""

    number = serializers.IntegerField(help_text="1 for the first attempt.")
    worker = serializers.CharField(help_text="The Celery worker that ran it (its hostname).")
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True, help_text="null while it runs.")
    outcome = serializers.ChoiceField(
        choices=AttemptOutcome.choices,
        help_text="What became of the task: retry (another attempt was scheduled), failed, cancelled, finished, "
        "or running (the current attempt).",
    )
    cause = serializers.ChoiceField(
        choices=[c for c in AttemptCause.choices if c[0]],
        allow_null=True,
        help_text="Set when recovery ended the attempt: worker_lost (its worker process died) or lease_expired "
        "(its worker stopped renewing the lease; found by the reaper). null: it ended in its worker.",
    )
    error_code = serializers.CharField(allow_blank=True, help_text="Empty when it did not fail.")
    error_message = serializers.CharField(allow_blank=True)
    error_traceback = serializers.CharField(allow_blank=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = dict(super().to_representation(instance))
        data["cause"] = instance.cause or None
        return data


class TaskDetailSerializer(TaskSerializer):
    """The seed's detail shape: ``result`` only when FINISHED, ``error_message`` only when FAILED."""

    owner = serializers.SerializerMethodField()
    state_display = serializers.CharField(source="get_state_display")
    params = serializers.JSONField(source="task_params")
    max_attempts = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    retries = serializers.SerializerMethodField()

    class Meta:
        model = LongTimeTask
        fields = [
            "id",
            "task_type",
            "state",
            "state_display",
            "params",
            "attempts",
            "max_attempts",
            "queue",
            "priority",
            "owner",
            "create_at",
            "start_at",
            "finish_at",
            "retry_at",
            "run_after",
            "progress",
            "cancel_requested_at",
            "retry_of",
            "retries",
            "schedule",
            "scheduled_for",
        ]

    def get_owner(self, obj: LongTimeTask) -> str | None:
        return obj.owner.get_username() if obj.owner else None

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, obj: LongTimeTask) -> dict[str, Any] | None:
        return progress_of(obj)

    def get_retries(self, obj: LongTimeTask) -> list[int]:
        """The tasks made by retrying or re-running this one (that the caller may see)."""
        request = self.context.get("request")
        rows = LongTimeTask.objects.visible_to(getattr(request, "user", None)).filter(retry_of=obj.id)
        return list(rows.order_by("id").values_list("id", flat=True)[:100])

    def get_max_attempts(self, obj: LongTimeTask) -> int | None:
        config = LongTimeTaskRegister.get_task(obj.task_type)
        return config.max_attempts if config else None

    def to_representation(self, instance: LongTimeTask) -> dict[str, Any]:
        data = dict(super().to_representation(instance))
        staff = _is_staff(self.context)
        if instance.state == TaskState.FINISHED:
            data["result"] = instance.result
        elif instance.state in (TaskState.FAILED, TaskState.RETRYING, TaskState.CANCELLED):
            data["error_message"] = instance.error_message or _("The task failed.")
            data["error_code"] = instance.error_code
            if staff:
                data["error_traceback"] = instance.error_traceback
        if staff:
            data["worker"] = instance.worker
            data["celery_task_id"] = instance.celery_task_id
            data["audit"] = AuditEventSerializer(instance.audit_events.all()[:200], many=True).data
            data["attempt_history"] = AttemptSerializer(attempt_history(instance), many=True).data
        return data


# ---------------------------------------------------------------- response envelopes (documentation)


class ErrorResponseSerializer(Serializer):
    success = serializers.BooleanField(default=False)
    error = serializers.CharField(help_text="What is wrong, in words.")
    code = serializers.CharField(help_text="A stable code, e.g. invalid_params, not_found, throttled.")


class SubmitResponseSerializer(Serializer):
    success = serializers.BooleanField()
    task_id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=TaskState.choices)
    message = serializers.CharField()


class TaskDetailDocSerializer(TaskDetailSerializer):
    """The detail shape, with the fields that appear only in some states or for staff."""

    result = serializers.JSONField(required=False, allow_null=True, help_text="When FINISHED.")
    error_message = serializers.CharField(
        required=False, help_text="When FAILED, RETRYING or CANCELLED: a message safe to show the owner."
    )
    error_code = serializers.CharField(required=False, help_text="When FAILED, RETRYING or CANCELLED.")
    error_traceback = serializers.CharField(required=False, help_text="Staff only.")
    worker = serializers.CharField(required=False, help_text="Staff only.")
    celery_task_id = serializers.CharField(required=False, help_text="Staff only.")
    audit = AuditEventSerializer(many=True, required=False, help_text="Staff only: cancels, retries, re-runs.")
    attempt_history = AttemptSerializer(
        many=True,
        required=False,
        help_text="Staff only: every attempt, oldest first. Attempts that ended in a retry or were ended by "
        "recovery are recorded; the current or last one is read from the task itself.",
    )

    class Meta(TaskDetailSerializer.Meta):
        fields = [
            *TaskDetailSerializer.Meta.fields,
            "result",
            "error_message",
            "error_code",
            "error_traceback",
            "worker",
            "celery_task_id",
            "audit",
            "attempt_history",
        ]


class CancelResponseSerializer(Serializer):
    success = serializers.BooleanField()
    task_id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=TaskState.choices, help_text="CANCELLED, or RUNNING while it stops.")
    cancel_requested = serializers.BooleanField(help_text="True: running, asked to stop (HTTP 202).")
    message = serializers.CharField()


class RetryResponseSerializer(SubmitResponseSerializer):
    retry_of = serializers.IntegerField(help_text="The task this one retries or re-runs.")


class TaskDetailResponseSerializer(Serializer):
    success = serializers.BooleanField()
    task = TaskDetailDocSerializer()


class TaskListResponseSerializer(Serializer):
    success = serializers.BooleanField()
    tasks = TaskListItemSerializer(many=True)
    total = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True, help_text="null on a page reached by cursor.")
    page_size = serializers.IntegerField()
    total_pages = serializers.IntegerField()
    total_is_estimate = serializers.BooleanField(help_text="True when total is PostgreSQL's estimate (big tables).")
    next_cursor = serializers.CharField(allow_null=True, help_text="Pass as cursor for the next page; null at the end.")


class TaskTypeSerializer(Serializer):
    task_type = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    priority = serializers.IntegerField()
    timeout = serializers.IntegerField()
    soft_timeout = serializers.IntegerField()
    max_retries = serializers.IntegerField()
    retention_days = serializers.FloatField(allow_null=True, help_text="Days a finished task is kept (null: kept).")
    param_schema = serializers.JSONField(allow_null=True)


class TaskTypesResponseSerializer(Serializer):
    success = serializers.BooleanField()
    task_types = TaskTypeSerializer(many=True)

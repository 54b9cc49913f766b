from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db.models import DateTimeField, Field, Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_POST

from . import services
from .models import ApiToken, LongTimeTask, Schedule, TaskAttempt, TaskAuditEvent, TaskState
from .registry import InvalidParams, UnknownTaskType
from .schedules import service as schedule_service
from .schedules.timing import InvalidSchedule
from .timezones import ZONE_SCRIPT, time_html

if TYPE_CHECKING:
    TaskAdminBase = admin.ModelAdmin[LongTimeTask]
    TokenAdminBase = admin.ModelAdmin[ApiToken]
    AuditInlineBase = admin.TabularInline[TaskAuditEvent, LongTimeTask]
    AttemptInlineBase = admin.TabularInline[TaskAttempt, LongTimeTask]
else:
    TaskAdminBase = TokenAdminBase = admin.ModelAdmin
    AuditInlineBase = AttemptInlineBase = admin.TabularInline

T = TypeVar("T")

EMPTY = "—"
# What a cancel, retry or re-run can refuse with; each is reported per task, never as a server error.
REFUSALS = (
    services.TaskNotFound,
    services.NotPermitted,
    services.ActionNotAllowed,
    services.QuotaExceeded,
    services.SubmitRateExceeded,
    InvalidParams,
    UnknownTaskType,
)
MAX_REASONS = 10  # skipped tasks explained in one message
CHANGE_URL = "{}:long_time_task_longtimetask_change"


def when(value: datetime) -> SafeString:
    """A time as the dashboard shows it: the viewer's zone, ``2025-01-05 23:33:00 UTC+08:00``."""
    return time_html(value)


def time_field(model: type[Model], name: str) -> Callable[[Any, Any], SafeString | str]:
    """A column or read-only field showing the model's datetime field ``name`` with ``when`` (Django's own
    display of a datetime follows the language's format: 12-hour in English, no zone)."""

    field = model._meta.get_field(name)
    label = field.verbose_name if isinstance(field, Field) else name

    @admin.display(description=label, ordering=name)
    def show(model_admin: Any, obj: Any) -> SafeString | str:
        value = getattr(obj, name)
        return when(value) if value is not None else EMPTY

    return show


def progress_bar(task: LongTimeTask) -> SafeString | str:
    """A native <progress> (an accessible progressbar), the percent as text, and the message."""
    if task.state == TaskState.FINISHED:
        value = 100.0
    elif task.progress is None or not math.isfinite(task.progress):
        return EMPTY
    else:
        value = min(max(task.progress, 0.0), 100.0)
    percent = f"{math.floor(value)}%"  # 99.6 is not done yet
    counts = ""
    if task.progress_current is not None and task.progress_total:
        counts = f" ({task.progress_current}/{task.progress_total})"
    return format_html(
        '<progress class="ltt-progress" value="{}" max="100" aria-label="{}">{}</progress>'
        ' <span>{}{}</span> <span class="help">{}</span>',
        f"{value:g}",
        _("Progress"),
        percent,
        percent,
        counts,
        task.progress_message,
    )


def state_of(task_id: int) -> tuple[str, str]:
    """A task's state now, and its label (the action that refused it read it)."""
    state = LongTimeTask.objects.filter(id=task_id).values_list("state", flat=True).first() or ""
    return state, str(TaskState(state).label) if state in TaskState.values else state


def not_ended(task_id: int, state: str) -> str:
    return _("Task %(id)s is %(state)s: only tasks that have ended can run again.") % {"id": task_id, "state": state}


def refusal(task_id: int, exc: Exception) -> str:
    """Why an action skipped a task, in the user's language where the reason is known."""
    if isinstance(exc, services.TaskNotFound):
        return _("Task %(id)s no longer exists.") % {"id": task_id}
    if isinstance(exc, services.ActionNotAllowed):
        state, label = state_of(task_id)
        if exc.code == "not_cancellable":
            return _("Task %(id)s is already %(state)s: only waiting or running tasks can be cancelled.") % {
                "id": task_id,
                "state": label,
            }
        if exc.code == "not_retryable" and state == TaskState.FINISHED:
            return _("Task %(id)s finished: re-run it instead of retrying it.") % {"id": task_id}
        if exc.code == "not_retryable":
            return not_ended(task_id, label)
        if exc.code == "state_changed":
            return _("Task %(id)s is changing state; try again.") % {"id": task_id}
    return _("Task %(id)s: %(error)s") % {"id": task_id, "error": exc}


class RetryForm(forms.Form):
    params = forms.CharField(
        label=gettext_lazy("Parameters (JSON)"),
        help_text=gettext_lazy("The new task runs with these parameters, checked against its task type's schema."),
        widget=forms.Textarea(attrs={"rows": 18, "cols": 80, "class": "vLargeTextField", "spellcheck": "false"}),
    )

    def clean_params(self) -> dict[str, Any]:
        def no_constants(name: str) -> None:
            raise ValueError(f"{name} is not valid JSON")

        try:
            value = json.loads(self.cleaned_data["params"], parse_constant=no_constants)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(
                _("Enter valid JSON: %(error)s"), code="invalid_json", params={"error": exc}
            ) from None
        if not isinstance(value, dict):
            raise ValidationError(_("The parameters must be a JSON object: {…}."), code="not_an_object")
        return value


# Lookups on a date-time that compare it with a value (``in`` and ``range`` take several, comma-separated).
TIME_COMPARISONS = {"exact", "gt", "gte", "lt", "lte", "in", "range", "isnull"}
HIERARCHY_PARTS = {"month": (1, 12), "day": (1, 31)}  # the date hierarchy's other parameters, and their ranges


def time_lookup_usable(model: Any, lookup: str, value: str) -> bool:
    """False (the changelist then reloads with ``?e=1``, as for any filter it cannot use) for a date-time
    filter whose bound does not exist in UTC. The date hierarchy's year 9999 runs its bound into year 10000
    (ValueError), and on SQLite a year-1 bound ahead of UTC, or a year-9999 one behind it, raises
    OverflowError when converted: both were 500s. Values that do not parse are left to Django, which
    refuses them itself (``?e=1``)."""
    name, _sep, kind = lookup.partition("__")
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return True
    if not isinstance(field, DateTimeField):
        return True
    if kind == "year":  # the date hierarchy: its bounds reach the next year, and its first day must exist in UTC
        return bool(re.fullmatch(r"[0-9]{1,4}", value) and 1 < int(value) < 9999)
    if kind in HIERARCHY_PARTS:
        low, high = HIERARCHY_PARTS[kind]
        return bool(re.fullmatch(r"[0-9]{1,2}", value) and low <= int(value) <= high)
    if kind not in TIME_COMPARISONS:
        # Only what the date filter and the date hierarchy make: other transforms (iso_year, year__gte, ...)
        # overflow on the same bounds while the query is compiled, where the changelist catches nothing.
        return False
    for part in value.split(",") if kind in ("in", "range") else [value]:
        try:
            when = field.to_python(part)
        except ValidationError:
            return True
        if when is None:
            continue
        if timezone.is_naive(when):
            when = timezone.make_aware(when)
        try:
            when.astimezone(UTC)
        except OverflowError:
            return False
    return True


class ReadOnlyInline:
    """An inline of rows that only the worker or the service layer write: shown to whoever may view the
    task, never added, changed or deleted here."""

    admin_site: admin.AdminSite

    def has_view_permission(self, request: HttpRequest, obj: LongTimeTask | None = None) -> bool:
        return self.admin_site.get_model_admin(LongTimeTask).has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: LongTimeTask | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LongTimeTask | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LongTimeTask | None = None) -> bool:
        return False


class TaskAttemptInline(ReadOnlyInline, AttemptInlineBase):
    """The recorded attempts: those that ended in a retry or that recovery ended. The current or last
    attempt is the task's own fields (worker, attempt started at, finished at, error)."""

    model = TaskAttempt
    fk_name = "task"
    fields = ("number", "worker", "started_at_display", "ended_at_display", "outcome", "cause", "error_code",
              "error_message")  # fmt: skip
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    empty_value_display = EMPTY
    verbose_name_plural = gettext_lazy("Attempt history (earlier attempts)")

    started_at_display = time_field(TaskAttempt, "started_at")
    ended_at_display = time_field(TaskAttempt, "ended_at")


class TaskAuditEventInline(ReadOnlyInline, AuditInlineBase):
    """Who cancelled, retried or re-ran the task: read-only, written only by the service layer."""

    model = TaskAuditEvent
    fk_name = "task"
    fields = ("action", "actor_display", "at_display", "new_task_link", "note")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    empty_value_display = EMPTY
    verbose_name_plural = gettext_lazy("Audit trail")

    at_display = time_field(TaskAuditEvent, "at")

    @admin.display(description=gettext_lazy("by"))
    def actor_display(self, event: TaskAuditEvent) -> str:
        return event.actor_name or EMPTY

    @admin.display(description=gettext_lazy("new task"))
    def new_task_link(self, event: TaskAuditEvent) -> SafeString | str:
        if event.new_task_id is None:
            return EMPTY
        url = reverse(CHANGE_URL.format(self.admin_site.name), args=[event.new_task_id])
        return format_html('<a href="{}">{}</a>', url, _("Task %(id)s") % {"id": event.new_task_id})


@admin.register(LongTimeTask)
class LongTimeTaskAdmin(TaskAdminBase):
    """Read-only: tasks change state through the executor and the service layer, never through edits here.

    Cancel, retry and re-run go through ``services`` (the actions, and the buttons of the task page), for
    staff holding the "change" permission of tasks (the "operate" permission below).
    """

    list_display = [
        "id",
        "task_type",
        "state_display",
        "progress_display",
        "owner",
        "attempts",
        "create_at_display",
        "start_at_display",
        "finish_at_display",
    ]
    list_filter = ["state", "task_type", "create_at"]
    search_fields = ["celery_task_id", "task_type"]
    list_select_related = ["owner"]
    ordering = ["-create_at"]
    list_per_page = 50
    date_hierarchy = "create_at"
    empty_value_display = EMPTY
    actions = ["cancel_tasks", "retry_tasks", "rerun_tasks"]
    inlines = [TaskAttemptInline, TaskAuditEventInline]
    fieldsets = (
        (gettext_lazy("Basic information"), {"fields": ("id", "celery_task_id", "task_type", "task_params", "owner")}),
        (
            gettext_lazy("Status information"),
            {"fields": ("state_display", "attempts", "worker", "claimed_at_display", "queue", "priority")},
        ),
        (
            gettext_lazy("Progress"),
            {"fields": ("progress_display", "progress_current", "progress_total", "progress_at_display")},
        ),
        (
            gettext_lazy("Time information"),
            {
                "fields": (
                    "create_at_display",
                    "run_after_display",
                    "start_at_display",
                    "finish_at_display",
                    "retry_at_display",
                )
            },
        ),
        (
            gettext_lazy("Operations"),
            {"fields": ("cancel_requested_at_display", "retry_of_link", "retries_links", "idempotency_key")},
        ),
        (
            gettext_lazy("Result information"),
            {"fields": ("result", "error_message", "error_code", "error_traceback"), "classes": ("collapse",)},
        ),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    class Media:
        css = {"all": ["long_time_task/admin.css"]}
        js = [ZONE_SCRIPT]  # tells the site the viewer's zone, and redraws the times in it

    # ------------------------------------------------------------ times: the viewer's zone, as on the dashboard

    create_at_display = time_field(LongTimeTask, "create_at")
    run_after_display = time_field(LongTimeTask, "run_after")
    start_at_display = time_field(LongTimeTask, "start_at")
    claimed_at_display = time_field(LongTimeTask, "claimed_at")
    finish_at_display = time_field(LongTimeTask, "finish_at")
    retry_at_display = time_field(LongTimeTask, "retry_at")
    progress_at_display = time_field(LongTimeTask, "progress_at")
    cancel_requested_at_display = time_field(LongTimeTask, "cancel_requested_at")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # A date filter Django cannot use gets what Django gives any filter it cannot use: the list, reloaded
        # with ``?e=1``. (Returning False from lookup_allowed would answer 400 and log a SuspiciousOperation at
        # ERROR, which mails the admins, for a hand-edited URL.)
        for lookup, values in request.GET.lists():
            if not all(time_lookup_usable(self.model, lookup, value) for value in values):
                return HttpResponseRedirect(f"{request.path}?e=1")
        return super().changelist_view(request, extra_context)

    # ------------------------------------------------------------ columns and fields

    @admin.display(description=gettext_lazy("State"), ordering="state")
    def state_display(self, obj: LongTimeTask) -> SafeString:
        # The seed's colours, from admin.css (a Content-Security-Policy without 'unsafe-inline' drops style="").
        label = format_html('<span class="ltt-state ltt-state-{}">{}</span>', obj.state, obj.get_state_display())
        if obj.state == TaskState.RUNNING and obj.cancel_requested_at is not None:
            return format_html('{} <span class="help">{}</span>', label, _("(cancel requested)"))
        if obj.state == TaskState.PENDING and obj.run_after is not None:
            return format_html('{} <span class="help">{} {}</span>', label, _("starts at"), when(obj.run_after))
        return label

    @admin.display(description=gettext_lazy("Progress"), ordering="progress")
    def progress_display(self, obj: LongTimeTask) -> SafeString | str:
        return progress_bar(obj)

    @admin.display(description=gettext_lazy("retry of"))
    def retry_of_link(self, obj: LongTimeTask) -> SafeString | str:
        return self.task_link(obj.retry_of_id) if obj.retry_of_id is not None else EMPTY

    @admin.display(description=gettext_lazy("Retries and re-runs"))
    def retries_links(self, obj: LongTimeTask) -> SafeString | str:
        ids = list(obj.retries.order_by("id").values_list("id", flat=True))
        return format_html_join(", ", "{}", ((self.task_link(task_id),) for task_id in ids)) if ids else EMPTY

    def task_link(self, task_id: int) -> SafeString:
        url = reverse(CHANGE_URL.format(self.admin_site.name), args=[task_id])
        return format_html('<a href="{}">{}</a>', url, _("Task %(id)s") % {"id": task_id})

    # ------------------------------------------------------------ permissions: read-only, operated via services

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Cancel, retry and re-run: staff with the model's "change" permission (no row is ever edited here)."""
        codename = get_permission_codename("change", self.opts)
        return bool(request.user.is_staff and request.user.has_perm(f"{self.opts.app_label}.{codename}"))

    # ------------------------------------------------------------ actions

    def each(self, queryset: QuerySet[LongTimeTask], act: Callable[[int], T]) -> tuple[list[T], list[str]]:
        """``act`` on every selected task by id, through the services; the refused ones with their reasons."""
        done: list[T] = []
        skipped: list[str] = []
        for task_id in queryset.order_by("id").values_list("id", flat=True):
            try:
                done.append(act(task_id))
            except REFUSALS as exc:
                skipped.append(refusal(task_id, exc))
        return done, skipped

    def report_skipped(self, request: HttpRequest, skipped: list[str]) -> None:
        if skipped:
            count = len(skipped)
            message = ngettext("Skipped %(count)d task:", "Skipped %(count)d tasks:", count) % {"count": count}
            reasons = skipped[:MAX_REASONS]
            if count > MAX_REASONS:
                reasons.append(_("…and %(count)d more.") % {"count": count - MAX_REASONS})
            self.message_user(request, " ".join([message, *reasons]), messages.WARNING)

    @admin.action(permissions=["operate"], description=gettext_lazy("Cancel selected tasks"))
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[LongTimeTask]) -> None:
        outcomes, skipped = self.each(queryset, lambda task_id: services.cancel_task(task_id, user=request.user))
        cancelled = sum(outcome.cancelled for outcome in outcomes)
        requested = len(outcomes) - cancelled
        if cancelled:
            self.message_user(
                request,
                ngettext("Cancelled %(count)d task.", "Cancelled %(count)d tasks.", cancelled) % {"count": cancelled},
                messages.SUCCESS,
            )
        if requested:
            message = ngettext(
                "Cancel requested for %(count)d running task: it stops at its next check.",
                "Cancel requested for %(count)d running tasks: they stop at their next check.",
                requested,
            )
            self.message_user(request, message % {"count": requested}, messages.SUCCESS)
        self.report_skipped(request, skipped)

    @admin.action(permissions=["operate"], description=gettext_lazy("Retry selected tasks (failed or cancelled)"))
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[LongTimeTask]) -> None:
        self.run_again(request, queryset, rerun=False)

    @admin.action(permissions=["operate"], description=gettext_lazy("Re-run selected tasks (any that has ended)"))
    def rerun_tasks(self, request: HttpRequest, queryset: QuerySet[LongTimeTask]) -> None:
        self.run_again(request, queryset, rerun=True)

    def run_again(self, request: HttpRequest, queryset: QuerySet[LongTimeTask], *, rerun: bool) -> None:
        new, skipped = self.each(queryset, lambda task_id: services.retry_task(task_id, user=request.user, rerun=rerun))
        if new:
            message = ngettext("Submitted %(count)d new task:", "Submitted %(count)d new tasks:", len(new)) % {
                "count": len(new)
            }
            links = format_html_join(", ", "{}", ((self.task_link(task.id),) for task in new))
            self.message_user(request, format_html("{} {}", message, links), messages.SUCCESS)
        self.report_skipped(request, skipped)

    # ------------------------------------------------------------ the task page's buttons and their views

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/retry/", self.admin_site.admin_view(self.retry_view), name=f"{name}_retry"),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name=f"{name}_cancel",
            ),
            *super().get_urls(),
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: LongTimeTask | None = None,
    ) -> HttpResponse:
        if obj is not None and self.has_operate_permission(request):
            site = self.admin_site.name
            if obj.is_terminal:
                context["retry_task_url"] = reverse(f"{site}:long_time_task_longtimetask_retry", args=[obj.pk])
                context["task_rerun"] = obj.state == TaskState.FINISHED
            elif not (obj.state == TaskState.RUNNING and obj.cancel_requested_at is not None):
                context["cancel_task_url"] = reverse(f"{site}:long_time_task_longtimetask_cancel", args=[obj.pk])
        return super().render_change_form(request, context, add, change, form_url, obj)

    def operated_task(self, request: HttpRequest, object_id: str) -> LongTimeTask:
        task = self.get_object(request, unquote(object_id))
        if task is None:
            raise Http404(_("Task %(id)s no longer exists.") % {"id": object_id})
        if not self.has_operate_permission(request):
            raise PermissionDenied
        return task

    def change_page(self, task_id: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse(CHANGE_URL.format(self.admin_site.name), args=[task_id]))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        task = self.operated_task(request, object_id)
        try:
            outcome = services.cancel_task(task.id, user=request.user)
        except REFUSALS as exc:
            self.message_user(request, refusal(task.id, exc), messages.WARNING)
        else:
            if outcome.cancelled:
                message = _("Task %(id)s was cancelled.")
            else:
                message = _("Cancel requested for task %(id)s: it stops at its next check.")
            self.message_user(request, message % {"id": task.id}, messages.SUCCESS)
        return self.change_page(task.id)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        task = self.operated_task(request, object_id)
        if not task.is_terminal:
            self.message_user(request, not_ended(task.id, task.get_state_display()), messages.WARNING)
            return self.change_page(task.id)
        rerun = task.state == TaskState.FINISHED
        request.current_app = self.admin_site.name
        if request.method == "POST":
            form = RetryForm(request.POST)
            if form.is_valid():
                edited = form.cleaned_data["params"]
                try:
                    new = services.retry_task(
                        task.id, user=request.user, params=None if edited == task.task_params else edited, rerun=True
                    )
                except InvalidParams as exc:
                    form.add_error("params", str(exc) if exc.field in str(exc) else f"{exc.field}: {exc}")
                except REFUSALS as exc:
                    form.add_error(None, refusal(task.id, exc))
                else:
                    done = (
                        _("Task %(id)s was re-run as task %(new)s.")
                        if rerun
                        else _("Task %(id)s was retried as task %(new)s.")
                    )
                    self.message_user(request, done % {"id": task.id, "new": new.id}, messages.SUCCESS)
                    return self.change_page(new.id)
        else:
            params = json.dumps(task.task_params, indent=2, ensure_ascii=False)
            form = RetryForm(initial={"params": params})
        title = _("Re-run task %(id)s") if rerun else _("Retry task %(id)s")
        context = {
            **self.admin_site.each_context(request),
            "title": title % {"id": task.id},
            "opts": self.opts,
            "original": task,
            "form": form,
            "rerun": rerun,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/long_time_task/longtimetask/retry.html", context)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[LongTimeTask], search_term: str
    ) -> tuple[QuerySet[LongTimeTask], bool]:
        term = search_term.strip()
        if term.isdigit() and int(term) < 2**63:
            return queryset.filter(id=int(term)), False
        return super().get_search_results(request, queryset, search_term)


@admin.register(ApiToken)
class ApiTokenAdmin(TokenAdminBase):
    list_display = ["key_prefix", "user", "name", "created_at_display", "expires_at_display", "revoked_at_display"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name", "key_prefix"]
    readonly_fields = ["user", "key_prefix", "key_hash", "created_at_display"]
    fields = ["user", "name", "key_prefix", "key_hash", "created_at_display", "expires_at", "revoked_at"]
    created_at_display = time_field(ApiToken, "created_at")
    expires_at_display = time_field(ApiToken, "expires_at")
    revoked_at_display = time_field(ApiToken, "revoked_at")

    class Media:
        js = [ZONE_SCRIPT]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are issued by `manage.py create_api_token`, which shows the token once


class ScheduleAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    """Checked by the schedules' service door, as the API and the CLI are (a cron expression, a zone, the type and
    its params, the owner's permission)."""

    class Meta:
        model = Schedule
        fields = ["owner", *schedule_service.EDITABLE]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        candidate = Schedule(**{name: cleaned.get(name) for name in self.Meta.fields if name in cleaned})
        for name in ("cron", "params"):
            if getattr(candidate, name) is None:
                setattr(candidate, name, "" if name == "cron" else {})
        try:
            schedule_service.validate(candidate, user=None)
        except InvalidSchedule as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        except (InvalidParams, UnknownTaskType) as exc:
            self.add_error("params" if isinstance(exc, InvalidParams) else "task_type", str(exc))
        except services.NotPermitted as exc:
            self.add_error("owner", str(exc))
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = ScheduleAdminForm
    list_display = [
        "name",
        "task_type",
        "timing",
        "timezone",
        "enabled",
        "next_run_display",
        "last_run_display",
        "owner",
    ]
    list_filter = ["enabled", "misfire"]
    list_select_related = ["owner"]
    search_fields = ["name", "task_type"]
    readonly_fields = ["code_name", "paused_reason", "next_run_display", "last_run_display", "last_task"]
    actions = ["pause", "resume", "run_now"]
    next_run_display = time_field(Schedule, "next_run_at")
    last_run_display = time_field(Schedule, "last_run_at")

    class Media:
        js = [ZONE_SCRIPT]

    @admin.display(description=gettext_lazy("timing"))
    def timing(self, obj: Schedule) -> str:
        if obj.cron:
            return obj.cron
        if obj.interval_seconds:
            return _("every %(seconds)s s") % {"seconds": obj.interval_seconds}
        return _("once")

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        if obj.cron is None:
            obj.cron = ""
        if obj.enabled:
            obj.paused_reason = ""
        schedule_service.save_planned(
            obj, timezone.now(), replan=not change or bool(schedule_service.REPLANNED_BY & set(form.changed_data))
        )

    @admin.action(description=gettext_lazy("Pause the selected schedules"))
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_service.set_enabled(schedule.id, False, user=None)
        self.message_user(request, _("Paused."), messages.SUCCESS)

    @admin.action(description=gettext_lazy("Resume the selected schedules"))
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_service.set_enabled(schedule.id, True, user=None)
        self.message_user(request, _("Resumed: each runs from its next due time."), messages.SUCCESS)

    @admin.action(description=gettext_lazy("Run the selected schedules now"))
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        tasks = []
        for schedule in queryset:
            try:
                tasks.append(schedule_service.run_now(schedule.id, user=None).id)
            except (services.NotPermitted, InvalidParams, UnknownTaskType) as exc:
                self.message_user(request, f"{schedule.name}: {exc}", messages.ERROR)
        if tasks:
            self.message_user(
                request, _("Started tasks %(ids)s.") % {"ids": ", ".join(map(str, tasks))}, messages.SUCCESS
            )

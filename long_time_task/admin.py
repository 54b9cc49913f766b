from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .models import ApiToken, LongTimeTask, TaskState

if TYPE_CHECKING:
    TaskAdminBase = admin.ModelAdmin[LongTimeTask]
    TokenAdminBase = admin.ModelAdmin[ApiToken]
else:
    TaskAdminBase = TokenAdminBase = admin.ModelAdmin

STATE_COLORS = {
    TaskState.PENDING: "#ffc107",  # yellow
    TaskState.RUNNING: "#17a2b8",  # blue
    TaskState.RETRYING: "#fd7e14",  # orange
    TaskState.FINISHED: "#28a745",  # green
    TaskState.FAILED: "#dc3545",  # red
}


@admin.register(LongTimeTask)
class LongTimeTaskAdmin(TaskAdminBase):
    """Read-only: tasks change state through the executor and the service layer, never through edits here."""

    list_display = ["id", "task_type", "state_display", "owner", "attempts", "create_at", "start_at", "finish_at"]
    list_filter = ["state", "task_type", "create_at"]
    search_fields = ["celery_task_id", "task_type"]
    list_select_related = ["owner"]
    ordering = ["-create_at"]
    list_per_page = 50
    date_hierarchy = "create_at"
    readonly_fields = [
        "id",
        "celery_task_id",
        "task_type",
        "task_params",
        "state",
        "result",
        "create_at",
        "start_at",
        "finish_at",
        "error_message",
        "owner",
        "attempts",
        "worker",
        "queue",
        "priority",
        "retry_at",
        "error_code",
        "error_traceback",
    ]
    fieldsets = (
        (_("Basic information"), {"fields": ("id", "celery_task_id", "task_type", "task_params", "owner")}),
        (_("Status information"), {"fields": ("state", "attempts", "worker", "queue", "priority")}),
        (_("Time information"), {"fields": ("create_at", "start_at", "finish_at", "retry_at")}),
        (
            _("Result information"),
            {"fields": ("result", "error_message", "error_code", "error_traceback"), "classes": ("collapse",)},
        ),
    )

    @admin.display(description=_("State"), ordering="state")
    def state_display(self, obj: LongTimeTask) -> SafeString:
        color = STATE_COLORS.get(TaskState(obj.state), "#6c757d") if obj.state in TaskState.values else "#6c757d"
        return format_html('<span style="color: {}; font-weight: bold;">{}</span>', color, obj.get_state_display())

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[LongTimeTask], search_term: str
    ) -> tuple[QuerySet[LongTimeTask], bool]:
        term = search_term.strip()
        if term.isdigit() and int(term) < 2**63:
            return queryset.filter(id=int(term)), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(TokenAdminBase):
    list_display = ["key_prefix", "user", "name", "created_at", "expires_at", "revoked_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name", "key_prefix"]
    readonly_fields = ["user", "key_prefix", "key_hash", "created_at"]
    fields = ["user", "name", "key_prefix", "key_hash", "created_at", "expires_at", "revoked_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are issued by `manage.py create_api_token`, which shows the token once

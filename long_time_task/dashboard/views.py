"""The dashboard's pages. Thin views: reads go through ``services.visible_tasks``/``get_task``, and every action
(submit, cancel, retry, re-run) through the same service functions as the API."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import services
from ..conf import conf
from ..models import TERMINAL_STATES, AuditAction, LongTimeTask, TaskAttempt, TaskState
from ..models.attempts import attempt_history
from ..models.audit import SYSTEM
from ..models.querysets import sees_all
from ..pagination import InvalidCursor, after_cursor, capped_count, encode_cursor, fetch_page
from ..registry import InvalidParams, LongTimeTaskRegister, TaskConfig, UnknownTaskType
from ..retention import result_files
from ..timezones import viewer_timezone
from . import overview as stats
from .forms import FilterForm, ParamsForm

PAGE_SIZE = 25
# Audit events that stand for the task's cancel request in its timeline.
CANCEL_ACTIONS = frozenset({AuditAction.CANCEL_REQUESTED, AuditAction.CANCELLED})
# The tag of a message that is only true while the task runs (the page drops it once the task has ended).
UNTIL_ENDED = "until-ended"
View = Callable[..., HttpResponseBase]


def dashboard_view(view: View) -> View:
    """Login required; times shown in the viewer's time zone (long_time_task.timezones); no cache
    keeps a copy of the page (Cache-Control: no-store, private): it shows the viewer's own tasks."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        zone = viewer_timezone(request)
        with timezone.override(zone):
            response = view(request, *args, **kwargs)
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
        add_never_cache_headers(response)
        return response

    return wrapper


def submittable(user: Any) -> list[TaskConfig]:
    return sorted(
        (c for c in LongTimeTaskRegister.get_all_tasks().values() if c.may_submit(user)), key=lambda c: c.name
    )


def task_or_404(request: HttpRequest, task_id: int) -> LongTimeTask:
    task = services.get_task(task_id, user=request.user)
    if task is None:
        raise Http404(_("Task not found"))
    return task


# ---------------------------------------------------------------- list


@require_GET
@dashboard_view
def task_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    types = sorted(LongTimeTaskRegister.get_all_tasks())
    form = FilterForm(request.GET or None, task_types=types)
    tasks = services.visible_tasks(user).select_related("owner")
    if form.is_bound and form.is_valid():
        tasks = form.filter(tasks)
    elif form.is_bound:
        tasks = tasks.none()
    page = _int(request.GET.get("page"), 1)
    cursor = request.GET.get("cursor", "")
    total, estimated = capped_count(tasks, conf.LIST_COUNT_CAP)
    total_pages = max(1, math.ceil(total / PAGE_SIZE))
    offset = 0
    if cursor:
        try:
            tasks = after_cursor(tasks, cursor)
        except InvalidCursor:
            raise Http404(_("This page link is no longer valid.")) from None
        page = 0  # unknown: deep pages are followed by cursor only
    else:
        page = min(page, total_pages) if not estimated else page
        offset = (page - 1) * PAGE_SIZE
        if offset > conf.MAX_LIST_OFFSET:
            raise Http404(_("This page is too deep: follow the Next links instead."))
    rows = fetch_page(tasks, offset, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    filters = {k: v for k, v in request.GET.items() if k not in {"page", "cursor"} and v}

    def link(**extra: Any) -> str:
        return "?" + urlencode({**filters, **extra})

    next_link = None
    if more:
        next_offset = offset + PAGE_SIZE
        use_cursor = cursor or next_offset > conf.MAX_LIST_OFFSET
        next_link = link(cursor=encode_cursor(rows[-1].create_at, rows[-1].id)) if use_cursor else link(page=page + 1)
    context = {
        "form": form,
        "tasks": rows,
        "total": total,
        "estimated": estimated,
        "page": page,
        "total_pages": total_pages,
        "next_link": next_link,
        "prev_link": link(page=page - 1) if page > 1 else None,
        "first_link": link() if (page > 1 or cursor) else None,
        "show_owner": sees_all(user),
        "filtered": bool(filters),
        "task_ids": ",".join(str(t.id) for t in rows if t.state not in TERMINAL_STATES),
    }
    return render(request, "long_time_task_dashboard/task_list.html", context)


def _int(raw: str | None, default: int) -> int:
    try:
        value = int(raw or default)
    except ValueError:
        return default
    return value if 0 < value < 10**9 else default


# ---------------------------------------------------------------- detail


def timeline(
    task: LongTimeTask, events: list[Any], viewer: Any, attempts: list[TaskAttempt] | None = None
) -> list[dict[str, Any]]:
    """The task's history from its columns, its audit trail and (for staff) its attempt history, oldest
    first. Without ``attempts``: the first start and the current attempt's."""
    items: list[dict[str, Any]] = [{"at": task.create_at, "label": _("Submitted"), "kind": "created"}]
    if task.run_after:
        items.append({"at": task.run_after, "label": _("Not before this time (delayed start)"), "kind": "delay"})
    if attempts is not None:
        items.extend(attempt_items(task, attempts))
    else:
        if task.start_at:
            items.append({"at": task.start_at, "label": _("Attempt 1 started"), "kind": "attempt"})
        if task.claimed_at and task.attempts > 1:
            items.append(
                {"at": task.claimed_at, "label": _("Attempt %(n)s started") % {"n": task.attempts}, "kind": "attempt"}
            )
    if task.state == TaskState.RETRYING and task.retry_at:
        items.append({"at": task.retry_at, "label": _("Next attempt due"), "kind": "retry"})
    # The audit trail says who cancelled; the column is the only trace for rows from before the trail.
    if task.cancel_requested_at and not any(e.action in CANCEL_ACTIONS for e in events):
        items.append({"at": task.cancel_requested_at, "label": _("Cancel requested"), "kind": "cancel"})
    if task.progress_at and not task.is_terminal:
        items.append({"at": task.progress_at, "label": _("Last progress report"), "kind": "progress"})
    for event in events:
        items.append(
            {"at": event.at, "label": event_label(event, viewer), "kind": "audit", "new_task": event.new_task_id}
        )
    if task.finish_at:
        items.append({"at": task.finish_at, "label": task.get_state_display(), "kind": task.state.lower()})
    return sorted(items, key=lambda item: item["at"])


def attempt_items(task: LongTimeTask, attempts: list[TaskAttempt]) -> list[dict[str, Any]]:
    """Each attempt's start (with its worker) and, for a recorded one, its end (with its cause and error).
    The end of the last attempt is the task's own final state, shown from ``finish_at``."""
    items: list[dict[str, Any]] = []
    if task.start_at and not any(a.number == 1 for a in attempts):  # from before the history was kept
        items.append({"at": task.start_at, "label": _("Attempt 1 started"), "kind": "attempt"})
    for attempt in attempts:
        if attempt.started_at:
            label = _("Attempt %(n)s started on %(worker)s") if attempt.worker else _("Attempt %(n)s started")
            items.append(
                {"at": attempt.started_at, "label": label % {"n": attempt.number, "worker": attempt.worker},
                 "kind": "attempt"}
            )  # fmt: skip
        if attempt.recorded and attempt.ended_at:
            values = {"n": attempt.number, "outcome": attempt.get_outcome_display()}
            if attempt.cause:
                label = _("Attempt %(n)s ended by recovery (%(cause)s): %(outcome)s")
                values["cause"] = attempt.get_cause_display()
            else:
                label = _("Attempt %(n)s ended: %(outcome)s")
            items.append({"at": attempt.ended_at, "label": label % values, "kind": "attempt-end", "attempt": attempt})
    return items


def event_label(event: Any, viewer: Any) -> str:
    """An audit event as ``viewer`` may read it: staff see who did it; anyone else sees "you", "staff" or
    "the system", never another person's name."""
    action = event.get_action_display()
    if not event.actor_name:
        return str(action)
    if viewer.is_staff:
        return _("%(action)s by %(who)s") % {"action": action, "who": event.actor_name}
    if event.actor_id is not None and event.actor_id == viewer.pk:
        return _("%(action)s by you") % {"action": action}
    if event.actor_id is None and event.actor_name == SYSTEM:
        return _("%(action)s by the system") % {"action": action}
    return _("%(action)s by staff") % {"action": action}


@require_GET
@dashboard_view
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = task_or_404(request, task_id)
    user = request.user
    manage = services.may_manage(user, task)
    config = LongTimeTaskRegister.get_task(task.task_type)
    may_submit = config is not None and config.may_submit(user)
    files = [p.name for p in result_files(task.task_type, task.result)] if manage else []
    events = list(task.audit_events.select_related("new_task").all())
    retries = list(services.visible_tasks(user).filter(retry_of=task).order_by("id").values("id", "state"))
    context: dict[str, Any] = {
        "task": task,
        "config": config,
        "can_cancel": manage and not task.is_terminal and task.cancel_requested_at is None,
        "can_retry": manage and may_submit and task.state in services.RETRYABLE_STATES,
        "can_rerun": manage and may_submit and task.state == TaskState.FINISHED,
        "files": files,
        "show_traceback": user.is_staff and bool(task.error_traceback),
        # Attempts name worker hosts and carry tracebacks: staff only, as the API's detail.
        "timeline": timeline(task, events, user, attempt_history(task) if user.is_staff else None),
        "retries": retries,
        "retry_of_visible": task.retry_of_id is not None and services.get_task(task.retry_of_id, user=user) is not None,
        "show_owner": sees_all(user),
    }
    if task.is_terminal:  # a note about the running task ("asked to stop") is stale now
        context["messages"] = [m for m in messages.get_messages(request) if UNTIL_ENDED not in m.tags.split()]
    return render(request, "long_time_task_dashboard/task_detail.html", context)


@require_POST
@dashboard_view
def task_action(request: HttpRequest, task_id: int, action: str) -> HttpResponse:
    try:
        if action == "cancel":
            outcome = services.cancel_task(task_id, user=request.user)
            if outcome.cancelled:
                messages.success(request, _("Task %(id)s was cancelled.") % {"id": task_id})
            else:
                # Only true while the task runs: the page drops it once the task has ended.
                messages.info(
                    request,
                    _("Task %(id)s is running: it has been asked to stop.") % {"id": task_id},
                    extra_tags=UNTIL_ENDED,
                )
            return redirect("ltt_dashboard:task_detail", task_id=task_id)
        new = services.retry_task(task_id, user=request.user, rerun=action == "rerun")
    except services.TaskNotFound:
        raise Http404(_("Task not found")) from None
    except services.NotPermitted:
        raise PermissionDenied(_("Only the task's owner or staff may do this.")) from None
    except services.ActionNotAllowed as exc:
        messages.error(request, str(exc))
        return redirect("ltt_dashboard:task_detail", task_id=task_id)
    except (services.QuotaExceeded, services.SubmitRateExceeded, InvalidParams, UnknownTaskType) as exc:
        messages.error(request, str(exc))
        return redirect("ltt_dashboard:task_detail", task_id=task_id)
    messages.success(request, _("Task %(new)s was submitted (from task %(old)s).") % {"new": new.id, "old": task_id})
    return redirect("ltt_dashboard:task_detail", task_id=new.id)


@require_GET
@dashboard_view
def download(request: HttpRequest, task_id: int, name: str) -> FileResponse:
    task = task_or_404(request, task_id)
    if not services.may_manage(request.user, task):
        raise Http404(_("File not found"))
    for path in result_files(task.task_type, task.result):
        if path.name == name and path.is_file():
            return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
    raise Http404(_("File not found"))


# ---------------------------------------------------------------- submit


@require_http_methods(["GET", "POST"])
@dashboard_view
def submit(request: HttpRequest) -> HttpResponse:
    configs = submittable(request.user)
    chosen = request.POST.get("task_type") or request.GET.get("task_type") or ""
    config = next((c for c in configs if c.name == chosen), None)
    if chosen and config is None:
        messages.error(request, _("Unknown task type: %(type)s") % {"type": chosen})
    form = None
    status = 400 if request.method == "POST" else 200
    retry_after = None
    if config is not None:
        form = ParamsForm(config, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                submission = services.submit(config.name, form.params(), owner=request.user)
            except InvalidParams as exc:
                form.add_service_error(exc.field, str(exc))
            except (services.QuotaExceeded, UnknownTaskType) as exc:
                form.add_error(None, str(exc))
            except services.SubmitRateExceeded as exc:
                form.add_error(None, str(exc))
                status, retry_after = 429, exc.wait
            else:
                messages.success(request, _("Task %(id)s was submitted.") % {"id": submission.task.id})
                url = reverse("ltt_dashboard:task_detail", kwargs={"task_id": submission.task.id})
                return HttpResponseRedirect(url, status=303)
    response = render(
        request,
        "long_time_task_dashboard/submit.html",
        {"configs": configs, "config": config, "form": form},
        status=status,
    )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


# ---------------------------------------------------------------- overview


@require_GET
@dashboard_view
def overview(request: HttpRequest) -> HttpResponse:
    user = request.user
    tasks = services.visible_tasks(user)
    failures_count, failures = stats.recent_failures(tasks)
    context: dict[str, Any] = {
        "counts": stats.cached_counts(tasks, scope="all" if sees_all(user) else f"user:{user.pk}"),
        "failures_count": failures_count,
        "failures": failures,
        "states": TaskState.choices,
        "show_system": user.is_staff,
    }
    if user.is_staff:
        context["queues"] = stats.queues()
        context["workers"] = stats.workers()
    return render(request, "long_time_task_dashboard/overview.html", context)

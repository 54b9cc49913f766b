"""The dashboard's schedule pages: the list, a new schedule (with the next runs previewed in its zone, on the
server and live), a schedule with its next and last runs, and the actions. Reads go through
``service.visible_schedules``/``get_schedule`` (a schedule the viewer may not see is a 404, as a missing one);
every write goes through the schedules' service, the one the API, the admin and the CLI use."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import services
from ..models import Schedule
from ..models.querysets import sees_all
from ..registry import InvalidParams, TaskConfig, UnknownTaskType
from ..schedules import service
from ..schedules.timing import InvalidSchedule, timing_of, upcoming, zone
from ..timezones import display_time, viewer_timezone
from .forms import ParamsForm
from .schedule_forms import ScheduleForm, wall_clock, zone_names
from .templatetags.ltt_dashboard import seconds
from .views import dashboard_view, submittable

PAGE_SIZE = 50
PREVIEW_COUNT = 5
RUNS_SHOWN = 20
# What a schedule's action may run into besides a missing schedule: the owner lost the right to the type, the
# type or its params are no longer accepted, the owner's quota or submit rate (run now).
ACTION_ERRORS = (
    InvalidSchedule,
    InvalidParams,
    UnknownTaskType,
    services.NotPermitted,
    services.ActionNotAllowed,
    services.QuotaExceeded,
    services.SubmitRateExceeded,
)


def schedule_or_404(request: HttpRequest, schedule_id: int) -> Schedule:
    try:
        return service.get_schedule(schedule_id, user=request.user)
    except service.ScheduleNotFound:
        raise Http404(_("Schedule not found")) from None


def in_zone(value: datetime, zone_name: str) -> str:
    """``2026-05-01 03:00:00 UTC+08:00``: ``value`` on the wall clock of ``zone_name`` (a schedule's zone)."""
    with timezone.override(zone(zone_name)):
        return display_time(value)


def zoned(runs: list[datetime], zone_name: str) -> list[dict[str, str]]:
    if not runs:
        return []
    tz = zone(zone_name)
    return [{"iso": run.astimezone(tz).isoformat(), "shown": in_zone(run, zone_name)} for run in runs]


def timing_text(schedule: Schedule) -> str:
    """The cron expression, "every 600 s (10 min 0 s)" or "once at <time in the schedule's zone>"."""
    if schedule.cron:
        return schedule.cron
    if schedule.interval_seconds:
        every = _("every %(n)s s") % {"n": schedule.interval_seconds}
        return every if schedule.interval_seconds < 60 else f"{every} ({seconds(schedule.interval_seconds)})"
    if schedule.run_at:
        return _("once at %(time)s") % {"time": in_zone(schedule.run_at, schedule.timezone)}
    return "–"


def next_runs(schedule: Schedule) -> list[datetime]:
    """The next due times: from ``next_run_at`` while enabled; while paused, those a resume now would give."""
    try:
        if schedule.enabled:
            return service.preview(schedule, PREVIEW_COUNT).next_runs
        return upcoming(timing_of(schedule), timezone.now() - timedelta(microseconds=1), PREVIEW_COUNT)
    except InvalidSchedule:  # a row written around the service (its zone is gone from this system's tz data)
        return []


def timing_preview(schedule: Schedule, now: datetime) -> list[datetime]:
    """The next due times of an unsaved schedule's timing (cron, interval or run_at, and its zone), checked as
    the service checks them when it creates one (InvalidSchedule naming the field)."""
    service.validate_timing(schedule)
    if schedule.run_at is not None and schedule.run_at <= now:
        raise InvalidSchedule(_("This time has passed: choose a time in the future."), field="run_at")
    service.plan(schedule, now)
    return service.preview(schedule, PREVIEW_COUNT).next_runs


def default_zone(request: HttpRequest) -> str:
    viewer = viewer_timezone(request)
    return viewer.key if viewer is not None else (settings.TIME_ZONE or "UTC")


def back_to(request: HttpRequest, default: str) -> str:
    """The page the action's form came from (its ``next``), if it is one of this site's; else ``default``."""
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if target and safe else default


# ---------------------------------------------------------------- list


@require_GET
@dashboard_view
def schedule_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    page = Paginator(service.visible_schedules(user).select_related("owner"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    last_ids = [s.last_task_id for s in page if s.last_task_id is not None]
    last_tasks = {
        t.id: t for t in services.visible_tasks(user).filter(id__in=last_ids).only("id", "state", "cancel_requested_at")
    }
    rows = [{"schedule": s, "timing": timing_text(s), "last_task": last_tasks.get(s.last_task_id)} for s in page]
    context = {"page": page, "rows": rows, "show_owner": sees_all(user)}
    return render(request, "long_time_task_dashboard/schedule_list.html", context)


# ---------------------------------------------------------------- new


@require_http_methods(["GET", "POST"])
@dashboard_view
def schedule_new(request: HttpRequest) -> HttpResponse:
    configs = submittable(request.user)
    chosen = request.POST.get("task_type") or request.GET.get("task_type") or ""
    config = next((c for c in configs if c.name == chosen), None)
    if chosen and config is None:
        messages.error(request, _("Unknown task type: %(type)s") % {"type": chosen})
    context: dict[str, Any] = {"configs": configs, "config": config, "zones": zone_names()}
    if config is None:
        return render(request, "long_time_task_dashboard/schedule_new.html", context)
    data = request.POST if request.method == "POST" else None
    form = ScheduleForm(data, initial={"timezone": default_zone(request)})
    params_form = ParamsForm(config, data, prefix="param")
    context.update(form=form, params_form=params_form, preview=None, preview_zone=None)
    if data is None:
        return render(request, "long_time_task_dashboard/schedule_new.html", context)
    valid = form.is_valid() & params_form.is_valid()  # both: every error at once
    if request.POST.get("action") == "preview":
        preview_on_form(request, form, params_form, config, context, valid=valid)
    elif valid:
        try:
            made = service.create_schedule(
                user=request.user, task_type=config.name, params=params_form.params(), **form.schedule_fields()
            )
        except (InvalidSchedule, InvalidParams, UnknownTaskType, services.NotPermitted) as exc:
            service_error(exc, form, params_form)
        else:
            schedule = made.schedule
            messages.success(request, _("Schedule “%(name)s” was created.") % {"name": schedule.name})
            url = reverse("ltt_dashboard:schedule_detail", kwargs={"schedule_id": schedule.id})
            return HttpResponseRedirect(url, status=303)
    failed = bool(form.errors or params_form.errors)
    return render(request, "long_time_task_dashboard/schedule_new.html", context, status=400 if failed else 200)


def preview_on_form(
    request: HttpRequest,
    form: ScheduleForm,
    params_form: ParamsForm,
    config: TaskConfig,
    context: dict[str, Any],
    *,
    valid: bool,
) -> None:
    """The "Preview" button: the next runs of the timing as typed (whatever else is wrong), then every check
    of the service on the schedule, unsaved."""
    cleaned = form.cleaned_data
    kind = cleaned.get("timing")
    if kind in cleaned and "timezone" in cleaned and not {kind, "timezone"} & set(form.errors):
        candidate = Schedule(timezone=cleaned["timezone"], **{kind: cleaned[kind]})
        try:
            runs = timing_preview(candidate, timezone.now())
        except InvalidSchedule as exc:
            form.add_service_error(exc.field, exc.message)
        else:
            context.update(preview=zoned(runs, candidate.timezone), preview_zone=candidate.timezone)
    if valid and not form.errors:
        user: Any = request.user  # logged in (dashboard_view)
        schedule = Schedule(owner=user, task_type=config.name, params=params_form.params(), **form.schedule_fields())
        try:
            service.validate(schedule, user=user)
        except (InvalidSchedule, InvalidParams, UnknownTaskType, services.NotPermitted) as exc:
            service_error(exc, form, params_form)


def service_error(exc: Exception, form: ScheduleForm, params_form: ParamsForm) -> None:
    """A refusal of the service, on the field it names."""
    if isinstance(exc, InvalidSchedule):
        form.add_service_error(exc.field, exc.message)
    elif isinstance(exc, InvalidParams):
        if params_form.free_form:
            params_form.add_error("params", str(exc))
        else:
            params_form.add_service_error(exc.field, str(exc))
    else:
        form.add_error(None, str(exc))


@require_GET
@dashboard_view
def schedule_preview(request: HttpRequest) -> JsonResponse:
    """``{"runs": [ISO 8601 in the zone], "shown": [as the pages show them], "timezone", "error", "field"}``: the
    next runs of a timing as it is typed (the new schedule page's script asks as the viewer types)."""
    query = request.GET
    name = query.get("timezone", "").strip() or default_zone(request)
    try:
        interval = query.get("interval_seconds", "").strip()
        if interval and not (interval.isascii() and interval.isdigit() and len(interval) < 12):
            raise InvalidSchedule(_("Enter a whole number of seconds."), field="interval_seconds")
        every = int(interval) if interval else None
        cron = query.get("cron", "").strip()
        if len(cron) > 100:  # the column's
            raise InvalidSchedule(_("Enter at most 100 characters."), field="cron")
        at = query.get("run_at", "").strip()
        candidate = Schedule(
            cron=cron, interval_seconds=every, run_at=wall_clock(at, name) if at else None, timezone=name
        )
        runs = timing_preview(candidate, timezone.now())
    except InvalidSchedule as exc:
        return JsonResponse({"runs": [], "shown": [], "timezone": name, "error": exc.message, "field": exc.field})
    shown = zoned(runs, candidate.timezone)
    return JsonResponse(
        {
            "runs": [run["iso"] for run in shown],
            "shown": [run["shown"] for run in shown],
            "timezone": candidate.timezone,
            "error": None,
            "field": None,
        }
    )


# ---------------------------------------------------------------- detail and actions


@require_GET
@dashboard_view
def schedule_detail(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = schedule_or_404(request, schedule_id)
    user = request.user
    runs = (
        services.visible_tasks(user)
        .filter(schedule=schedule)
        .only("id", "task_type", "state", "cancel_requested_at", "scheduled_for", "create_at", "finish_at")
        .order_by("-create_at", "-id")[:RUNS_SHOWN]
    )
    shown = list(runs)
    context = {
        "schedule": schedule,
        "timing": timing_text(schedule),
        "next_runs": zoned(next_runs(schedule), schedule.timezone),
        "runs": shown,
        "live_ids": ",".join(str(task.id) for task in shown if not task.is_terminal),
        "runs_shown": RUNS_SHOWN,
        "show_owner": sees_all(user),
    }
    return render(request, "long_time_task_dashboard/schedule_detail.html", context)


@require_POST
@dashboard_view
def schedule_action(request: HttpRequest, schedule_id: int, action: str) -> HttpResponse:
    schedule = schedule_or_404(request, schedule_id)
    user, name = request.user, schedule.name
    back = back_to(request, reverse("ltt_dashboard:schedule_detail", kwargs={"schedule_id": schedule.id}))
    try:
        if action == "run":
            task = service.run_now(schedule.id, user=user)
            messages.success(request, _("Schedule “%(name)s” started task %(id)s.") % {"name": name, "id": task.id})
        else:
            made = service.set_enabled(schedule.id, action == "resume", user=user)
            if action == "pause":
                messages.success(request, _("Schedule “%(name)s” was paused.") % {"name": name})
            elif made.next_runs:
                values = {"name": name, "time": display_time(made.next_runs[0])}
                messages.success(request, _("Schedule “%(name)s” was resumed; next run: %(time)s.") % values)
            else:
                messages.warning(request, _("Schedule “%(name)s” was resumed, but no run is left.") % {"name": name})
    except service.ScheduleNotFound:
        raise Http404(_("Schedule not found")) from None
    except ACTION_ERRORS as exc:
        messages.error(request, _("Schedule “%(name)s”: %(error)s") % {"name": name, "error": exc})
    return HttpResponseRedirect(back, status=303)


@require_http_methods(["GET", "POST"])
@dashboard_view
def schedule_delete(request: HttpRequest, schedule_id: int) -> HttpResponse:
    """Asks first: a page without the script, a dialog with it (which sends ``confirmed=yes``)."""
    schedule = schedule_or_404(request, schedule_id)
    if request.method == "POST" and request.POST.get("confirmed") == "yes":
        try:
            service.delete_schedule(schedule.id, user=request.user)
        except service.ScheduleNotFound:
            raise Http404(_("Schedule not found")) from None
        except services.ActionNotAllowed as exc:  # declared in code: the code deletes it
            messages.error(request, str(exc))
            url = reverse("ltt_dashboard:schedule_detail", kwargs={"schedule_id": schedule.id})
            return HttpResponseRedirect(url, status=303)
        messages.success(
            request, _("Schedule “%(name)s” was deleted; its past runs are kept.") % {"name": schedule.name}
        )
        return HttpResponseRedirect(reverse("ltt_dashboard:schedule_list"), status=303)
    return render(request, "long_time_task_dashboard/schedule_delete.html", {"schedule": schedule})

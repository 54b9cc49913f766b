"""The dashboard's schedule form: what runs (a type's ``ParamsForm``, as on the submit page), when (one timing in
an IANA zone) and how (missed runs, overlap). The form only parses; the schedules' service checks it all.

A "once at" time is typed as wall-clock time in the schedule's own zone (a ``datetime-local`` input has no zone),
so "09:00 in Asia/Shanghai" means what it says whatever the viewer's zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, cast
from zoneinfo import available_timezones

from django import forms
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..conf import conf
from ..models import MisfirePolicy
from ..schedules.service import MAX_INTERVAL, TIMING
from ..schedules.timing import InvalidSchedule, zone

TIMING_FIELDS = TIMING
TIMING_CHOICES = [
    ("cron", _("Cron expression")),
    ("interval_seconds", _("Every N seconds")),
    ("run_at", _("Once, at a date and time")),
]


@cache
def zone_names() -> list[str]:
    """Every IANA zone name, sorted (the time zone field's suggestions)."""
    return sorted(available_timezones())


def wall_clock(text: str, zone_name: str) -> datetime:
    """``text`` as an aware time: ISO 8601, as a ``datetime-local`` input gives it (``2026-05-01T09:00``), read
    in ``zone_name`` unless it has its own offset. A wall-clock time the zone skips (the hour lost when the
    clocks go forward) is an error rather than a guess."""
    tz = zone(zone_name)
    try:
        value = datetime.fromisoformat(text.strip())
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        local = value.replace(tzinfo=tz)
        exists = local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == value
    except (ValueError, OverflowError):
        raise InvalidSchedule(gettext("Enter a valid date and time."), field="run_at") from None
    if not exists:
        raise InvalidSchedule(
            gettext("%(time)s does not exist in %(zone)s: the clocks skip it.")
            % {"time": f"{value:%Y-%m-%d %H:%M}", "zone": zone_name},
            field="run_at",
        )
    return local


class ScheduleForm(forms.Form):
    """Everything of a schedule but its task type and params. ``schedule_fields()`` gives the keyword
    arguments of ``service.create_schedule`` (only the chosen timing; a "once at" time made aware)."""

    name = forms.CharField(label=_("Name"), max_length=200)
    timing = forms.ChoiceField(
        label=_("Runs"), choices=TIMING_CHOICES, initial="cron", widget=forms.RadioSelect(attrs={"data-timing": ""})
    )
    cron = forms.CharField(
        label=_("Cron expression"),
        required=False,
        max_length=100,
        help_text=_("Five fields: minute hour day-of-month month day-of-week. “0 3 * * *” is every day at 03:00."),
        widget=forms.TextInput(attrs={"placeholder": "0 3 * * *", "spellcheck": "false", "autocomplete": "off"}),
    )
    interval_seconds = forms.IntegerField(
        label=_("Every (seconds)"), required=False, min_value=1, max_value=MAX_INTERVAL
    )
    run_at = forms.CharField(
        label=_("Once at"),
        required=False,
        max_length=40,
        help_text=_("In the schedule's time zone."),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )
    timezone = forms.CharField(
        label=_("Time zone"),
        max_length=64,
        help_text=_("An IANA name, such as Asia/Shanghai or Europe/Paris: the zone the times above are read in."),
        widget=forms.TextInput(attrs={"list": "ltt-zones", "spellcheck": "false", "autocomplete": "off"}),
    )
    misfire = forms.ChoiceField(
        label=_("Missed runs"),
        choices=MisfirePolicy.choices,
        initial=MisfirePolicy.RUN_ONCE,
        help_text=_("What to do with due times the scheduler finds late (it was down, say)."),
    )
    misfire_limit = forms.IntegerField(
        label=_("Missed runs caught up at most"),
        min_value=0,
        max_value=1000,
        initial=10,
        help_text=_("Only for “run each missed run”."),
    )
    skip_if_running = forms.BooleanField(label=_("Skip a run while the previous one is unfinished"), required=False)
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        interval = cast(forms.IntegerField, self.fields["interval_seconds"])
        interval.widget.attrs["min"] = conf.SCHEDULE_MIN_INTERVAL
        interval.help_text = _("At least %(n)s.") % {"n": conf.SCHEDULE_MIN_INTERVAL}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("timing")
        if kind in TIMING_FIELDS and kind not in self.errors and cleaned.get(kind) in (None, ""):
            self.add_error(kind, _("Enter a value for this timing, or choose another."))
        elif kind == "run_at" and "timezone" in cleaned and "run_at" not in self.errors:
            try:
                cleaned["run_at"] = wall_clock(cleaned["run_at"], cleaned["timezone"])
            except InvalidSchedule as exc:
                self.add_error(exc.field, exc.message)
        return cleaned

    def schedule_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        kind = data["timing"]
        fields = {
            name: data[name] for name in ("name", "timezone", "misfire", "misfire_limit", "skip_if_running", "enabled")
        }
        fields[kind] = data[kind]
        return fields

    def add_service_error(self, field: str, message: str) -> None:
        """An error of the schedules' service, on the field it names (the form's own errors otherwise)."""
        self.add_error(field if field in self.fields else None, message)

"""Template helpers of the dashboard."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from ...timezones import time_html

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds, short and readable: "0.4 s", "12 s", "3 min 5 s", "2 h 10 min"."""
    if value is None:
        return "–"
    value = float(value)
    if value < 10:
        return _("%(n).1f s") % {"n": value}
    total = round(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(h)d h %(m)d min") % {"h": hours, "m": minutes}
    if minutes:
        return _("%(m)d min %(s)d s") % {"m": minutes, "s": secs}
    return _("%(s)d s") % {"s": secs}


@register.filter
def local_time(value: datetime) -> SafeString:
    """``<time>2025-01-05 23:33:00 UTC+08:00</time>``, in the viewer's zone (long_time_task.timezones)."""
    return time_html(value)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


@register.filter
def percent(value: float | None) -> str:
    return "" if value is None else f"{float(value):.0f}"


@register.simple_tag
def js_strings() -> str:
    """The script's strings, translated, as a JSON script element (no JavaScript catalog needed)."""
    strings = {
        "live": _("Live"),
        "polling": _("Updating every few seconds"),
        "offline": _("Not updating: reload the page to see changes"),
        "newTasks": _("New tasks were submitted."),
        "show": _("Show them"),
        "cancelRequested": _("cancel requested"),
        "finished": _("The task has finished."),
    }
    return json_script(strings, "ltt-strings")

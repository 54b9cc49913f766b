"""Times as people read them: in the viewer's own time zone, one format on the dashboard and in the admin.

The rule: a page shows a time in the viewer's zone, the browser's, which the pages' script
(``static/long_time_task/timezone.js``) stores in the ``ltt_tz`` cookie; until the site knows it, in
``TIME_ZONE``. The format is 24-hour ``YYYY-MM-DD HH:MM:SS`` and the zone as an offset from UTC
(``2025-01-05 23:33:00 UTC+08:00``, ``… UTC`` at offset zero): offsets are unambiguous (CST is China's and
America's) and the browser computes the same text when it redraws a time. The API answers ISO 8601 with
the offset of the same zone.

``ViewerTimezoneMiddleware`` makes the viewer's zone the current one for a request (the admin needs it; the
dashboard also sets it itself, so it works without the middleware).
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from django.http import HttpRequest
from django.utils import timezone
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import format_html
from django.utils.safestring import SafeString

TIMEZONE_COOKIE = "ltt_tz"
ZONE_SCRIPT = "long_time_task/timezone.js"


def viewer_timezone(request: HttpRequest) -> zoneinfo.ZoneInfo | None:
    """The zone the viewer's browser told us (an IANA name in the cookie, URL-encoded by the script: "/" is
    %2F), or None (unknown or not a zone)."""
    name = unquote(request.COOKIES.get(TIMEZONE_COOKIE, ""))
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimezoneMiddleware(MiddlewareMixin):
    """The viewer's zone is the current time zone of the request (else ``TIME_ZONE``)."""

    def process_request(self, request: HttpRequest) -> None:
        zone = viewer_timezone(request)
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)


def utc_offset(value: datetime) -> str:
    """``UTC+08:00``, ``UTC-05:00``, ``UTC+05:30``; ``UTC`` at offset zero."""
    offset = round((value.utcoffset() or timedelta(0)).total_seconds() / 60)
    if not offset:
        return "UTC"
    hours, minutes = divmod(abs(offset), 60)
    return f"UTC{'+' if offset > 0 else '-'}{hours:02d}:{minutes:02d}"


def local_time(value: datetime) -> datetime:
    """``value`` in the current time zone, or in UTC where that zone's time is past the calendar's ends
    (9999-12-31 20:00 UTC is already year 10000 east of UTC)."""
    try:
        return timezone.localtime(value)
    except OverflowError:
        return value.astimezone(UTC)


def display_time(value: datetime) -> str:
    """``2025-01-05 23:33:00 UTC+08:00``: ``value`` in the current time zone."""
    local = local_time(value)
    return f"{local:%Y-%m-%d %H:%M:%S} {utc_offset(local)}"


def time_html(value: datetime) -> SafeString:
    """A ``<time>`` element the pages' script redraws in the browser's zone (the same text, once known)."""
    local = local_time(value)
    return format_html('<time datetime="{}" data-local>{}</time>', local.isoformat(), display_time(local))

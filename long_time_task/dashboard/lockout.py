"""Login throttling for the dashboard's and the admin's login pages, with django-axes.

django-axes counts failed logins per username and per client address in Django's cache and, once either count
reaches ``AXES_FAILURE_LIMIT``, refuses to authenticate (before any password is hashed) for
``AXES_COOLOFF_TIME``, even with the right password. These are its documented hooks; demo/settings.py sets them:

- ``lockout_response`` (``AXES_LOCKOUT_CALLABLE``): 429 with ``Retry-After`` and a clear message; the dashboard
  shows its login page again with the message.
- ``client_ip`` (``AXES_CLIENT_IP_CALLABLE``): the client's address behind ``LONG_TIME_TASK_TRUSTED_PROXY_COUNT``
  reverse proxies (without it, every client behind a proxy shares the proxy's address, and one attacker locks
  everyone out).
- ``username_key`` (``AXES_USERNAME_CALLABLE``): the username, kept apart from addresses. Axes keys its cache
  by the value alone, so failures for the username ``203.0.113.5`` would count against that address.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..conf import conf

DASHBOARD_APP = "ltt_dashboard"


def cool_off(request: HttpRequest) -> timedelta | None:
    """``AXES_COOLOFF_TIME`` as axes documents it: a timedelta, a number of hours, or a callable (or its
    dotted path) taking the request. None: a lockout lasts until staff reset it."""
    value = getattr(settings, "AXES_COOLOFF_TIME", None)
    if isinstance(value, str):
        value = import_string(value)
    if callable(value):
        value = value(request)
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(hours=float(value))


def retry_after_seconds(request: HttpRequest) -> int | None:
    """How long a lockout lasts at most, in whole seconds (the value of ``Retry-After``)."""
    delta = cool_off(request)
    return max(math.ceil(delta.total_seconds()), 1) if delta is not None else None


def lockout_message(seconds: int | None) -> str:
    if seconds is None:
        return _(
            "Too many failed login attempts: logins for this username or from this address are blocked. "
            "Ask an administrator to unlock them."
        )
    minutes = max(math.ceil(seconds / 60), 1)
    return ngettext(
        "Too many failed login attempts: logins for this username or from this address are blocked for up to "
        "%(minutes)d minute. Try again later, or ask an administrator to unlock them.",
        "Too many failed login attempts: logins for this username or from this address are blocked for up to "
        "%(minutes)d minutes. Try again later, or ask an administrator to unlock them.",
        minutes,
    ) % {"minutes": minutes}


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The answer to a login refused by the throttle: 429, ``Retry-After``, and the reason in words.

    Axes calls it with ``(request, original_response, credentials)``, or ``(request, credentials)`` from its
    ASGI path; neither is needed here."""
    seconds = retry_after_seconds(request)
    message = lockout_message(seconds)
    match = getattr(request, "resolver_match", None)
    if match is not None and match.app_name == DASHBOARD_APP:
        username_field = get_user_model().USERNAME_FIELD
        form = AuthenticationForm(request, initial={"username": request.POST.get(username_field, "")})
        context = {"form": form, "locked_out": message, "next": request.POST.get("next", "")}
        response = render(request, "long_time_task_dashboard/login.html", context, status=429)
    else:
        response = render(request, "long_time_task_dashboard/locked_out.html", {"message": message}, status=429)
    if seconds is not None:
        response["Retry-After"] = str(seconds)
    return response


def client_ip(request: HttpRequest) -> str | None:
    """The client's address. Behind ``n`` trusted proxies that each append the address they received the
    request from to ``X-Forwarded-For``, it is the n-th entry from the right; anything further left was written
    by the client and is not trusted. A request with fewer entries did not come through the proxies."""
    remote = request.META.get("REMOTE_ADDR") or None
    hops = conf.TRUSTED_PROXY_COUNT
    if not hops:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-hops]))
    except ValueError:
        return remote


def username_key(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str | None:
    """The username a login attempt is counted under: as typed, unless it reads as an IP address, which gets a
    suffix so that it never shares the counter of that address (staff unlock such a user as
    ``axes_reset_username "<name> (username)"``)."""
    field = str(getattr(settings, "AXES_USERNAME_FORM_FIELD", None) or get_user_model().USERNAME_FIELD)
    source: Any = credentials if credentials else getattr(request, "data", None) or request.POST
    value = source.get(field)
    if value is None:
        return None
    username = str(value)
    try:
        ipaddress.ip_address(username)
    except ValueError:
        return username
    return f"{username} (username)"

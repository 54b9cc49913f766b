"""The Content-Security-Policy header on Django 5.2, read from Django 6's own settings.

Django 6.0 sets the header itself (``django.middleware.csp.ContentSecurityPolicyMiddleware``, configured by
``SECURE_CSP`` and ``SECURE_CSP_REPORT_ONLY``). On Django 5.2 this middleware reads the same two settings and
writes the same header, so a project lists one or the other by Django version and keeps one policy::

    MIDDLEWARE = [..., "django.middleware.csp.ContentSecurityPolicyMiddleware" if django.VERSION >= (6, 0)
                  else "long_time_task.security.ContentSecurityPolicyMiddleware", ...]

It has no nonces: the dashboard, the admin pages of long_time_task and the API's docs page have no inline
script or style, so a constant policy is enough. Remove it with Django 5.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

ENFORCE = "Content-Security-Policy"
REPORT_ONLY = "Content-Security-Policy-Report-Only"


def build_policy(config: Mapping[str, Any]) -> str:
    """The header's value, as Django 6 renders it: ``directive source source; directive ...``; a directive
    whose value is ``True`` stands alone, one that is ``None``, ``False`` or empty is left out."""
    policy = []
    for directive, values in config.items():
        if values is None or values is False:
            continue
        if values is True:
            policy.append(directive)
            continue
        if isinstance(values, str):
            values = [values]
        elif isinstance(values, set | frozenset):
            values = sorted(values)
        if values:
            policy.append(f"{directive} {' '.join(values)}")
    return "; ".join(policy)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Sets ``Content-Security-Policy`` from ``SECURE_CSP`` (and ``-Report-Only`` from
    ``SECURE_CSP_REPORT_ONLY``), unless the response has its own."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        for header, name in ((ENFORCE, "SECURE_CSP"), (REPORT_ONLY, "SECURE_CSP_REPORT_ONLY")):
            config = getattr(settings, name, None)
            if config and header not in response:
                response.headers[header] = build_policy(config)
        return response

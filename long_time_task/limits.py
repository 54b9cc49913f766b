"""Request limits of the API: body size, submission rate."""

from __future__ import annotations

import io
from typing import Any

from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle

from .conf import conf


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class LimitedJSONParser(JSONParser):
    """JSON, but never more than LONG_TIME_TASK_MAX_BODY_BYTES of it (whatever Content-Length claims)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = conf.MAX_BODY_BYTES
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise RequestTooLarge(_("The request body is larger than %(limit)s bytes.") % {"limit": limit})
        try:
            return super().parse(io.BytesIO(data), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(_("JSON parse error - the body is nested too deeply.")) from None


class SubmitRateThrottle(UserRateThrottle):
    """Submissions per user, at LONG_TIME_TASK_SUBMIT_RATE (429 with Retry-After above it)."""

    scope = "long_time_task_submit"

    def get_rate(self) -> str | None:
        return conf.SUBMIT_RATE

    def allow_request(self, request: Request, view: Any) -> bool:
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

"""Errors as values with codes: every API error is ``{"success": false, "error": "...", "code": "..."}``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, renderers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .limits import request_too_large


class ApiError(exceptions.APIException):
    """An error with an explicit status and code, raised by views and turned into the JSON error shape."""

    def __init__(self, message: str, *, code: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested error details into readable "field: message" lines."""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            lines.extend(_flatten(value, name))
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def _first_code(detail: Any, default: str) -> str:
    if isinstance(detail, dict):
        for value in detail.values():
            return _first_code(value, default)
    if isinstance(detail, list) and detail:
        return _first_code(detail[0], default)
    return str(getattr(detail, "code", None) or default)


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code}


def _from_suspicious(exc: SuspiciousOperation, context: dict[str, Any]) -> exceptions.APIException:
    """What Django raises while reading a request it finds suspicious, as an API error.

    Django would answer these with its own HTML 400 page (the debug page with DEBUG on): a body over
    ``DATA_UPLOAD_MAX_MEMORY_SIZE``, which DRF reads whole before its parser does (also when a session
    request's CSRF check reads ``request.POST``); more than ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` query or form
    fields. Logged as Django logs them (``django.security.<name>``), but a body over Django's limit at WARNING
    rather than ERROR: to this API it is one more body over ``MAX_BODY_BYTES``, a client's 413 like the others.
    """
    request = context.get("request")
    logger = logging.getLogger(f"django.security.{type(exc).__name__}")
    if isinstance(exc, RequestDataTooBig):
        logger.warning(str(exc), extra={"status_code": 413, "request": request})
        return request_too_large()
    logger.error(str(exc), extra={"status_code": 400, "request": request})
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return exceptions.ParseError(_("The request has too many fields."), code="invalid_request")
    return exceptions.ParseError(_("The request was refused as suspicious."), code="invalid_request")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, SuspiciousOperation):
        exc = _from_suspicious(exc, context)
    response = exception_handler(exc, context)
    if response is None:
        return None  # a server error: Django's handler logs it
    if isinstance(exc, Http404):
        response.data = error_body(_("Not found."), "not_found")
        return response
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        default_code = exc.default_code if isinstance(exc.default_code, str) else "error"
        if isinstance(exc, exceptions.ValidationError):
            code = _first_code(detail, "invalid")
            if code == "invalid" or code == "required" or code == "null":
                code = "invalid_request"
        else:
            code = _first_code(detail, default_code)
        response.data = error_body("; ".join(_flatten(detail)), code)
    return response


class JsonErrorsMixin:
    """For API views whose success is not JSON (the OpenAPI schema in YAML, the HTML docs page): their errors
    are the API's JSON errors all the same, never an HTML or YAML page."""

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)  # type: ignore[misc]
        request: Request = self.request  # type: ignore[attr-defined]
        request.accepted_renderer = renderers.JSONRenderer()
        request.accepted_media_type = request.accepted_renderer.media_type
        return response


@csrf_exempt  # a POST to no endpoint is a JSON 404, not the CSRF middleware's HTML 403
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """JSON 404 for any path under the API that matches no endpoint."""
    return JsonResponse(error_body(_("Not found."), "not_found"), status=404)

"""``/metrics`` for Prometheus, readable with a staff API token or the scraper's token.

The scraper's token is ``LONG_TIME_TASK_METRICS_TOKEN`` (``Authorization: Bearer <token>``, compared in
constant time); a staff user's API token works too. No credentials: 401; a valid token of a non-staff user:
403; both with the API's JSON error body. The answer is Prometheus's text format (``generate_latest``).

Prometheus scrapes a target by its address, often a pod's IP: ``MetricsMiddleware``, placed right after the
health middleware, answers ``GET``/``HEAD`` ``/metrics`` before ``ALLOWED_HOSTS`` and the HTTPS redirect
could refuse it (nothing here reads the Host header), as the probes are. ``MetricsView`` can be mounted on
any other path instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import authentication, permissions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import conf
from ..metrics.exposition import render
from .authentication import ApiTokenAuthentication

METRICS_PATH = "/metrics"


class Scraper:
    """``request.auth`` of a request that presented the scraper's token."""


class ScraperTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <LONG_TIME_TASK_METRICS_TOKEN>``. Any other credentials are left to the next
    authentication class (an API token)."""

    def authenticate(self, request: Request) -> tuple[Any, Scraper] | None:
        expected = conf.METRICS_TOKEN
        header = authentication.get_authorization_header(request).split()
        if not expected or len(header) != 2 or header[0].lower() != b"bearer":
            return None
        if hmac.compare_digest(header[1], expected.encode()):
            return AnonymousUser(), Scraper()
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="metrics"'


class StaffOrScraper(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return isinstance(request.auth, Scraper) or bool(user and user.is_authenticated and user.is_staff)


class JsonErrors(BaseContentNegotiation):
    """Whatever the client accepts (Prometheus asks for its text formats): errors are JSON, and a scrape is
    Prometheus text, answered directly."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


class MetricsView(APIView):
    authentication_classes = [ScraperTokenAuthentication, ApiTokenAuthentication]
    permission_classes = [StaffOrScraper]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonErrors
    throttle_classes: list[Any] = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)


metrics_view = never_cache(MetricsView.as_view())


class MetricsMiddleware:
    """Answers ``GET``/``HEAD`` ``/metrics`` with ``MetricsView``, before the Host check and the HTTPS redirect;
    passes every other request on. Put it right after ``HealthCheckMiddleware``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    @staticmethod
    def wanted(request: HttpRequest) -> bool:
        return request.method in {"GET", "HEAD"} and request.path_info == METRICS_PATH

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        if self.wanted(request):
            return answer(request)
        response: HttpResponseBase = self.get_response(request)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.wanted(request):
            return await sync_to_async(answer, thread_sensitive=True)(request)
        response: HttpResponseBase = await self.get_response(request)
        return response


def answer(request: HttpRequest) -> HttpResponseBase:
    response: HttpResponseBase = metrics_view(request)
    if hasattr(response, "render") and callable(response.render):
        response = response.render()  # a DRF error response, outside the URL resolver's rendering
    if request.method == "HEAD":
        response.content = b""  # type: ignore[attr-defined]
    return response

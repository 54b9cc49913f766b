"""Token authentication for API clients: ``Authorization: Bearer <token>`` (or ``Token <token>``)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ..models import ApiToken, hash_token

KEYWORDS = (b"bearer", b"token")


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in KEYWORDS:
            return None  # not ours: let session authentication try
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Invalid token header: expected '<keyword> <token>'."))
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        token = ApiToken.objects.usable().select_related("user").filter(key_hash=hash_token(raw)).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("Invalid, expired or revoked token."))
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'

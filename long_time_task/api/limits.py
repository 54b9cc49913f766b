"""Request limits of the API: body size. (The submission rate is counted in ``services.submit``, whatever the
door: see ``ratelimit``.)"""

from __future__ import annotations

import json
import math
from typing import Any

from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

from ..conf import conf

# Python's own default for int(str) (sys.set_int_max_str_digits), fixed here whatever the process sets.
MAX_INTEGER_DIGITS = 4300


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


def request_too_large() -> RequestTooLarge:
    limit = conf.MAX_BODY_BYTES
    return RequestTooLarge(_("The request body is larger than %(limit)s bytes.") % {"limit": limit})


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(_("an integer has more than %(n)s digits") % {"n": MAX_INTEGER_DIGITS})
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 would quietly become Infinity
        raise ValueError(_("the number %(number)s is out of range") % {"number": text[:40]})
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(_("%(name)s is not a JSON number") % {"name": name})


class LimitedJSONParser(JSONParser):
    """JSON, but never more than LONG_TIME_TASK_MAX_BODY_BYTES of it (whatever Content-Length claims), with
    clear errors for what Python's json module would otherwise answer with its internals: NaN and Infinity,
    numbers that overflow a float, integers too long to convert, nesting too deep to parse."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = conf.MAX_BODY_BYTES
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise request_too_large()
        encoding = (parser_context or {}).get("encoding") or "utf-8"  # DRF passes the request's charset
        try:
            "".encode(encoding)  # a text codec only: bytes-to-bytes ones (bz2_codec) would inflate the body
            text = data.decode(encoding)
        except LookupError:
            raise exceptions.ParseError(_("Unsupported charset %(charset)r.") % {"charset": encoding}) from None
        except UnicodeError:
            raise exceptions.ParseError(
                _("JSON parse error - the body is not valid %(charset)s text.") % {"charset": encoding}
            ) from None
        try:
            return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
        except RecursionError:
            raise exceptions.ParseError(_("JSON parse error - the body is nested too deeply.")) from None
        except ValueError as exc:
            raise exceptions.ParseError(_("JSON parse error - %(reason)s") % {"reason": exc}) from None

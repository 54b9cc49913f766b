"""Rates such as "60/min", counted per name in Django's cache with a sliding-window counter.

Each window of the rate's period is one cache counter, taken with ``cache.add`` then ``cache.incr``: both are
atomic on Redis (and in local memory, within one process), so of N requests arriving together at most the
limit pass; the read-then-write of DRF's throttles lets them all through. The count at a moment is this
window's counter plus the previous window's, weighted by the part of it still inside the last period
(Cloudflare's sliding-window approximation): no burst of twice the limit across a window's edge, two cache
keys per name. Share the cache (Redis) between processes, or each one counts on its own.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# DRF's grammar: the period counts by its first letter ("60/min", "100/hours", "5/days", "10/s").
RATE = re.compile(r"^\s*(\d+)\s*/\s*([smhd])[a-z]*\s*$", re.IGNORECASE)
PREFIX = "ltt-rate"
EPSILON = 1e-6  # float noise in the weights


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds
    text: str

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"60/min"``: a number, a slash, and a period read by its first letter, as DRF reads it: ``s``, ``m``,
        ``h`` or ``d`` (``sec``, ``min``, ``minutes``, ``hour``, ``hours``, ``days``...)."""
        match = RATE.match(text)
        if match is None or int(match.group(1)) < 1:
            raise ImproperlyConfigured(f"{text!r} is not a rate: use e.g. 60/min, 10/s, 1000/hour or 5000/day")
        return cls(int(match.group(1)), PERIODS[match.group(2)[0].lower()], text.strip())


class RateExceeded(Exception):  # noqa: N818
    """No slot is free; ``wait`` is how many seconds until one is (rounded up, at least 1)."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"rate exceeded; a slot is free in {wait}s")
        self.wait = wait


@dataclass(frozen=True)
class Reservation:
    """One slot taken; ``release`` gives it back (the action it was taken for did not happen)."""

    key: str

    def release(self) -> None:
        try:
            cache.decr(self.key)
        except ValueError:
            pass  # the window's counter expired meanwhile: nothing to give back


def _window_key(name: str, rate: Rate, window: int) -> str:
    return f"{PREFIX}:{name}:{rate.period}:{window}"


def _increment(key: str, timeout: int) -> int:
    for _ in range(3):
        if cache.add(key, 1, timeout=timeout):
            return 1
        try:
            return int(cache.incr(key))
        except ValueError:
            continue  # expired between add and incr: add again
    raise RuntimeError(f"could not count {key} in the cache")


def wait_seconds(rate: Rate, previous: int, taken: int, offset: float) -> int:
    """Seconds until one more fits, with ``taken`` in this window, ``previous`` in the last one, and ``offset``
    seconds into this window (the previous window's weight falls linearly to 0 over it)."""
    period, limit = rate.period, rate.limit
    if taken + 1 <= limit and previous > 0:
        # Later in this window, once the previous window's share has fallen to limit - 1 - taken.
        at = period * (1 - (limit - 1 - taken) / previous)
        wait = at - offset
    else:
        # In the next window, once this window's share (then the previous one) has fallen to limit - 1.
        wait = (period - offset) + max(period * (1 - (limit - 1) / taken), 0.0) if taken else period - offset
    return max(math.ceil(wait - EPSILON), 1)


def reserve(name: str, rate: Rate) -> Reservation:
    """Take a slot of ``rate`` for ``name``, or raise RateExceeded with the wait."""
    moment = now()
    window, offset = divmod(moment, rate.period)
    current = _window_key(name, rate, int(window))
    previous = int(cache.get(_window_key(name, rate, int(window) - 1)) or 0)
    count = _increment(current, timeout=2 * rate.period + 1)  # read as "previous" during the next window
    # previous x (period - offset) / period + count <= limit, without dividing.
    if previous * (rate.period - offset) + count * rate.period <= rate.limit * rate.period + EPSILON:
        return Reservation(current)
    Reservation(current).release()
    raise RateExceeded(wait_seconds(rate, previous, count - 1, offset))

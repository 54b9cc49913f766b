"""How every system under test reports a finished task: one Redis round trip (uniform for all systems)."""

from __future__ import annotations

import os
import time
from functools import cache

import redis

DONE_KEY = "bench:done"
LATENCY_KEY = "bench:latency"
FINISHED_KEY = "bench:finished"


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("BENCH_MARK_URL", "redis://127.0.0.1:6379/13"))


def mark(sent_at: float) -> None:
    """Count one finished task and record its submit-to-finish latency (seconds)."""
    now = time.time()
    pipe = client().pipeline(transaction=False)
    pipe.incr(DONE_KEY)
    pipe.rpush(LATENCY_KEY, now - sent_at)
    pipe.rpush(FINISHED_KEY, now)
    pipe.execute()

"""A sliding-window limit of N calls per W seconds per quota owner, shared by every process.

Redis when REDIS_URL is set: one Lua script on a sorted set, timed by the Redis server's own
clock (TIME), so hosts with drifting clocks still share one window and no check-then-act race
exists. Otherwise the database: an IMMEDIATE transaction on SQLite (or a row lock on PostgreSQL)
around count-then-insert. `acquire` never sleeps: it answers how long to wait.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction
from django_redis import get_redis_connection

from crms.base import ConnectorError
from crms.models import Connection
from sync.models import ThrottleCall

# KEYS[1] the window; ARGV: limit, window in ms, a unique member. Returns 0 (granted) or the ms to wait.
_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now_ms)
"""


class Throttle(Protocol):
    def acquire(self, key: str, limit: int, window: float) -> float:
        """Take one call if the window has room (0.0), else the seconds until it will."""


class RedisThrottle:
    def __init__(self) -> None:
        self.script = get_redis_connection("default").register_script(_LUA)

    def acquire(self, key: str, limit: int, window: float) -> float:
        waited_ms = self.script(keys=[f"recordsync:throttle:{key}"], args=[limit, int(window * 1000), uuid.uuid4().hex])
        return int(waited_ms) / 1000


class DatabaseThrottle:
    clock: Callable[[], float] = staticmethod(time.time)  # swappable: tests move time

    def acquire(self, key: str, limit: int, window: float) -> float:
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        start = now - timedelta(seconds=window)
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Count-then-insert must not interleave: one holder per key until commit.
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"throttle:{key}"])
            # (SQLite: the IMMEDIATE transaction already holds the database's write lock.)
            ThrottleCall.objects.filter(key=key, at__lte=start).delete()  # the window is (now - W, now]
            calls = list(ThrottleCall.objects.filter(key=key).order_by("at").values_list("at", flat=True)[:limit])
            if len(calls) < limit:
                ThrottleCall.objects.create(key=key, at=now)
                return 0.0
        return max(0.001, (calls[0] + timedelta(seconds=window) - now).total_seconds())


def throttle() -> Throttle:
    return RedisThrottle() if settings.REDIS_URL else DatabaseThrottle()


# A worker waits this long at most for the window; longer, it gives the batch back (Throttled).
MAX_WAIT_SECONDS = 1.0


class Throttled(ConnectorError):
    """The connection's window is full for longer than a worker should wait: try again later."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limit: the window frees up in {wait:.1f} s", code="THROTTLED", retry_after=wait)


def quota_key(connection: Connection) -> str:
    """Connections that share an allowance (one Salesforce org, one Outreach user) share a key."""
    return connection.quota_owner or f"connection:{connection.name}"


def gate_for(
    connection: Connection, *, limit: int, window: float, backend: Throttle | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[], None]:  # fmt: skip
    """What the HTTP seam calls before every request of this connection."""
    chosen = backend or throttle()
    key = quota_key(connection)

    def gate() -> None:
        while True:
            wait = chosen.acquire(key, limit, window)
            if wait == 0:
                return
            if wait > MAX_WAIT_SECONDS:
                raise Throttled(wait)
            sleep(wait)

    return gate

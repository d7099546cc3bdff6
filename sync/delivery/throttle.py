"""A sliding-window limit of N calls per W seconds per quota owner, shared by every process,
that also obeys what the target says about its own allowance.

Redis when REDIS_URL is set: one Lua script on a sorted set, timed by the Redis server's own
clock (TIME), so hosts with drifting clocks still share one window and no check-then-act race
exists. Otherwise the database: an IMMEDIATE transaction on SQLite (or an advisory lock on
PostgreSQL) around count-then-insert. `acquire` never sleeps: it answers how long to wait.

Two more limits come from the target's answers (read in the HTTP seam by `observer_for`):
a *hold* (stop calling for a while: a 429's Retry-After, a daily request limit reached,
an exhausted allowance) and a *cap* (past a configurable share of the target's allowance, the
calls left are spread evenly until it refills). Both live beside the window, so every worker
obeys what any one of them heard. Either can end early: `release` lifts a hold (a probe found the
target taking calls again, or staff resumed it; sync/delivery/holds.py) and an answer showing room again
drops the cap.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import requests
from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.db.models import Q, QuerySet
from django_redis import get_redis_connection

from crms.base import NotSent, QuotaSignal
from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from recordsync.metrics import THROTTLE_WAITS
from sync.delivery import allowance
from sync.models import Lane, ThrottleCall, ThrottleLimit

logger = logging.getLogger("recordsync.throttle")

# KEYS: the calls (sorted set), the hold, the cap (hash n, p). ARGV: our limit (0: none), our window
# in ms, a unique member, the ms the call may stay unanswered, the caller's lane's share of each limit in
# thousandths (a lane sees a window full once it holds that share: the rest is kept for the lanes before
# it). Returns 0 (granted: the call is recorded, scored as if it arrived at the latest it can, until
# `_SETTLE` scores it when answered) or the ms to wait.
# A call in flight (scored in the future) holds its place; a full window of them frees up a window after
# the first answer at the earliest: that is the wait told (the caller looks again then).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('PTTL', KEYS[2])
if held > 0 then return held end
local rules = {}
if tonumber(ARGV[1]) > 0 then rules[#rules + 1] = {tonumber(ARGV[1]), tonumber(ARGV[2])} end
local cap = redis.call('HMGET', KEYS[3], 'n', 'p')
if cap[1] then rules[#rules + 1] = {tonumber(cap[1]), tonumber(cap[2])} end
if #rules == 0 then return 0 end
local share = tonumber(ARGV[5])
for _, r in ipairs(rules) do r[1] = math.max(1, math.floor(r[1] * share / 1000)) end
local keep = 0
for _, r in ipairs(rules) do if r[2] > keep then keep = r[2] end end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - keep)
local wait = 0
for _, r in ipairs(rules) do
  local since = '(' .. (now - r[2])
  if redis.call('ZCOUNT', KEYS[1], since, '+inf') >= r[1] then
    local nth = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', since, 'WITHSCORES', 'LIMIT', r[1] - 1, 1)
    wait = math.max(wait, math.min(tonumber(nth[2]), now) + r[2] - now)
  end
end
if wait > 0 then return math.max(1, wait) end
local busy = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now + busy, ARGV[3])
redis.call('PEXPIRE', KEYS[1], keep + busy)
return 0
"""
# KEYS: the calls. ARGV: the member. The call was answered: it arrived by now (never moved later).
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) > now then redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1]) end
"""
# KEYS: the hold. ARGV: ms. Never shortens a longer hold another worker set.
_HOLD = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], 1, 'PX', ARGV[1]) end
"""


class Throttle(Protocol):
    def acquire(
        self, key: str, limit: int, window: float, *, ticket: str = "", busy_for: float = 0.0, share: float = 1.0
    ) -> float:
        """Take one call if every limit has room (0.0), else the seconds until it will. limit 0: none of ours.

        `share`: the caller's lane sees each limit (ours, the target's cap) as that share of it, at least one
        call (lane_share). With a `ticket`, the call counts as arriving `busy_for` seconds from now (the latest
        it can) until `settle(key, ticket)` says it was answered, and so arrived, by then."""

    def settle(self, key: str, ticket: str) -> None:
        """The call taken with `ticket` was answered (or failed): it counts from now, not from its latest."""

    def hold(self, key: str, seconds: float) -> None:
        """No call at all for `seconds` (a longer hold already set stays)."""

    def cap(self, key: str, calls: int, per: float, seconds: float) -> None:
        """At most `calls` per `per` seconds, for the next `seconds`."""

    def release(self, key: str) -> bool:
        """Lift the hold now; True if one was in force."""

    def uncap(self, key: str) -> bool:
        """Drop the cap now; True if one was in force, or lapsed less than `recheck_seconds()` ago (jobs it
        handed back may still be waiting)."""


def redis_keys(key: str) -> list[str]:
    """One quota owner's window, hold and cap in Redis (the stats read them; nothing else names them)."""
    return [f"recordsync:throttle:{key}", f"recordsync:throttle-hold:{key}", f"recordsync:throttle-cap:{key}"]


def redis_capped_key(key: str) -> str:
    """Set beside every cap, kept `recheck_seconds()`: the cap may lapse before jobs it handed back are due."""
    return f"recordsync:throttle-capped:{key}"


def recheck_seconds() -> float:
    """The longest a call handed back by the throttle waits before looking again (SYNC_THROTTLE_RECHECK_SECONDS,
    default 900): a cap's spread of a nearly spent allowance can be hours, and usage may fall long before.
    Looking again costs no call while the limit stands; an answer that shows room sooner wakes the jobs at once."""
    return float(settings.SYNC_THROTTLE_RECHECK_SECONDS)


class RedisThrottle:
    def __init__(self) -> None:
        self.redis = get_redis_connection("default")
        self.script = self.redis.register_script(_ACQUIRE)
        self.hold_script = self.redis.register_script(_HOLD)
        self.settle_script = self.redis.register_script(_SETTLE)

    def acquire(
        self, key: str, limit: int, window: float, *, ticket: str = "", busy_for: float = 0.0, share: float = 1.0
    ) -> float:
        member = ticket or uuid.uuid4().hex
        args = [limit, int(window * 1000), member, int(busy_for * 1000), round(share * 1000)]
        waited_ms = self.script(keys=redis_keys(key), args=args)
        return int(waited_ms) / 1000

    def settle(self, key: str, ticket: str) -> None:
        self.settle_script(keys=redis_keys(key)[:1], args=[ticket])

    def hold(self, key: str, seconds: float) -> None:
        self.hold_script(keys=redis_keys(key)[1:2], args=[max(1, int(seconds * 1000))])

    def cap(self, key: str, calls: int, per: float, seconds: float) -> None:
        name = redis_keys(key)[2]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={"n": calls, "p": max(1, int(per * 1000))})
            pipe.pexpire(name, max(1, int(seconds * 1000)))
            pipe.set(redis_capped_key(key), 1, px=max(1, int(recheck_seconds() * 1000)))
            pipe.execute()

    def release(self, key: str) -> bool:
        return bool(self.redis.delete(redis_keys(key)[1]))

    def uncap(self, key: str) -> bool:
        return bool(self.redis.delete(redis_keys(key)[2], redis_capped_key(key)))


class DatabaseThrottle:
    clock: Callable[[], float] = staticmethod(time.time)  # swappable: tests move time

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def acquire(
        self, key: str, limit: int, window: float, *, ticket: str = "", busy_for: float = 0.0, share: float = 1.0
    ) -> float:
        before = self._now()
        active = Q(hold_until__gt=before) | Q(cap_until__gt=before)
        if limit <= 0 and not ThrottleLimit.objects.filter(active, key=key).exists():
            return 0.0  # nothing limits this owner: no write lock taken
        with transaction.atomic():
            if db.vendor == "postgresql":
                # Count-then-insert must not interleave: one holder per key until commit.
                with db.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"throttle:{key}"])
            # (SQLite: the IMMEDIATE transaction already holds the database's write lock.)
            now = self._now()  # read once the lock is held: time spent waiting for it is not in the window
            target = ThrottleLimit.objects.filter(key=key).first()
            if target is not None and target.hold_until is not None and target.hold_until > now:
                return (target.hold_until - now).total_seconds()
            rules = [(limit, float(window))] if limit > 0 else []
            if target is not None and target.cap_until is not None and target.cap_until > now and target.cap_calls:
                rules.append((target.cap_calls, float(target.cap_seconds or window)))
            if not rules:
                return 0.0
            rules = [(lane_limit(calls, share), per) for calls, per in rules]
            keep = max(per for _, per in rules)
            ThrottleCall.objects.filter(key=key, at__lte=now - timedelta(seconds=keep)).delete()
            wait = max(self._wait(key, calls, per, now) for calls, per in rules)
            if wait > 0:
                return max(0.001, wait)
            ThrottleCall.objects.create(key=key, at=now + timedelta(seconds=busy_for), ticket=ticket)
        return 0.0

    def settle(self, key: str, ticket: str) -> None:
        now = self._now()
        ThrottleCall.objects.filter(key=key, ticket=ticket, at__gt=now).update(at=now)

    @staticmethod
    def _wait(key: str, calls: int, per: float, now: datetime) -> float:
        """The window is (now - per, now]: full when it holds `calls` (calls still in flight, counted at their
        latest arrival, included); it frees up when the calls-th newest leaves, a window after it is answered."""
        recent = ThrottleCall.objects.filter(key=key, at__gt=now - timedelta(seconds=per)).order_by("-at")
        newest = list(recent.values_list("at", flat=True)[:calls])
        if len(newest) < calls:
            return 0.0
        return (min(newest[-1], now) + timedelta(seconds=per) - now).total_seconds()

    def hold(self, key: str, seconds: float) -> None:
        until = self._now() + timedelta(seconds=seconds)
        with transaction.atomic():
            row, _ = ThrottleLimit.objects.select_for_update().get_or_create(key=key)
            if row.hold_until is None or row.hold_until < until:
                row.hold_until = until
                row.save(update_fields=["hold_until"])

    def cap(self, key: str, calls: int, per: float, seconds: float) -> None:
        until = self._now() + timedelta(seconds=seconds)
        ThrottleLimit.objects.update_or_create(
            key=key, defaults={"cap_calls": calls, "cap_seconds": per, "cap_until": until}
        )

    def release(self, key: str) -> bool:
        return bool(ThrottleLimit.objects.filter(key=key, hold_until__gt=self._now()).update(hold_until=None))

    def uncap(self, key: str) -> bool:
        lapsed_after = self._now() - timedelta(seconds=recheck_seconds())
        capped = ThrottleLimit.objects.filter(key=key, cap_calls__isnull=False, cap_until__gt=lapsed_after)
        # Asked on every answer that shows room: a read first, so no write lock is taken for nothing.
        return capped.exists() and bool(capped.update(cap_calls=None, cap_seconds=None, cap_until=None))


def throttle() -> Throttle:
    return RedisThrottle() if settings.REDIS_URL else DatabaseThrottle()


# --- lanes: one window, seen full sooner by the lanes behind -------------------------------------


def lane_share(lane: Lane, *, live_reserve_percent: int, read_reserve_percent: int) -> float:
    """The share of each limit a lane may fill. Every lane's calls count in the one window; a lane only sees it
    full sooner: live changes may fill all of it, reads and polls all but the live reserve, backfill and
    reconcile all but both reserves. So a backlog behind never takes the room a lane before it needs, and a
    lane before never waits on one behind."""
    if lane == Lane.LIVE:
        return 1.0
    kept = live_reserve_percent + (read_reserve_percent if lane == Lane.BULK else 0)
    return max(0.0, 1.0 - kept / 100)


def lane_limit(calls: int, share: float) -> int:
    """What a lane with `share` sees of a limit of `calls`: at least one call (the Redis script rounds alike)."""
    return max(1, calls * round(share * 1000) // 1000)


# A worker waits this long at most for the window; longer, it gives the batch back (Throttled).
MAX_WAIT_SECONDS = 1.0
# A cap read from usage headers lasts this long unless a newer answer renews it.
CAP_TTL_SECONDS = 60.0
# An allowance used up without a stated reset: stop for this long (the next answer says more).
EXHAUSTED_HOLD_SECONDS = 15 * 60.0


def margin(window: float) -> float:
    """The target counts a call when it arrives, which is between its grant and its answer; the throttle
    counts it from its answer (`settle`), the latest it can have arrived. This much more is kept for clock
    rounding (Redis counts whole milliseconds; the target may too)."""
    return min(0.01, 0.05 * window)


def busy_seconds() -> float:
    """How long a call granted may go unanswered before it is surely over (a worker killed mid-call never
    settles it): the HTTP seam's connect and read timeouts, and time to send the request's body."""
    return float(settings.CRM_HTTP_CONNECT_TIMEOUT) + float(settings.CRM_HTTP_READ_TIMEOUT) + 10.0


THROTTLED = "THROTTLED"


class Throttled(NotSent):
    """The connection's window is full for longer than a worker should wait: try again later."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limit: the window frees up in {wait:.1f} s", code=THROTTLED, retry_after=wait)


ALLOWANCE_FLOOR = "ALLOWANCE_FLOOR"


class AllowanceFloor(NotSent):
    """What remains of the target's allowance is under the floor kept for live changes and other integrations:
    backfill and reconcile calls stop until it refills (sync.delivery.allowance)."""

    def __init__(self, wait: float, floor_percent: int) -> None:
        super().__init__(
            f"less than {floor_percent}% of the target's allowance is left (backfill_floor_percent): backfill and "
            f"reconcile calls stop until it refills; looking again in {wait:.0f} s",
            code=ALLOWANCE_FLOOR,
            retry_after=wait,
        )


class ThrottleUnavailable(NotSent):
    """The shared window cannot be read (Redis down): no call is made, and it is nobody's failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__(
            f"the throttle is unavailable ({type(error).__name__}); nothing was sent",
            code="THROTTLE_UNAVAILABLE",
            retry_after=5.0,
        )


def quota_key(connection: Connection) -> str:
    """Connections that share an allowance (one CRM org or user, `quota_owner`) share a key."""
    return connection.quota_owner or f"connection:{connection.name}"


def quota_sharers(key: str) -> QuerySet[Connection]:
    """The connections whose calls count against `key` (quota_key's inverse)."""
    if key.startswith("connection:"):
        return Connection.objects.filter(quota_owner="", name=key.removeprefix("connection:"))
    return Connection.objects.filter(quota_owner=key)


def gate_for(
    connection: Connection,
    *,
    limit: int,
    window: float,
    backend: Throttle | None = None,
    sleep: Callable[[float], None] = time.sleep,
    lane: Lane = Lane.LIVE,
    share: float = 1.0,
    floor_percent: int = 0,
) -> Callable[[], Callable[[], None]]:
    """What the HTTP seam calls before every request of this connection (limit 0: only the target's own limits).
    It answers what the seam calls once the request is over, answered or not: the call then counts from then.

    `lane` with its `share` (lane_share): where this caller sees the window full. Backfill and reconcile calls
    also stop while less than `floor_percent` of the target's daily allowance remains (AllowanceFloor)."""
    chosen = backend or throttle()
    key = quota_key(connection)
    kept = window + margin(window)
    busy = busy_seconds()

    def gate() -> Callable[[], None]:
        ticket = uuid.uuid4().hex
        if lane == Lane.BULK and floor_percent:
            floor_for = allowance.floor_wait(key, floor_percent)
            if floor_for:
                THROTTLE_WAITS.labels(connection.name, "allowance_floor").inc()
                raise AllowanceFloor(floor_for, floor_percent)
        while True:
            try:
                wait = chosen.acquire(key, limit, kept, ticket=ticket, busy_for=busy, share=share)
            except Exception as exc:  # never call unthrottled; hand the batch back instead
                raise ThrottleUnavailable(exc) from exc
            if wait == 0:
                return lambda: _settle(chosen, key, ticket)
            if wait > MAX_WAIT_SECONDS:
                THROTTLE_WAITS.labels(connection.name, "handed_back").inc()
                raise Throttled(wait)
            THROTTLE_WAITS.labels(connection.name, "slept").inc()
            sleep(wait)

    return gate


def _settle(backend: Throttle, key: str, ticket: str) -> None:
    try:
        backend.settle(key, ticket)
    except Exception:  # the call then counts until its latest arrival: later than need be, never too early
        logger.warning("throttle settle failed", extra={"key": key}, exc_info=True)


@dataclass(frozen=True)
class Obey:
    """What to do about one quota signal: hold for `hold` seconds (`probe`: until a probe succeeds, at most
    `hold` between two), or cap at calls per seconds."""

    hold: float = 0.0
    cap: tuple[int, float] | None = None
    cap_for: float = 0.0
    probe: bool = False


def obey(signal: QuotaSignal, *, window: float, share: float) -> Obey | None:
    """Past `share` of the target's allowance, spread the calls left evenly until it refills; none left, stop."""
    if signal.pause_for:
        return Obey(hold=signal.pause_for, probe=signal.probe)
    if signal.used is None or not signal.cap or signal.used / signal.cap < share:
        return None
    resets_in = max(signal.resets_in or CAP_TTL_SECONDS, 1.0)
    remaining = signal.cap - signal.used
    if remaining <= 0:
        return Obey(hold=min(resets_in, EXHAUSTED_HOLD_SECONDS))
    every = resets_in / remaining  # seconds per call that spend the rest exactly as it refills
    cap = (max(1, int(window / every)), float(window)) if every <= window else (1, every)
    return Obey(cap=cap, cap_for=min(resets_in, CAP_TTL_SECONDS))


def observer_for(
    connection: Connection,
    *,
    window: float,
    share_percent: int,
    backend: Throttle | None = None,
    clock: Callable[[], float] = time.time,
    on_spent: Callable[[float, str], None] | None = None,
    on_room: Callable[[], None] | None = None,
) -> Callable[[requests.Response], None] | None:
    """What the HTTP seam calls with every answer of this connection: the target's own limits.

    `on_spent(pause, reason)`: the allowance is spent with no known end (hold until a probe succeeds);
    `on_room()`: an answer shows room again after a cap (in force, or lapsed while jobs it handed back
    still wait), and the cap was dropped: the jobs it parked may go.
    """
    try:
        cls = connector_class(connection.kind)
    except UnknownKind:
        return None
    chosen = backend or throttle()
    key = quota_key(connection)

    def observe(response: requests.Response) -> None:
        signal = cls.quota_signal(response, clock())
        if signal is None:
            return
        allowance.sample(connection=connection, key=key, signal=signal)
        decision = obey(signal, window=window, share=share_percent / 100)
        try:
            if decision is None:
                if signal.used is not None and chosen.uncap(key) and on_room is not None:
                    on_room()
                return
            if decision.hold:
                chosen.hold(key, decision.hold)
            if decision.cap:
                chosen.cap(key, *decision.cap, seconds=decision.cap_for)
            if decision.probe and on_spent is not None:
                on_spent(decision.hold, f"HTTP {response.status_code}: {response.text[:300]}")
        except Exception as exc:  # advisory: the next answer says it again
            logger.warning("could not store the target's limit", extra={"quota_key": key, "error": repr(exc)})
            return
        logger.info(
            "target limit obeyed",
            extra={"quota_key": key, "connection": connection.name, "hold_s": decision.hold, "cap": decision.cap},
        )

    return observe

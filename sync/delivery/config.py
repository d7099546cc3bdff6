"""Runtime configuration staff change without a redeploy: global, or per connection.

Read by the engine through `effective()`, cached per process for a second, so a change made
through the API or the admin reaches every dispatcher and worker within about a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from sync.models import ConfigOverride

KNOBS = (
    "batch_size",
    "flush_interval",
    "max_attempts",
    "rate_limit_calls",
    "rate_limit_window",
    "breaker_failures",
    "breaker_cooldown",
    "quota_slow_down_percent",
    "poll_interval",
    "alert_lag_seconds",
    "alert_failure_percent",
    "alert_failure_window",
    "alert_breaker_open_seconds",
    "lane_live_reserve_percent",
    "lane_read_reserve_percent",
    "backfill_floor_percent",
    "alert_allowance_hours",
)
CHECK_SECONDS = 1.0
clock = time.monotonic  # swappable in tests
_cache: dict[str, Any] = {"checked": float("-inf"), "rows": {}}


@dataclass(frozen=True)
class EngineConfig:
    batch_size: int
    flush_interval: int
    max_attempts: int
    rate_limit_calls: int  # 0: no limit
    rate_limit_window: int  # seconds
    breaker_failures: int  # consecutive connection-level failures that open the breaker
    breaker_cooldown: int  # seconds before one probe is let through
    quota_slow_down_percent: int  # share of the target's own allowance past which calls are spread thin
    poll_interval: int  # seconds between polls of a readable connection's objects; 0: not polled
    alert_lag_seconds: int  # alert when the oldest due job is older than this; 0: off
    alert_failure_percent: int  # alert when this share of the window's attempts failed; 0: off
    alert_failure_window: int  # seconds of attempts the failure share is taken over
    alert_breaker_open_seconds: int  # alert when the breaker stays open longer than this; 0: off
    lane_live_reserve_percent: int  # share of each quota owner's window only live changes may fill
    lane_read_reserve_percent: int  # share beyond that only live changes, reads and polls may fill
    backfill_floor_percent: int  # backfill and reconcile stop while less than this share of the allowance is left
    alert_allowance_hours: int  # alert when the target's allowance runs out within this many hours; 0: off


def _defaults() -> dict[str, int]:
    return {
        "batch_size": settings.SYNC_BATCH_SIZE,
        "flush_interval": settings.SYNC_FLUSH_INTERVAL,
        "max_attempts": settings.SYNC_MAX_ATTEMPTS,
        "rate_limit_calls": settings.SYNC_RATE_LIMIT_CALLS,
        "rate_limit_window": settings.SYNC_RATE_LIMIT_WINDOW,
        "breaker_failures": settings.SYNC_BREAKER_FAILURES,
        "breaker_cooldown": settings.SYNC_BREAKER_COOLDOWN,
        "quota_slow_down_percent": settings.SYNC_QUOTA_SLOW_DOWN_PERCENT,
        "poll_interval": settings.SYNC_POLL_INTERVAL,
        "alert_lag_seconds": settings.SYNC_ALERT_LAG_SECONDS,
        "alert_failure_percent": settings.SYNC_ALERT_FAILURE_PERCENT,
        "alert_failure_window": settings.SYNC_ALERT_FAILURE_WINDOW,
        "alert_breaker_open_seconds": settings.SYNC_ALERT_BREAKER_OPEN_SECONDS,
        "lane_live_reserve_percent": settings.SYNC_LANE_LIVE_RESERVE_PERCENT,
        "lane_read_reserve_percent": settings.SYNC_LANE_READ_RESERVE_PERCENT,
        "backfill_floor_percent": settings.SYNC_BACKFILL_FLOOR_PERCENT,
        "alert_allowance_hours": settings.SYNC_ALERT_ALLOWANCE_HOURS,
    }


def _rows() -> dict[int | None, dict[str, int]]:
    now = clock()
    if now - _cache["checked"] >= CHECK_SECONDS:
        rows: dict[int | None, dict[str, int]] = {}
        for row in ConfigOverride.objects.all():
            rows[row.connection_id] = {k: v for k, v in row.values.items() if k in KNOBS}
        _cache.update({"checked": now, "rows": rows})
    found: dict[int | None, dict[str, int]] = _cache["rows"]
    return found


def effective(connection_id: int | None = None) -> EngineConfig:
    """Settings, then the global override, then the connection's own."""
    rows = _rows()
    merged = {**_defaults(), **rows.get(None, {}), **(rows.get(connection_id, {}) if connection_id else {})}
    return EngineConfig(**merged)


def forget() -> None:
    _cache.update({"checked": float("-inf"), "rows": {}})


def effective_defaults() -> EngineConfig:
    return EngineConfig(**_defaults())

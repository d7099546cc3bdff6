"""Writing the live engine settings (POST /v1/sync/config-override, the admin)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework.exceptions import ValidationError

from crms.models import Connection
from sync.delivery import config
from sync.models import ConfigOverride

LIMITS = {
    "batch_size": (1, 10000),
    "flush_interval": (0, 3600),
    "max_attempts": (1, 100),
    "rate_limit_calls": (0, 1_000_000),
    "rate_limit_window": (1, 86400),
    "breaker_failures": (1, 1000),
    "breaker_cooldown": (1, 86400),
    "quota_slow_down_percent": (1, 100),
    "poll_interval": (0, 86400),
    "alert_lag_seconds": (0, 604800),
    "alert_failure_percent": (0, 100),
    "alert_failure_window": (60, 86400),
    "alert_breaker_open_seconds": (0, 604800),
    "lane_live_reserve_percent": (0, 90),
    "lane_read_reserve_percent": (0, 90),
    "backfill_floor_percent": (0, 100),
    "alert_allowance_hours": (0, 168),
}


def override_errors(values: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for key, value in values.items():
        if key not in LIMITS:
            errors[key] = f"Not a setting that can be overridden. Allowed: {', '.join(LIMITS)}."
            continue
        low, high = LIMITS[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            errors[key] = f"Give a whole number from {low} to {high}, or null to drop the override."
    return errors


def config_override_set(*, values: dict[str, Any], connection: str | None, actor: str) -> ConfigOverride:
    """Merge `values` into the global override or one connection's; null removes a key."""
    errors = override_errors(values)
    target = None
    if connection is not None:
        target = Connection.objects.filter(name=connection).first()
        if target is None:
            errors["connection"] = f"No connection named {connection!r}."
    if errors:
        raise ValidationError(errors)
    scope = f"connection:{connection}" if connection else "global"
    with transaction.atomic():
        row, _ = ConfigOverride.objects.select_for_update().get_or_create(scope=scope, defaults={"connection": target})
        merged = {**row.values, **values}
        row.values = {k: v for k, v in merged.items() if v is not None}
        row.updated_by = actor[:150]
        row.save()
    config.forget()
    return row

"""How HubSpot answers map to ConnectorErrors and to the throttle's QuotaSignal (CRM-FACTS "HubSpot CRM API v3").

Error bodies: {"status": "error", "message", "category", "correlationId", "context": {name: [values]}, "errors": [...]};
a 429 also says which limit in `policyName` (TEN_SECONDLY_ROLLING, DAILY, ...). HubSpot's error-handling page asks
to treat every field as optional, so every reader here does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from crms.base import ConnectorError, NotSent, QuotaSignal

RATE_LIMITS = "RATE_LIMITS"
DAILY = "DAILY"
HEADERS = {
    "max": "X-HubSpot-RateLimit-Max",
    "remaining": "X-HubSpot-RateLimit-Remaining",
    "interval_ms": "X-HubSpot-RateLimit-Interval-Milliseconds",
    "daily": "X-HubSpot-RateLimit-Daily",
    "daily_remaining": "X-HubSpot-RateLimit-Daily-Remaining",
}
# HubSpot documents these as worth retrying: locked (at least 2 s), migration in progress, and gateway troubles.
TRANSIENT_STATUSES = frozenset({408, 423, 429, 477, 500, 502, 503, 504, 521, 523, 524})
# These say nothing about one record: the next call would fail the same way.
CONNECTION_STATUSES = frozenset({401, 403, 408, 423, 429, 477})
TRANSPORT_CODES = frozenset({"timeout", "connection_error"})
# Categories that concern one input of a batch and cannot succeed by retrying it as it is.
PERMANENT_CATEGORIES = frozenset({"VALIDATION_ERROR", "OBJECT_NOT_FOUND", "CONFLICT", "MISSING_SCOPES"})
DAILY_PROBE_SECONDS = 3600.0  # a spent daily limit resets at the account's midnight, in a zone we do not know


def parse_rate_limit(headers: Mapping[str, str]) -> dict[str, int]:
    """The X-HubSpot-RateLimit-* headers present, as numbers (search answers carry none)."""
    found: dict[str, int] = {}
    for key, header in HEADERS.items():
        raw = (headers.get(header) or "").strip()
        try:
            found[key] = int(float(raw))
        except ValueError:
            continue
    return found


def quota_signal(response: requests.Response, now: float) -> QuotaSignal | None:
    """The burst window's use from every answer that carries it; a spent daily limit holds the account."""
    body = body_of(response) if response.status_code == 429 else {}
    rate = parse_rate_limit(response.headers)
    if response.status_code == 429:
        if str(body.get("policyName") or "").upper() == DAILY:
            return QuotaSignal(pause_for=DAILY_PROBE_SECONDS, probe=True)
        return QuotaSignal(pause_for=retry_after(response, rate) or 1.0)
    if rate.get("daily_remaining") == 0:
        return QuotaSignal(pause_for=DAILY_PROBE_SECONDS, probe=True)
    if "max" not in rate or "remaining" not in rate or rate["max"] <= 0:
        return None
    window = max(rate.get("interval_ms", 10_000) / 1000, 1.0)
    return QuotaSignal(used=rate["max"] - rate["remaining"], cap=rate["max"], resets_in=window)


def response_error(response: requests.Response) -> ConnectorError:
    status = response.status_code
    body = body_of(response)
    category = str(body.get("category") or body.get("errorType") or "")
    message = describe(body) or response.text[:500] or response.reason or f"HTTP {status}"
    if status == 429:
        daily = str(body.get("policyName") or "").upper() == DAILY
        return ConnectorError(
            message,
            code=RATE_LIMITS,
            retry_after=DAILY_PROBE_SECONDS if daily else retry_after(response, parse_rate_limit(response.headers)),
            http_status=status,
            pause_connection=daily,
        )
    if status == 401:
        # Only reached after one refresh and one retry (or with a private-app token): the token itself is refused.
        return ConnectorError(
            f"access token refused: {message}",
            code=category or "INVALID_AUTHENTICATION",
            permanent=True,
            http_status=status,
            pause_connection=True,
        )
    if status == 403:
        return ConnectorError(
            f"the token lacks a scope this call needs: {message}",
            code=category or "MISSING_SCOPES",
            permanent=True,
            http_status=status,
            pause_connection=True,
        )
    if status in TRANSIENT_STATUSES:
        wait = retry_after(response, {}) or (2.0 if status == 423 else None)
        return ConnectorError(message, code=category or f"HTTP_{status}", http_status=status, retry_after=wait)
    return ConnectorError(
        message, code=category or f"HTTP_{status}", permanent=True, http_status=status, fields=context_fields(body)
    )


def item_error(item: Mapping[str, Any]) -> ConnectorError:
    """One entry of a batch answer's `errors` (a 207): it concerns the inputs its context names."""
    category = str(item.get("category") or "")
    status = _status_of(item)
    permanent = category in PERMANENT_CATEGORIES or (status is not None and 400 <= status < 500 and status != 429)
    return ConnectorError(
        describe(item) or "HubSpot refused this input",
        code=category or "BATCH_ITEM_ERROR",
        permanent=permanent and category != RATE_LIMITS,
        http_status=status,
        fields=context_fields(item),
    )


def concerns_connection(error: ConnectorError) -> bool:
    """True when the next call would fail the same way: no answer, 5xx, 401/403, 429, or held back on our side."""
    status = error.http_status
    if status is None:
        return error.pause_connection or error.code in TRANSPORT_CODES or isinstance(error, NotSent)
    return error.pause_connection or status >= 500 or status in CONNECTION_STATUSES


def describe(body: Mapping[str, Any]) -> str:
    message = str(body.get("message") or "")
    details = [str(d.get("message")) for d in body.get("errors") or [] if isinstance(d, dict) and d.get("message")]
    return "; ".join(part for part in (message, *details) if part)


def context_fields(body: Mapping[str, Any]) -> list[str]:
    """The property names an error points at: `context.propertyName`, or `errors[].context.propertyName`."""
    names: list[str] = []
    sources = [body.get("context")] + [d.get("context") for d in body.get("errors") or [] if isinstance(d, dict)]
    for context in sources:
        if isinstance(context, dict):
            for name in context.get("propertyName") or []:
                if str(name) not in names:
                    names.append(str(name))
    return names


def retry_after(response: requests.Response, rate: Mapping[str, int]) -> float | None:
    """Retry-After when sent (HubSpot sends it for 477); else, for a burst 429, the window's length."""
    raw = (response.headers.get("Retry-After") or "").strip()
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    if response.status_code == 429:
        # The burst window's length when the answer says it; a search's 429 carries no headers: its limit is per second.
        return max(rate["interval_ms"] / 1000, 1.0) if "interval_ms" in rate else 1.0
    return None


def body_of(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _status_of(item: Mapping[str, Any]) -> int | None:
    """A batch error's `status` is "error" in HubSpot's answers, or a code in some; only a code counts."""
    raw = str(item.get("status") or "")
    return int(raw) if raw.isdigit() else None

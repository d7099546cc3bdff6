"""How Outreach answers map to ConnectorErrors (see ../shared/CRM-FACTS.md, "Outreach API v2").

Error bodies are JSON:API: {"errors": [{"id", "title", "detail", "source": {"pointer"}}]}. The docs'
own 415 example spells it `details`, so both spellings are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from crms.base import ConnectorError, NotSent, QuotaSignal

RATE_LIMITED = "RATE_LIMITED"
RATE_HEADERS = {"limit": "X-RateLimit-Limit", "remaining": "X-RateLimit-Remaining", "reset": "X-RateLimit-Reset"}
# These concern the connection, not the record: the rest of a batch would fail the same way.
CONNECTION_STATUSES = frozenset({401, 408, 415, 429})
TRANSPORT_CODES = frozenset({"timeout", "connection_error"})  # crms.http.TransportError codes
_EMAIL_TAKEN = re.compile(r"email.*(taken|already exists)", re.IGNORECASE)


def parse_rate_limit(headers: Mapping[str, str]) -> dict[str, int]:
    """The X-RateLimit-* headers as {"limit", "remaining", "reset"} (those present; reset in epoch seconds).

    Remaining has been seen holding two numbers ("9999, 19988"): the smaller one is the one that binds.
    """
    found: dict[str, int] = {}
    for key, header in RATE_HEADERS.items():
        numbers = _numbers(headers.get(header))
        if numbers:
            found[key] = max(numbers) if key == "reset" else min(numbers)
    return found


def quota_signal(response: requests.Response, now: float) -> QuotaSignal | None:
    """X-RateLimit-* on every answer (the hour's allowance, reset on the hour); a 429 asks for a pause."""
    if response.status_code == 429:
        return QuotaSignal(pause_for=_retry_after(response, now) or 1.0)
    rate = parse_rate_limit(response.headers)
    if "limit" not in rate or "remaining" not in rate or rate["limit"] <= 0:
        return None
    resets_in = max(rate["reset"] - now, 1.0) if "reset" in rate else 3600.0
    return QuotaSignal(used=rate["limit"] - rate["remaining"], cap=rate["limit"], resets_in=resets_in)


def response_error(response: requests.Response, *, now: float) -> ConnectorError:
    status = response.status_code
    items = error_items(response)
    code = str(items[0].get("id") or "") if items else ""
    message = describe(items) or response.text[:500] or response.reason or f"HTTP {status}"
    if status == 429:
        return ConnectorError(
            message,
            code=RATE_LIMITED,
            retry_after=_retry_after(response, now),
            http_status=status,
            pause_connection=True,
        )
    if status == 401:
        # Only reached after one refresh and one retry: the authorisation itself is gone.
        return ConnectorError(
            f"access token refused after a refresh: {message}",
            code=code or "UNAUTHORIZED",
            permanent=True,
            http_status=status,
            pause_connection=True,
        )
    if status >= 500 or status == 408:
        # A server error says nothing about the hourly allowance: without a Retry-After the engine's own
        # backoff (seconds, growing to minutes) applies, never a wait until X-RateLimit-Reset.
        return ConnectorError(
            message,
            code=code or f"HTTP_{status}",
            http_status=status,
            retry_after=_retry_after(response, now, until_reset=False),
        )
    return ConnectorError(
        message, code=code or f"HTTP_{status}", permanent=True, http_status=status, fields=pointer_fields(items)
    )


def concerns_connection(error: ConnectorError) -> bool:
    """True when the next call would fail the same way: no answer, 5xx, 401, 415, 429 or a refused refresh."""
    status = error.http_status
    if status is None:
        # NotSent: held back on our side (the throttle in the HTTP seam): the next call would be held back too.
        return error.pause_connection or error.code in TRANSPORT_CODES or isinstance(error, NotSent)
    return error.pause_connection or status >= 500 or status in CONNECTION_STATUSES


def is_email_taken(error: ConnectorError) -> bool:
    """The create race: a POST refused because another prospect already has the email.

    Outreach says "Contacts email hash has already been taken." (id validationError, pointer /data).
    """
    return error.http_status == 422 and bool(_EMAIL_TAKEN.search(error.message))


def error_items(response: requests.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    items = body.get("errors") if isinstance(body, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def describe(items: list[dict[str, Any]]) -> str:
    parts = []
    for item in items:
        title, detail = item.get("title"), item.get("detail") or item.get("details")
        parts.append(": ".join(str(p) for p in (title, detail) if p))
    return "; ".join(p for p in parts if p)


def pointer_fields(items: list[dict[str, Any]]) -> list[str]:
    """`/data/attributes/emails/0` → "emails"; `/data/relationships/account` → "account"; `/data` → nothing."""
    fields: list[str] = []
    for item in items:
        source = item.get("source")
        pointer = str(source.get("pointer") or "") if isinstance(source, dict) else ""
        parts = pointer.strip("/").split("/")
        named = len(parts) >= 3 and parts[0] == "data" and parts[1] in ("attributes", "relationships")
        if named and parts[2] not in fields:
            fields.append(parts[2])
    return fields


def _retry_after(response: requests.Response, now: float, *, until_reset: bool = True) -> float | None:
    """Retry-After in seconds (or as an HTTP date); else, for a 429 only, the time to X-RateLimit-Reset."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if raw:
        try:
            return max(float(raw), 0.0)
        except ValueError:
            pass
        try:
            return max(parsedate_to_datetime(raw).timestamp() - now, 0.0)
        except (TypeError, ValueError):
            pass
    reset = parse_rate_limit(response.headers).get("reset") if until_reset else None
    return max(reset - now, 1.0) if reset is not None else None


def _numbers(raw: str | None) -> list[int]:
    numbers = []
    for part in (raw or "").split(","):
        try:
            numbers.append(int(float(part.strip())))
        except ValueError:
            continue
    return numbers

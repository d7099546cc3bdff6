"""How Salesforce answers map to ConnectorErrors (see ../shared/CRM-FACTS.md, "Errors")."""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings

from crms.base import ConnectorError, QuotaSignal

# Worth retrying with backoff; everything else a record reports is permanent.
RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"})


# The org's rolling 24-hour allocation is spent: stop calling it (not a 429). When it refills is not said,
# so the engine probes it with one cheap call at a growing interval (sync/delivery/holds.py) and resumes on success.
def limit_pause_seconds() -> float:
    """The longest an org that answered REQUEST_LIMIT_EXCEEDED is left alone between two probes
    (SALESFORCE_LIMIT_PAUSE_SECONDS)."""
    return float(settings.SALESFORCE_LIMIT_PAUSE_SECONDS)


def record_error(errors: list[dict[str, Any]]) -> ConnectorError:
    """The first of a Collections result's `errors` (statusCode, message, fields)."""
    first = errors[0] if errors else {"statusCode": "UNKNOWN", "message": "failed without a reason"}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN")
    return ConnectorError(
        str(first.get("message", "")),
        code=code,
        permanent=code not in RETRYABLE_CODES,
        fields=first.get("fields") or (),
    )


def response_error(response: requests.Response) -> ConnectorError:
    """A request-level failure: the body is usually [{"message", "errorCode", "fields"}]."""
    status = response.status_code
    code, message, fields = _first_error(response)
    if status == 300:
        return ConnectorError(
            "The external id matches several records; nothing was written. Make the field unique.",
            code="MULTIPLE_RECORDS",
            permanent=True,
            http_status=status,
        )
    if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
        return ConnectorError(
            message, code=code, retry_after=limit_pause_seconds(), http_status=status, pause_connection=True
        )
    if status == 429 or status >= 500 or code in RETRYABLE_CODES:
        retry_after = _retry_after(response)
        return ConnectorError(message, code=code or f"HTTP_{status}", retry_after=retry_after, http_status=status)
    return ConnectorError(message, code=code or f"HTTP_{status}", permanent=True, http_status=status, fields=fields)


def _first_error(response: requests.Response) -> tuple[str, str, list[str]]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:500] or response.reason, []
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        code = str(body.get("errorCode") or body.get("error") or "")
        message = str(body.get("message") or body.get("error_description") or response.reason)
        return code, message, list(body.get("fields") or [])
    return "", str(body)[:500], []


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


# The org's allocation is a rolling 24 hours: usage near the cap is spread over that period.
ALLOCATION_PERIOD_SECONDS = 24 * 3600


def quota_signal(response: requests.Response) -> QuotaSignal | None:
    """`Sforce-Limit-Info: api-usage=used/cap` on every answer; a 403 REQUEST_LIMIT_EXCEEDED or a 429 asks
    for a pause."""
    status = response.status_code
    if status == 403 and _first_error(response)[0] == "REQUEST_LIMIT_EXCEEDED":
        return QuotaSignal(pause_for=limit_pause_seconds(), probe=True)
    if status == 429:
        return QuotaSignal(pause_for=_retry_after(response) or 1.0)
    # The org's api-usage and, when present, the connected app's per-app-api-usage: the fuller one binds.
    usages = [u for u in parse_limit_info(response.headers.get("Sforce-Limit-Info")).values() if u["total"] > 0]
    if not usages:
        return None
    usage = max(usages, key=lambda u: u["used"] / u["total"])
    return QuotaSignal(used=usage["used"], cap=usage["total"], resets_in=ALLOCATION_PERIOD_SECONDS)


def is_invalid_session(response: requests.Response) -> bool:
    return response.status_code == 401


def parse_limit_info(header: str | None) -> dict[str, dict[str, Any]]:
    """`api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)` → {"api-usage": {"used", "total"}, …}."""
    usage: dict[str, dict[str, Any]] = {}
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if not value:
            continue
        counts, _, rest = value.partition("(")
        used, _, total = counts.partition("/")
        try:
            entry: dict[str, Any] = {"used": int(used), "total": int(total)}
        except ValueError:
            continue
        if rest.startswith("appName="):
            entry["name"] = rest[len("appName=") :].rstrip(")")
        usage[name] = entry
    return usage

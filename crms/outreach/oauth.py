"""Outreach's OAuth 2.0 refresh-token grant (CRM-FACTS "Auth").

Access tokens last two hours. Outreach rotates the refresh token on every refresh, so the one in
the connection's secrets only starts the chain: after that the current one lives in the StateStore.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypedDict

import requests

from crms.base import ConnectorError
from crms.http import HttpClient, TransportError

REFRESH_MARGIN = 300.0  # seconds before expiry at which a token counts as spent


class Token(TypedDict):
    access_token: str
    refresh_token: str
    expires_at: float
    seed: str  # which initial refresh token this chain grew from


def seed_of(refresh_token: str) -> str:
    """A fingerprint of the refresh token in secrets: when an operator pastes a new one, the chain restarts."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:16]


def usable(token: Token | None, *, now: float, seed: str, refused: str | None = None) -> bool:
    return (
        token is not None
        and token.get("seed") == seed
        and token["expires_at"] - REFRESH_MARGIN > now
        and token["access_token"] != refused
    )


def refresh(
    http: HttpClient, *, token_url: str, form: dict[str, str], refresh_token: str, seed: str, now: float
) -> Token:
    """POST the refresh_token grant; a refusal is permanent and pauses the connection (re-authorise)."""
    try:
        response = http.request(
            "POST", token_url, data={**form, "grant_type": "refresh_token", "refresh_token": refresh_token}
        )
    except TransportError as exc:
        raise ConnectorError(str(exc), code=exc.code) from exc
    body = _json(response)
    if response.status_code != 200 or "access_token" not in body:
        reason = body.get("error_description") or body.get("error") or response.text[:300] or response.reason
        refused = 400 <= response.status_code < 500
        raise ConnectorError(
            f"token refresh refused: {reason}",
            code=str(body.get("error") or f"HTTP_{response.status_code}"),
            permanent=refused,
            http_status=response.status_code,
            pause_connection=refused,
        )
    return Token(
        access_token=str(body["access_token"]),
        refresh_token=str(body.get("refresh_token") or refresh_token),  # kept when the answer omits it
        expires_at=now + float(body.get("expires_in") or 7200),
        seed=seed,
    )


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

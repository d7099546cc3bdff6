"""The OAuth 2.0 refresh-token grant the OAuth connectors share (Outreach, HubSpot; CRM-FACTS "Auth").

Access tokens are short-lived (Outreach: two hours, HubSpot: 30 minutes). A CRM may rotate the refresh
token on every refresh (Outreach does), so the one in the connection's secrets only starts the chain:
after that the current one lives in the StateStore, and a refresh keeps whichever the answer holds.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypedDict, cast

import requests

from crms.base import ConnectorError, StateStore
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


def current(
    store: StateStore,
    http: HttpClient,
    *,
    key: str,
    token_url: str,
    form: dict[str, str],
    first_refresh_token: str,
    now: float,
    refused: str | None,
    unlinked: str,
) -> Token:
    """A usable access token for a connection: the stored one, else a refresh under the connection's lock.

    The stored token is read again inside the lock: two workers refreshing at once would each spend the
    other's refresh token where the CRM rotates them (Outreach). `refused`: an access token the CRM just
    answered 401 to, refreshed even if it looks unexpired. `unlinked`: the message when there is no refresh
    token at all (the account was never connected).
    """
    seed = seed_of(first_refresh_token)
    stored = cast(Token | None, store.get(key))
    if usable(stored, now=now, seed=seed, refused=refused):
        return cast(Token, stored)
    with store.lock(key):
        stored = cast(Token | None, store.get(key))
        if usable(stored, now=now, seed=seed, refused=refused):
            return cast(Token, stored)
        chain = stored["refresh_token"] if stored and stored.get("seed") == seed else first_refresh_token
        if not chain:
            raise ConnectorError(unlinked, code="NOT_AUTHORISED", permanent=True, pause_connection=True)
        token = refresh(http, token_url=token_url, form=form, refresh_token=chain, seed=seed, now=now)
        store.set(key, dict(token))
        return token


def exchange_code(
    http: HttpClient,
    *,
    token_url: str,
    form: dict[str, str],
    code: str,
    redirect_uri: str,
    code_verifier: str,
    now: float,
) -> tuple[Token, list[str]]:
    """POST the authorization_code grant (RFC 6749 4.1.3, with the PKCE verifier of RFC 7636): the tokens, which
    start a new chain, and the scopes granted when the answer says (`scope`, space-separated). A refusal raises
    a permanent ConnectorError naming the provider's reason."""
    data = {
        **form,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    try:
        response = http.request("POST", token_url, data=data)
    except TransportError as exc:
        raise ConnectorError(str(exc), code=exc.code) from exc
    body = _json(response)
    if response.status_code != 200 or not body.get("access_token") or not body.get("refresh_token"):
        reason = body.get("error_description") or body.get("message") or body.get("error") or response.reason
        raise ConnectorError(
            f"{reason} (HTTP {response.status_code})",
            code=str(body.get("error") or body.get("status") or f"HTTP_{response.status_code}"),
            permanent=True,
            http_status=response.status_code,
        )
    token = Token(
        access_token=str(body["access_token"]),
        refresh_token=str(body["refresh_token"]),
        expires_at=now + float(body.get("expires_in") or 3600),
        seed=seed_of(str(body["refresh_token"])),
    )
    return token, str(body.get("scope") or "").split()


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

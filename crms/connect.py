"""Linking a CRM account with the OAuth 2.0 authorization-code flow: the admin's Connect button.

A staff user clicks Connect on a connection: `connect_start` remembers a random `state` and a PKCE
verifier in that user's session and sends the browser to the provider's consent page. The provider
sends it back to our callback: `connect_finish` checks that the answer is for a Connect started in this
session (same `state`, not expired, used once), exchanges the code with the verifier, and stores the
refresh token encrypted in the connection's secrets, the access token in its state store, and what the
account is (name, user, scopes, expiry) for the connection page. Anything refused or tampered with stores
nothing. `disconnect` forgets the tokens.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from crms import oauth
from crms.base import ConnectorError, OAuthApp
from crms.build import connector_for
from crms.models import Connection
from crms.registry import connector_class
from crms.services import connection_save
from crms.state import DatabaseStateStore

logger = logging.getLogger("recordsync.connect")

SESSION_KEY = "recordsync_connect"
STATE_SECONDS = 600  # a Connect not finished in ten minutes is void
LINK_KEY = "link"  # the state-store key of what the linked account is


class ConnectRefused(Exception):
    """A Connect that cannot go on; the message says why, for the staff user. Nothing was stored."""


@dataclass(frozen=True)
class Started:
    authorize_url: str
    state: str


def app_of(connection: Connection) -> OAuthApp:
    app = connector_class(connection.kind).oauth_app
    if app is None:
        raise ConnectRefused(f"{connection.kind} connections do not link accounts by OAuth; fill in their secrets.")
    return app


def connect_start(connection: Connection, *, redirect_uri: str, session: MutableMapping[str, Any]) -> Started:
    """The provider's consent URL for this connection; the state and PKCE verifier wait in the session."""
    app = app_of(connection)
    client_id = str(connection.config.get("client_id") or "")
    if not client_id or not connector_for(connection).secrets.get("client_secret"):
        raise ConnectRefused(
            "Set the app's client_id (config) and client_secret (secrets) first: they come from the app you "
            "created at the provider (docs/connect.md)."
        )
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    pending = dict(session.get(SESSION_KEY) or {})
    pending = {k: v for k, v in pending.items() if v["started"] > time.time() - STATE_SECONDS}
    pending[state] = {
        "connection": connection.pk,
        "verifier": verifier,
        "redirect_uri": redirect_uri,
        "started": time.time(),
    }
    session[SESSION_KEY] = pending
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(app.scopes),
        "state": state,
        "code_challenge": challenge_of(verifier),
        "code_challenge_method": "S256",
    }
    authorize, _ = connector_class(connection.kind).oauth_urls(connection.config)
    return Started(f"{authorize}?{urlencode(query)}", state)


def connect_finish(*, query: MutableMapping[str, str], session: MutableMapping[str, Any], actor: str) -> Connection:
    """The provider's answer at our callback. Raises ConnectRefused, storing nothing, unless it is the answer to
    a Connect this session started (state), in time, carrying a code the provider exchanges for tokens."""
    pending = dict(session.get(SESSION_KEY) or {})
    started = pending.pop(str(query.get("state") or ""), None)
    session[SESSION_KEY] = pending  # a state is good once, whatever happens next
    if started is None or started["started"] < time.time() - STATE_SECONDS:
        raise ConnectRefused(
            "This answer does not belong to a Connect started here (unknown, used or expired state). "
            "Nothing was stored; click Connect again."
        )
    connection = Connection.objects.filter(pk=started["connection"]).first()
    if connection is None:
        raise ConnectRefused("The connection was deleted meanwhile. Nothing was stored.")
    if query.get("error"):
        reason = query.get("error_description") or query["error"]
        raise ConnectRefused(f"The provider refused: {reason}. Nothing was stored.")
    if not query.get("code"):
        raise ConnectRefused("The provider's answer holds no code. Nothing was stored.")
    app_of(connection)  # still a kind that links accounts
    connector = connector_for(connection)  # the one place secrets are decrypted (crms/build.py)
    _, token_url = connector_class(connection.kind).oauth_urls(connection.config)
    form = {
        "client_id": str(connection.config.get("client_id") or ""),
        "client_secret": str(connector.secrets.get("client_secret") or ""),
    }
    try:
        token, scopes = oauth.exchange_code(
            connector.http,
            token_url=token_url,
            form=form,
            code=query["code"],
            redirect_uri=started["redirect_uri"],
            code_verifier=started["verifier"],
            now=time.time(),
        )
    except ConnectorError as exc:
        raise ConnectRefused(f"The code could not be exchanged for tokens: {exc.message}. Nothing was stored.") from exc
    return _link(connection, token, scopes, actor)


def _link(connection: Connection, token: oauth.Token, scopes: list[str], actor: str) -> Connection:
    cls = connector_class(connection.kind)
    config = cls.oauth_linked_config(dict(connection.config))
    linked = connection_save(
        name=connection.name,
        kind=connection.kind,
        config=config,
        secrets={"refresh_token": token["refresh_token"]},
        enabled=connection.enabled,
        quota_owner=connection.quota_owner,
    )
    store = DatabaseStateStore(linked)
    # The chain starts from the refresh token just stored: its seed, so the connector takes this access token.
    store.set(cls.oauth_token_key, dict(token))
    try:
        account = connector_for(linked).oauth_account(token["access_token"])
    except ConnectorError as exc:  # linked all the same: only the description is missing
        account = {"account": "", "note": f"the account could not be described: {exc.message}"}
    account.setdefault("scopes", scopes or list(app_of(linked).scopes))
    store.set(LINK_KEY, {**account, "expires_at": token["expires_at"], "linked_at": time.time(), "by": actor})
    logger.info("account linked", extra={"connection": linked.name, "actor": actor, "account": account.get("account")})
    return linked


def disconnect(connection: Connection, *, actor: str) -> None:
    """Forget the refresh token and the access token: the connection stops until it is connected again."""
    cls = connector_class(connection.kind)
    connection_save(
        name=connection.name,
        kind=connection.kind,
        config=dict(connection.config),
        secrets={"refresh_token": ""},
        enabled=connection.enabled,
        quota_owner=connection.quota_owner,
    )
    store = DatabaseStateStore(connection)
    for key in {cls.oauth_token_key, "oauth", LINK_KEY}:  # "oauth": an access token the connector cached itself
        store.set(key, None)
    logger.info("account unlinked", extra={"connection": connection.name, "actor": actor})


def link_of(connection: Connection) -> dict[str, Any] | None:
    """What the connection page shows: the linked account, its scopes and the access token's expiry."""
    if connector_class(connection.kind).oauth_app is None:
        return None
    link = DatabaseStateStore(connection).get(LINK_KEY)
    if not link:
        return {"linked": False}
    expires = datetime.fromtimestamp(float(link.get("expires_at") or 0), tz=UTC)
    linked_at = datetime.fromtimestamp(float(link.get("linked_at") or 0), tz=UTC)
    return {**link, "linked": True, "expires": expires, "linked_at_time": linked_at}


def challenge_of(verifier: str) -> str:
    """PKCE S256 (RFC 7636): base64url of the SHA-256 of the verifier, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

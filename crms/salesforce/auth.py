"""How the connector logs in to an org: the token request for each `auth` the config names.

- `jwt`: the JWT bearer flow, an assertion signed with the connected app's private key (3 minutes).
- `client_credentials`: the client credentials flow, at the org's own URL.
- `web_server`: the refresh token the admin's Connect obtained by the web-server flow (crms/connect.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def login_request(config: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The token endpoint to POST to, and the form."""
    login = f"{config['login_url']}/services/oauth2/token"
    if config["auth"] == "jwt":
        return login, {"grant_type": JWT_GRANT, "assertion": assertion(config, secrets)}
    client = {"client_id": str(config["client_id"]), "client_secret": secrets.get("client_secret", "")}
    if config["auth"] == "web_server":
        return login, {"grant_type": "refresh_token", **client, "refresh_token": secrets.get("refresh_token", "")}
    return f"{config.get('instance_url') or config['login_url']}/services/oauth2/token", {
        "grant_type": "client_credentials",
        **client,
    }


def assertion(config: Mapping[str, Any], secrets: Mapping[str, str]) -> str:
    claims = {
        "iss": config["client_id"],
        "sub": config.get("username", ""),
        "aud": config["login_url"],
        "exp": int(time.time()) + 180,
    }
    return jwt.encode(claims, secrets.get("private_key", ""), algorithm="RS256")

"""Turning a Connection row into a live connector: the one place secrets are decrypted."""

from __future__ import annotations

from collections.abc import Callable

import requests

from crms import secrets as secret_box
from crms.base import Connector
from crms.http import HttpClient
from crms.models import Connection
from crms.registry import connector_class
from crms.state import DatabaseStateStore


def connector_for(
    connection: Connection,
    *,
    gate: Callable[[], Callable[[], None]] | None = None,
    observe: Callable[[requests.Response], None] | None = None,
) -> Connector:
    """`gate` runs before every HTTP request (and what it answers, once the request is over); `observe` sees
    every answer (the engine's throttle)."""
    cls = connector_class(connection.kind)
    return cls(
        config=connection.config,
        secrets=secret_box.resolve(secret_box.decrypt(connection.secrets_encrypted)),
        http=HttpClient(connection_name=connection.name, gate=gate, observe=observe),
        store=DatabaseStateStore(connection),
    )

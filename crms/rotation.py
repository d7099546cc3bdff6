"""Secrets at rest under the newest key: which rows are not, and re-encrypting them (`manage.py rotate_secrets`).

A row needs it when its connection secrets, or a connector state value, are encrypted with an older key of
RECORDSYNC_SECRETS_KEYS, or (state written before it was sealed) are plain JSON. Rotating is safe to run twice
and at any time: each row is re-read and re-written alone, so a value a connector writes meanwhile stays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from crms import secrets as secret_box
from crms.models import Connection, ConnectorState
from crms.state import SEALED, is_sealed


@dataclass(frozen=True)
class Stale:
    table: str  # "connection" or "state"
    pk: int
    label: str  # what an operator recognises: the connection, and the state key
    why: str  # "older key" or "plain"


def stale_rows() -> Iterator[Stale]:
    for connection in Connection.objects.exclude(secrets_encrypted="").only("pk", "name", "secrets_encrypted"):
        if not secret_box.under_newest_key(connection.secrets_encrypted):
            yield Stale("connection", connection.pk, f"connection {connection.name} (secrets)", "older key")
    states = ConnectorState.objects.exclude(value__isnull=True).exclude(key__startswith="lock:")
    for row in states.select_related("connection").only("pk", "key", "value", "connection__name"):
        value: Any = row.value
        label = f"connection {row.connection.name} (state {row.key})"
        if value is None:
            continue
        if not is_sealed(value):
            yield Stale("state", row.pk, label, "plain")
        elif not secret_box.under_newest_key(value[SEALED]):
            yield Stale("state", row.pk, label, "older key")


def rotate(row: Stale) -> bool:
    """Re-encrypt one row under the newest key; False when it changed meanwhile and needs nothing now."""
    with transaction.atomic():
        if row.table == "connection":
            connection = Connection.objects.select_for_update().filter(pk=row.pk).first()
            if connection is None or secret_box.under_newest_key(connection.secrets_encrypted):
                return False
            connection.secrets_encrypted = secret_box.rotate(connection.secrets_encrypted)
            connection.save(update_fields=["secrets_encrypted"])
            return True
        state = ConnectorState.objects.select_for_update().filter(pk=row.pk).first()
        if state is None or state.value is None:
            return False
        if is_sealed(state.value):
            if secret_box.under_newest_key(state.value[SEALED]):
                return False
            state.value = {SEALED: secret_box.rotate(state.value[SEALED])}
        else:
            state.value = {SEALED: secret_box.seal(state.value)}
        state.save(update_fields=["value"])
        return True


def rotate_all(rows: list[Stale], on_each: Callable[[Stale], object] = lambda row: None) -> int:
    done = 0
    for row in rows:
        done += rotate(row)
        on_each(row)
    return done

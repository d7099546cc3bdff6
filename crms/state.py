"""The StateStore connectors are handed: rows in crms.ConnectorState, locked across processes.

Every value is stored encrypted (`{"sealed": "<Fernet token>"}`, with RECORDSYNC_SECRETS_KEYS like the
configured secrets): connectors keep rotated OAuth tokens here. A value stored before that (plain JSON)
is still read, and sealed when next written or by `manage.py rotate_secrets`.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection as db
from django.db import transaction

from crms import secrets as secret_box
from crms.models import Connection, ConnectorState

SEALED = "sealed"


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED} and isinstance(value[SEALED], str)


def opened(value: Any) -> Any:
    return secret_box.unseal(value[SEALED]) if is_sealed(value) else value


class DatabaseStateStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def get(self, key: str) -> Any:
        row = ConnectorState.objects.filter(connection=self.connection, key=key).first()
        return opened(row.value) if row else None

    def set(self, key: str, value: Any) -> None:
        # Without keys (a deployment whose connections have no secrets at all) nothing secret can be kept here.
        sealed = value is not None and bool(settings.RECORDSYNC_SECRETS_KEYS)
        stored = {SEALED: secret_box.seal(value)} if sealed else value
        ConnectorState.objects.update_or_create(connection=self.connection, key=key, defaults={"value": stored})

    @contextmanager
    def lock(self, key: str, timeout: float = 30) -> Iterator[None]:
        """One holder at a time across every process, for work that includes network calls.

        PostgreSQL: a row lock (SELECT … FOR UPDATE) held by a transaction; other tables stay
        writable meanwhile. SQLite has one writer for the whole file, so a transaction held across
        an HTTP call would block every other writer (the local mock CRMs included): there, an
        flock on a file beside the database serialises holders instead, on the one machine
        SQLite serves.
        """
        if db.vendor == "postgresql":
            with transaction.atomic():
                ConnectorState.objects.get_or_create(connection=self.connection, key=f"lock:{key}")
                ConnectorState.objects.select_for_update().get(connection=self.connection, key=f"lock:{key}")
                yield
            return
        with _file_lock(f"{self.connection.pk}:{key}"):
            yield


@contextmanager
def _file_lock(name: str) -> Iterator[None]:
    folder = settings.VAR_DIR / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""The StateStore connectors are handed: rows in crms.ConnectorState, locked across processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from crms.models import Connection, ConnectorState


class DatabaseStateStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def get(self, key: str) -> Any:
        row = ConnectorState.objects.filter(connection=self.connection, key=key).first()
        return row.value if row else None

    def set(self, key: str, value: Any) -> None:
        ConnectorState.objects.update_or_create(connection=self.connection, key=key, defaults={"value": value})

    @contextmanager
    def lock(self, key: str, timeout: float = 30) -> Iterator[None]:
        """Hold a row lock on `lock:<key>` for the block: one holder across every process.

        PostgreSQL: SELECT … FOR UPDATE on the row. SQLite: the IMMEDIATE transaction itself
        takes the database write lock, which serialises holders just the same.
        """
        with transaction.atomic():
            ConnectorState.objects.get_or_create(connection=self.connection, key=f"lock:{key}")
            ConnectorState.objects.select_for_update().get(connection=self.connection, key=f"lock:{key}")
            yield

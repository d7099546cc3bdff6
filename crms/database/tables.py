"""What the connector knows about one configured table, and what each database driver must do with it.

Identifiers come from admin-edited config and end up in SQL text, so they are checked twice:
against IDENTIFIER here, and quoted by the driver module when the statement is built.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crms.base import Outcome, RecordRejected

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


@dataclass(frozen=True)
class Table:
    object_type: str
    name: tuple[str, ...]  # ("contacts",) or ("crm", "contacts")
    key: str
    id_column: str
    updated_at: str
    columns: tuple[str, ...]

    @property
    def label(self) -> str:
        return ".".join(self.name)

    @property
    def readable(self) -> tuple[str, ...]:
        """The columns a read returns: identity first, then the configured ones."""
        return tuple(dict.fromkeys([self.id_column, self.key, *self.columns]))

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.readable, self.updated_at]))


def table_from_config(object_type: str, raw: dict[str, Any]) -> Table:
    """Raises RecordRejected (permanent) naming the first identifier that is not a plain SQL name."""
    name = str(raw.get("table", ""))
    if not QUALIFIED.fullmatch(name):
        raise _bad_identifier(object_type, "table", name)
    single = {part: str(raw.get(part, "")) for part in ("key", "id_column", "updated_at")}
    columns = [str(c) for c in raw.get("columns", [])]
    for part, value in [*single.items(), *(("columns", c) for c in columns)]:
        if not IDENTIFIER.fullmatch(value):
            raise _bad_identifier(object_type, part, value)
    return Table(
        object_type, tuple(name.split(".")), single["key"], single["id_column"], single["updated_at"], tuple(columns)
    )


def _bad_identifier(object_type: str, part: str, value: str) -> RecordRejected:
    return RecordRejected(
        f"tables.{object_type}.{part} {value!r} is not a plain SQL name (letters, digits, '_'; up to 63)",
        code="invalid_config",
        permanent=True,
    )


class Database(ABC):
    """One open connection to the external database, in the driver's own dialect."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """The push's one transaction; commits when the block ends, rolls back if it raises."""

    @abstractmethod
    def savepoint(self) -> AbstractContextManager[None]:
        """One record's writes: a refusal rolls back to here and raises RecordRejected."""

    @abstractmethod
    def upsert(self, table: Table, values: dict[str, Any], now: datetime) -> tuple[Outcome, Any]:
        """Insert or update by `table.key`: ("created" | "updated" | "unchanged", the row's id)."""

    @abstractmethod
    def delete(self, table: Table, column: str, value: Any) -> Any | None:
        """Delete the row where `column` = `value`: its id, or None when there was none."""

    @abstractmethod
    def rows_by_id(self, table: Table, ids: Sequence[Any]) -> list[dict[str, Any]]:
        """`table.readable` and `table.updated_at` of the rows with these ids."""

    @abstractmethod
    def rows_after(self, table: Table, after: tuple[Any, Any] | None, limit: int) -> list[dict[str, Any]]:
        """Rows with (sort_stamp(updated_at), id) > `after`, in that order, compared as the order compares
        them (the id in its column's type and collation); rows whose updated_at is NULL never appear."""

    def sort_stamp(self, value: Any) -> Any:
        """A row's `updated_at` as rows_after orders it; a cursor keeps this. A real timestamp column needs
        nothing done: the database orders its values as instants."""
        return value

    @abstractmethod
    def problems(self, table: Table) -> list[str]:
        """What stops this table from syncing (missing table or column, key not unique), in words."""

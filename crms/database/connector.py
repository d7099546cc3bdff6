"""Records into and out of one table per object in a PostgreSQL or SQLite database.

The database is someone else's: we talk to it with its own driver (psycopg 3, sqlite3), not
Django's ORM, and touch only the tables and columns the config names. Each object maps to one
table: `key` holds System A's record id (unique), `id_column` is the table's own primary key
(our external id), `updated_at` is the change cursor, `columns` are the fields we may write.

push() is one transaction: an upsert by `key` (INSERT … ON CONFLICT (key) DO UPDATE) that
sets `updated_at` to now only when a value differs, or a delete by `external_id` (else by
`key`). A record that cannot be written (a field outside `columns`, a constraint) is rolled
back to its savepoint and reported on its own; the others are written. A lost connection or
a lock held too long fails the whole call as retryable, and nothing of it is kept.

Record error codes: UNKNOWN_OBJECT, MISSING_KEY, INVALID_FIELD, constraint_violation,
invalid_value, schema_mismatch, permission_denied (all permanent). Call error codes:
connection_error, lock_timeout, deadlock, serialization_failure (retryable), invalid_config,
invalid_cursor (permanent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from django.conf import settings

from crms import cursors
from crms.base import (
    Capabilities,
    Change,
    ChangePage,
    CheckResult,
    Connector,
    ConnectorError,
    OutboundRecord,
    PushResult,
    RecordRejected,
    chunks,
)
from crms.database import postgres, sqlite
from crms.database.tables import IDENTIFIER, QUALIFIED, Database, Table, table_from_config

PAGE_SIZE = 500


class DatabaseConnector(Connector):
    kind = "database"
    label = "Database table"
    secret_fields = ("password",)
    # The objects are whatever `tables` names, per connection; there is no fixed list to offer.
    capabilities = Capabilities(batch_size=PAGE_SIZE, directions=("outbound", "inbound"), objects={})
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url", "tables"],
        "properties": {
            "url": {
                "type": "string",
                "pattern": r"^(postgres|postgresql)://.+|^sqlite:///.+",
                "description": "postgres://user@host:5432/db (the password may be the secret `password`) or "
                "sqlite:////absolute/path.sqlite3.",
            },
            "tables": {
                "type": "object",
                "minProperties": 1,
                "description": 'Object name -> its table, e.g. {"Contact": {"table": "contacts", ...}}.',
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["table", "key", "id_column", "updated_at", "columns"],
                    "properties": {
                        "table": {
                            "type": "string",
                            "pattern": QUALIFIED.pattern,
                            "description": "The table, or schema.table; used exactly as written (quoted).",
                        },
                        "key": {
                            "type": "string",
                            "pattern": IDENTIFIER.pattern,
                            "description": "The column holding System A's record id; needs a unique index.",
                        },
                        "id_column": {
                            "type": "string",
                            "pattern": IDENTIFIER.pattern,
                            "description": "The table's primary key (our external id); may equal key.",
                        },
                        "updated_at": {
                            "type": "string",
                            "pattern": IDENTIFIER.pattern,
                            "description": "A timestamp column, set on each write; the change cursor.",
                        },
                        "columns": {
                            "type": "array",
                            "uniqueItems": True,
                            "items": {"type": "string", "pattern": IDENTIFIER.pattern},
                            "description": "The columns records may write and reads return.",
                        },
                    },
                },
            },
        },
    }

    clock: Callable[[], datetime] = partial(datetime.now, UTC)
    page_size = PAGE_SIZE  # rows a changes() page holds; the cursor is right at any size
    lock_timeout = 20.0  # seconds a write waits for another writer's lock before failing as retryable

    # --- the interface ---------------------------------------------------------------------

    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        if not batch:
            return []
        with self._open() as db, db.transaction():
            now = self.clock()
            return [self._write(db, record, now) for record in batch]

    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        table = self._table(object_type)
        found: dict[str, dict[str, Any]] = {}
        with self._open() as db:
            for part in chunks(list(ids), PAGE_SIZE):
                for row in db.rows_by_id(table, part):
                    found[str(row[table.id_column])] = _fields(table, row)
        return found

    @classmethod
    def objects_named(cls, config: Mapping[str, Any]) -> list[str]:
        return [*super().objects_named(config), *(str(name) for name in config.get("tables") or [])]  # its tables

    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        """Rows whose `updated_at` is after the cursor, oldest first, `page_size` a page.

        Keyset paging: rows are listed in (updated_at, id) order, the cursor is that pair of the
        last row handed out, and the next page starts strictly after it, so any number of rows
        sharing a timestamp, across any page boundary, are neither skipped nor repeated. Times
        are compared as instants (SQLite: see sqlite.sort_stamp), ids as their column orders them.
        Deletions are not visible: a deleted row is simply gone from the table, so reconcile
        finds them later by reading the ids it knows. Rows whose `updated_at` is NULL are never
        listed. A row stamped at or before the cursor but committed after the reader passed it
        (a long transaction; a writer whose clock truncates to the second, writing in the same
        second as a read) is missed too; reconcile covers it.
        """
        table = self._table(object_type)
        after = _position_load(cursor)
        with self._open() as db:
            rows = db.rows_after(table, after, self.page_size + 1)
            page = rows[: self.page_size]
            if page:
                cursor = _position_dump(db, table, page[-1])
        changes = [_change(table, row) for row in page]
        return ChangePage(changes, cursor, has_more=len(rows) > self.page_size)

    def check(self) -> CheckResult:
        try:
            tables = [self._table(name) for name in self.config.get("tables", {})]
            with self._open() as db:
                problems = {table.object_type: db.problems(table) for table in tables}
        except ConnectorError as exc:
            return CheckResult(False, f"{exc.code}: {exc.message}")
        found = [problem for listed in problems.values() for problem in listed]
        if found:
            return CheckResult(False, "; ".join(found), {"problems": problems})
        names = ", ".join(table.label for table in tables)
        return CheckResult(True, f"connected; {names}: key, updated_at and columns are in place")

    # --- writes ----------------------------------------------------------------------------

    def _write(self, db: Database, record: OutboundRecord, now: datetime) -> PushResult:
        try:
            table = self._table(record.object_type)
            if record.operation == "delete":
                return self._delete(db, table, record)
            values = _values(table, record)
            with db.savepoint():
                outcome, row_id = db.upsert(table, values, now)
        except RecordRejected as exc:
            return PushResult(record.record_id, "error", external_id=record.external_id, error=exc)
        return PushResult(record.record_id, outcome, external_id=_external_id(row_id))

    def _delete(self, db: Database, table: Table, record: OutboundRecord) -> PushResult:
        if record.external_id:
            column, value = table.id_column, record.external_id
        else:
            column, value = table.key, _key(table, record)
        with db.savepoint():
            deleted = db.delete(table, column, value)
        if deleted is None:
            return PushResult(record.record_id, "unchanged", external_id=record.external_id)
        return PushResult(record.record_id, "deleted", external_id=_external_id(deleted))

    # --- config and connection -------------------------------------------------------------

    def _table(self, object_type: str) -> Table:
        tables: dict[str, dict[str, Any]] = self.config.get("tables", {})
        if object_type not in tables:
            known = ", ".join(sorted(tables)) or "none"
            raise RecordRejected(
                f"no table is configured for {object_type!r} (configured: {known})",
                code="UNKNOWN_OBJECT",
                permanent=True,
            )
        return table_from_config(object_type, tables[object_type])

    @classmethod
    def config_refusals(cls, config: dict[str, Any]) -> dict[str, str]:
        why = own_database(str(config.get("url", "")))
        return {"config.url": why} if why else {}

    def _open(self) -> AbstractContextManager[Database]:
        url = str(self.config.get("url", ""))
        why = own_database(url)
        if why:
            raise ConnectorError(why, code="invalid_config", permanent=True, pause_connection=True)
        if url.startswith("sqlite:///"):
            return sqlite.connect(url.removeprefix("sqlite:///"), lock_timeout=self.lock_timeout)
        if url.startswith(("postgres://", "postgresql://")):
            return postgres.connect(url, password=self.secrets.get("password"), lock_timeout=self.lock_timeout)
        raise ConnectorError(
            "url must start with postgres://, postgresql:// or sqlite:///", code="invalid_config", permanent=True
        )


_LOOPBACK = {"", "localhost", "127.0.0.1", "::1", "[::1]"}


def own_database(url: str) -> str:
    """Why `url` may not be synced with (it is this service's own database), or "" (issue 15: staff could
    point a connection at the service's tables, tokens and secrets included)."""
    ours = settings.DATABASES["default"]
    if url.startswith("sqlite:///"):
        if ours["ENGINE"].endswith("sqlite3") and _same_file(url.removeprefix("sqlite:///"), str(ours["NAME"])):
            return "this is the service's own database: a connection may not read or write it"
        return ""
    if not url.startswith(("postgres://", "postgresql://")) or not ours["ENGINE"].endswith("postgresql"):
        return ""
    parts = urlsplit(url)
    host, port = (parts.hostname or "").lower(), parts.port or 5432
    our_host, our_port = str(ours.get("HOST") or "").lower(), int(ours.get("PORT") or 5432)
    same_host = host == our_host or (host in _LOOPBACK and our_host in _LOOPBACK)
    if same_host and port == our_port and parts.path.lstrip("/") == str(ours["NAME"]):
        return "this is the service's own database: a connection may not read or write it"
    return ""


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _key(table: Table, record: OutboundRecord) -> str:
    if not record.record_id.strip():
        raise RecordRejected(
            f"{record.object_type} record has no record_id for {table.key}",
            code="MISSING_KEY",
            permanent=True,
            fields=[table.key],
        )
    return record.record_id


def _values(table: Table, record: OutboundRecord) -> dict[str, Any]:
    """The row to write: the record's fields, its id in `key`; `updated_at` is ours to set."""
    unknown = sorted(set(record.fields) - set(table.columns))
    if unknown:
        raise RecordRejected(
            f"{_plural(unknown)} not among the columns configured for {record.object_type} "
            f"({', '.join(table.columns)})",
            code="INVALID_FIELD",
            permanent=True,
            fields=unknown,
        )
    values = {name: value for name, value in record.fields.items() if name != table.updated_at}
    return {**values, table.key: _key(table, record)}


def _plural(names: list[str]) -> str:
    listed = ", ".join(repr(name) for name in names)
    return f"field {listed} is" if len(names) == 1 else f"fields {listed} are"


def _external_id(row_id: Any) -> str | None:
    return None if row_id is None else str(row_id)


# --- reading ---------------------------------------------------------------------------------


def _change(table: Table, row: dict[str, Any]) -> Change:
    modified = _as_datetime(row[table.updated_at], table)
    return Change(table.object_type, str(row[table.id_column]), _fields(table, row), modified)


def _fields(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(row[name]) for name in table.readable}


def _plain(value: Any) -> Any:
    """A JSON-safe value. Decimals become text so no digit is lost."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def _as_datetime(value: Any, table: Table) -> datetime:
    """A timestamp column's value as an aware datetime; one without a zone is UTC."""
    try:
        return cursors.instant(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ConnectorError(
            f"{table.label}.{table.updated_at} holds {value!r}, which is not a timestamp",
            code="invalid_timestamp",
            permanent=True,
        ) from exc


def _cursor_key(value: Any) -> Any:
    """A row's id as the cursor keeps it: in its own JSON type (a number stays a number, text stays
    text), so the next page compares it as the column orders it; bytes as {"hex": ...}."""
    if isinstance(value, bytes | memoryview):
        return {"hex": bytes(value).hex()}
    return _plain(value)


def _position_dump(db: Database, table: Table, row: dict[str, Any]) -> str:
    return cursors.pair_dump(_plain(db.sort_stamp(row[table.updated_at])), _cursor_key(row[table.id_column]))


def _position_load(cursor: str | None) -> tuple[Any, Any] | None:
    """(sort stamp, id) as rows_after takes it; PostgreSQL reads a text value as its column's type."""
    saved = cursors.pair_load(cursor)
    if saved is None or not isinstance(saved[1], dict):
        return saved
    try:
        return saved[0], bytes.fromhex(str(saved[1]["hex"]))
    except (KeyError, ValueError) as exc:
        raise ConnectorError(
            f"not a cursor from this connector: {cursor!r}", code="invalid_cursor", permanent=True
        ) from exc

"""SQLite through the standard library's sqlite3: names double-quoted, every value bound with `?`.

SQLite has no timestamp type. We write `updated_at` as UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`,
the format of Django and of SQLite's own datetime() and CURRENT_TIMESTAMP (which leave out the
fraction). The table's other writers may use any other form ('T', 'Z', an offset, a number),
and text order is then not time order, so changes are listed by `sort_stamp`, registered on
each of our connections as the SQL function recordsync_utc: the instant as fixed-width UTC text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from crms import cursors
from crms.base import ConnectorError, Outcome, RecordRejected
from crms.database.tables import Database, Table

# Primary result codes (https://sqlite.org/rescode.html); extended codes keep them in the low byte.
SQLITE_ERROR, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 1, 5, 6, 8
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SORT_STAMP = "recordsync_utc"  # sort_stamp() as an SQL function on our connections


@contextmanager
def connect(path: str, *, lock_timeout: float) -> Iterator[SqliteDatabase]:
    try:
        # mode=rw: a missing file is an error, not a new empty database.
        conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=lock_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConnectorError(f"could not open SQLite database {path}: {exc}", code="connection_error") from exc
    conn.row_factory = sqlite3.Row
    conn.create_function(SORT_STAMP, 1, sort_stamp, deterministic=True)
    try:
        yield SqliteDatabase(conn)
    except sqlite3.Error as exc:
        code, permanent = classify(exc)
        raise ConnectorError(str(exc), code=code, permanent=permanent) from exc
    finally:
        conn.close()


def classify(exc: sqlite3.Error) -> tuple[str, bool]:
    """(code, permanent) for a driver error."""
    primary = exc.sqlite_errorcode & 0xFF
    if isinstance(exc, sqlite3.IntegrityError):
        return "constraint_violation", True
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError | sqlite3.DataError):
        return "invalid_value", True  # a value sqlite3 cannot bind
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return "lock_timeout", False
    if primary == SQLITE_ERROR:
        return "schema_mismatch", True  # "no such table", "no such column": the table changed since check()
    if primary == SQLITE_READONLY:
        return "read_only", True
    return "database_error", False


class SqliteDatabase(Database):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so the existence check and the write that
        # follows it see the same table.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self.conn.execute("SAVEPOINT record")
        try:
            yield
        except sqlite3.Error as exc:
            code, permanent = classify(exc)
            if not self.conn.in_transaction:  # a trigger's RAISE(ROLLBACK) ended the whole transaction
                raise ConnectorError(f"the database rolled back the push: {exc}", code="transaction_aborted") from exc
            if not permanent:
                raise
            self.conn.execute("ROLLBACK TO record")
            self.conn.execute("RELEASE record")
            raise RecordRejected(str(exc), code=code, permanent=True) from exc
        self.conn.execute("RELEASE record")

    def upsert(self, table: Table, values: dict[str, Any], now: datetime) -> tuple[Outcome, Any]:
        before = self._id_where(table, table.key, values[table.key])
        names = [*values, table.updated_at]
        changing = [c for c in values if c != table.key]
        statement = _sql(
            "INSERT INTO {table} AS existing ({names}) VALUES ({marks}) ON CONFLICT ({key}) {action}",
            table=_table(table),
            names=", ".join(map(quoted, names)),
            marks=_marks(names),
            key=quoted(table.key),
            action=_on_conflict(changing, table),
        )
        written = self.conn.execute(statement, [*map(_bindable, values.values()), timestamp(now)]).rowcount
        if before is None:
            return "created", self._id_where(table, table.key, values[table.key])
        return ("updated" if written else "unchanged"), before

    def delete(self, table: Table, column: str, value: Any) -> Any | None:
        found = self._id_where(table, column, value)
        if found is not None:
            statement = _sql("DELETE FROM {table} WHERE {column} = ?", table=_table(table), column=quoted(column))
            self.conn.execute(statement, [value])
        return found

    def rows_by_id(self, table: Table, ids: Sequence[Any]) -> list[dict[str, Any]]:
        if not ids:
            return []
        statement = _sql(
            "SELECT {names} FROM {table} WHERE {id} IN ({marks})",
            names=_names(table),
            table=_table(table),
            id=quoted(table.id_column),
            marks=_marks(ids),
        )
        return [dict(row) for row in self.conn.execute(statement, list(ids))]

    def rows_after(self, table: Table, after: tuple[Any, Any] | None, limit: int) -> list[dict[str, Any]]:
        # Every row's time is converted, so no index on updated_at serves this: a scan per page.
        # A NULL time compares as unknown, so the pair comparison leaves those rows out too.
        stamp, row_id = f"{SORT_STAMP}({quoted(table.updated_at)})", quoted(table.id_column)
        where = f"{stamp} IS NOT NULL" if after is None else f"({stamp}, {row_id}) > (?, ?)"
        statement = _sql(
            "SELECT {names} FROM {table} WHERE {where} ORDER BY {stamp}, {id} LIMIT ?",
            names=_names(table),
            table=_table(table),
            where=where,
            stamp=stamp,
            id=row_id,
        )
        # A cursor saved before sort_stamp held the row's own text: converted here, it means the same instant.
        bound = [] if after is None else [sort_stamp(after[0]), after[1]]
        return [dict(row) for row in self.conn.execute(statement, [*bound, limit])]

    def sort_stamp(self, value: Any) -> Any:
        return sort_stamp(value)

    def problems(self, table: Table) -> list[str]:
        schema, name = (table.name[0], table.name[1]) if len(table.name) == 2 else ("main", table.name[0])
        columns = {
            row["name"]: row["pk"]
            for row in self.conn.execute("SELECT name, pk FROM pragma_table_info(?, ?)", [name, schema])
        }
        if not columns:
            return [f"table {table.label} does not exist"]
        problems = [f"table {table.label} has no column {c}" for c in table.required if c not in columns]
        if table.key in columns and not self._key_is_unique(schema, name, table.key, columns):
            problems.append(f"{table.label}.{table.key} needs a unique constraint or index: the upsert relies on it")
        return problems

    def _key_is_unique(self, schema: str, name: str, key: str, primary: dict[str, int]) -> bool:
        # A one-column INTEGER PRIMARY KEY is the rowid and has no index to list.
        if [c for c, pk in primary.items() if pk] == [key]:
            return True
        indexes = self.conn.execute(
            'SELECT name FROM pragma_index_list(?, ?) WHERE "unique" = 1 AND partial = 0', [name, schema]
        ).fetchall()
        for index in indexes:
            names = [
                row["name"]
                for row in self.conn.execute("SELECT name FROM pragma_index_info(?, ?)", [index["name"], schema])
            ]
            if names == [key]:
                return True
        return False

    def _id_where(self, table: Table, column: str, value: Any) -> Any | None:
        statement = _sql(
            "SELECT {id} FROM {table} WHERE {column} = ?",
            id=quoted(table.id_column),
            table=_table(table),
            column=quoted(column),
        )
        row = self.conn.execute(statement, [value]).fetchone()
        return row[0] if row else None


def _sql(template: str, **parts: str) -> str:
    """A statement whose `{slots}` are filled with quoted names, `?` runs and clauses made of them."""
    return template.format(**parts)


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sort_stamp(value: Any) -> str | None:
    """`updated_at` as fixed-width UTC text (TIMESTAMP_FORMAT), whatever form the row holds it in, so that
    text order is time order and one instant is one text. A value that is no time becomes `~` and its
    text: it sorts after every time, and reading it fails as invalid_timestamp instead of being passed over.
    """
    if value is None:
        return None
    try:
        moment = cursors.instant(value).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return f"~{value}"
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")  # as TIMESTAMP_FORMAT, year padded


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _table(table: Table) -> str:
    return ".".join(map(quoted, table.name))


def _names(table: Table) -> str:
    return ", ".join(map(quoted, table.required))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _on_conflict(changing: list[str], table: Table) -> str:
    if not changing:
        return "DO NOTHING"
    sets = ", ".join(f"{quoted(c)} = excluded.{quoted(c)}" for c in [*changing, table.updated_at])
    differs = " OR ".join(f"existing.{quoted(c)} IS NOT excluded.{quoted(c)}" for c in changing)
    return f"DO UPDATE SET {sets} WHERE {differs}"


def _bindable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()  # sqlite3's own datetime adapter is deprecated since Python 3.12
    if isinstance(value, Decimal):
        return str(value)
    return value

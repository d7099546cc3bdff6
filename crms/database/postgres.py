"""PostgreSQL through psycopg 3: names composed with psycopg.sql.Identifier, every value bound."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from crms.base import ConnectorError, Outcome, RecordRejected
from crms.database.tables import Database, Table

CONNECT_TIMEOUT = 5  # seconds
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
Connection = psycopg.Connection[dict[str, Any]]


@contextmanager
def connect(url: str, *, password: str | None, lock_timeout: float) -> Iterator[PostgresDatabase]:
    extra: dict[str, Any] = {"password": password} if password else {}
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="recordsync",
            **extra,
        )
    except psycopg.Error as exc:
        # libpq gives no SQLSTATE before the session exists, so a refused login looks like a
        # refused socket: both are reported as connection errors and retried.
        raise ConnectorError(f"could not connect to PostgreSQL: {exc}", code="connection_error") from exc
    try:
        with conn:
            conn.execute("SET TIME ZONE 'UTC'")  # timestamps without a zone are read and written as UTC
            conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(lock_timeout * 1000)}ms"])
            yield PostgresDatabase(conn)
    except psycopg.Error as exc:
        code, permanent = classify(exc)
        raise ConnectorError(_message(exc), code=code, permanent=permanent) from exc


def classify(exc: psycopg.Error) -> tuple[str, bool]:
    """(code, permanent) for a driver error."""
    state = exc.sqlstate or ""
    if state.startswith("08") or (isinstance(exc, psycopg.OperationalError) and not state):
        return "connection_error", False
    transient = {
        "40001": "serialization_failure",
        "40P01": "deadlock",
        "55P03": "lock_timeout",
        "57014": "statement_timeout",
    }
    if state in transient:
        return transient[state], False
    if state == "42501":
        return "permission_denied", True
    if state in ("42P01", "42703"):
        return "schema_mismatch", True  # the table or a column is gone since check()
    if isinstance(exc, psycopg.IntegrityError):
        return "constraint_violation", True
    if isinstance(exc, psycopg.DataError | psycopg.ProgrammingError | psycopg.NotSupportedError):
        return "invalid_value", True
    return "database_error", False


def _message(exc: psycopg.Error) -> str:
    # The primary message only: DETAIL often quotes the whole failing row, values included.
    message = exc.diag.message_primary or str(exc)
    constraint = exc.diag.constraint_name
    return f"{message} (constraint {constraint})" if constraint else message


class PostgresDatabase(Database):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        try:
            with self.conn.transaction():  # nested inside transaction(): a SAVEPOINT
                yield
        except psycopg.Error as exc:
            code, permanent = classify(exc)
            if not permanent:
                raise
            column = exc.diag.column_name
            raise RecordRejected(_message(exc), code=code, permanent=True, fields=[column] if column else []) from exc

    def upsert(self, table: Table, values: dict[str, Any], now: datetime) -> tuple[Outcome, Any]:
        names = [*values, table.updated_at]
        changing = [c for c in values if c != table.key]
        query = sql.SQL(
            "INSERT INTO {table} AS existing ({names}) VALUES ({marks}) ON CONFLICT ({key}) {action}"
            " RETURNING (xmax = 0) AS created, {id}"
        ).format(
            table=sql.Identifier(*table.name),
            names=sql.SQL(", ").join(map(sql.Identifier, names)),
            marks=sql.SQL(", ").join(sql.Placeholder() * len(names)),
            key=sql.Identifier(table.key),
            action=_on_conflict(changing, table.updated_at),
            id=sql.Identifier(table.id_column),
        )
        row = self.conn.execute(query, [*map(_bindable, values.values()), now]).fetchone()
        if row is None:  # the row exists and no value differs: nothing was written
            return "unchanged", self._id_where(table, table.key, values[table.key])
        return ("created" if row["created"] else "updated"), row[table.id_column]

    def delete(self, table: Table, column: str, value: Any) -> Any | None:
        query = sql.SQL("DELETE FROM {table} WHERE {column} = %s RETURNING {id}").format(
            table=sql.Identifier(*table.name), column=sql.Identifier(column), id=sql.Identifier(table.id_column)
        )
        row = self.conn.execute(query, [value]).fetchone()
        return row[table.id_column] if row else None

    def rows_by_id(self, table: Table, ids: Sequence[Any]) -> list[dict[str, Any]]:
        query = sql.SQL("SELECT {names} FROM {table} WHERE {id} IN ({marks})").format(
            names=_names(table),
            table=sql.Identifier(*table.name),
            id=sql.Identifier(table.id_column),
            marks=sql.SQL(", ").join(sql.Placeholder() * len(ids)),
        )
        return self.conn.execute(query, list(ids)).fetchall() if ids else []

    def rows_after(self, table: Table, after: tuple[Any, Any] | None, limit: int) -> list[dict[str, Any]]:
        stamp, row_id = sql.Identifier(table.updated_at), sql.Identifier(table.id_column)
        where = sql.SQL("{stamp} IS NOT NULL").format(stamp=stamp)
        if after is not None:
            where = sql.SQL("{where} AND ({stamp}, {id}) > (%s, %s)").format(where=where, stamp=stamp, id=row_id)
        query = sql.SQL("SELECT {names} FROM {table} WHERE {where} ORDER BY {stamp}, {id} LIMIT %s").format(
            names=_names(table), table=sql.Identifier(*table.name), where=where, stamp=stamp, id=row_id
        )
        return self.conn.execute(query, [*(after or ()), limit]).fetchall()

    def problems(self, table: Table) -> list[str]:
        regclass = sql.Identifier(*table.name).as_string(self.conn)
        found = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL AS found", [regclass]).fetchone()
        if not (found and found["found"]):
            return [f"table {table.label} does not exist"]
        rows = self.conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            [regclass],
        ).fetchall()
        present = {row["attname"] for row in rows}
        problems = [f"table {table.label} has no column {c}" for c in table.required if c not in present]
        if table.key in present and not self._key_is_unique(regclass, table.key):
            problems.append(f"{table.label}.{table.key} needs a unique constraint or index: the upsert relies on it")
        return problems + self._missing_privileges(regclass, table.label)

    def _key_is_unique(self, regclass: str, key: str) -> bool:
        # What ON CONFLICT (key) can use as its arbiter: a unique, immediate, non-partial index on key alone.
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indimmediate AND i.indpred IS NULL"
            " AND i.indnkeyatts = 1 AND a.attname = %s) AS found",
            [regclass, key],
        ).fetchone()
        return bool(row and row["found"])

    def _missing_privileges(self, regclass: str, label: str) -> list[str]:
        missing = []
        for privilege in PRIVILEGES:
            row = self.conn.execute("SELECT has_table_privilege(to_regclass(%s), %s) AS ok", [regclass, privilege])
            granted = row.fetchone()
            if not (granted and granted["ok"]):
                missing.append(f"the database user lacks {privilege} on {label}")
        return missing

    def _id_where(self, table: Table, column: str, value: Any) -> Any | None:
        query = sql.SQL("SELECT {id} FROM {table} WHERE {column} = %s").format(
            id=sql.Identifier(table.id_column), table=sql.Identifier(*table.name), column=sql.Identifier(column)
        )
        row = self.conn.execute(query, [value]).fetchone()
        return row[table.id_column] if row else None


def _on_conflict(changing: list[str], updated_at: str) -> sql.Composable:
    if not changing:
        return sql.SQL("DO NOTHING")
    # Compared as text so that columns without an equality operator (json, point) work too.
    return sql.SQL("DO UPDATE SET {sets} WHERE {differs}").format(
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in [*changing, updated_at]
        ),
        differs=sql.SQL(" OR ").join(
            sql.SQL("existing.{c}::text IS DISTINCT FROM EXCLUDED.{c}::text").format(c=sql.Identifier(c))
            for c in changing
        ),
    )


def _names(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, table.required))


def _bindable(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value

"""The database connector against real databases: a SQLite file, and a scratch PostgreSQL database.

Every test runs on both (the `external` fixture); the PostgreSQL half is marked `postgres` and
skips when the suite runs on SQLite. The server is the one the suite's own DATABASES points at.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from django.conf import settings
from jsonschema import Draft202012Validator
from psycopg import sql

from crms.base import ConnectorError, OutboundRecord
from crms.database.connector import DatabaseConnector
from crms.http import HttpClient
from crms.models import Connection
from crms.state import DatabaseStateStore

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
CONTACTS = {
    "table": "contacts",
    "key": "record_id",
    "id_column": "id",
    "updated_at": "updated_at",
    "columns": ["email", "first_name", "age"],
}
COMPANIES = {"table": "companies", "key": "code", "id_column": "code", "updated_at": "changed", "columns": ["name"]}
# The types the dialects spell differently; on PostgreSQL one table keeps time with a zone, one without.
SCHEMA = [
    "CREATE TABLE contacts (id {serial} PRIMARY KEY, record_id TEXT NOT NULL UNIQUE, email TEXT,"
    " first_name TEXT, age INTEGER CHECK (age >= 0), updated_at {timestamptz})",
    "CREATE TABLE companies (code TEXT PRIMARY KEY, name TEXT, changed {timestamp})",
]
TYPES = {
    "sqlite": {"serial": "INTEGER", "timestamptz": "TEXT", "timestamp": "TEXT"},
    "postgres": {"serial": "BIGSERIAL", "timestamptz": "TIMESTAMPTZ", "timestamp": "TIMESTAMP"},
}


class External:
    """A database of the test's own, and plain SQL (no parameters) to set it up and look inside."""

    dialect: str
    url: str
    unreachable_url: str
    schema: str  # the default schema's name
    secrets: dict[str, str]

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def hold_write_lock(self) -> Any:
        """Another writer holding the lock a push needs (the row c-2 on PostgreSQL, the file on SQLite)."""
        raise NotImplementedError

    def create_tables(self) -> None:
        for statement in SCHEMA:
            self.execute(statement.format(**TYPES[self.dialect]))


class SqliteExternal(External):
    dialect, schema, secrets = "sqlite", "main", {}

    def __init__(self, path: Path) -> None:
        self.path = path
        sqlite3.connect(path).close()
        self.url = f"sqlite:///{path}"
        self.unreachable_url = f"sqlite:///{path.parent / 'no-such-file.sqlite3'}"

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path, isolation_level=None) as conn:
            return conn.execute(statement).fetchall()

    @contextmanager
    def hold_write_lock(self) -> Iterator[None]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class PostgresExternal(External):
    dialect, schema = "postgres", "public"

    def __init__(self, server: dict[str, Any], name: str) -> None:
        self.params = {**server, "dbname": name}
        self.url = f"postgres://{server['user']}@{server['host']}:{server['port']}/{name}"
        self.unreachable_url = f"postgres://{server['user']}@127.0.0.1:{closed_port()}/{name}"
        self.secrets = {"password": server["password"]} if server["password"] else {}

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(**self.params, autocommit=True) as conn:
            cursor = conn.execute(statement.encode())
            return cursor.fetchall() if cursor.description else []

    @contextmanager
    def hold_write_lock(self) -> Iterator[None]:
        with psycopg.connect(**self.params) as conn:
            conn.execute("UPDATE contacts SET email = email WHERE record_id = 'c-2'")
            yield
            conn.rollback()


def postgres_server() -> dict[str, Any]:
    """Where the suite's own PostgreSQL is: DATABASE_URL only finds the server, the test makes its own database."""
    default = settings.DATABASES["default"]
    return {
        "host": default.get("HOST") or "127.0.0.1",
        "port": int(default.get("PORT") or 5432),
        "user": default.get("USER") or "postgres",
        "password": default.get("PASSWORD") or "",
    }


@contextmanager
def postgres_database() -> Iterator[PostgresExternal]:
    server = postgres_server()
    name = f"recordsync_scratch_{uuid4().hex[:12]}"
    admin = {**server, "dbname": "postgres", "autocommit": True}
    with psycopg.connect(**admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield PostgresExternal(server, name)
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def external(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[External]:
    if request.param == "sqlite":
        database: External = SqliteExternal(tmp_path / "external.sqlite3")
        database.create_tables()
        yield database
    else:
        with postgres_database() as database:
            database.create_tables()
            yield database


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_connector(external: External, **config: Any) -> DatabaseConnector:
    connection, _ = Connection.objects.get_or_create(name="warehouse", kind="database")
    return DatabaseConnector(
        config={"url": external.url, "tables": {"Contact": CONTACTS, "Company": COMPANIES}} | config,
        secrets=external.secrets,
        http=HttpClient(connection_name="warehouse"),
        store=DatabaseStateStore(connection),
    )


@pytest.fixture
def connector(external: External, clock: Clock) -> DatabaseConnector:
    connector = make_connector(external)
    connector.clock = clock
    return connector


def upsert(record_id: str, object_type: str = "Contact", **fields: Any) -> OutboundRecord:
    return OutboundRecord(record_id, object_type, "upsert", fields)


def delete(record_id: str, external_id: str | None = None) -> OutboundRecord:
    return OutboundRecord(record_id, "Contact", "delete", external_id=external_id)


def outcomes(results: list[Any]) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.external_id) for r in results]


def contacts(external: External) -> list[tuple[Any, ...]]:
    return external.execute("SELECT record_id, email, first_name, age FROM contacts ORDER BY record_id")


def everything(connector: DatabaseConnector, object_type: str = "Contact") -> list[Any]:
    return connector.changes(object_type, None).changes


# --- push: upserts --------------------------------------------------------------------------------


def test_a_new_record_is_inserted_and_answers_created_with_the_row_id(connector, external):
    results = connector.push([upsert("c-1", email="ada@example.com", first_name="Ada")])

    assert outcomes(results) == [("created", "1")]
    assert contacts(external) == [("c-1", "ada@example.com", "Ada", None)]
    assert [c.modified_at for c in everything(connector)] == [T0]


def test_a_record_with_a_known_key_updates_its_row_and_moves_updated_at(connector, external, clock):
    connector.push([upsert("c-1", email="ada@example.com", first_name="Ada")])
    clock.advance(60)

    results = connector.push([upsert("c-1", email="ada@lovelace.org")])

    assert outcomes(results) == [("updated", "1")]
    assert contacts(external) == [("c-1", "ada@lovelace.org", "Ada", None)]  # first_name untouched
    assert [c.modified_at for c in everything(connector)] == [T0 + timedelta(seconds=60)]


def test_pushing_the_same_values_again_is_unchanged_and_keeps_updated_at(connector, clock):
    connector.push([upsert("c-1", email="ada@example.com", age=36)])
    clock.advance(60)

    results = connector.push([upsert("c-1", email="ada@example.com", age=36), upsert("c-1")])

    assert outcomes(results) == [("unchanged", "1"), ("unchanged", "1")]
    assert [c.modified_at for c in everything(connector)] == [T0]


def test_a_field_outside_the_columns_is_refused_and_the_rest_of_the_batch_is_written(connector, external):
    results = connector.push(
        [
            upsert("c-1", email="ada@example.com"),
            upsert("c-2", email="grace@example.com", nickname="Amazing Grace"),
            upsert("c-3", email="alan@example.com"),
        ]
    )

    assert [r.outcome for r in results] == ["created", "error", "created"]
    error = results[1].error
    assert (error.code, error.permanent, error.fields) == ("INVALID_FIELD", True, ("nickname",))
    assert error.message == "field 'nickname' is not among the columns configured for Contact (email, first_name, age)"
    assert [row[0] for row in contacts(external)] == ["c-1", "c-3"]


def test_a_record_without_an_id_is_refused_as_missing_key(connector, external):
    (result,) = connector.push([upsert("", email="nobody@example.com")])

    assert (result.outcome, result.error.code, result.error.permanent) == ("error", "MISSING_KEY", True)
    assert "record_id" in result.error.message
    assert contacts(external) == []


def test_a_record_for_an_object_without_a_table_is_refused(connector):
    (result,) = connector.push([upsert("l-1", object_type="Lead", email="x@example.com")])

    assert (result.error.code, result.error.permanent) == ("UNKNOWN_OBJECT", True)
    assert result.error.message == "no table is configured for 'Lead' (configured: Company, Contact)"


def test_duplicate_keys_in_one_batch_end_with_the_last_value(connector, external):
    results = connector.push(
        [
            upsert("c-1", email="first@example.com", age=1),
            upsert("c-2", email="other@example.com"),
            upsert("c-1", email="last@example.com", age=3),
        ]
    )

    assert outcomes(results) == [("created", "1"), ("created", "2"), ("updated", "1")]
    assert contacts(external) == [("c-1", "last@example.com", None, 3), ("c-2", "other@example.com", None, None)]


def test_a_constraint_violation_fails_only_its_own_record(connector, external):
    results = connector.push([upsert("c-1", age=36), upsert("c-2", age=-1), upsert("c-3", age=41)])

    assert [r.outcome for r in results] == ["created", "error", "created"]
    assert (results[1].error.code, results[1].error.permanent) == ("constraint_violation", True)
    assert [(row[0], row[3]) for row in contacts(external)] == [("c-1", 36), ("c-3", 41)]


def test_an_object_whose_key_is_its_primary_key_answers_with_the_key(connector, external):
    results = connector.push([upsert("acme", object_type="Company", name="Acme")])

    assert outcomes(results) == [("created", "acme")]
    assert external.execute("SELECT code, name FROM companies") == [("acme", "Acme")]
    assert [(c.external_id, c.modified_at) for c in everything(connector, "Company")] == [("acme", T0)]


def test_names_are_quoted_so_a_table_named_after_a_keyword_works(external, clock):
    external.execute('CREATE TABLE "order" ("group" TEXT PRIMARY KEY, "select" TEXT, "when" TEXT)')
    table = {"table": "order", "key": "group", "id_column": "group", "updated_at": "when", "columns": ["select"]}
    connector = make_connector(external, tables={"Order": table})
    connector.clock = clock

    assert outcomes(connector.push([upsert("o-1", object_type="Order", select="all")])) == [("created", "o-1")]
    assert connector.read("Order", ["o-1"]) == {"o-1": {"group": "o-1", "select": "all"}}


def test_a_schema_qualified_table_is_written(external, clock):
    connector = make_connector(external, tables={"Contact": CONTACTS | {"table": f"{external.schema}.contacts"}})
    connector.clock = clock

    assert outcomes(connector.push([upsert("c-1", email="ada@example.com")])) == [("created", "1")]
    assert contacts(external) == [("c-1", "ada@example.com", None, None)]


def test_a_name_that_is_not_a_plain_identifier_never_reaches_the_database(external):
    table = CONTACTS | {"table": 'contacts"; DROP TABLE contacts; --'}
    connector = make_connector(external, tables={"Contact": table})

    (result,) = connector.push([upsert("c-1", email="ada@example.com")])

    assert result.error is not None
    assert (result.error.code, result.error.permanent) == ("invalid_config", True)
    assert "is not a plain SQL name" in result.error.message
    assert contacts(external) == []  # the table is still there


# --- push: deletes --------------------------------------------------------------------------------


def test_a_delete_by_key_removes_the_row(connector, external):
    connector.push([upsert("c-1", email="ada@example.com"), upsert("c-2", email="grace@example.com")])

    assert outcomes(connector.push([delete("c-1")])) == [("deleted", "1")]
    assert [row[0] for row in contacts(external)] == ["c-2"]


def test_a_delete_with_an_external_id_removes_that_row(connector, external):
    connector.push([upsert("c-1", email="ada@example.com"), upsert("c-2", email="grace@example.com")])

    assert outcomes(connector.push([delete("renamed", external_id="2")])) == [("deleted", "2")]
    assert [row[0] for row in contacts(external)] == ["c-1"]


def test_deleting_a_row_that_is_not_there_is_unchanged(connector):
    assert outcomes(connector.push([delete("c-9"), delete("c-8", external_id="98")])) == [
        ("unchanged", None),
        ("unchanged", "98"),
    ]


# --- push: the call as a whole --------------------------------------------------------------------


def test_a_push_blocked_by_another_writer_is_retryable_and_keeps_nothing(connector, external):
    connector.push([upsert("c-2", email="grace@example.com")])
    connector.lock_timeout = 0.2

    with external.hold_write_lock(), pytest.raises(ConnectorError) as raised:
        connector.push([upsert("c-1", email="ada@example.com"), upsert("c-2", email="grace@navy.mil")])

    assert (raised.value.code, raised.value.permanent) == ("lock_timeout", False)
    assert contacts(external) == [("c-2", "grace@example.com", None, None)]  # c-1 rolled back with the rest


def test_an_unreachable_database_is_a_retryable_connection_error(external):
    connector = make_connector(external, url=external.unreachable_url)

    with pytest.raises(ConnectorError) as raised:
        connector.push([upsert("c-1", email="ada@example.com")])

    assert (raised.value.code, raised.value.permanent) == ("connection_error", False)


# --- read -----------------------------------------------------------------------------------------


def test_read_returns_the_current_fields_of_the_rows_found_by_id(connector):
    connector.push([upsert("c-1", email="ada@example.com", age=36), upsert("c-2", email="grace@example.com")])

    assert connector.read("Contact", ["2", "1", "404"]) == {
        "1": {"id": 1, "record_id": "c-1", "email": "ada@example.com", "first_name": None, "age": 36},
        "2": {"id": 2, "record_id": "c-2", "email": "grace@example.com", "first_name": None, "age": None},
    }


def test_read_of_nothing_is_empty(connector):
    assert connector.read("Contact", []) == {}


# --- changes --------------------------------------------------------------------------------------


def test_changes_are_listed_oldest_first_and_resume_after_the_cursor(connector, clock):
    connector.push([upsert("c-1", email="ada@example.com")])
    first = connector.changes("Contact", None)
    clock.advance(1)
    connector.push([upsert("c-2", email="grace@example.com")])
    clock.advance(1)
    connector.push([upsert("c-1", email="ada@lovelace.org")])

    later = connector.changes("Contact", first.cursor)

    assert [(c.external_id, c.fields["email"]) for c in first.changes] == [("1", "ada@example.com")]
    assert [(c.external_id, c.fields["email"], c.modified_at) for c in later.changes] == [
        ("2", "grace@example.com", T0 + timedelta(seconds=1)),
        ("1", "ada@lovelace.org", T0 + timedelta(seconds=2)),
    ]
    assert not later.has_more
    assert all(c.object_type == "Contact" and not c.deleted for c in later.changes)


def test_rows_sharing_a_timestamp_across_a_page_boundary_are_neither_skipped_nor_repeated(connector):
    connector.push([upsert(f"c-{i:03}", age=i) for i in range(600)])  # one push: one timestamp

    first = connector.changes("Contact", None)
    second = connector.changes("Contact", first.cursor)
    third = connector.changes("Contact", second.cursor)

    assert (len(first.changes), first.has_more) == (500, True)
    assert (len(second.changes), second.has_more) == (100, False)
    seen = [c.fields["record_id"] for c in first.changes + second.changes]
    assert sorted(seen) == [f"c-{i:03}" for i in range(600)]
    assert {c.modified_at for c in first.changes + second.changes} == {T0}
    assert (third.changes, third.cursor, third.has_more) == ([], second.cursor, False)


def test_an_empty_table_has_no_changes_and_no_cursor(connector):
    page = connector.changes("Contact", None)

    assert (page.changes, page.cursor, page.has_more) == ([], None, False)


def test_rows_without_an_updated_at_are_not_listed(connector, external):
    external.execute("INSERT INTO contacts (record_id, email) VALUES ('hand-made', 'x@example.com')")
    connector.push([upsert("c-1", email="ada@example.com")])

    assert [c.fields["record_id"] for c in everything(connector)] == ["c-1"]


def test_rows_written_by_others_are_listed_with_their_own_timestamp(connector, external):
    external.execute("INSERT INTO companies (code, name, changed) VALUES ('acme', 'Acme', '2026-11-01 08:30:00+00:00')")

    (change,) = everything(connector, "Company")

    assert (change.external_id, change.fields, change.modified_at) == (
        "acme",
        {"code": "acme", "name": "Acme"},
        datetime(2026, 11, 1, 8, 30, tzinfo=UTC),
    )


def test_a_cursor_that_is_not_ours_is_a_permanent_error(connector):
    with pytest.raises(ConnectorError) as raised:
        connector.changes("Contact", "yesterday")

    assert (raised.value.code, raised.value.permanent) == ("invalid_cursor", True)


def test_the_cursor_is_a_json_string(connector):
    connector.push([upsert("c-1", email="ada@example.com")])

    cursor = connector.changes("Contact", None).cursor

    assert isinstance(cursor, str)
    assert json.loads(cursor)[1] == 1


# --- check ----------------------------------------------------------------------------------------


def test_check_passes_when_every_table_has_its_key_updated_at_and_columns(connector):
    result = connector.check()

    assert result.ok, result.message
    assert result.message == "connected; contacts, companies: key, updated_at and columns are in place"


def test_check_names_a_missing_table_and_missing_columns(external):
    tables = {
        "Contact": CONTACTS | {"columns": ["email", "phone"], "updated_at": "modified"},
        "Lead": CONTACTS | {"table": "leads"},
    }

    result = make_connector(external, tables=tables).check()

    assert not result.ok
    assert result.message == (
        "table contacts has no column phone; table contacts has no column modified; table leads does not exist"
    )


def test_check_refuses_a_key_without_a_unique_index(external):
    external.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, source_id TEXT, stamp TEXT)")
    table = {"table": "people", "key": "source_id", "id_column": "id", "updated_at": "stamp", "columns": []}

    result = make_connector(external, tables={"Person": table}).check()

    assert not result.ok
    assert result.message == "people.source_id needs a unique constraint or index: the upsert relies on it"


def test_check_accepts_a_unique_index_made_after_the_table(external):
    external.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, source_id TEXT, stamp TEXT)")
    external.execute("CREATE UNIQUE INDEX people_source ON people (source_id)")
    table = {"table": "people", "key": "source_id", "id_column": "id", "updated_at": "stamp", "columns": []}

    assert make_connector(external, tables={"Person": table}).check().ok


def test_check_reports_an_unreachable_database(external):
    result = make_connector(external, url=external.unreachable_url).check()

    assert not result.ok
    assert result.message.startswith("connection_error: could not ")


# --- config ---------------------------------------------------------------------------------------


def test_the_config_schema_is_a_json_schema_that_accepts_a_documented_config():
    Draft202012Validator.check_schema(DatabaseConnector.config_schema)
    config = {"url": "postgres://sync@db.internal:5432/crm", "tables": {"Contact": CONTACTS}}

    assert list(Draft202012Validator(DatabaseConnector.config_schema).iter_errors(config)) == []


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"url": "mysql://db/crm", "tables": {"Contact": CONTACTS}}, ["url"]),
        (
            {"url": "sqlite:////tmp/x.sqlite3", "tables": {"Contact": CONTACTS | {"key": "id; --"}}},
            ["tables", "Contact", "key"],
        ),
        (
            {"url": "sqlite:////tmp/x.sqlite3", "tables": {"Contact": CONTACTS | {"colour": "red"}}},
            ["tables", "Contact"],
        ),
        ({"url": "sqlite:////tmp/x.sqlite3", "tables": {}, "password": "hunter2"}, []),
    ],
)
def test_the_config_schema_refuses_bad_urls_names_and_unknown_keys(config, path):
    errors = list(Draft202012Validator(DatabaseConnector.config_schema).iter_errors(config))

    assert path in [list(e.absolute_path) for e in errors]


def test_the_schema_lists_password_as_the_only_secret():
    assert DatabaseConnector.schema()["secrets"] == ["password"]
    assert (DatabaseConnector.capabilities.batch_size, DatabaseConnector.capabilities.directions) == (
        500,
        ("outbound", "inbound"),
    )

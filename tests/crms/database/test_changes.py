"""changes() never skips or repeats a row: 5,000 rows stamped in one second, read in pages, then edited.

Each test drives changes() as the inbound poller does (sync/inbound/changes.py): it reads the saved
cursor ("" is "from the beginning"), takes one page, saves `page.cursor or ""`, and stops when
`has_more` is False. A change is (id, modified instant); each must be seen exactly once.

Contacts have integer ids and (on PostgreSQL) a time with a zone; companies have text ids,
"1" to "5000", which sort "10" < "9", and (on PostgreSQL) a time without one. On SQLite the
time is text, and writers other than us leave it in whatever ISO-8601 form they like.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from crms.base import Change, ConnectorError
from crms.database.connector import DatabaseConnector
from tests.crms.database.test_connector import (
    COMPANIES,
    CONTACTS,
    T0,
    External,
    PostgresExternal,
    SqliteExternal,
    make_connector,
    postgres_database,
)

pytestmark = pytest.mark.django_db

ROWS, EDITED = 5000, 300
LATER = T0 + timedelta(seconds=1)
# Within the later second: most edits on the whole second (as CURRENT_TIMESTAMP and now()::timestamp(0)
# stamp them), some with a fraction.
FRACTIONS = [0, 0, 250_000, 0, 999_999]
SEED = {
    "Contact": "INSERT INTO contacts (id, record_id, email, updated_at) VALUES (%s, %s, %s, %s)",
    "Company": "INSERT INTO companies (code, name, changed) VALUES (%s, %s, %s)",
}
EDIT = {
    "Contact": "UPDATE contacts SET email = %s, updated_at = %s WHERE id = %s",
    "Company": "UPDATE companies SET name = %s, changed = %s WHERE code = %s",
}
VALUE = {"Contact": "email", "Company": "name"}
TOKENS = {  # a binary primary key
    "sqlite": "CREATE TABLE tokens (id BLOB PRIMARY KEY, ref TEXT UNIQUE, stamp TEXT)",
    "postgres": "CREATE TABLE tokens (id BYTEA PRIMARY KEY, ref TEXT UNIQUE, stamp TIMESTAMP)",
}


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


@pytest.fixture(params=["Contact", "Company"])
def object_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def connector_for(external: External, page_size: int) -> DatabaseConnector:
    connector = make_connector(external, tables={"Contact": CONTACTS, "Company": COMPANIES})
    connector.page_size = page_size
    return connector


def run(external: External, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """Many rows in one transaction, as another program writing to the table would."""
    if isinstance(external, SqliteExternal):
        with sqlite3.connect(external.path) as conn:
            conn.executemany(statement.replace("%s", "?"), rows)
        conn.close()
        return
    assert isinstance(external, PostgresExternal)
    with psycopg.connect(**external.params) as pg:
        pg.execute("SET TIME ZONE 'UTC'")  # how a time written without a zone is read into timestamptz
        pg.cursor().executemany(statement.encode(), rows)


def forms(moment: datetime, *, with_zone: bool) -> list[str]:
    """One instant as different writers write it: ' ' or 'T', a fraction or none, 'Z' or an offset."""
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    texts = [naive.isoformat(sep=" "), naive.isoformat(), naive.isoformat(sep=" ", timespec="microseconds")]
    if with_zone:
        texts += [
            moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            moment.astimezone(timezone(timedelta(hours=2))).isoformat(sep=" "),
            moment.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="microseconds"),
        ]
    return texts


def with_zone(external: External, object_type: str) -> bool:
    # PostgreSQL's `timestamp` (companies) would drop an offset, not apply it: its writers give none.
    return external.dialect == "sqlite" or object_type == "Contact"


def seed(external: External, object_type: str) -> None:
    """ROWS rows stamped T0, inserted in shuffled order, the time written in every form in turn."""
    texts = forms(T0, with_zone=with_zone(external, object_type))
    ids = list(range(1, ROWS + 1))
    random.Random(13).shuffle(ids)
    run(external, SEED[object_type], [seed_row(object_type, i, texts[n % len(texts)]) for n, i in enumerate(ids)])


def seed_row(object_type: str, number: int, stamp: str) -> tuple[Any, ...]:
    if object_type == "Contact":
        return number, f"c-{number}", "v0", stamp
    return str(number), "v0", stamp


def row_id(object_type: str, number: int) -> int | str:
    return number if object_type == "Contact" else str(number)


def edit(external: External, object_type: str, ids: list[int]) -> dict[str, datetime]:
    """Edit these rows within the second after T0; the new instant of each, by external id."""
    moments = {str(i): LATER + timedelta(microseconds=FRACTIONS[n % len(FRACTIONS)]) for n, i in enumerate(ids)}
    aware = with_zone(external, object_type)
    rows = []
    for n, (external_id, moment) in enumerate(moments.items()):
        texts = forms(moment, with_zone=aware)
        rows.append((f"v1-{external_id}", texts[n % len(texts)], row_id(object_type, int(external_id))))
    run(external, EDIT[object_type], rows)
    return moments


def poll(connector: DatabaseConnector, object_type: str, saved: str = "") -> tuple[list[Change], str]:
    """What sync.inbound.changes.poll does with one (connection, object) cursor, page by page."""
    seen: list[Change] = []
    while True:
        page = connector.changes(object_type, saved or None)
        assert len(page.changes) <= connector.page_size
        seen += page.changes
        saved = page.cursor or ""
        json.loads(saved or "null")  # kept as text in InboundCursor.cursor
        if not page.has_more:
            return seen, saved


def captured(changes: list[Change]) -> Counter[tuple[str, datetime]]:
    return Counter((c.external_id, c.modified_at.astimezone(UTC)) for c in changes)


def everything_at(moment: datetime, ids: Any) -> Counter[tuple[str, datetime]]:
    return Counter((str(i), moment) for i in ids)


@pytest.mark.parametrize("page_size", [2000, 299])  # 299: page boundaries inside the later second too
def test_5000_rows_of_one_second_then_300_edited_in_a_later_second_are_each_captured_exactly_once(
    external, object_type, page_size
):
    seed(external, object_type)
    connector = connector_for(external, page_size)

    first, saved = poll(connector, object_type)
    edited = random.Random(300).sample(range(1, ROWS + 1), EDITED)
    moments = edit(external, object_type, edited)
    second, saved = poll(connector, object_type, saved)
    (third, _) = poll(connector, object_type, saved)

    assert captured(first) == everything_at(T0, range(1, ROWS + 1))
    assert captured(second) == Counter(moments.items())
    assert max(captured(first + second).values()) == 1
    assert {c.external_id: c.fields[VALUE[object_type]] for c in second} == {i: f"v1-{i}" for i in moments}
    assert third == []


def test_ties_are_listed_by_id_as_the_column_orders_it_and_times_as_instants(external, object_type):
    seed(external, object_type)
    connector = connector_for(external, 2000)

    seen, _ = poll(connector, object_type)

    ids = [c.external_id for c in seen]
    expected = sorted(range(1, ROWS + 1)) if object_type == "Contact" else sorted(str(i) for i in range(1, ROWS + 1))
    assert ids == [str(i) for i in expected]  # integer ids: 9 before 10; text ids: "10" before "9"
    assert ids[:3] == (["1", "2", "3"] if object_type == "Contact" else ["1", "10", "100"])
    assert {c.modified_at for c in seen} == {T0}


def test_edits_made_between_two_pages_of_the_shared_second_are_captured_once_at_their_new_time(external, object_type):
    seed(external, object_type)
    connector = connector_for(external, 2000)
    page = connector.changes(object_type, None)
    read = [int(c.external_id) for c in page.changes]
    unread = sorted(set(range(1, ROWS + 1)) - set(read))
    edited = random.Random(1).sample(read, EDITED // 2) + random.Random(2).sample(unread, EDITED // 2)

    moments = edit(external, object_type, edited)
    rest, _ = poll(connector, object_type, page.cursor or "")

    untouched = set(unread) - set(edited)
    assert captured(page.changes) == everything_at(T0, read)
    assert captured(rest) == everything_at(T0, untouched) + Counter(moments.items())
    assert max(captured(page.changes + rest).values()) == 1


def test_a_cursor_saved_with_the_rows_own_text_resumes_at_the_same_instant(external):
    """Cursors saved before times were compared as instants hold the last row's time as it was written."""
    seed(external, "Contact")
    connector = connector_for(external, 2000)
    written = "2026-11-02 12:00:00+02:00" if external.dialect == "sqlite" else "2026-11-02T10:00:00Z"

    rest, _ = poll(connector, "Contact", json.dumps([written, 2500]))

    assert captured(rest) == everything_at(T0, range(2501, ROWS + 1))


def test_binary_ids_are_compared_as_bytes_so_a_shared_second_is_not_read_again(external):
    external.execute(TOKENS[external.dialect])
    tokens = [(bytes([i, 255 - i]), f"t-{i}", "2026-11-02 10:00:00") for i in range(1, 8)]
    run(external, "INSERT INTO tokens (id, ref, stamp) VALUES (%s, %s, %s)", tokens)
    table = {"table": "tokens", "key": "ref", "id_column": "id", "updated_at": "stamp", "columns": []}
    connector = make_connector(external, tables={"Token": table})
    connector.page_size = 3

    seen, _ = poll(connector, "Token")

    assert [c.fields["ref"] for c in seen] == [f"t-{i}" for i in range(1, 8)]


def test_a_time_that_is_no_time_fails_loudly_instead_of_being_passed_over(tmp_path):
    external = SqliteExternal(tmp_path / "external.sqlite3")
    external.create_tables()
    external.execute("INSERT INTO contacts (id, record_id, updated_at) VALUES (1, 'c-1', 'last tuesday')")
    external.execute("INSERT INTO contacts (id, record_id, updated_at) VALUES (2, 'c-2', '2026-11-02T10:00:00Z')")
    connector = connector_for(external, 1)

    first = connector.changes("Contact", None)
    with pytest.raises(ConnectorError) as raised:
        connector.changes("Contact", first.cursor)

    assert [c.external_id for c in first.changes] == ["2"]
    assert (raised.value.code, raised.value.permanent) == ("invalid_timestamp", True)
    assert "'last tuesday'" in raised.value.message

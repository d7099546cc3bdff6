"""changes() never skips or repeats a row: 5,000 rows stamped in one second, read in pages, then edited.

Each test drives changes() as the inbound poller does (sync/inbound/changes.py): it reads the saved
cursor ("" is "from the beginning"), takes one page, saves `page.cursor or ""`, and stops when
`has_more` is False. A change is (key, modified instant); each must be seen exactly once.

The files are written as another program would: keys 1 to 5000 (JSON numbers in JSON Lines,
text in CSV), rows in no particular order, `_updated_at` in whatever ISO-8601 form it likes.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crms.base import Change, OutboundRecord
from crms.flatfile.connector import FlatFileConnector
from crms.http import HttpClient
from crms.models import Connection
from crms.state import DatabaseStateStore

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
LATER = T0 + timedelta(seconds=1)
ROWS, EDITED = 5000, 300
FRACTIONS = [0, 0, 250_000, 0, 999_999]  # microseconds into the later second


@pytest.fixture(params=["csv", "jsonl"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "exports"
    path.mkdir()
    return path


def connector_for(folder: Path, fmt: str, page_size: int) -> FlatFileConnector:
    connection, _ = Connection.objects.get_or_create(name="exports", kind="flatfile")
    objects = {"Contact": {"file": f"contacts.{fmt}", "key": "id", "columns": ["email"]}}
    connector = FlatFileConnector(
        config={"folder": str(folder), "format": fmt, "objects": objects},
        secrets={},
        http=HttpClient(connection_name="exports"),
        store=DatabaseStateStore(connection),
    )
    connector.page_size = page_size
    return connector


def forms(moment: datetime) -> list[str]:
    """One instant as different writers write it: ' ' or 'T', a fraction or none, 'Z', an offset or no zone."""
    utc = moment.astimezone(UTC)
    return [
        utc.isoformat().replace("+00:00", "Z"),
        utc.replace(tzinfo=None).isoformat(sep=" "),
        utc.isoformat(timespec="microseconds"),
        moment.astimezone(timezone(timedelta(hours=2))).isoformat(sep=" "),
        moment.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="microseconds"),
    ]


def write(folder: Path, fmt: str, rows: dict[int, tuple[str, str]]) -> None:
    """The whole file, as another program writes it: key -> (email, _updated_at)."""
    path = folder / f"contacts.{fmt}"
    with open(path, "w", encoding="utf-8", newline="") as stream:
        if fmt == "csv":
            writer = csv.writer(stream)
            writer.writerow(["id", "email", "_updated_at"])
            writer.writerows([key, email, stamp] for key, (email, stamp) in rows.items())
        else:
            for key, (email, stamp) in rows.items():
                stream.write(json.dumps({"id": key, "email": email, "_updated_at": stamp}) + "\n")


def seed(folder: Path, fmt: str) -> dict[int, tuple[str, str]]:
    """ROWS rows stamped T0, in shuffled order, the time written in every form in turn."""
    keys = list(range(1, ROWS + 1))
    random.Random(13).shuffle(keys)
    texts = forms(T0)
    rows = {key: (f"v0-{key}", texts[n % len(texts)]) for n, key in enumerate(keys)}
    write(folder, fmt, rows)
    return rows


def edit_by_hand(folder: Path, fmt: str, rows: dict[int, tuple[str, str]], keys: list[int]) -> dict[str, datetime]:
    """Another program edits these rows within the second after T0; the new instant of each, by key."""
    moments = {str(k): LATER + timedelta(microseconds=FRACTIONS[n % len(FRACTIONS)]) for n, k in enumerate(keys)}
    for n, key in enumerate(keys):
        texts = forms(moments[str(key)])
        rows[key] = (f"v1-{key}", texts[n % len(texts)])
    write(folder, fmt, rows)
    return moments


def edit_by_push(connector: FlatFileConnector, keys: list[int]) -> dict[str, datetime]:
    """Our own push in the second after T0: one stamp for the batch."""
    connector.clock = lambda: LATER
    results = connector.push([OutboundRecord(str(k), "Contact", "upsert", {"email": f"v1-{k}"}) for k in keys])
    assert {r.outcome for r in results} == {"updated"}
    return {str(k): LATER for k in keys}


def poll(connector: FlatFileConnector, saved: str = "") -> tuple[list[Change], str]:
    """What sync.inbound.changes.poll does with one (connection, object) cursor, page by page."""
    seen: list[Change] = []
    while True:
        page = connector.changes("Contact", saved or None)
        assert len(page.changes) <= connector.page_size
        seen += page.changes
        saved = page.cursor or ""
        json.loads(saved or "null")  # kept as text in InboundCursor.cursor
        if not page.has_more:
            return seen, saved


def captured(changes: list[Change]) -> Counter[tuple[str, datetime]]:
    return Counter((c.external_id, c.modified_at.astimezone(UTC)) for c in changes)


def everything_at(moment: datetime, keys: Any) -> Counter[tuple[str, datetime]]:
    return Counter((str(k), moment) for k in keys)


@pytest.mark.parametrize("editor", ["by_hand", "push"])
@pytest.mark.parametrize("page_size", [2000, 299])  # 299: page boundaries inside the later second too
def test_5000_rows_of_one_second_then_300_edited_in_a_later_second_are_each_captured_exactly_once(
    folder, fmt, page_size, editor
):
    rows = seed(folder, fmt)
    connector = connector_for(folder, fmt, page_size)

    first, saved = poll(connector)
    edited = random.Random(300).sample(range(1, ROWS + 1), EDITED)
    moments = edit_by_push(connector, edited) if editor == "push" else edit_by_hand(folder, fmt, rows, edited)
    second, saved = poll(connector, saved)
    (third, _) = poll(connector, saved)

    assert captured(first) == everything_at(T0, range(1, ROWS + 1))
    assert captured(second) == Counter(moments.items())
    assert max(captured(first + second).values()) == 1
    assert {c.external_id: c.fields["email"] for c in second} == {k: f"v1-{k}" for k in moments}
    assert third == []


def test_ties_are_listed_by_key_as_text_and_times_as_instants(folder, fmt):
    seed(folder, fmt)

    seen, _ = poll(connector_for(folder, fmt, 2000))

    keys = [c.external_id for c in seen]
    assert keys == sorted(str(k) for k in range(1, ROWS + 1))  # "10" before "9", in JSON Lines too
    assert keys[:3] == ["1", "10", "100"]
    assert {c.modified_at for c in seen} == {T0}


def test_edits_made_between_two_pages_of_the_shared_second_are_captured_once_at_their_new_time(folder, fmt):
    rows = seed(folder, fmt)
    connector = connector_for(folder, fmt, 2000)
    page = connector.changes("Contact", None)
    read = [int(c.external_id) for c in page.changes]
    unread = sorted(set(range(1, ROWS + 1)) - set(read))
    edited = random.Random(1).sample(read, EDITED // 2) + random.Random(2).sample(unread, EDITED // 2)

    moments = edit_by_hand(folder, fmt, rows, edited)
    rest, _ = poll(connector, page.cursor or "")

    untouched = set(unread) - set(edited)
    assert captured(page.changes) == everything_at(T0, read)
    assert captured(rest) == everything_at(T0, untouched) + Counter(moments.items())
    assert max(captured(page.changes + rest).values()) == 1

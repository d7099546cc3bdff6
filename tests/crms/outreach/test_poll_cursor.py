"""Polling Outreach by updatedAt captures each change exactly once, however many records share a second
and whatever the page size (crms/stamp_cursor.py explains how): the real connector over real HTTP
against the mock, and the cursor on its own."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from crms.base import Change
from crms.mocks.models import MockRecord
from crms.outreach.connector import OutreachConnector
from crms.stamp_cursor import SETTLE_SECONDS, PollCursor
from tests.crms.outreach.test_mock import make_connector

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def connector(live_server: Any, settings: Any) -> OutreachConnector:
    return make_connector(f"{live_server.url}/mock/outreach", settings)


def prospects_at(count: int, moment: datetime) -> list[str]:
    """Records a person made in Outreach, all stamped with the same second (made in bulk, as an import would)."""
    rows = [
        MockRecord(
            system="outreach",
            object="prospect",
            record_id=str(n),
            fields={"emails": [f"p{n}@example.com"]},
            created_at=moment,
            modified_at=moment,
        )
        for n in range(1, count + 1)
    ]
    MockRecord.objects.bulk_create(rows, batch_size=1000)
    return [row.record_id for row in rows]


def edit(record_ids: list[str], moment: datetime, title: str) -> None:
    rows = list(MockRecord.objects.filter(system="outreach", record_id__in=record_ids))
    for row in rows:
        row.fields = {**row.fields, "title": title}
        row.modified_at = moment
    MockRecord.objects.bulk_update(rows, ["fields", "modified_at"], batch_size=1000)


def poll(connector: OutreachConnector, cursor: str | None) -> tuple[list[Change], str, int]:
    """One whole pass, page after page as sync.inbound.changes.poll reads them: (changes, the cursor after, pages)."""
    changes: list[Change] = []
    pages = 0
    while True:
        page = connector.changes("prospect", cursor)
        cursor, pages = page.cursor or "", pages + 1
        changes += page.changes
        if not page.has_more:
            return changes, cursor, pages


def ids(changes: list[Change]) -> list[str]:
    return sorted((c.external_id for c in changes), key=int)


@pytest.mark.parametrize("age", ["an hour ago", "just now"])
def test_five_thousand_prospects_in_one_second_then_three_hundred_edited_in_a_later_second_are_each_captured_once(
    connector, age
):
    first_second = timezone.now().replace(microsecond=0) - (timedelta(hours=1) if age == "an hour ago" else timedelta())
    made = prospects_at(5000, first_second)
    edited = made[7::16][:300]

    first, cursor, pages = poll(connector, None)
    edit(edited, first_second + timedelta(seconds=1), "edited")
    second, cursor, _ = poll(connector, cursor)
    third, cursor, _ = poll(connector, cursor)
    state = json.loads(cursor)

    assert pages == 5  # Outreach's largest page, 1,000 records
    assert ids(first) == made
    assert ids(second) == sorted(edited, key=int)
    assert {c.fields["title"] for c in second} == {"edited"}
    assert third == []
    if age == "an hour ago":  # settled: only the newest second's records are kept, to skip them next time
        assert state["since"] == stamp(first_second + timedelta(seconds=1))
        assert {s: sorted(ids, key=int) for s, ids in state["read"].items()} == {
            state["since"]: sorted(edited, key=int)
        }
    else:  # within a minute of Outreach's clock: each record is remembered once, by its stamp and content
        assert sum(len(read) for read in state["read"].values()) == 5000


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_records_sharing_a_second_are_read_whole_at_any_page_size(connector, size):
    made = prospects_at(7, timezone.now().replace(microsecond=0) - timedelta(hours=1))
    cursor = json.dumps({"size": size})

    changes, cursor, pages = poll(connector, cursor)
    again, _, _ = poll(connector, cursor)

    assert ids(changes) == made and pages == -(-7 // size)
    assert again == []


def test_a_second_edit_in_the_same_second_as_the_last_read_is_still_captured(connector):
    moment = timezone.now().replace(microsecond=0)
    one, _ = prospects_at(2, moment)
    _, cursor, _ = poll(connector, None)

    edit([one], moment, "same second")  # a later write that Outreach stamps with the same whole second
    changes, cursor, _ = poll(connector, cursor)
    again, _, _ = poll(connector, cursor)

    assert ids(changes) == [one] and changes[0].fields["title"] == "same second"
    assert again == []


def test_a_write_committed_late_with_an_older_stamp_is_still_captured(connector):
    now = timezone.now().replace(microsecond=0)
    prospects_at(1, now - timedelta(seconds=10))
    _, cursor, _ = poll(connector, None)

    late = MockRecord.objects.create(
        system="outreach",
        object="prospect",
        record_id="2",
        fields={"emails": ["late@example.com"]},
        modified_at=now - timedelta(seconds=20),
    )
    changes, _, _ = poll(connector, cursor)

    assert ids(changes) == [late.record_id]


# --- the cursor on its own --------------------------------------------------------------------------


def row(stamp: str, **attributes: Any) -> dict[str, Any]:
    return {"updatedAt": stamp, **attributes}


def test_a_pass_moves_since_to_the_newest_row_held_back_to_a_minute_before_outreachs_clock():
    cursor = PollCursor.load(None, 1000)
    cursor.take("1", "2024-03-01T10:00:00.000Z", row("2024-03-01T10:00:00.000Z"))
    cursor.take("2", "2024-03-01T10:00:05.000Z", row("2024-03-01T10:00:05.000Z"))

    cursor.finish(now=datetime.fromisoformat("2024-03-01T10:01:03+00:00").timestamp())

    assert cursor.since == "2024-03-01T10:00:03.000Z"  # a minute before Outreach's clock
    assert list(cursor.read) == ["2024-03-01T10:00:05.000Z"]  # what is older is forgotten
    cursor.finish(now=datetime.fromisoformat("2024-03-02T00:00:00+00:00").timestamp())
    assert cursor.since == "2024-03-01T10:00:03.000Z"  # a pass that read no row moves nothing
    cursor.take("2", "2024-03-01T10:00:05.000Z", row("2024-03-01T10:00:05.000Z"))  # read again, unchanged
    cursor.finish(now=datetime.fromisoformat("2024-03-02T00:00:00+00:00").timestamp())
    assert cursor.since == "2024-03-01T10:00:05.000Z"  # settled: the newest row's stamp, and its ids kept
    assert list(cursor.read) == ["2024-03-01T10:00:05.000Z"]
    assert SETTLE_SECONDS == 60.0


def test_cursors_saved_before_passes_still_resume_without_delivering_twice():
    """{"since"} (sync_backfill's since_cursor) and {"since", "delivered"} (the cursor before this one)."""
    stamp = "2024-03-03T10:00:00.000Z"
    old = PollCursor.load(json.dumps({"since": stamp, "delivered": ["3"], "size": 250}), 1000)
    plain = PollCursor.load(json.dumps({"since": "2024-03-03T10:00:00Z"}), 1000)

    assert (old.since, old.size, old.next) == (stamp, 250, None)
    assert not old.take("3", stamp, row(stamp, title="any")) and old.take("4", stamp, row(stamp))
    assert (plain.since, plain.size, plain.read) == (stamp, 1000, {})
    assert not plain.take("1", "2024-03-03T09:59:59.999Z", row("2024-03-03T09:59:59.999Z"))  # before since

"""Real orgs stamp whole seconds, and a bulk edit stamps thousands of records with the same one: the
poll must read each change exactly once whatever the page size (keyset order on SystemModstamp, Id)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from crms.mocks.models import MockRecord
from crms.salesforce import mock_store
from sync.delivery.engine import throttled_connector
from sync.inbound import changes as inbound
from sync.models import SyncEvent
from tests.conftest import mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "RecordSync_Id__c"


def stamped(count: int, at: Any) -> list[MockRecord]:
    return MockRecord.objects.bulk_create(
        [
            MockRecord(
                system="salesforce",
                object="Contact",
                record_id=mock_store.new_id("Contact"),
                fields={"LastName": f"L{i}", "Email": f"p{i}@example.com"},
                created_at=at,
                modified_at=at,
                modified_by=mock_store.CRM_USER,
            )
            for i in range(count)
        ]
    )


def captured() -> list[tuple[str, str]]:
    """(Salesforce id, change time) of every change captured from the org."""
    events = SyncEvent.objects.filter(source="salesforce")
    return [(e.record_id.removeprefix("salesforce-"), e.occurred_at.isoformat()) for e in events]


def poll(connection: Any) -> inbound.PollResult:
    return inbound.poll(
        connection=connection, object_type="Contact", connector=throttled_connector(connection), owner="cursor-test"
    )


@pytest.mark.parametrize("batch", [2000, 700])
def test_five_thousand_records_in_one_second_then_300_edited_in_a_later_second_are_each_captured_once(
    live_server, settings, batch
):
    settings.MOCK_SALESFORCE_QUERY_PAGE = batch  # the org's query batch; the connector's LIMIT stays 2,000
    connection = mock_salesforce(live_server.url)
    first_second = mock_store.stamp() - timedelta(seconds=30)
    records = stamped(5000, first_second)

    first = poll(connection)
    later = first_second + timedelta(seconds=7)
    edited = records[1234:1534]
    for record in edited:
        record.fields = {**record.fields, "Title": "edited"}
        record.modified_at = later
    MockRecord.objects.bulk_update(edited, ["fields", "modified_at"])
    second = poll(connection)

    changes = captured()
    assert first.counts["captured"] == 5000 and second.counts["captured"] == 300
    assert len(changes) == len(set(changes)) == 5300
    assert {rid for rid, at in changes if at == later.isoformat()} == {r.record_id for r in edited}
    assert {rid for rid, at in changes if at == first_second.isoformat()} == {r.record_id for r in records}


def test_a_record_edited_twice_within_one_second_is_captured_twice(live_server):
    """Whole-second stamps: the second edit carries the first one's stamp, yet is a change of its own."""
    connection = mock_salesforce(live_server.url)
    at = mock_store.stamp() - timedelta(seconds=10)
    (record,) = stamped(1, at)
    poll(connection)
    record.fields = {**record.fields, "Phone": "+1 555 0100"}
    record.save(update_fields=["fields"])

    poll(connection)

    events = SyncEvent.objects.filter(source="salesforce").order_by("received_at")
    phones = [(e.payload or {}).get("Phone") for e in events]
    assert phones == [None, "+1 555 0100"]

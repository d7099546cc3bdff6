"""A page of changes captured in a bounded number of statements, whatever its size: the links it makes in one
statement, the jobs in flight read once (sync/inbound/changes.py capture, InFlight)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crms.base import Change
from crms.build import connector_for
from crms.models import Connection
from sync.inbound import changes as inbound
from sync.models import JobState, RecordLink, SyncEvent, SyncJob
from tests.conftest import mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)
AT = timezone.now() - timedelta(minutes=5)


@pytest.fixture
def salesforce(live_server) -> Connection:
    return mock_salesforce(live_server.url)


def contact(n: int, *, seconds: int = 0, **fields: Any) -> Change:
    values = {"LastName": f"L{n}", "Email": f"p{n}@example.com", **fields}
    return Change("Contact", f"003{n:015d}", values, AT + timedelta(seconds=seconds))


def capture(connection: Connection, changes: list[Change]) -> Any:
    return inbound.capture(connection=connection, connector=connector_for(connection), changes=changes)


def statements(connection: Connection, changes: list[Change]) -> int:
    with CaptureQueriesContext(db) as queries:
        counts = capture(connection, changes)
    assert counts["captured"] == len(changes)
    return len(queries)


def test_a_page_of_two_hundred_new_records_takes_about_as_many_statements_as_a_page_of_five(salesforce):
    statements(salesforce, [contact(n) for n in range(5)])  # what a process reads once (rules, settings)
    few = statements(salesforce, [contact(n) for n in range(10, 15)])
    many = statements(salesforce, [contact(n) for n in range(100, 300)])

    # Per record would be 195 more. A few more are SQLite's bulk inserts cut to its limit of bound values.
    assert many <= few + 4
    assert RecordLink.objects.filter(system=salesforce).count() == 210


def test_a_record_twice_in_a_page_is_linked_once_and_both_changes_are_captured(salesforce):
    first, second = contact(1), contact(1, seconds=1, Title="edited")
    RecordLink.objects.create(  # linked meanwhile by another process: kept as it is
        system=salesforce, external_object="Contact", external_id=contact(2).external_id, record_id="c-2"
    )

    counts = capture(salesforce, [first, second, contact(2)])

    assert counts == {"captured": 3}
    (link,) = RecordLink.objects.filter(system=salesforce, external_id=first.external_id)
    assert link.record_id == f"salesforce-{first.external_id}" and link.last_values == {}
    assert RecordLink.objects.get(external_id=contact(2).external_id).record_id == "c-2"
    assert SyncEvent.objects.filter(source="salesforce", record_id=link.record_id).count() == 2


@pytest.mark.parametrize("scan", [100, 1], ids=["read once", "more in flight than one scan"])
def test_our_write_in_flight_read_back_is_an_echo_of_its_record(api, salesforce, monkeypatch, scan):
    monkeypatch.setattr(inbound, "IN_FLIGHT_SCAN", scan)
    for n in range(3):
        body = {
            "operation": "create",
            "record_id": f"c-{n}",
            "object_type": "Contact",
            "data": {"LastName": "Lovelace", "Email": f"ada{n}@example.com"},
        }
        assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
    SyncJob.objects.filter(target=salesforce).update(state=JobState.IN_FLIGHT)
    sent = contact(7, LastName="Lovelace", Email="ada2@example.com")
    link = {"external_object": "Contact", "external_id": sent.external_id, "record_id": "c-2"}
    RecordLink.objects.create(system=salesforce, **link)

    counts = capture(salesforce, [sent, contact(8)])

    assert counts == {"echo": 1, "captured": 1}
    echo = SyncEvent.objects.get(source="salesforce", routing__mode="skipped")
    assert echo.record_id == "c-2" and echo.routing["reason"].startswith("echo")

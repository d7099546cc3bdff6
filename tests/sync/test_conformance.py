"""Conformance invariants on the inbound path (poll, capture, webhook), ported from meltano/sdk's standard
target test streams and Airbyte's incremental-read checks.

Meltano (`../shared/fixtures/conformance/meltano_sdk_target_test_streams/*.singer`): a key repeated in one
batch ends with its last value; loading the same records again upserts them; a record whose key changes
stays one record; a record without its key is refused. Airbyte: resuming from a saved cursor never yields
a second event for a (record, modification time) already captured; re-reading a short overlap window is
allowed (Salesforce can commit a change late with an earlier SystemModstamp) and must capture such a
change; a cursor in the far future reads nothing.

Each test runs against the mock CRMs over real HTTP (`live_server`), for Salesforce and, where the
connector supports the invariant, Outreach. The outbound side of two of these streams is tested by
tests/crms/flatfile/test_connector.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer

from crms.base import Change, Connector, ConnectorError
from crms.mocks.models import MockRecord
from crms.models import Connection
from crms.outreach import mock_store as outreach_store
from crms.salesforce import mock_store as salesforce_store
from crms.salesforce.soql import soql_datetime
from crms.services import connection_save
from crms.systema import mock as system_a_mock
from sync.delivery.engine import throttled_connector
from sync.inbound import changes as inbound
from sync.inbound.changes import PollResult
from sync.models import InboundCursor, RecordLink, SyncEvent
from tests.conftest import SchemaCheckedClient, drain, mock_outreach, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)

# The shared fixture set lives beside the repository (../shared/fixtures); two of its streams are also
# copied, unchanged and with their licence, into tests/crms/flatfile/fixtures for the outbound tests.
SHARED_STREAMS = Path(__file__).resolve().parents[3] / "shared/fixtures/conformance/meltano_sdk_target_test_streams"
REPO_STREAMS = Path(__file__).resolve().parents[1] / "crms" / "flatfile" / "fixtures"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a whole second: the mocks' stamps are set from it
OVERLAP = timedelta(seconds=1)  # "the last second is read again on the next poll" (docs/connectors.md)
WEBHOOK_SECRET = "hook-secret-for-conformance"


# --- the meltano streams ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SingerRecord:
    """One RECORD message, with the key properties its stream's latest SCHEMA message named."""

    key_properties: tuple[str, ...]
    values: dict[str, Any]

    @property
    def key(self) -> str:
        """The record's identity in the stream ("" when it lacks a key property)."""
        return "|".join(str(self.values.get(name, "")) for name in self.key_properties)


def singer_records(file: str, stream: str | None = None) -> list[SingerRecord]:
    """The RECORD messages of a meltano/sdk target test stream (of `stream` only, when given), in order.

    Read from the shared fixture set beside the repository, else from the copy the flat-file tests keep;
    when neither has the file the test is skipped, saying where it was looked for (a skip fails CI's
    RECORDSYNC_REQUIRE_SERVICES=1 run).
    """
    path = next((folder / file for folder in (SHARED_STREAMS, REPO_STREAMS) if (folder / file).is_file()), None)
    if path is None:
        pytest.skip(
            f"conformance stream {file} not found in {SHARED_STREAMS} (the shared fixture set beside "
            f"the repository) nor in {REPO_STREAMS}"
        )
    keys: dict[str, tuple[str, ...]] = {}
    records: list[SingerRecord] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        message = json.loads(line)
        if message["type"] == "SCHEMA":
            # pk_updates.singer nests key_properties inside the schema: accept both places.
            named = message.get("key_properties", message["schema"].get("key_properties", []))
            keys[message["stream"]] = tuple(named)
        elif message["type"] == "RECORD" and stream in (None, message["stream"]):
            records.append(SingerRecord(keys.get(message["stream"], ()), dict(message["record"])))
    assert records, f"{file} holds no RECORD message for stream {stream!r}"
    return records


# --- the mock CRMs, as these tests drive them ------------------------------------------------------


class Crm(ABC):
    """A mock CRM: edits made as its users make them, changes shaped as its connector reads them.

    A fixture record's key becomes one CRM record (created on first sight, edited after); its other
    properties become CRM fields through `field_names`.
    """

    name: str
    object_type: str
    field_names: dict[str, str]

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.ids: dict[str, str] = {}  # fixture key → the CRM's id

    def fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            self.field_names[k]: self._value(self.field_names[k], v) for k, v in values.items() if k in self.field_names
        }

    def edit(self, record: SingerRecord, *, at: datetime | None = None, key: str | None = None) -> str:
        """A person creates or edits the record in the CRM; `at` sets its modification time. The CRM id."""
        key = record.key if key is None else key
        external_id = self._store(self.ids.get(key), self.fields(record.values))
        self.ids[key] = external_id
        if at is not None:
            self.stamp(external_id, at)
        return external_id

    def stamp(self, external_id: str, at: datetime) -> None:
        """The modification time the CRM gave the record (SystemModstamp, updatedAt)."""
        rows = MockRecord.objects.filter(system=self.name, object=self.object_type, record_id=external_id)
        assert rows.update(modified_at=at) == 1

    def connector(self) -> Connector:
        return throttled_connector(self.connection)

    def poll(self, **kwargs: Any) -> PollResult:
        return inbound.poll(
            connection=self.connection,
            object_type=self.object_type,
            connector=self.connector(),
            owner="conformance",
            **kwargs,
        )

    def capture(self, changes: list[Change], **kwargs: Any) -> Counter[str]:
        """One page handed to capture, in a transaction as poll and the webhook receiver do."""
        with transaction.atomic():
            return inbound.capture(connection=self.connection, connector=self.connector(), changes=changes, **kwargs)

    def cursor(self) -> InboundCursor:
        row, _ = InboundCursor.objects.get_or_create(connection=self.connection, object_type=self.object_type)
        return row

    def save_cursor(self, cursor: str) -> None:
        InboundCursor.objects.update_or_create(
            connection=self.connection, object_type=self.object_type, defaults={"cursor": cursor}
        )

    @abstractmethod
    def _value(self, field: str, value: Any) -> Any: ...

    @abstractmethod
    def _store(self, external_id: str | None, fields: dict[str, Any]) -> str: ...

    @abstractmethod
    def fake_id(self, key: str) -> str:
        """A CRM id for a record the mock does not hold (changes handed to capture directly)."""

    @abstractmethod
    def change(self, external_id: str, values: Mapping[str, Any], at: datetime) -> Change:
        """A change as the connector's `changes()` returns it, for a record with these fixture values."""

    @abstractmethod
    def cursor_since(self, at: datetime) -> str:
        """A saved cursor that reads the changes made since `at`."""

    @abstractmethod
    def small_pages(self, settings: Any) -> None:
        """Make the CRM answer two records a page, so a poll reads several pages."""


class SalesforceCrm(Crm):
    name, object_type = "salesforce", "Contact"
    field_names = {"name": "LastName", "email": "Email", "metric": "Phone"}

    def _value(self, field: str, value: Any) -> Any:
        return str(value)

    def _store(self, external_id: str | None, fields: dict[str, Any]) -> str:
        # A Contact cannot be created without a LastName (the org refuses it, as a real one does): a person
        # creating one from a stream without names types one in.
        values = {"Id": external_id, **fields} if external_id else {"LastName": "Unnamed", **fields}
        (row,) = salesforce_store.staff_push(self.object_type, [values], [])
        return str(row["Id"])

    def fake_id(self, key: str) -> str:
        return f"003CONFORM{int(key):05d}AAA"  # 18 characters, a Contact's prefix

    def change(self, external_id: str, values: Mapping[str, Any], at: datetime) -> Change:
        row = {
            "Id": external_id,
            **self.fields(values),
            "SystemModstamp": salesforce_store.sf_time(at),
            "LastModifiedById": salesforce_store.CRM_USER,
        }
        return Change(self.object_type, external_id, row, at)

    def cursor_since(self, at: datetime) -> str:
        return json.dumps({"since": soql_datetime(at)})

    def small_pages(self, settings: Any) -> None:
        settings.MOCK_SALESFORCE_QUERY_PAGE = 2


class OutreachCrm(Crm):
    name, object_type = "outreach", "prospect"
    field_names = {"name": "lastName", "email": "emails", "metric": "title"}

    def _value(self, field: str, value: Any) -> Any:
        return [str(value)] if field == "emails" else str(value)

    def _store(self, external_id: str | None, fields: dict[str, Any]) -> str:
        row = {"id": int(external_id), **fields} if external_id else fields
        (stored,) = outreach_store.staff_push(self.object_type, [row], [])
        return str(stored["id"])

    def fake_id(self, key: str) -> str:
        return str(int(key))

    def change(self, external_id: str, values: Mapping[str, Any], at: datetime) -> Change:
        attributes = {**self.fields(values), "updatedAt": outreach_store.ol_time(at)}
        return Change(self.object_type, external_id, attributes, at)

    def cursor_since(self, at: datetime) -> str:
        return json.dumps({"since": outreach_store.ol_time(at)})

    def small_pages(self, settings: Any) -> None:
        cursor = json.loads(self.cursor().cursor or "{}")
        self.save_cursor(json.dumps({**cursor, "size": 2}))  # the connector keeps its page size in the cursor


def salesforce_crm(live_server: LiveServer) -> SalesforceCrm:
    return SalesforceCrm(mock_salesforce(live_server.url))


def outreach_crm(live_server: LiveServer, settings: Any) -> OutreachCrm:
    connection = mock_outreach(live_server.url, webhook_secret=WEBHOOK_SECRET)
    return OutreachCrm(connection)


@pytest.fixture(params=["salesforce", "outreach"])
def crm(request: pytest.FixtureRequest, live_server: LiveServer, settings: Any) -> Crm:
    return salesforce_crm(live_server) if request.param == "salesforce" else outreach_crm(live_server, settings)


@pytest.fixture
def salesforce(live_server: LiveServer) -> SalesforceCrm:
    return salesforce_crm(live_server)


@pytest.fixture
def outreach(live_server: LiveServer, settings: Any) -> OutreachCrm:
    return outreach_crm(live_server, settings)


@pytest.fixture
def system_a(live_server: LiveServer, settings: Any) -> Connection:
    return connection_save(
        name="system_a",
        kind="system_a",
        config={"url": f"{live_server.url}/mock/system_a"},
        secrets={"signing_secret": system_a_mock.signing_secret()},
    )


# --- what System A and the links hold --------------------------------------------------------------


def in_system_a(crm: Crm) -> dict[str, dict[str, Any]]:
    """System A's records of the CRM's object, by System A's own id, with the values they hold (an
    update may also name the fields it leaves empty)."""
    rows = MockRecord.objects.filter(system="system_a", object=crm.object_type, deleted_at__isnull=True)
    return {row.record_id: {k: v for k, v in row.fields.items() if v not in (None, "", [])} for row in rows}


@dataclass(frozen=True)
class Linked:
    record_id: str  # the record's id in our records (System A's id space)
    in_system_a: str  # its id in System A's own store


def linked(crm: Crm, external_id: str) -> Linked:
    """The one record a CRM record is linked to, and the one System A record linked to that."""
    (link,) = RecordLink.objects.filter(system=crm.connection, external_object=crm.object_type, external_id=external_id)
    (to_a,) = RecordLink.objects.filter(system__name="system_a", record_id=link.record_id)
    return Linked(link.record_id, to_a.external_id)


def subset(fields: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    return {name: fields.get(name) for name in names}


def captured_versions(crm: Crm) -> list[tuple[str, datetime]]:
    """(CRM id, modification time) of every event captured from the CRM, one per event."""
    external = dict(RecordLink.objects.filter(system=crm.connection).values_list("record_id", "external_id"))
    events = SyncEvent.objects.filter(source=crm.name).values_list("record_id", "occurred_at")
    return sorted((external.get(record_id, f"unlinked:{record_id}"), at) for record_id, at in events)


def sign(body: bytes) -> str:
    return hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


def deliver(client: SchemaCheckedClient, data: dict[str, Any]) -> Any:
    """One signed Outreach webhook delivery of `data` (an `updated` event) to POST /v1/webhooks/outreach."""
    body = json.dumps(
        {
            "data": data,
            "meta": {
                "eventName": f"{data.get('type', 'prospect')}.updated",
                "deliveredAt": outreach_store.ol_time(timezone.now()),
            },
        }
    ).encode()
    return client.post(
        "/v1/webhooks/outreach", data=body, content_type="application/json", HTTP_OUTREACH_WEBHOOK_SIGNATURE=sign(body)
    )


def steps(start: datetime, milliseconds: int) -> Iterator[datetime]:
    at = start
    while True:
        yield at
        at += timedelta(milliseconds=milliseconds)


# --- 1. duplicate keys: the last value wins --------------------------------------------------------


def test_versions_of_one_record_polled_one_after_another_leave_system_a_with_the_last_value(
    crm: Crm, system_a: Connection
) -> None:
    """duplicate_records.singer, one message per CRM edit with a poll after each: ids 1 and 2 are edited
    again and again (metric 1, 2, 10, 20, 100); System A ends with 100 and 20, one record each."""
    records = singer_records("duplicate_records.singer")
    for record in records:
        crm.edit(record)
        crm.poll()

    drain(system_a)

    last = {record.key: crm.fields(record.values) for record in records}  # later messages overwrite
    assert len(in_system_a(crm)) == 2
    for key, fields in last.items():
        link = linked(crm, crm.ids[key])
        assert subset(in_system_a(crm)[link.in_system_a], fields) == fields
    assert len({linked(crm, crm.ids[key]).record_id for key in last}) == 2


def test_versions_of_one_record_in_one_page_leave_system_a_with_the_last_value(crm: Crm, system_a: Connection) -> None:
    """duplicate_records.singer as ONE page of changes, each message a later version of its record (the
    way an unsorted page, or a page read while the record kept changing, can hold it): the last wins."""
    records = singer_records("duplicate_records.singer")
    external = {record.key: crm.fake_id(record.key) for record in records}
    page = [crm.change(external[r.key], r.values, at) for r, at in zip(records, steps(T0, 1000), strict=False)]

    counts = crm.capture(page)
    drain(system_a)

    assert counts == {"captured": 5}  # five versions, five (record, modification time) pairs
    assert len(in_system_a(crm)) == 2
    for key, metric in (("1", "100"), ("2", "20")):
        fields = crm.fields({"metric": metric})
        link = linked(crm, external[key])
        assert subset(in_system_a(crm)[link.in_system_a], fields) == fields, key


def test_a_key_repeated_in_one_page_at_the_same_modification_time_ends_with_the_last_value(
    crm: Crm, system_a: Connection
) -> None:
    """duplicate_records.singer as ONE page whose changes all carry the same modification time (a source
    that repeats a key in one batch): as meltano's targets must, the service keeps the last value of each
    key (1 → 100, 2 → 20), not the first one it saw."""
    records = singer_records("duplicate_records.singer")
    external = {record.key: crm.fake_id(record.key) for record in records}
    page = [crm.change(external[record.key], record.values, T0) for record in records]

    crm.capture(page)
    drain(system_a)

    assert len(in_system_a(crm)) == 2
    for key, metric in (("1", "100"), ("2", "20")):
        fields = crm.fields({"metric": metric})
        link = linked(crm, external[key])
        assert subset(in_system_a(crm)[link.in_system_a], fields) == fields, key


def test_webhook_deliveries_of_one_record_leave_system_a_with_the_last_value(
    anon: SchemaCheckedClient, outreach: OutreachCrm, system_a: Connection
) -> None:
    """duplicate_records.singer as Outreach webhook deliveries, one per message, each a later updatedAt:
    System A ends with the last value of each prospect and one record each."""
    records = singer_records("duplicate_records.singer")
    for record, at in zip(records, steps(T0, 1000), strict=False):
        attributes = {**outreach.fields(record.values), "updatedAt": outreach_store.ol_time(at)}
        response = deliver(anon, {"type": "prospect", "id": int(record.key), "attributes": attributes})
        assert response.status_code == 200, response.content

    drain(system_a)

    assert len(in_system_a(outreach)) == 2
    for key, metric in (("1", "100"), ("2", "20")):
        assert in_system_a(outreach)[linked(outreach, key).in_system_a]["title"] == metric


# --- 2. upsert on reload -------------------------------------------------------------------------


def test_records_captured_again_on_reload_create_nothing_and_the_upsert_updates_in_place(
    crm: Crm, system_a: Connection
) -> None:
    """user_location_data.singer (test_users), then the same records read again (cursor reset, and a
    reload that re-sends them under its own event ids), then user_location_upsert_data.singer: no second
    record or link ever appears; users 1, 2 and 5 are updated in place, 8, 12 and 13 added."""
    users = singer_records("user_location_data.singer", "test_users")
    for user in users:
        crm.edit(user)
    crm.poll()
    drain(system_a)
    first = {key: linked(crm, external_id) for key, external_id in crm.ids.items()}
    loaded = in_system_a(crm)
    events = SyncEvent.objects.filter(source=crm.name).count()

    crm.save_cursor("")  # read everything again from the start
    reread = crm.poll()
    page = crm.connector().changes(crm.object_type, None)  # a reload of every record, as a backfill does
    crm.capture(page.changes, id_prefix="reload:")
    drain(system_a)

    assert reread.counts.get("captured", 0) == 0 and reread.counts.get("already_captured") == len(users)
    assert SyncEvent.objects.filter(source=crm.name).exclude(idempotency_key__contains="reload:").count() == events
    assert in_system_a(crm) == loaded  # at most idempotent updates: the same records, the same values
    assert {key: linked(crm, external_id) for key, external_id in crm.ids.items()} == first

    upserts = singer_records("user_location_upsert_data.singer", "test_users")
    for user in upserts:
        crm.edit(user)
    crm.poll()
    drain(system_a)

    names = {u.key: u.values["name"] for u in users} | {u.key: u.values["name"] for u in upserts}
    assert sorted(names) == ["1", "12", "13", "2", "3", "4", "5", "8"]
    held = in_system_a(crm)
    assert len(held) == len(names)
    name_field = crm.field_names["name"]
    for key, name in names.items():
        link = linked(crm, crm.ids[key])
        assert held[link.in_system_a][name_field] == name, key
        if key in first:
            assert link == first[key], key  # the same record, updated in place
    assert RecordLink.objects.filter(system=crm.connection).count() == len(names)
    assert RecordLink.objects.filter(system=system_a).count() == len(names)


# --- 3. key changes ------------------------------------------------------------------------------


def test_a_record_whose_key_field_changes_stays_the_same_record(crm: Crm, system_a: Connection) -> None:
    """pk_updates.singer: Alice is sent keyed on id, then the key becomes email and Bob is sent. Here one
    CRM record takes Alice's values, then Bob's email (the field Outreach matches prospects on) and name:
    it stays the same record, with the same link and the same System A record, updated."""
    alice, bob = singer_records("pk_updates.singer")
    assert (alice.key_properties, bob.key_properties) == (("id",), ("email",))
    external_id = crm.edit(alice, key="subject")
    crm.poll()
    drain(system_a)
    before = linked(crm, external_id)

    assert crm.edit(bob, key="subject") == external_id
    result = crm.poll()
    drain(system_a)

    assert result.counts.get("captured") == 1
    update = SyncEvent.objects.filter(source=crm.name).latest("occurred_at", "received_at")  # stamps have whole seconds
    assert (update.operation, update.record_id) == ("update", before.record_id)
    assert linked(crm, external_id) == before
    held = in_system_a(crm)
    assert list(held) == [before.in_system_a]  # one record, the same one
    fields = crm.fields({"name": bob.values["name"], "email": bob.values["email"]})
    assert subset(held[before.in_system_a], fields) == fields


# --- 4. missing keys refused ---------------------------------------------------------------------


def test_a_change_without_an_id_is_refused_with_a_clear_error_and_nothing_is_captured(
    crm: Crm, system_a: Connection
) -> None:
    """record_missing_key_property.singer: {"metric": 8214} has no id. Handed to capture as a change with
    no CRM id, it must be refused, saying the id is missing, and leave no event and no link."""
    (record,) = singer_records("record_missing_key_property.singer")
    assert record.key == ""
    change = crm.change("", record.values, T0)

    with pytest.raises(ConnectorError) as refused:
        crm.capture([change])

    assert refused.value.permanent
    assert re.search(r"\bid\b", refused.value.message, re.IGNORECASE), refused.value.message
    assert not SyncEvent.objects.exists()
    assert not RecordLink.objects.exists()


def test_a_polled_salesforce_row_without_an_id_is_refused_and_the_cursor_stays(
    salesforce: SalesforceCrm, system_a: Connection
) -> None:
    """record_missing_key_property.singer over SOQL: the org answers a row whose Id is empty. The poll
    must stop with an error saying the id is missing, keep its cursor where it was and capture nothing."""
    (record,) = singer_records("record_missing_key_property.singer")
    MockRecord.objects.create(
        system="salesforce",
        object="Contact",
        record_id="",
        modified_at=T0,
        fields=salesforce.fields(record.values),
        modified_by=salesforce_store.CRM_USER,
    )

    with pytest.raises(ConnectorError, match=r"(?i)\bid\b"):
        salesforce.poll()

    cursor = InboundCursor.objects.get(connection=salesforce.connection)
    assert cursor.cursor == "" and re.search(r"(?i)\bid\b", cursor.last_error), cursor.last_error
    assert not SyncEvent.objects.exists()
    assert not RecordLink.objects.exists()


@pytest.mark.parametrize("record_id", ["absent", None, ""], ids=["no-id", "null-id", "empty-id"])
def test_a_webhook_delivery_without_an_id_is_refused_naming_it(
    anon: SchemaCheckedClient, outreach: OutreachCrm, system_a: Connection, record_id: str | None
) -> None:
    """record_missing_key_property.singer as an Outreach webhook delivery whose data has no usable id:
    400 naming the body and the id, nothing captured."""
    (record,) = singer_records("record_missing_key_property.singer")
    data: dict[str, Any] = {
        "type": "prospect",
        "attributes": {**outreach.fields(record.values), "updatedAt": outreach_store.ol_time(T0)},
    }
    if record_id != "absent":
        data["id"] = record_id

    response = deliver(anon, data)

    assert response.status_code == 400, response.content
    (field,) = response.json()["error"]["fields"]
    assert field["field"] == "body" and re.search(r"\bid\b", field["message"]), field
    assert not SyncEvent.objects.exists()
    assert not RecordLink.objects.exists()


# --- 5. incremental reads (Airbyte) --------------------------------------------------------------


def test_resuming_from_a_saved_cursor_never_captures_a_record_version_twice(crm: Crm, settings: Any) -> None:
    """user_location_data then user_location_upsert_data (test_users), read two records a page, one page
    per poll, each poll resuming from the cursor the last one saved, and more polls than needed: every
    (record, modification time) is captured exactly once, and every version made is captured."""
    crm.small_pages(settings)
    made: list[tuple[str, datetime]] = []
    for user, at in zip(singer_records("user_location_data.singer", "test_users"), steps(T0, 400), strict=False):
        made.append((crm.edit(user, at=at), at))
    for _ in range(6):
        crm.poll(max_pages=1)
    upserts = singer_records("user_location_upsert_data.singer", "test_users")
    for user, at in zip(upserts, steps(T0 + timedelta(seconds=5), 400), strict=False):
        made.append((crm.edit(user, at=at), at))
    totals = Counter[str]()
    for _ in range(8):
        totals.update(crm.poll(max_pages=1).counts)

    assert totals["captured"] == len(upserts)
    assert captured_versions(crm) == sorted(made)  # each version once: no second event, none missed


def test_reading_the_overlap_window_again_makes_no_duplicate_events(crm: Crm) -> None:
    """user_location_data (test_users) stamped within one second: polling again re-reads the overlap the
    connector keeps, and a saved cursor moved back a minute re-reads them all: no event is made twice."""
    users = singer_records("user_location_data.singer", "test_users")
    for user, at in zip(users, steps(T0 + timedelta(milliseconds=100), 100), strict=False):
        crm.edit(user, at=at)
    first = crm.poll()
    again = crm.poll()
    crm.save_cursor(crm.cursor_since(T0 - timedelta(minutes=1)))
    rewound = crm.poll()

    assert first.counts == {"captured": len(users)}
    assert again.counts.get("captured", 0) == 0
    assert rewound.counts == {"already_captured": len(users)}  # read again, recognised, not captured
    assert SyncEvent.objects.filter(source=crm.name).count() == len(users)


@pytest.mark.parametrize(
    ("newest_ms", "late_ms"),
    [(800, 300), (500, 0), (1000, 600), (1200, 700)],
    ids=["same-second", "late-stamp-on-a-whole-second", "newest-stamp-on-a-whole-second", "across-a-second"],
)
def test_a_salesforce_change_committed_late_inside_the_overlap_window_is_captured(
    salesforce: SalesforceCrm, newest_ms: int, late_ms: int
) -> None:
    """Salesforce sets SystemModstamp before the change is committed, so a poll can read a newer change
    first. A change committed after the poll, stamped less than OVERLAP (the second the connector says it
    reads again) before the newest stamp that poll read, must be captured by the next poll, and the change
    already captured not captured twice. The cases put the stamps on and across whole-second boundaries."""
    users = singer_records("user_location_data.singer", "test_users")
    newest = T0 + timedelta(milliseconds=newest_ms)
    late = T0 + timedelta(milliseconds=late_ms)
    assert newest - OVERLAP < late < newest
    salesforce.edit(users[0], at=newest)
    assert salesforce.poll().counts == {"captured": 1}

    late_id = salesforce.edit(users[1], at=late)  # committed now, stamped earlier than the cursor
    result = salesforce.poll()

    assert result.counts.get("captured") == 1, result
    assert captured_versions(salesforce) == sorted([(salesforce.ids[users[0].key], newest), (late_id, late)])


def test_an_outreach_change_committed_late_at_the_cursors_stamp_is_captured(outreach: OutreachCrm) -> None:
    """Outreach's cursor filter is inclusive (updatedAt ≥ since) and skips only the ids it delivered at
    that stamp: a change that appears later with the very same updatedAt is captured, the others not again."""
    users = singer_records("user_location_data.singer", "test_users")
    stamp = T0 + timedelta(milliseconds=500)
    outreach.edit(users[0], at=stamp)
    assert outreach.poll().counts == {"captured": 1}

    late_id = outreach.edit(users[1], at=stamp)
    result = outreach.poll()

    assert result.counts == {"captured": 1}
    assert captured_versions(outreach) == sorted([(outreach.ids[users[0].key], stamp), (late_id, stamp)])


def test_a_cursor_in_the_far_future_returns_nothing(crm: Crm) -> None:
    """user_location_data (test_users) in the CRM, and a saved cursor in the year 2999: changes() returns
    no change and a poll captures nothing."""
    for user in singer_records("user_location_data.singer", "test_users"):
        crm.edit(user)
    far = crm.cursor_since(datetime(2999, 1, 1, tzinfo=UTC))
    crm.save_cursor(far)

    page = crm.connector().changes(crm.object_type, far)
    result = crm.poll()

    assert page.changes == [] and not page.has_more
    assert result.counts.get("captured", 0) == 0 and result.counts.get("already_captured", 0) == 0
    assert not SyncEvent.objects.exists()

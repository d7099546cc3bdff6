"""Two-way sync on the mocks over HTTP: conflicts decided by policy or held for review in the admin,
deletes that never come back, late changes superseded, and read events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from crms.mocks.models import MockCall, MockRecord
from crms.models import Connection
from crms.salesforce import mock_store
from crms.services import connection_save
from rules.demo import DEMO_RULES
from rules.selectors import rule_set_forget
from rules.services import rule_set_replace
from sync.delivery.engine import throttled_connector
from sync.inbound import changes as inbound
from sync.inbound.changes import PollResult, poll
from sync.models import ConflictState, JobState, RecordLink, RecordRead, SyncConflict, SyncEvent, SyncJob
from tests.conftest import drain, mock_salesforce, salesforce_minute_passes

pytestmark = pytest.mark.django_db(transaction=True)


def salesforce_with(live_server: Any, **config: Any) -> Connection:
    connection = mock_salesforce(live_server.url)
    if config:
        connection = connection_save(name="salesforce", kind="salesforce", config={**connection.config, **config})
    return connection


def poll_contacts(connection: Connection) -> PollResult:
    return poll(connection=connection, object_type="Contact", connector=throttled_connector(connection), owner="t")


def crm_edit(**fields: Any) -> str:
    (row,) = mock_store.staff_push("Contact", [fields], [])
    return str(row["Id"])


def post(api: Any, operation: str, occurred_at: datetime | None = None, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"operation": operation, "record_id": "c-1", "object_type": "Contact", "data": data}
    if operation in ("delete", "read"):
        body.pop("data")
    if occurred_at is not None:
        body["occurred_at"] = occurred_at.isoformat()
    response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    answer: dict[str, Any] = response.json()
    return answer


def synced_both_ways(api: Any, salesforce: Connection, system_a: Connection) -> str:
    """c-1 created in System A, written to Salesforce, read back (an echo): the base both sides share."""
    post(
        api, "create", timezone.now() - timedelta(hours=2), LastName="Lovelace", Email="v0@example.com", Phone="+1 000"
    )
    drain(salesforce)
    drain(system_a)
    assert poll_contacts(salesforce).counts == {"echo": 1}
    return RecordLink.objects.get(system=salesforce).external_id


def sf_fields(sf_id: str) -> dict[str, Any]:
    record = mock_store.live("Contact").filter(record_id=sf_id).first()
    return dict(record.fields) if record else {}


def in_system_a(record_id: str = "c-1") -> dict[str, Any]:
    return dict(MockRecord.objects.get(system="system_a", record_id=record_id, deleted_at__isnull=True).fields)


def sf_writes() -> int:
    return MockCall.objects.filter(
        system="salesforce", method__in=["PATCH", "POST"], status__lt=300, path__contains="composite"
    ).count()


# --- conflicts --------------------------------------------------------------------------------------


def test_last_writer_wins_keeps_the_newer_crm_change_on_both_sides(api, live_server, system_a):
    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    post(api, "update", timezone.now() - timedelta(minutes=5), Email="a@example.com")  # older
    crm_edit(Id=sf_id, Email="crm@example.com")  # made now: newer

    poll_contacts(salesforce)
    writes = sf_writes()
    drain(salesforce)
    drain(system_a)

    conflict = SyncConflict.objects.get()
    assert (conflict.state, conflict.policy, conflict.fields) == (ConflictState.RESOLVED, "last_writer_wins", ["Email"])
    assert conflict.base["Email"] == "v0@example.com" and conflict.system_a_values["Email"] == "a@example.com"
    assert conflict.crm_values["Email"] == "crm@example.com"
    assert (conflict.resolution or {})["Email"] == "crm@example.com"
    assert conflict.resolved_by == "policy:last_writer_wins" and conflict.note == "the CRM's version kept"
    assert sf_writes() == writes  # Salesforce already held the winner: nothing sent to it
    assert sf_fields(sf_id)["Email"] == "crm@example.com"
    assert in_system_a()["Email"] == "crm@example.com"
    to_sf = SyncJob.objects.get(target=salesforce)
    assert (to_sf.state, to_sf.last_error_code) == (JobState.SKIPPED, "CONFLICT_RESOLVED")
    status = api.get("/v1/sync/status/c-1").json()
    assert status["conflicts"][0]["id"] == conflict.pk and status["conflicts"][0]["state"] == "resolved"


def test_last_writer_wins_sends_the_newer_system_a_change_and_keeps_it_there(api, live_server, system_a):
    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    crm_edit(Id=sf_id, Email="crm@example.com")
    poll_contacts(salesforce)  # captured; on its way to System A
    post(api, "update", timezone.now() + timedelta(seconds=2), Email="a@example.com")  # newer

    drain(salesforce)
    drain(system_a)

    conflict = SyncConflict.objects.get()
    assert conflict.note == "System A's version kept" and conflict.resolution == {"Email": "a@example.com"}
    assert sf_fields(sf_id)["Email"] == "a@example.com"
    assert not MockRecord.objects.filter(system="system_a").exists()  # the losing change never reached System A
    to_a = SyncJob.objects.get(target=system_a)
    assert (to_a.state, to_a.last_error_code) == (JobState.SKIPPED, "CONFLICT_RESOLVED")
    assert poll_contacts(salesforce).counts == {"echo": 1}  # our winning write read back: no ping-pong


def test_a_policy_decision_is_stored_by_the_ingest_that_found_the_conflict_never_by_a_second_one(
    api, live_server, system_a, monkeypatch
):
    """Issue 16: judging a conflict called event_ingest again from inside the outer ingest's transaction."""
    from sync.ingest import services

    salesforce = salesforce_with(live_server)
    synced_both_ways(api, salesforce, system_a)
    crm_edit(Id=RecordLink.objects.get(system=salesforce).external_id, Email="crm@example.com")
    poll_contacts(salesforce)  # the CRM's change, on its way to System A
    depth, deepest = [0], [0]
    ingest = services.event_ingest

    def counted(**kwargs: Any) -> Any:
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        try:
            return ingest(**kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(services, "event_ingest", counted)
    post(api, "update", timezone.now() + timedelta(seconds=2), Email="a@example.com")  # newer: System A wins

    conflict = SyncConflict.objects.get()
    assert conflict.state == ConflictState.RESOLVED and conflict.note == "System A's version kept"
    assert deepest == [1]  # one ingest, not one inside another
    decision = SyncEvent.objects.get(idempotency_key=f"event:conflict:{conflict.pk}:crm")
    assert decision.routing["mode"] == "conflict" and decision.payload is not None


def test_a_named_system_wins_whatever_the_times(api, live_server, system_a):
    salesforce = salesforce_with(live_server, conflict="system_a_wins")
    sf_id = synced_both_ways(api, salesforce, system_a)
    post(api, "update", timezone.now() - timedelta(hours=1), Phone="+1 111")  # older, but System A wins
    crm_edit(Id=sf_id, Phone="+1 222")

    poll_contacts(salesforce)
    drain(salesforce)
    drain(system_a)

    assert SyncConflict.objects.get().resolution == {"Phone": "+1 111"}
    assert sf_fields(sf_id)["Phone"] == "+1 111"


def test_field_merge_keeps_each_sides_own_change_and_falls_back_for_a_shared_field(api, live_server, system_a):
    salesforce = salesforce_with(live_server, conflict="field_merge", merge_fallback="crm_wins")
    sf_id = synced_both_ways(api, salesforce, system_a)
    post(api, "update", Email="a@example.com", Phone="+1 111", LastName="Lovelace")
    crm_edit(Id=sf_id, Phone="+1 222", FirstName="Ada")  # Phone on both sides; FirstName only here

    poll_contacts(salesforce)
    drain(salesforce)
    drain(system_a)

    conflict = SyncConflict.objects.get()
    assert conflict.fields == ["Phone"]
    assert conflict.resolution == {"Email": "a@example.com", "Phone": "+1 222", "LastName": "Lovelace"}
    assert (sf_fields(sf_id)["Email"], sf_fields(sf_id)["Phone"]) == ("a@example.com", "+1 222")
    merged = in_system_a()
    assert (merged["Email"], merged["Phone"], merged["FirstName"]) == ("a@example.com", "+1 222", "Ada")


def test_a_held_conflict_waits_then_a_person_picks_per_field_in_the_admin(api, admin_client, live_server, system_a):
    salesforce = salesforce_with(live_server, conflict="hold")
    sf_id = synced_both_ways(api, salesforce, system_a)
    post(api, "update", Email="a@example.com", Phone="+1 111", LastName="Lovelace")
    crm_edit(Id=sf_id, Email="crm@example.com", Phone="+1 222")
    poll_contacts(salesforce)
    writes = sf_writes()

    drain(salesforce)
    drain(system_a)

    conflict = SyncConflict.objects.get()
    assert conflict.state == ConflictState.OPEN and conflict.fields == ["Email", "Phone"]
    assert set(SyncJob.objects.values_list("state", flat=True)) == {JobState.HELD}
    assert sf_writes() == writes  # nothing moves while it is held
    page = admin_client.get(f"/admin/sync/syncconflict/{conflict.pk}/resolve/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "a@example.com" in body and "crm@example.com" in body and "v0@example.com" in body

    answer = admin_client.post(
        f"/admin/sync/syncconflict/{conflict.pk}/resolve/",
        {"Email": "system_a", "Phone": "crm", "LastName": "crm", "per_field": "1"},
    )
    drain(salesforce)
    drain(system_a)

    assert answer.status_code == 302
    conflict.refresh_from_db()
    assert conflict.state == ConflictState.RESOLVED and conflict.resolved_by == "admin"
    assert conflict.resolution == {"Email": "a@example.com", "Phone": "+1 222", "LastName": "Lovelace"}
    assert (sf_fields(sf_id)["Email"], sf_fields(sf_id)["Phone"]) == ("a@example.com", "+1 222")
    assert (in_system_a()["Email"], in_system_a()["Phone"]) == ("a@example.com", "+1 222")
    assert poll_contacts(salesforce).counts == {"echo": 1}
    again = admin_client.post(f"/admin/sync/syncconflict/{conflict.pk}/resolve/", {"side": "crm"})
    assert again.status_code == 200 and SyncConflict.objects.get().resolved_by == "admin"  # decided once


def test_one_side_changing_is_not_a_conflict(api, live_server, system_a):
    salesforce = salesforce_with(live_server, conflict="hold")
    sf_id = synced_both_ways(api, salesforce, system_a)
    crm_edit(Id=sf_id, FirstName="Ada")  # a field System A does not write
    poll_contacts(salesforce)
    post(api, "update", Email="a@example.com", LastName="Lovelace", Phone="+1 000")

    drain(salesforce)
    drain(system_a)

    assert not SyncConflict.objects.exists()
    assert sf_fields(sf_id)["Email"] == "a@example.com" and in_system_a()["FirstName"] == "Ada"


# --- ordering -----------------------------------------------------------------------------------------


def test_an_older_change_arriving_late_is_recorded_superseded_and_never_applied(api, live_server, system_a):
    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    now = timezone.now()
    post(api, "update", now, LastName="Lovelace", Email="new@example.com")
    drain(salesforce)
    late = post(api, "update", now - timedelta(minutes=10), LastName="Lovelace", Email="old@example.com")
    drain(salesforce)

    assert [j["state"] for j in late["jobs"]] == ["superseded"]
    assert sf_fields(sf_id)["Email"] == "new@example.com"
    events = api.get("/v1/sync/status/c-1").json()["events"]
    assert [e["superseded"] for e in events if e["event_id"] == late["event_id"]] == [True]


# --- deletes ------------------------------------------------------------------------------------------


def test_a_delete_in_salesforce_reaches_system_a_and_a_late_update_never_revives_it(
    api, live_server, system_a, monkeypatch
):
    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    drain(system_a)
    post(api, "update", LastName="Lovelace", Email="v1@example.com")  # System A's own copy, via a CRM-side path
    SyncJob.objects.filter(target=salesforce).delete()
    mock_store.staff_push("Contact", [], [sf_id])
    salesforce_minute_passes(monkeypatch)  # getDeleted covers whole minutes: the deletion's must be over

    poll_contacts(salesforce)
    drain(system_a)
    late = post(api, "update", timezone.now() - timedelta(hours=1), LastName="Lovelace", Email="late@example.com")

    deleted = SyncEvent.objects.get(source="salesforce", operation="delete")
    assert deleted.record_id == "c-1"
    assert SyncJob.objects.get(target=system_a).state == JobState.SYNCED
    assert late["routing"]["mode"] == "skipped" and "deleted" in late["routing"]["reason"]
    assert late["jobs"] == []


def test_a_crm_change_to_a_record_deleted_in_system_a_is_not_sent_back(api, live_server, system_a):
    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    post(api, "delete")
    crm_edit(Id=sf_id, Phone="+1 999")  # someone edits it in Salesforce before our delete lands

    poll_contacts(salesforce)

    change = SyncEvent.objects.filter(source="salesforce").latest("received_at")
    assert change.routing["mode"] == "skipped" and "deleted" in change.routing["reason"]
    assert not SyncJob.objects.filter(source="salesforce").exists()
    drain(salesforce)
    assert sf_fields(sf_id) == {}  # the delete went out


def test_deletes_from_a_crm_follow_the_rules_policy(api, live_server, system_a, monkeypatch):
    salesforce = salesforce_with(live_server)
    sf_id = crm_edit(LastName="Hopper", Email="grace@example.com")
    rules = [dict(rule) for rule in DEMO_RULES if rule["name"] == "contacts-from-salesforce"]
    rules[0]["targets"] = [{**rules[0]["targets"][0], "on_delete": "soft_delete", "soft_delete_field": "deleted"}]
    rule_set_replace(specs=rules, actor="test")
    rule_set_forget()
    poll_contacts(salesforce)
    drain(system_a)
    (record,) = MockRecord.objects.filter(system="system_a")

    mock_store.staff_push("Contact", [], [sf_id])
    salesforce_minute_passes(monkeypatch)  # getDeleted covers whole minutes: the deletion's must be over
    poll_contacts(salesforce)
    drain(system_a)

    record.refresh_from_db()
    assert record.deleted_at is None and record.fields["deleted"] is True  # marked, not removed


def test_a_delete_of_a_record_that_never_synced_writes_nothing(api, live_server, system_a):
    salesforce = salesforce_with(live_server)
    post(api, "create", LastName="Lovelace", Email="x@example.com")
    post(api, "delete")
    before = MockCall.objects.filter(system="salesforce").count()

    outcome = drain(salesforce)

    assert outcome == {"claimed": 1, "skipped": 1}
    assert MockCall.objects.filter(system="salesforce").count() == before


# --- read events --------------------------------------------------------------------------------------


def test_a_read_refreshes_system_a_from_salesforce_and_never_writes_to_it(api, live_server, system_a):
    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    crm_edit(Id=sf_id, Phone="+1 555")  # changed where polling has not looked yet
    writes = sf_writes()

    answer = post(api, "read")
    outcomes = inbound.read_run(event_id=answer["event_id"])
    drain(system_a)

    assert answer["routing"] == {"mode": "read", "targets": [], "read_from": ["salesforce"]}
    assert outcomes == {"salesforce": "captured"}
    assert in_system_a()["Phone"] == "+1 555"
    assert sf_writes() == writes
    (read,) = api.get("/v1/sync/status/c-1").json()["reads"]
    assert read["system"] == "salesforce" and read["outcome"] == "captured" and read["read_at"]
    assert inbound.read_run(event_id=answer["event_id"]) == {}  # run twice: nothing read twice


def test_a_read_of_a_record_with_no_link_says_so(api, live_server, system_a):
    salesforce_with(live_server)
    answer = post(api, "read")

    assert answer["routing"]["read_from"] == [] and "no link" in answer["routing"]["reason"]
    assert not RecordRead.objects.exists()


def test_a_backfill_after_a_conflict_never_brings_back_the_losing_version(api, live_server, system_a):
    """The event carrying a decision is not System A's own post, and System A's older post is superseded."""
    from io import StringIO

    from django.core.management import call_command

    salesforce = salesforce_with(live_server)
    sf_id = synced_both_ways(api, salesforce, system_a)
    post(api, "update", timezone.now() - timedelta(minutes=5), Email="a@example.com")
    crm_edit(Id=sf_id, Email="crm@example.com")
    poll_contacts(salesforce)
    drain(salesforce)
    drain(system_a)
    writes = sf_writes()

    dry = StringIO()
    call_command(
        "sync_backfill",
        "--from",
        "system_a",
        "--to",
        "salesforce",
        "--object",
        "Contact",
        "--dry-run",
        stdout=dry,
        stderr=StringIO(),
    )
    call_command(
        "sync_backfill",
        "--from",
        "system_a",
        "--to",
        "salesforce",
        "--object",
        "Contact",
        stdout=StringIO(),
        stderr=StringIO(),
    )
    drain(salesforce)

    assert "superseded    1" in dry.getvalue()
    assert sf_writes() == writes and sf_fields(sf_id)["Email"] == "crm@example.com"

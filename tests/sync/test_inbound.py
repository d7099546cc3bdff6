"""Inbound capture by polling: changes made in the mock Salesforce become events with Salesforce as
source, linked to System A's ids, checkpointed per page, captured once, and our own writes read
back are echoes that go nowhere."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from crms.base import ConnectorError, Inbound
from crms.mocks.models import MockRecord
from crms.models import Connection
from crms.salesforce import mock as salesforce_mock
from crms.salesforce import mock_store
from sync.delivery.engine import throttled_connector
from sync.inbound import changes as inbound
from sync.inbound.changes import PollResult, poll
from sync.models import InboundCursor, JobState, RecordLink, SyncEvent, SyncJob
from tests.conftest import drain, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def salesforce(live_server) -> Connection:
    return mock_salesforce(live_server.url)


def poll_contacts(connection: Connection, **kwargs: Any) -> PollResult:
    return poll(
        connection=connection, object_type="Contact", connector=throttled_connector(connection), owner="test", **kwargs
    )


def crm_edit(**fields: Any) -> str:
    """A person edits Salesforce: the service learns of it only by polling."""
    (row,) = mock_store.staff_push("Contact", [fields], [])
    return str(row["Id"])


def post(api: Any, record_id: str, **data: Any) -> None:
    body = {
        "operation": "create",
        "record_id": record_id,
        "object_type": "Contact",
        "data": {"LastName": "Lovelace", **data},
    }
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202


def test_a_contact_created_in_salesforce_reaches_system_a_linked_both_ways(api, salesforce, system_a):
    sf_id = crm_edit(LastName="Hopper", Email="grace@example.com")

    result = poll_contacts(salesforce)
    drained = drain(system_a)

    record_id = f"salesforce-{sf_id}"
    event = SyncEvent.objects.get(source="salesforce")
    assert result.counts == {"captured": 1}
    assert (event.record_id, event.operation, event.payload) == (
        record_id,
        "create",
        {"LastName": "Hopper", "Email": "grace@example.com"},
    )
    assert drained["synced"] == 1
    (in_a,) = MockRecord.objects.filter(system="system_a", object="Contact")
    assert in_a.fields == {"LastName": "Hopper", "Email": "grace@example.com"}
    links = dict(RecordLink.objects.filter(record_id=record_id).values_list("system__name", "external_id"))
    assert links == {"salesforce": sf_id, "system_a": in_a.record_id}
    status = api.get(f"/v1/sync/status/{record_id}").json()
    assert [(t["target"], t["source"], t["state"]) for t in status["targets"]] == [("system_a", "salesforce", "synced")]


def test_our_own_write_read_back_is_an_echo_routed_nowhere(api, salesforce, system_a):
    post(
        api,
        "c-1",
        Email="ada@example.com",
    )
    SyncJob.objects.filter(target=system_a).delete()  # only the Salesforce side matters here
    drain(salesforce)

    result = poll_contacts(salesforce)

    assert result.counts == {"echo": 1}
    echo = SyncEvent.objects.get(source="salesforce")
    assert echo.record_id == "c-1"  # found through the link the push wrote
    assert echo.routing["mode"] == "skipped" and echo.routing["reason"].startswith("echo")
    assert not SyncJob.objects.filter(source="salesforce").exists()
    status = api.get("/v1/sync/status/c-1").json()
    assert any(e["source"] == "salesforce" and e["routing"]["reason"].startswith("echo") for e in status["events"])


def test_an_echo_is_found_by_the_values_too_when_the_last_modifier_is_unknown(salesforce):
    link = RecordLink(
        object_type="Contact",
        record_id="c-1",
        system=salesforce,
        external_object="Contact",
        external_id="003X",
        last_values={"LastName": "Lovelace", "Email": "ada@example.com"},
    )
    same = Inbound("c-1", {"LastName": "Lovelace", "Email": "ada@example.com", "Title": None})
    edited = Inbound("c-1", {"LastName": "Lovelace", "Email": "ada@example.com", "Title": "Countess"})

    assert inbound.echo_reason(link, same) is not None
    assert inbound.echo_reason(link, edited) is None  # a field we never wrote now has a value
    assert inbound.echo_reason(None, same) is None


def test_a_crm_edit_after_our_write_is_captured_for_the_same_record(api, salesforce, system_a):
    post(api, "c-1", Email="ada@example.com")
    drain(salesforce)
    drain(system_a)
    poll_contacts(salesforce)  # the echo of our write
    sf_id = RecordLink.objects.get(system=salesforce).external_id

    crm_edit(Id=sf_id, Phone="+1 555 0100")
    result = poll_contacts(salesforce)

    assert result.counts.get("captured") == 1
    update = SyncEvent.objects.filter(source="salesforce", operation="update").latest("received_at")
    assert update.record_id == "c-1" and (update.payload or {}).get("Phone") == "+1 555 0100"
    assert SyncJob.objects.get(source="salesforce", target=system_a).state == JobState.PENDING


def test_polling_again_never_captures_a_change_twice(salesforce):
    for n in range(3):
        crm_edit(LastName=f"L{n}")

    first = poll_contacts(salesforce)
    again = poll_contacts(salesforce)  # Salesforce's overlap window reads the last second again

    assert first.counts == {"captured": 3}
    assert again.counts.get("captured", 0) == 0
    assert SyncEvent.objects.filter(source="salesforce").count() == 3


def test_an_interrupted_poll_resumes_from_the_page_it_stopped_on(salesforce, settings, monkeypatch):
    settings.MOCK_SALESFORCE_QUERY_PAGE = 2
    for n in range(5):
        crm_edit(LastName=f"L{n}")
    real = inbound.capture
    calls: list[int] = []

    def crash_on_second_page(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        return real(**kwargs)

    monkeypatch.setattr(inbound, "capture", crash_on_second_page)
    with pytest.raises(RuntimeError):
        poll_contacts(salesforce)
    cursor = InboundCursor.objects.get()
    assert (cursor.pages, cursor.captured, cursor.lease_owner) == (1, 2, "")
    assert "worker lost" in cursor.last_error

    monkeypatch.setattr(inbound, "capture", real)
    resumed = poll_contacts(salesforce)

    assert resumed.counts == {"captured": 3}  # the two of page one are not read as new again
    assert SyncEvent.objects.filter(source="salesforce").count() == 5


def test_a_second_poller_leaves_a_held_cursor_alone(salesforce):
    crm_edit(LastName="L")
    InboundCursor.objects.create(
        connection=salesforce,
        object_type="Contact",
        lease_owner="other",
        lease_until=timezone.now() + inbound.POLL_LEASE,
    )

    result = poll_contacts(salesforce)

    assert result.skipped and not SyncEvent.objects.exists()


def test_a_cursor_in_the_far_future_reads_nothing(salesforce):
    crm_edit(LastName="L")
    InboundCursor.objects.create(
        connection=salesforce, object_type="Contact", cursor=json.dumps({"since": "2999-01-01T00:00:00Z"})
    )

    result = poll_contacts(salesforce)

    assert result.counts.get("captured", 0) == 0 and not SyncEvent.objects.exists()


def test_the_sync_poll_command_reports_each_object(salesforce):
    crm_edit(LastName="L")
    out = StringIO()

    call_command("sync_poll", "--connection", "salesforce", "--object", "Contact", stdout=out, stderr=StringIO())

    assert "salesforce Contact: 1 page(s), captured 1" in out.getvalue()


# --- polling on a schedule -------------------------------------------------------------------------


def test_due_polls_are_claimed_once_then_wait_for_the_interval(salesforce, system_a):
    from sync.ops.config_services import config_override_set

    config_override_set(values={"poll_interval": 60}, connection="salesforce", actor="test")
    now = timezone.now()

    first = inbound.polls_claim(now=now)
    again = inbound.polls_claim(now=now)  # another dispatcher, or the next pass

    assert sorted(obj for _, obj, _ in first) == ["Account", "Contact", "Lead"]  # System A is not readable
    assert again == []
    (_, object_type, owner) = next(c for c in first if c[1] == "Contact")
    result = poll(
        connection=salesforce, object_type=object_type, connector=throttled_connector(salesforce), owner=owner
    )
    assert not result.skipped  # the task runs under the dispatcher's claim
    assert [c[1] for c in inbound.polls_claim(now=timezone.now() + timedelta(seconds=59))] == []
    assert "Contact" in [c[1] for c in inbound.polls_claim(now=timezone.now() + timedelta(seconds=61 + 300))]


def test_a_poll_interval_of_zero_turns_polling_off(salesforce):
    from sync.ops.config_services import config_override_set

    config_override_set(values={"poll_interval": 0}, connection="salesforce", actor="test")

    assert inbound.polls_claim(now=timezone.now()) == []


def test_a_poll_that_cannot_be_queued_gives_its_claim_back(salesforce, monkeypatch):
    from sync import tasks

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "async_task", broker_down)

    assert tasks.polls_dispatch() == 0
    assert set(InboundCursor.objects.values_list("lease_owner", flat=True)) == {""}


def contact_claims(at: datetime) -> list[tuple[int, str, str]]:
    return [claim for claim in inbound.polls_claim(now=at) if claim[1] == "Contact"]


def poll_at(connection: Connection, owner: str, at: datetime) -> PollResult:
    """The poll a dispatcher's claim queued, run with the clock at `at`."""
    connector = throttled_connector(connection)
    return poll(connection=connection, object_type="Contact", connector=connector, owner=owner, clock=lambda: at)


def test_a_failed_poll_backs_off_exponentially_instead_of_running_at_every_pass(salesforce, staff_api, admin_client):
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 100}, format="json")
    at = timezone.now()
    waits = []

    for _ in range(8):
        (claim,) = contact_claims(at)
        with pytest.raises(ConnectorError):
            poll_at(salesforce, claim[2], at)
        row = InboundCursor.objects.get(connection=salesforce, object_type="Contact")
        assert row.retry_at is not None and contact_claims(at + timedelta(seconds=1)) == []  # the next pass waits
        waits.append((row.retry_at - at).total_seconds())
        at = row.retry_at

    ceilings = [5, 10, 20, 40, 80, 160, 300, 300]  # doubling from a few seconds, at most five minutes
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True)), waits
    assert row.failures == 8 and "SERVER_UNAVAILABLE" in row.last_error
    assert "SERVER_UNAVAILABLE" in admin_client.get("/admin/sync/inboundcursor/").content.decode()


def test_a_poll_that_succeeds_after_failures_resets_the_backoff(salesforce, staff_api):
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 1}, format="json")
    at = timezone.now()
    (claim,) = contact_claims(at)
    with pytest.raises(ConnectorError):
        poll_at(salesforce, claim[2], at)
    retry_at = InboundCursor.objects.get(object_type="Contact").retry_at
    assert retry_at is not None

    (claim,) = contact_claims(retry_at)
    poll_at(salesforce, claim[2], retry_at)

    row = InboundCursor.objects.get(object_type="Contact")
    assert (row.failures, row.retry_at, row.last_error) == (0, None, "")
    assert contact_claims(retry_at + timedelta(seconds=59)) == []  # back to the poll interval
    assert len(contact_claims(retry_at + timedelta(seconds=61))) == 1


def test_a_poll_skipped_while_the_breaker_is_open_waits_its_backoff_too(salesforce):
    from sync.models import CircuitBreaker

    CircuitBreaker.objects.create(connection=salesforce, state="open", opened_at=timezone.now())
    at = timezone.now()
    (claim,) = contact_claims(at)

    result = poll_at(salesforce, claim[2], at)

    assert result.skipped and contact_claims(at + timedelta(seconds=1)) == []
    assert len(contact_claims(at + timedelta(seconds=6))) == 1


def test_the_dispatcher_polls_a_change_made_in_the_crm_and_sends_it_on(salesforce, system_a, settings):
    from sync import tasks

    crm_edit(LastName="Hopper")
    claimed = inbound.polls_claim(now=timezone.now())
    for connection_id, object_type, owner in claimed:
        tasks.poll_objects(connection_id, object_type, owner)  # what the queued task runs
    drain(system_a)

    assert MockRecord.objects.filter(system="system_a", object="Contact").count() == 1


def test_system_a_naming_the_object_otherwise_still_updates_the_crm_record_it_came_from(api, salesforce, system_a):
    from rules.selectors import rule_set_forget
    from rules.services import rule_set_replace

    sf_id = crm_edit(LastName="Hopper", Email="grace@example.com")
    poll_contacts(salesforce)
    rule = {
        "name": "contacts",
        "order": 10,
        "match_source": "system_a",
        "match_object_type": "contact",
        "action": "sync",
        "targets": [{"target": "salesforce", "object": "Contact", "mapping": {"LastName": "data.last_name"}}],
    }
    rule_set_replace(specs=[rule], actor="test")
    rule_set_forget()  # this process looks at the rule-set version at most once a second
    body = {
        "operation": "update",
        "record_id": f"salesforce-{sf_id}",
        "object_type": "contact",
        "data": {"last_name": "Hopper-Murray"},
    }
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202

    drained = drain(salesforce)

    assert drained.get("synced") == 1, SyncJob.objects.values_list("last_error_code", "last_error_message")
    (record,) = MockRecord.objects.filter(system="salesforce", object="Contact")  # updated, not created again
    assert record.record_id == sf_id and record.fields["LastName"] == "Hopper-Murray"
    assert RecordLink.objects.filter(system=salesforce).count() == 1


def test_our_write_read_before_its_link_exists_is_an_echo_and_links_nothing(salesforce):
    """A poll can read a record between the push that wrote it and the link that push writes."""
    crm_edit(LastName="L", RecordSync_Id__c="c-9")
    MockRecord.objects.filter(system="salesforce").update(modified_by=mock_store.INTEGRATION_USER)

    result = poll_contacts(salesforce)

    assert result.counts == {"echo": 1}
    assert not RecordLink.objects.exists()  # the push in flight writes it


def test_no_poll_calls_while_the_breaker_is_open(salesforce):
    from crms.mocks.models import MockCall
    from sync.models import CircuitBreaker

    CircuitBreaker.objects.create(connection=salesforce, state="open", opened_at=timezone.now())

    result = poll_contacts(salesforce)

    assert result.skipped and not MockCall.objects.exists()


def test_a_hundred_alternating_edits_on_both_sides_make_no_ping_pong(api, salesforce, system_a):
    """Each edit crosses once: System A's to Salesforce, Salesforce's to System A; nothing bounces."""
    from crms.mocks.models import MockCall

    post(api, "c-1", Email="v0@example.com")
    drain(salesforce)
    drain(system_a)
    poll_contacts(salesforce)  # our first write read back: an echo
    sf_id = RecordLink.objects.get(system=salesforce).external_id

    def writes(system: str) -> int:
        path = "records" if system == "system_a" else "composite"
        calls = MockCall.objects.filter(
            system=system, method__in=["PATCH", "POST"], status__lt=300, path__contains=path
        )
        return calls.count()

    before = {"salesforce": writes("salesforce"), "system_a": writes("system_a")}
    for n in range(1, 101):
        if n % 2:  # an edit in System A
            body = {
                "operation": "update",
                "record_id": "c-1",
                "object_type": "Contact",
                "data": {"LastName": "Lovelace", "Email": f"v{n}@example.com"},
            }
            assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
        else:  # an edit in Salesforce
            crm_edit(Id=sf_id, Phone=f"+1 555 {n:04d}")
        drain(salesforce)
        drain(system_a)
        poll_contacts(salesforce)
    for _ in range(2):  # quiet rounds: nothing left to cross
        drain(salesforce)
        drain(system_a)
        poll_contacts(salesforce)

    assert writes("salesforce") - before["salesforce"] == 50  # one per System A edit
    assert writes("system_a") - before["system_a"] == 50  # one per Salesforce edit
    echoes = SyncEvent.objects.filter(source="salesforce", routing__mode="skipped").count()
    assert echoes >= 50  # each of our Salesforce writes, read back, was recognised


def test_a_failed_poll_keeps_no_credential_its_error_body_echoed(salesforce, staff_api, settings):
    """Issue 15: an error body that echoes the request's credentials lands in the cursor's last_error (read by
    any token through /v1/sync/stats and the admin) without them, as push errors already were."""
    secret = salesforce_mock.app_client_secret()
    fault = {"status": 503, "calls": 1, "code": "SERVER_UNAVAILABLE", "message": f"echo: client_secret={secret}"}
    assert staff_api.post("/v1/crms/mock/salesforce/faults", fault, format="json").status_code in (200, 201)

    with pytest.raises(ConnectorError) as raised:
        poll_contacts(salesforce)

    row = InboundCursor.objects.get(connection=salesforce, object_type="Contact")
    assert "echo: client_secret=[redacted]" in row.last_error and secret not in row.last_error
    assert secret not in str(raised.value)

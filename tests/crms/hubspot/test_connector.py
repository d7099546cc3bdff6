"""The HubSpot connector against the mock account over real HTTP: the same code runs against HubSpot itself.

The mock is held to HubSpot's own client in test_hubspot_client.py; here the connector's choices are
checked: which batch call each record takes, how answers map back to records, and how polling by search
moves through more than one query's cap without skipping or repeating a change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from hubspot.utils.signature import Signature

from crms.base import ConnectorError, OutboundRecord, QuotaSignal, WebhookRefused
from crms.build import connector_for
from crms.hubspot import connector as hubspot_connector
from crms.hubspot import mock as hubspot_mock
from crms.hubspot import mock_store
from crms.hubspot.connector import HubSpotConnector
from crms.hubspot.wire import signature_base
from crms.mocks.models import MockCall, MockRecord
from crms.mocks.runtime import fault_add
from crms.models import Connection
from tests.crms.hubspot.conftest import mock_hubspot

pytestmark = pytest.mark.django_db(transaction=True)


def open_(connection: Connection) -> HubSpotConnector:
    connector = connector_for(connection)
    assert isinstance(connector, HubSpotConnector)
    return connector


def upsert(record_id: str, email: str | None, external_id: str | None = None, **fields: Any) -> OutboundRecord:
    values = {"email": email, **fields} if email is not None else fields
    return OutboundRecord(record_id, "contact", "upsert", values, external_id=external_id)


def held(obj: str = "contacts") -> list[MockRecord]:
    return list(MockRecord.objects.filter(system="hubspot", object=obj, deleted_at__isnull=True).order_by("pk"))


def test_new_contacts_are_upserted_by_email_in_one_call_and_a_repeat_updates_them(hubspot: Connection) -> None:
    connector = open_(hubspot)
    batch = [upsert("c1", "Ada@Example.com", firstname="Ada"), upsert("c2", "bob@example.com", firstname="Bob")]

    first = connector.push(batch)
    again = connector.push(batch)

    assert [r.outcome for r in first] == ["created", "created"] and [r.outcome for r in again] == ["updated"] * 2
    assert [r.external_id for r in first] == [r.external_id for r in again] == [m.record_id for m in held()]
    assert held()[0].fields == {"email": "ada@example.com", "firstname": "Ada"}
    calls = MockCall.objects.filter(system="hubspot", path__contains="/batch/").values_list("path", flat=True)
    assert list(calls) == ["/mock/hubspot/crm/v3/objects/contacts/batch/upsert"] * 2  # one call per batch


def test_a_linked_record_is_updated_by_id_and_one_deleted_in_hubspot_is_upserted_again(hubspot: Connection) -> None:
    connector = open_(hubspot)
    [made] = connector.push([upsert("c1", "ada@example.com")])
    [changed] = connector.push([upsert("c1", "ada@example.com", made.external_id, lastname="Lovelace")])
    mock_store.archive(held()[0])

    [revived] = connector.push([upsert("c1", "ada@example.com", made.external_id, lastname="L")])

    assert changed.outcome == "updated" and changed.external_id == made.external_id
    assert held()[0].fields["lastname"] == "L" and revived.outcome == "created"
    assert revived.external_id == held()[0].record_id != made.external_id


def test_deletes_archive_linked_records_and_leave_unlinked_ones_alone(hubspot: Connection) -> None:
    connector = open_(hubspot)
    [made] = connector.push([upsert("c1", "ada@example.com")])
    gone = OutboundRecord("c1", "contact", "delete", external_id=made.external_id)
    never = OutboundRecord("c2", "contact", "delete")

    results = connector.push([gone, never])

    assert [r.outcome for r in results] == ["deleted", "unchanged"] and held() == []


def test_a_record_without_its_unique_property_is_refused_naming_it(hubspot: Connection) -> None:
    [result] = open_(hubspot).push([upsert("c1", None, firstname="No email")])

    assert result.outcome == "error" and result.error is not None
    assert (result.error.code, result.error.permanent, result.error.fields) == ("MISSING_MATCH_KEY", True, ("email",))
    assert not MockCall.objects.filter(system="hubspot").exists()  # nothing was sent


def test_companies_carry_system_as_id_in_their_unique_property(hubspot: Connection) -> None:
    connector = open_(hubspot)
    record = OutboundRecord("acc-9", "company", "upsert", {"name": "Acme", "domain": "acme.test"})

    [result] = connector.push([record])
    [change] = connector.changes("company", None).changes

    assert result.outcome == "created" and held("companies")[0].fields["recordsync_id"] == "acc-9"
    assert connector.inbound(change).record_id == "acc-9"
    assert "hs_object_id" not in connector.inbound(change).fields


def test_per_input_errors_land_on_their_records_and_are_permanent_for_validation(hubspot: Connection) -> None:
    connector = open_(hubspot)
    fault_add(system="hubspot", calls=1, seconds=None, record_error="VALIDATION_ERROR")

    results = connector.push([upsert("c1", "a@example.com"), upsert("c2", "b@example.com")])

    assert [(r.outcome, r.error and r.error.code, r.error and r.error.permanent) for r in results] == [
        ("error", "VALIDATION_ERROR", True)
    ] * 2


def test_a_429_over_the_burst_window_is_transient_and_the_headers_feed_the_throttle(
    hubspot: Connection, settings: Any
) -> None:
    settings.MOCK_HUBSPOT_BURST_LIMIT = 1
    connector = open_(hubspot)
    connector.push([upsert("c1", "a@example.com")])

    [limited] = connector.push([upsert("c2", "b@example.com")])

    assert limited.error is not None and limited.error.code == "RATE_LIMITS" and not limited.error.permanent
    assert limited.error.retry_after == 10.0
    assert connector.rate_limit["max"] == 1 and connector.rate_limit["remaining"] == 0


def test_read_returns_the_current_properties_of_the_records_found(hubspot: Connection) -> None:
    connector = open_(hubspot)
    made = connector.push([upsert("c1", "a@example.com", firstname="A"), upsert("c2", "b@example.com")])

    found = connector.read("contact", [made[0].external_id or "", "12345"])

    assert list(found) == [made[0].external_id] and found[made[0].external_id or ""]["firstname"] == "A"
    assert connector.modified_at(found[made[0].external_id or ""]) is not None


def _read_passes(
    connector: HubSpotConnector, cursor: str | None, calls: int, edit: Any = None
) -> tuple[list[tuple[str, str | None]], Any]:
    seen: list[tuple[str, str | None]] = []
    for call in range(calls):
        page = connector.changes("contact", cursor)
        seen += [(c.fields["email"], c.fields.get("firstname")) for c in page.changes]
        cursor = page.cursor
        if call == 0 and edit is not None:
            edit()
    return seen, cursor


def test_polling_reads_every_change_once_even_when_a_record_read_is_edited_mid_pass(
    hubspot: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 2. After the first page, its first record is edited: with HubSpot's offset paging the record
    after the page would be skipped; paging from the last stamp read loses nothing."""
    monkeypatch.setattr(hubspot_connector, "PAGE_SIZE", 2)
    for i in range(7):
        mock_store.staff_push("contacts", [{"email": f"p{i}@example.com"}], [])
        time.sleep(0.002)  # distinct stamps, as HubSpot's milliseconds mostly are
    connector = open_(hubspot)

    def edit() -> None:
        mock_store.update(held()[0], {"firstname": "Edited"}, by="user")

    seen, cursor = _read_passes(connector, None, 12, edit)

    assert sorted(e for e, _ in seen) == sorted([f"p{i}@example.com" for i in range(7)] + ["p0@example.com"])
    assert ("p0@example.com", "Edited") in seen and len(seen) == len(set(seen))  # each change once
    assert _read_passes(connector, cursor, 3)[0] == []  # nothing new: nothing read again


def test_a_run_of_records_sharing_one_stamp_pages_on_within_it(
    hubspot: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot_connector, "PAGE_SIZE", 2)
    for i in range(5):
        mock_store.staff_push("contacts", [{"email": f"s{i}@example.com"}], [])
    MockRecord.objects.filter(system="hubspot").update(modified_at=held()[0].modified_at)  # one millisecond

    seen, _ = _read_passes(open_(hubspot), None, 8)

    assert sorted(e for e, _ in seen) == [f"s{i}@example.com" for i in range(5)]


def test_a_single_stamp_held_past_the_search_cap_ends_the_pass_instead_of_paging_deeper(
    hubspot: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot_connector, "PAGE_SIZE", 2)
    monkeypatch.setattr(hubspot_connector, "SEARCH_CAP", 4)
    for i in range(7):
        mock_store.staff_push("contacts", [{"email": f"c{i}@example.com"}], [])
    MockRecord.objects.filter(system="hubspot").update(modified_at=held()[0].modified_at)
    connector = open_(hubspot)

    pages = [connector.changes("contact", None)]
    while pages[-1].has_more:
        pages.append(connector.changes("contact", pages[-1].cursor))

    assert len(pages) == 2  # 2 + 2 read; the next page would pass 4 results: the pass ends there
    assert not MockCall.objects.filter(system="hubspot", status=400).exists()


def test_webhook_deliveries_signed_as_hubspots_own_sdk_signs_them_are_read_whole(hubspot: Connection) -> None:
    connector = open_(hubspot)
    [made] = connector.push([upsert("c1", "ada@example.com", firstname="Ada")])
    uri = "https://sync.example.com/v1/webhooks/hubspot"
    events = [
        {
            "objectId": int(made.external_id or 0),
            "subscriptionType": "contact.propertyChange",
            "occurredAt": 1,
            "propertyName": "firstname",
            "propertyValue": "Ada",
            "eventId": 1,
            "attemptNumber": 0,
        },
        {"objectId": 777, "subscriptionType": "contact.deletion", "occurredAt": 2, "eventId": 2, "attemptNumber": 0},
        {"objectId": 5, "subscriptionType": "deal.creation", "occurredAt": 3, "eventId": 3, "attemptNumber": 0},
    ]
    body = json.dumps(events)
    now = datetime.now(UTC)
    stamp = str(int(now.timestamp() * 1000))
    signature = Signature.get_signature(
        hubspot_mock.app_client_secret(),
        body,
        http_uri=uri,
        http_method="POST",
        signature_version="v3",
        timestamp=stamp,
    )
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp}

    changes = connector.webhook_changes(body.encode(), headers, now, uri=uri)

    assert [(c.external_id, c.deleted) for c in changes] == [(made.external_id, False), ("777", True)]
    assert changes[0].fields["email"] == "ada@example.com"  # the record as it is now, not just the changed property
    with pytest.raises(WebhookRefused):
        connector.webhook_changes(body.encode() + b" ", headers, now, uri=uri)
    with pytest.raises(WebhookRefused, match="5 minutes"):
        connector.webhook_changes(body.encode(), headers, now + timedelta(minutes=6), uri=uri)


def test_the_v3_signature_matches_hubspots_published_test_vector() -> None:
    """HubSpot's SDK test (tests/spec/utils/test_signature.py): the same inputs must give the same signature."""
    secret, uri, body, stamp = (
        "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
        "https://www.example.com/webhook_uri",
        "{'example_field':'example_value'}",
        "1693657560000",
    )

    ours = base64.b64encode(
        hmac.new(secret.encode(), signature_base("POST", uri, body.encode(), stamp), hashlib.sha256).digest()
    )
    assert ours.decode() == "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
    assert Signature.get_signature(secret, body, http_uri=uri, signature_version="v3", timestamp=stamp) == ours.decode()


def test_check_names_a_unique_property_that_is_missing_or_not_unique(live_server: Any) -> None:
    objects = {
        "contact": {"object": "contacts", "id_property": "email"},
        "company": {"object": "companies", "id_property": "domain"},
        "deal": {"object": "contacts", "id_property": "external_key"},
    }
    result = open_(mock_hubspot(live_server.url, objects=objects)).check()

    assert not result.ok
    assert "does not require unique values" in result.details["fields"]["objects.company.id_property"]
    assert "has no property external_key" in result.details["fields"]["objects.deal.id_property"]


def test_check_passes_on_the_default_objects_and_reports_the_calls_left(hubspot: Connection) -> None:
    result = open_(hubspot).check()

    assert result.ok and result.message.startswith("connected;")


def test_a_private_app_token_refused_pauses_the_connection(live_server: Any) -> None:
    from crms.services import connection_save

    connection = connection_save(
        name="hubspot",
        kind="hubspot",
        config={"api_url": f"{live_server.url}/mock/hubspot"},
        secrets={"access_token": "pat-revoked"},
    )

    with pytest.raises(ConnectorError) as refused:
        open_(connection).read("contact", ["1"])

    assert refused.value.permanent and refused.value.pause_connection and refused.value.http_status == 401


def test_the_rate_limit_headers_become_the_throttles_signal_and_a_daily_429_holds() -> None:
    from crms.hubspot.errors import quota_signal

    def answer(status: int, headers: dict[str, str], body: dict[str, Any] | None = None) -> Any:
        response = requests.Response()
        response.status_code, response._content = status, json.dumps(body or {}).encode()
        response.headers.update(headers)
        return response

    burst = {"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Remaining": "40"}
    window = {**burst, "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}

    assert quota_signal(answer(200, window), 0) == QuotaSignal(used=150, cap=190, resets_in=10.0)
    spent = quota_signal(answer(200, {**window, "X-HubSpot-RateLimit-Daily-Remaining": "0"}), 0)
    assert spent is not None and spent.probe is True
    assert quota_signal(answer(429, window, {"policyName": "TEN_SECONDLY_ROLLING"}), 0) == QuotaSignal(pause_for=10.0)
    daily = quota_signal(answer(429, {}, {"policyName": "DAILY", "errorType": "RATE_LIMIT"}), 0)
    assert daily is not None and daily.probe and daily.pause_for == 3600.0
    assert quota_signal(answer(200, {}), 0) is None  # a search answer: no headers, nothing said


def test_an_oauth_access_token_is_refreshed_when_it_expires_and_the_refresh_token_kept(live_server: Any) -> None:
    """HubSpot's refresh tokens do not rotate; its access tokens last 30 minutes."""
    from crms.services import connection_save

    base = f"{live_server.url}/mock/hubspot"
    connection = connection_save(
        name="hubspot",
        kind="hubspot",
        config={
            "auth": "oauth",
            "api_url": base,
            "client_id": hubspot_mock.app_client_id(),
            "token_url": f"{base}/oauth/v1/token",
        },
        secrets={
            "client_secret": hubspot_mock.app_client_secret(),
            "refresh_token": hubspot_mock.first_refresh_token(),
        },
    )
    connector = open_(connection)
    connector.read("contact", ["1"])
    first = connector.store.get("oauth")
    connector.clock = lambda: first["expires_at"]  # half an hour later: the token is spent

    connector.read("contact", ["1"])
    second = connector.store.get("oauth")

    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] == first["refresh_token"] == hubspot_mock.first_refresh_token()
    refreshes = MockCall.objects.filter(system="hubspot", path__endswith="/oauth/v1/token", status=200).count()
    assert refreshes == 2

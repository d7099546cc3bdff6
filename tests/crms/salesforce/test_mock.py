"""The real Salesforce connector over real HTTP against the local mock org (live server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from crms.base import ConnectorError, OutboundRecord
from crms.http import HttpClient
from crms.mocks.models import MockQueryLocator, MockRecord
from crms.models import Connection
from crms.salesforce import mock as salesforce_mock
from crms.salesforce import mock_store
from crms.salesforce.connector import SalesforceConnector
from crms.salesforce.mock_store import matching
from crms.state import DatabaseStateStore

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "RecordSync_Id__c"


@pytest.fixture
def org(live_server) -> str:
    return f"{live_server.url}/mock/salesforce"


@pytest.fixture
def connector(org, settings) -> SalesforceConnector:
    return SalesforceConnector(
        config={
            "login_url": org,
            "instance_url": org,
            "auth": "client_credentials",
            "external_id_field": KEY,
            "client_id": salesforce_mock.app_client_id(),
        },
        secrets={"client_secret": salesforce_mock.app_client_secret()},
        http=HttpClient(connection_name="sf-mock"),
        store=DatabaseStateStore(Connection.objects.create(name="sf-mock", kind="salesforce")),
    )


def contact(record_id: str, **fields: Any) -> OutboundRecord:
    return OutboundRecord(record_id, "Contact", "upsert", {"LastName": "Lovelace", **fields})


def stored(record_id: str) -> MockRecord:
    record: MockRecord = matching("Contact", KEY, record_id).get()
    return record


def fault(staff: Any, **body: Any) -> None:
    response = staff.post("/v1/crms/mock/salesforce/faults", body, format="json")
    assert response.status_code == 201, response.content


def test_an_upsert_creates_then_updates_the_same_record(connector):
    (created,) = connector.push([contact("c-1", Email="ada@example.com")])
    (updated,) = connector.push([contact("c-1", Email="ada@new.example.com")])

    assert created.outcome == "created" and updated.outcome == "updated"
    assert created.external_id == updated.external_id
    assert created.external_id is not None and created.external_id.startswith("003") and len(created.external_id) == 18
    record = stored("c-1")
    assert record.fields["Email"] == "ada@new.example.com"
    assert MockRecord.objects.count() == 1


def test_a_repeat_after_a_crash_is_an_idempotent_upsert_not_a_second_record(connector):
    connector.push([contact("c-1", Email="a@example.com")])
    connector.push([contact("c-1", Email="a@example.com")])

    assert MockRecord.objects.filter(system="salesforce").count() == 1


def test_the_mock_refuses_more_than_200_records_in_one_call_and_the_connector_splits(connector, org):
    token = connector._token(force=False)["access_token"]
    too_many = {"allOrNone": False, "records": [{"LastName": "x", KEY: f"c-{i}"} for i in range(201)]}
    direct = requests.patch(
        f"{org}/services/data/v62.0/composite/sobjects/Contact/{KEY}",
        json=too_many,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )

    results = connector.push([contact(f"c-{i}") for i in range(250)])

    assert direct.status_code == 400 and direct.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert [r.outcome for r in results] == ["created"] * 250


def test_a_missing_required_field_is_a_permanent_record_error(connector):
    ok, bad = connector.push([contact("c-1"), OutboundRecord("c-2", "Contact", "upsert", {"Email": "x@example.com"})])

    assert ok.outcome == "created"
    assert bad.error is not None
    assert (bad.error.code, bad.error.permanent, bad.error.fields) == ("REQUIRED_FIELD_MISSING", True, ("LastName",))


def test_an_unknown_field_refuses_the_call_permanently(connector):
    with pytest.raises(ConnectorError) as raised:
        connector.push([contact("c-1", Shoe_Size=42)])

    assert (raised.value.code, raised.value.permanent) == ("INVALID_FIELD", True)


def test_an_invalid_session_is_refreshed_once(connector):
    connector.store.set("oauth", {"access_token": "00DMOCK!revoked", "instance_url": connector.config["login_url"]})

    (result,) = connector.push([contact("c-1")])

    assert result.outcome == "created"


def test_wrong_client_credentials_are_a_permanent_login_error(connector):
    connector.secrets = {"client_secret": "wrong"}

    with pytest.raises(ConnectorError) as raised:
        connector.push([contact("c-1")])

    assert (raised.value.code, raised.value.permanent) == ("invalid_grant", True)


def test_the_daily_cap_answers_403_request_limit_exceeded_and_pauses_the_connection(connector, settings):
    settings.MOCK_SALESFORCE_DAILY_LIMIT = 3
    connector.push([contact("c-1")])
    connector.push([contact("c-2")])
    connector.push([contact("c-3")])
    assert connector.api_usage["api-usage"] == {"used": 3, "total": 3}

    with pytest.raises(ConnectorError) as raised:
        connector.push([contact("c-4")])

    assert (raised.value.code, raised.value.pause_connection, raised.value.http_status) == (
        "REQUEST_LIMIT_EXCEEDED",
        True,
        403,
    )


@pytest.mark.parametrize(
    ("injected", "code", "retry_after"),
    [
        ({"status": 503}, "SERVER_UNAVAILABLE", None),
        ({"status": 500}, "UNKNOWN_EXCEPTION", None),
        ({"status": 429, "retry_after": 7}, "REQUEST_LIMIT_EXCEEDED", 7.0),
    ],
)
def test_injected_server_errors_are_transient_and_pass(connector, staff_api, injected, code, retry_after):
    fault(staff_api, calls=1, **injected)

    with pytest.raises(ConnectorError) as raised:
        connector.push([contact("c-1")])
    (after,) = connector.push([contact("c-1")])

    assert (raised.value.code, raised.value.permanent, raised.value.retry_after) == (code, False, retry_after)
    assert after.outcome == "created"


def test_an_injected_403_limit_pauses_the_connection(connector, staff_api):
    fault(staff_api, calls=1, status=403)

    with pytest.raises(ConnectorError) as raised:
        connector.push([contact("c-1")])

    assert raised.value.pause_connection is True


def test_an_injected_record_error_is_per_record_and_retryable(connector, staff_api):
    fault(staff_api, calls=1, record_error="UNABLE_TO_LOCK_ROW")

    first, second = connector.push([contact("c-1"), contact("c-2")])

    assert first.error is not None and (first.error.code, first.error.permanent) == ("UNABLE_TO_LOCK_ROW", False)
    assert second.outcome == "error"
    assert [r.outcome for r in connector.push([contact("c-1"), contact("c-2")])] == ["created", "created"]


def test_an_ambiguous_external_id_is_300_for_a_single_upsert_and_an_error_in_a_collection(connector, staff_api, org):
    # Legacy_Id__c is External ID but not Unique: the only kind of field several records can share.
    pushed = staff_api.post(
        "/v1/crms/mock/salesforce/push",
        {
            "object": "Contact",
            "records": [{"LastName": "A", "Legacy_Id__c": "dup"}, {"LastName": "B", "Legacy_Id__c": "dup"}],
        },
        format="json",
    )
    connector.config = {**connector.config, "external_id_field": "Legacy_Id__c"}
    token = connector._token(force=False)["access_token"]

    single = requests.patch(
        f"{org}/services/data/v62.0/sobjects/Contact/Legacy_Id__c/dup",
        json={"LastName": "C"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    (result,) = connector.push([contact("dup")])

    assert pushed.status_code == 200, pushed.content
    assert single.status_code == 300 and len(single.json()) == 2
    assert result.error is not None and (result.error.code, result.error.permanent) == ("DUPLICATE_EXTERNAL_ID", True)


def test_the_unique_external_id_field_refuses_a_second_record_with_the_same_value(staff_api):
    first = staff_api.post(
        "/v1/crms/mock/salesforce/push",
        {"object": "Contact", "records": [{"LastName": "A", KEY: "c-1"}]},
        format="json",
    )
    second = staff_api.post(
        "/v1/crms/mock/salesforce/push",
        {"object": "Contact", "records": [{"LastName": "B", KEY: "c-1"}]},
        format="json",
    )

    assert first.status_code == 200
    assert second.status_code == 400 and "DUPLICATE_VALUE" in str(second.json())


def test_changes_page_with_next_records_url_and_show_deletions(connector, staff_api, settings, monkeypatch):
    settings.MOCK_SALESFORCE_QUERY_PAGE = 2
    people = [{"LastName": f"L{i}", "Email": f"{i}@example.com"} for i in range(5)]
    answer = staff_api.post("/v1/crms/mock/salesforce/push", {"object": "Contact", "records": people}, format="json")
    pushed = answer.json()["results"]

    pages = [connector.changes("Contact", None)]
    while pages[-1].has_more:
        pages.append(connector.changes("Contact", pages[-1].cursor))
    staff_api.post("/v1/crms/mock/salesforce/push", {"object": "Contact", "delete": [pushed[0]["Id"]]}, format="json")
    # getDeleted ignores seconds and covers whole minutes up to now: poll as if the minute had passed.
    later = datetime.now(UTC) + timedelta(minutes=1)
    connector.clock = lambda: later
    monkeypatch.setattr(mock_store, "clock", lambda: later)
    after_delete = [connector.changes("Contact", pages[-1].cursor)]
    while after_delete[-1].has_more:
        after_delete.append(connector.changes("Contact", after_delete[-1].cursor))

    assert [len(p.changes) for p in pages] == [2, 2, 1]
    assert sorted(c.fields["Email"] for p in pages for c in p.changes) == [f"{i}@example.com" for i in range(5)]
    assert all(c.fields["LastModifiedById"] == mock_store.CRM_USER for p in pages for c in p.changes)
    deletions = [(c.external_id, c.deleted) for page in after_delete for c in page.changes if c.deleted]
    assert deletions == [(pushed[0]["Id"], True)]


def test_read_returns_the_records_found(connector):
    (created,) = connector.push([contact("c-1", Email="a@example.com")])
    assert created.external_id is not None

    found = connector.read("Contact", [created.external_id, "003NOTTHERE00000AAA"])

    assert list(found) == [created.external_id]
    assert found[created.external_id]["Email"] == "a@example.com"


def test_check_confirms_the_external_id_field(connector):
    result = connector.check()

    assert result.ok, result.message
    assert result.details["api_usage"]["total"] == 15000


def test_a_delete_removes_the_record_and_a_second_delete_still_counts_as_done(connector):
    (created,) = connector.push([contact("c-1")])
    gone = OutboundRecord("c-1", "Contact", "delete", external_id=created.external_id)

    assert [r.outcome for r in connector.push([gone])] == ["deleted"]
    assert [r.outcome for r in connector.push([gone])] == ["deleted"]
    assert MockRecord.objects.get(record_id=created.external_id).deleted_at is not None


def test_the_mock_is_off_unless_enabled(live_server, settings):
    settings.MOCK_CRMS_ENABLED = False

    response = requests.post(f"{live_server.url}/mock/salesforce/services/oauth2/token", timeout=10)

    assert response.status_code == 404


def test_a_bulk_job_is_started_then_polled_until_done_without_waiting(connector):
    records = [contact(f"c-{i}", Email=f"{i}@example.com") for i in range(300)]
    records.append(OutboundRecord("c-bad", "Contact", "upsert", {"Email": "no-last-name@example.com"}))

    job_id = connector.bulk_start("Contact", records)
    polls = [connector.bulk_poll(job_id) for _ in range(2)]

    assert polls[0] is None  # InProgress: a tick returns at once instead of waiting
    results = polls[1]
    assert results is not None and len(results) == 301
    assert {r.outcome for r in results[:300]} == {"created"}
    assert results[300].error is not None
    assert (results[300].error.code, results[300].error.permanent) == ("REQUIRED_FIELD_MISSING", True)
    assert MockRecord.objects.filter(system="salesforce", deleted_at__isnull=True).count() == 300
    assert stored("c-7").fields["Email"] == "7@example.com"


def test_a_bulk_upsert_of_existing_records_updates_them(connector):
    connector.push([contact("c-1", Email="old@example.com")])

    job_id = connector.bulk_start("Contact", [contact("c-1", Email="new@example.com")])
    while (results := connector.bulk_poll(job_id)) is None:
        pass

    assert [r.outcome for r in results] == ["updated"]
    assert stored("c-1").fields["Email"] == "new@example.com"


def test_an_injected_latency_past_the_read_timeout_is_a_retryable_timeout(connector, staff_api):
    connector.push([contact("c-0")])  # log in first: the fault is for the API call
    connector.http.timeout = (2.0, 0.2)
    fault(staff_api, calls=1, latency_ms=600)

    with pytest.raises(ConnectorError) as raised:
        connector.push([contact("c-1")])

    assert (raised.value.code, raised.value.permanent) == ("timeout", False)


def test_check_names_every_configured_field_the_org_does_not_have(connector):
    connector.config = {**connector.config, "fields": {"Contact": ["Id", "Emial", "LastName"], "Lead": ["Compnay"]}}

    result = connector.check()

    assert not result.ok
    assert result.details["problems"] == ["Contact has no field Emial", "Lead has no field Compnay"]


def test_a_poll_of_a_misspelt_field_is_refused_permanently_naming_it(connector):
    connector.config = {**connector.config, "fields": {"Contact": ["Id", "Emial"]}}

    with pytest.raises(ConnectorError) as refused:
        connector.changes("Contact", None)

    assert (refused.value.code, refused.value.permanent) == ("INVALID_FIELD", True)
    assert "'Emial'" in refused.value.message


def test_an_expired_query_cursor_runs_the_query_again_and_misses_nothing(connector, staff_api, settings):
    settings.MOCK_SALESFORCE_QUERY_PAGE = 2
    people = [{"LastName": f"L{i}", "Email": f"{i}@example.com"} for i in range(5)]
    staff_api.post("/v1/crms/mock/salesforce/push", {"object": "Contact", "records": people}, format="json")
    first = connector.changes("Contact", None)
    MockQueryLocator.objects.all().delete()  # Salesforce drops a cursor left unused for 15 minutes

    pages = [first, connector.changes("Contact", first.cursor)]
    while pages[-1].has_more:
        pages.append(connector.changes("Contact", pages[-1].cursor))

    emails = [c.fields["Email"] for p in pages for c in p.changes]
    assert sorted(set(emails)) == [f"{i}@example.com" for i in range(5)]
    assert len(emails) == 7  # the first batch is read twice; its events have the same ids

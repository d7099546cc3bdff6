"""The Salesforce connector against recorded Salesforce answers (restforce and simple-salesforce fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crms.base import ConnectorError, OutboundRecord
from crms.http import HttpClient
from crms.models import Connection
from crms.salesforce.connector import SalesforceConnector
from crms.salesforce.errors import parse_limit_info
from crms.state import DatabaseStateStore

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"
LOGIN = "https://login.salesforce.com"
INSTANCE = "https://na1.salesforce.com"  # what auth_success_response.json names
API = f"{INSTANCE}/services/data/v62.0"
KEY_FIELD = "RecordSync_Id__c"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def connector(private_key) -> SalesforceConnector:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    connection = Connection.objects.create(name="sf", kind="salesforce")
    return SalesforceConnector(
        config={
            "login_url": LOGIN,
            "auth": "jwt",
            "client_id": "3MVG9-client",
            "username": "sync@example.com",
            "external_id_field": KEY_FIELD,
        },
        secrets={"private_key": pem},
        http=HttpClient(connection_name="sf"),
        store=DatabaseStateStore(connection),
    )


@pytest.fixture
def sf() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(f"{LOGIN}/services/oauth2/token", json=fixture("restforce_auth_success_response.json"))
        yield mock


def upsert(record_id: str, **fields: Any) -> OutboundRecord:
    return OutboundRecord(record_id, "Contact", "upsert", fields)


def sent_body(call: Any) -> Any:
    return json.loads(call.request.body)


# --- auth -----------------------------------------------------------------------------------------


def test_it_logs_in_with_a_signed_jwt_and_reuses_the_token(connector, sf, private_key):
    sf.get(f"{API}/composite/sobjects/Contact", json=[None])
    connector.read("Contact", ["003A"])
    connector.read("Contact", ["003B"])

    logins = [c for c in sf.calls if c.request.url.endswith("/oauth2/token")]
    assert len(logins) == 1
    form = parse_qs(logins[0].request.body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt.decode(form["assertion"][0], private_key.public_key(), algorithms=["RS256"], audience=LOGIN)
    assert (claims["iss"], claims["sub"]) == ("3MVG9-client", "sync@example.com")
    token = fixture("restforce_auth_success_response.json")["access_token"]
    assert sf.calls[-1].request.headers["Authorization"] == f"Bearer {token}"


def test_an_expired_session_is_refreshed_once_then_retried(connector, sf):
    sf.get(f"{API}/composite/sobjects/Contact", status=401, json=fixture("restforce_expired_session_response.json"))
    sf.get(f"{API}/composite/sobjects/Contact", json=[{"attributes": {}, "Id": "003A", "Email": "a@example.com"}])

    assert connector.read("Contact", ["003A"]) == {"003A": {"Id": "003A", "Email": "a@example.com"}}
    assert len([c for c in sf.calls if c.request.url.endswith("/oauth2/token")]) == 2


def test_a_session_still_refused_after_refresh_is_a_permanent_error(connector, sf):
    sf.get(f"{API}/composite/sobjects/Contact", status=401, json=fixture("restforce_expired_session_response.json"))

    with pytest.raises(ConnectorError) as raised:
        connector.read("Contact", ["003A"])

    assert raised.value.code == "INVALID_SESSION_ID"
    assert raised.value.permanent is True


def test_a_refused_login_is_permanent_and_says_why(connector):
    with responses.RequestsMock() as mock:
        mock.post(f"{LOGIN}/services/oauth2/token", status=400, json=fixture("restforce_auth_error_response.json"))
        with pytest.raises(ConnectorError) as raised:
            connector.read("Contact", ["003A"])

    assert raised.value.code == "invalid_grant"
    assert raised.value.permanent is True
    assert "authentication failure" in raised.value.message


# --- writes ---------------------------------------------------------------------------------------


def test_it_upserts_through_collections_keyed_on_the_external_id_field(connector, sf):
    created = fixture("restforce_composite_sobjects_success_response.json")[0] | {"created": True}
    sf.patch(
        f"{API}/composite/sobjects/Contact/{KEY_FIELD}",
        json=[
            created,
            {"id": "003B", "success": True, "errors": [], "created": False},
            {
                "id": None,
                "success": False,
                "errors": [
                    {
                        "statusCode": "REQUIRED_FIELD_MISSING",
                        "message": "Required fields are missing: [LastName]",
                        "fields": ["LastName"],
                    }
                ],
            },
        ],
    )

    results = connector.push(
        [
            upsert("c-1", Email="a@example.com"),
            upsert("c-2", Email="b@example.com"),
            upsert("c-3", Email="c@example.com"),
        ]
    )

    assert [(r.record_id, r.outcome, r.external_id) for r in results] == [
        ("c-1", "created", "some_id"),
        ("c-2", "updated", "003B"),
        ("c-3", "error", None),
    ]
    assert results[2].error is not None
    assert (results[2].error.code, results[2].error.permanent, results[2].error.fields) == (
        "REQUIRED_FIELD_MISSING",
        True,
        ("LastName",),
    )
    call = sf.calls[-1]
    assert call.request.headers["Sforce-Call-Options"] == "client=recordsync"
    body = sent_body(call)
    assert body["allOrNone"] is False
    assert body["records"][0] == {"attributes": {"type": "Contact"}, "Email": "a@example.com", KEY_FIELD: "c-1"}


def test_a_linked_record_is_updated_by_its_salesforce_id_and_stamped_with_system_as_id(connector, sf):
    sf.patch(f"{API}/composite/sobjects", json=fixture("restforce_composite_sobjects_success_response.json"))
    sf.patch(
        f"{API}/composite/sobjects/Contact/{KEY_FIELD}",
        json=[{"id": "003N", "success": True, "errors": [], "created": True}],
    )
    linked = OutboundRecord("sf-1", "Contact", "upsert", {"LastName": "Hopper"}, "some_id")

    results = connector.push([linked, upsert("c-2", LastName="New")])

    assert [(r.record_id, r.outcome, r.external_id) for r in results] == [
        ("sf-1", "updated", "some_id"),
        ("c-2", "created", "003N"),
    ]
    update = next(c for c in sf.calls if c.request.url.endswith("/composite/sobjects"))
    assert sent_body(update)["records"] == [
        {"attributes": {"type": "Contact"}, "id": "some_id", "LastName": "Hopper", KEY_FIELD: "sf-1"}
    ]


def test_a_locked_row_is_a_retryable_record_error(connector, sf):
    sf.patch(
        f"{API}/composite/sobjects/Contact/{KEY_FIELD}",
        json=[
            {"id": None, "success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}]},
        ],
    )

    (result,) = connector.push([upsert("c-1", Email="a@example.com")])

    assert result.error is not None and result.error.permanent is False


def test_more_than_200_records_go_in_several_calls(connector, sf):
    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        count = len(json.loads(request.body)["records"])
        rows = [{"id": f"003{i}", "success": True, "errors": [], "created": True} for i in range(count)]
        return 200, {}, json.dumps(rows)

    sf.add_callback(responses.PATCH, f"{API}/composite/sobjects/Contact/{KEY_FIELD}", callback=answer)

    results = connector.push([upsert(f"c-{i}", Email=f"{i}@example.com") for i in range(250)])

    sizes = [len(sent_body(c)["records"]) for c in sf.calls if c.request.method == "PATCH"]
    assert sizes == [200, 50]
    assert all(r.outcome == "created" for r in results)


def test_a_delete_uses_the_linked_salesforce_id_and_skips_unlinked_records(connector, sf):
    sf.delete(f"{API}/composite/sobjects", json=fixture("restforce_composite_sobjects_destroy_success_response.json"))

    results = connector.push(
        [
            OutboundRecord("c-1", "Contact", "delete", external_id="Foo"),
            OutboundRecord("c-2", "Contact", "delete"),
        ]
    )

    assert [(r.outcome, r.external_id) for r in results] == [("deleted", "Foo"), ("unchanged", None)]
    call = next(c for c in sf.calls if c.request.method == "DELETE")
    assert parse_qs(call.request.url.split("?", 1)[1]) == {"ids": ["Foo"], "allOrNone": ["false"]}


def test_deleting_a_record_already_deleted_counts_as_done(connector, sf):
    sf.delete(
        f"{API}/composite/sobjects",
        json=[
            {"id": "Foo", "success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "deleted"}]},
        ],
    )

    (result,) = connector.push([OutboundRecord("c-1", "Contact", "delete", external_id="Foo")])

    assert result.outcome == "deleted"


# --- call-level errors, classified as CRM-FACTS says --------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "code", "permanent", "pause"),
    [
        (300, fixture("restforce_upsert_multiple_error_response.json"), "MULTIPLE_RECORDS", True, False),
        (400, fixture("restforce_write_error_response.json"), "INVALID_FIELD", True, False),
        (
            403,
            [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
            "REQUEST_LIMIT_EXCEEDED",
            False,
            True,
        ),
        (
            503,
            [{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}],
            "SERVER_UNAVAILABLE",
            False,
            False,
        ),
        (500, {"unexpected": True}, "HTTP_500", False, False),
    ],
)
def test_call_level_errors_are_classified(connector, sf, status, body, code, permanent, pause):
    sf.patch(f"{API}/composite/sobjects/Contact/{KEY_FIELD}", status=status, json=body)

    with pytest.raises(ConnectorError) as raised:
        connector.push([upsert("c-1", Email="a@example.com")])

    assert (raised.value.code, raised.value.permanent, raised.value.pause_connection) == (code, permanent, pause)
    assert raised.value.http_status == status


def test_a_timeout_is_a_retryable_error(connector, sf):
    sf.patch(f"{API}/composite/sobjects/Contact/{KEY_FIELD}", body=requests.Timeout("read timed out"))

    with pytest.raises(ConnectorError) as raised:
        connector.push([upsert("c-1", Email="a@example.com")])

    assert (raised.value.code, raised.value.permanent) == ("timeout", False)


def test_the_api_usage_header_is_read_after_each_call(connector, sf):
    header = fixture("simple_salesforce_extracted_fixtures.json")["sforce_limit_info_header_examples"][1]
    sf.get(f"{API}/composite/sobjects/Contact", json=[None], headers={"Sforce-Limit-Info": header["value"]})

    connector.read("Contact", ["003A"])

    assert connector.api_usage == header["parsed_by_library_as"]


@pytest.mark.parametrize(
    "example", fixture("simple_salesforce_extracted_fixtures.json")["sforce_limit_info_header_examples"]
)
def test_limit_info_parses_like_simple_salesforce(example):
    assert parse_limit_info(example["value"]) == example["parsed_by_library_as"]


# --- reading changes ------------------------------------------------------------------------------


def with_modstamps(page: dict[str, Any], *stamps: str) -> dict[str, Any]:
    """The restforce query fixtures have no Id or SystemModstamp: add them, keep the paging."""
    for index, (record, stamp) in enumerate(zip(page["records"], stamps, strict=True)):
        record.update({"Id": f"003{stamp[-9:-5]}{index}", "SystemModstamp": stamp})
    return page


def test_changes_follow_next_records_url_then_read_deletions(connector, sf):
    first = with_modstamps(
        fixture("restforce_query_paginated_first_page_response.json"), "2026-11-01T10:00:00.000+0000"
    )
    last = with_modstamps(fixture("restforce_query_paginated_last_page_response.json"), "2026-11-02T10:00:00.000+0000")
    sf.get(f"{API}/query", json=first)
    sf.get(f"{INSTANCE}{first['nextRecordsUrl']}", json=last)
    sf.get(f"{API}/sobjects/Contact/deleted/", json=fixture("restforce_get_deleted_success_response.json"))

    page1 = connector.changes("Contact", None)
    page2 = connector.changes("Contact", page1.cursor)

    assert page1.has_more and not page2.has_more
    assert [c.fields["Text_Label"] for c in page1.changes] == ["First Page"]
    assert [c.fields.get("Text_Label") for c in page2.changes if not c.deleted] == ["Last Page"]
    deleted = [c for c in page2.changes if c.deleted]
    assert [(d.external_id, d.modified_at.isoformat()) for d in deleted] == [
        ("a00D0000008pQRAIA2", "2013-05-07T22:07:19+00:00")
    ]
    soql = parse_qs(sf.calls[1].request.url.split("?", 1)[1])["q"][0]
    assert "WHERE SystemModstamp > 1970-01-01T00:00:00Z ORDER BY SystemModstamp ASC" in soql
    cursor = json.loads(page2.cursor or "{}")
    # The newest stamp read (10:00:00) less the two-second overlap read again next time.
    assert cursor == {"since": "2026-11-02T09:59:58Z", "deleted_since": "2013-05-08T21:20:00.000+0000"}


def test_a_query_that_hits_its_limit_moves_on_from_the_newest_second_instead_of_overlapping(connector, sf):
    """2,000 changes inside the two-second overlap: re-reading it would return the same 2,000 for ever."""
    rows = [
        {
            "attributes": {"type": "Contact"},
            "Id": f"003{n:015d}",
            "LastName": f"L{n}",
            "SystemModstamp": f"2026-11-02T10:00:0{n % 2}.{n % 1000:03d}+0000",
        }
        for n in range(2000)
    ]
    sf.get(f"{API}/query", json={"totalSize": 2000, "done": True, "records": rows})
    sf.get(f"{API}/sobjects/Contact/deleted/", json={"deletedRecords": [], "latestDateCovered": "2026-11-02T10:00:00Z"})

    full = connector.changes("Contact", None)

    assert len(full.changes) == 2000
    assert json.loads(full.cursor or "{}")["since"] == "2026-11-02T10:00:01Z"  # the newest second, no overlap


# --- check ----------------------------------------------------------------------------------------


def test_check_refuses_an_external_id_field_not_marked_unique(connector, sf):
    connector.config = {**connector.config, "fields": {"Whizbang": ["Id"]}, "external_id_field": "ParentWhizbang__c"}
    sf.get(f"{API}/sobjects/Whizbang/describe", json=fixture("restforce_sobject_describe_success_response.json"))

    result = connector.check()

    assert not result.ok
    assert result.message == "ParentWhizbang__c must be marked External ID and Unique"


def test_check_names_a_missing_external_id_field(connector, sf):
    connector.config = {**connector.config, "fields": {"Whizbang": ["Id"]}}
    sf.get(f"{API}/sobjects/Whizbang/describe", json=fixture("restforce_sobject_describe_success_response.json"))

    assert "has no field RecordSync_Id__c" in connector.check().message


def test_check_passes_when_the_field_is_external_id_and_unique(connector, sf):
    described = fixture("restforce_sobject_describe_success_response.json")
    described["fields"].append({"name": KEY_FIELD, "type": "string", "externalId": True, "unique": True})
    connector.config = {**connector.config, "fields": {"Whizbang": ["Id"]}}
    sf.get(f"{API}/sobjects/Whizbang/describe", json=described)

    assert connector.check().ok

"""The mock org judged by what no one here wrote: simple-salesforce, Salesforce's most used Python client,
drives it through its public API, and the vendors' own fixtures are compared with its answers.

The only thing between the client and the mock is a transport adapter that sends the client's
`https://*.salesforce.com` and instance URLs to the live test server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from crms.mocks.models import MockRecord
from crms.salesforce import mock as salesforce_mock
from crms.salesforce import mock_store
from crms.salesforce.mock_schema import normal_id, to_18

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "RecordSync_Id__c"
FIXTURES = Path(__file__).parent / "fixtures"


def first_error(raised: Any) -> dict[str, Any]:
    """The first item of a refused call's Salesforce error body (simple-salesforce keeps it as `content`)."""
    content: Any = raised.value.content
    return dict(content[0])


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class MockOrgAdapter(HTTPAdapter):
    """Sends https://<anything>.salesforce.com/… to the mock's login URL and the instance URL the mock
    handed out (https://host:port/mock/salesforce/…) to the live server over plain HTTP."""

    def __init__(self, live_url: str) -> None:
        super().__init__()
        self.netloc = urlsplit(live_url).netloc

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        path = parts.path
        if parts.netloc.endswith(".salesforce.com"):
            path = "/mock/salesforce" + path
        request.url = urlunsplit(("http", self.netloc, path, parts.query, ""))
        return super().send(request, **kwargs)


@pytest.fixture
def session(live_server: Any) -> requests.Session:
    session = requests.Session()
    session.mount("https://", MockOrgAdapter(live_server.url))
    return session


@pytest.fixture
def sf(session: requests.Session, settings: Any) -> Salesforce:
    """Client credentials with HTTP Basic, as simple-salesforce sends them to a My Domain."""
    return Salesforce(
        consumer_key=salesforce_mock.app_client_id(),
        consumer_secret=salesforce_mock.app_client_secret(),
        domain="mockorg.my",
        session=session,
        version="62.0",
    )


def certificate_for(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recordsync-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# --- logging in ---------------------------------------------------------------------------------


def test_client_credentials_by_http_basic_log_in_and_the_usage_header_is_parsed(sf):
    limits = sf.limits()

    assert sf.session_id and sf.sf_instance.endswith("/mock/salesforce")
    assert limits["DailyApiRequests"]["Max"] == 15000
    assert sf.api_usage["api-usage"].used >= 1 and sf.api_usage["api-usage"].total == 15000


def test_wrong_client_credentials_are_refused(session, settings):
    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(
            consumer_key=salesforce_mock.app_client_id(),
            consumer_secret="wrong",
            domain="mockorg.my",
            session=session,
        )


def test_a_jwt_signed_for_the_uploaded_certificate_logs_in_with_exp_as_a_string(session, settings):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings.MOCK_SALESFORCE_JWT_CERTIFICATE = certificate_for(key)

    sf: Any = Salesforce(
        username="integration@example.com",
        consumer_key=salesforce_mock.app_client_id(),
        privatekey=pem(key),
        session=session,
        version="62.0",
    )

    assert sf.Contact.describe()["name"] == "Contact"


def test_a_jwt_signed_by_another_key_is_refused(session, settings):
    settings.MOCK_SALESFORCE_JWT_CERTIFICATE = certificate_for(rsa.generate_private_key(65537, 2048))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    with pytest.raises(SalesforceAuthenticationFailed) as refused:
        Salesforce(
            username="integration@example.com",
            consumer_key=salesforce_mock.app_client_id(),
            privatekey=pem(stranger),
            session=session,
        )

    assert "invalid assertion" in str(refused.value)


# --- describe, versions, limits -------------------------------------------------------------------


def test_describe_has_every_attribute_of_a_real_describe_field(sf):
    described = sf.Contact.describe()
    real = fixture("restforce_sobject_describe_success_response.json")

    fields = {f["name"]: f for f in described["fields"]}
    assert set(real) - {"fields"} <= set(described)
    for name, field in fields.items():
        missing = set(real["fields"][0]) - set(field)
        assert not missing, f"{name} lacks {missing}"
        assert {
            k: type(v) for k, v in field.items() if k in real["fields"][0] and real["fields"][0][k] is not None
        } == {k: type(v) for k, v in real["fields"][0].items() if v is not None}, name
    assert len(fields["Email"]) >= 39
    key = fields[KEY]
    assert (key["type"], key["externalId"], key["unique"], key["length"]) == ("string", True, True, 255)
    assert (fields["LastName"]["nillable"], fields["LastName"]["createable"]) == (False, True)
    assert [p["value"] for p in fields["LeadSource"]["picklistValues"]][:2] == ["Web", "Phone Inquiry"]


def test_the_global_describe_and_object_metadata_have_the_real_shape(sf):
    real = fixture("restforce_describe_sobjects_success_response.json")

    described = sf.describe()
    metadata = sf.Contact.metadata()

    assert set(real) <= set(described)
    assert set(real["sobjects"][0]) <= set(next(o for o in described["sobjects"] if o["name"] == "Account"))
    assert metadata["objectDescribe"]["keyPrefix"] == "003" and "recentItems" in metadata


def test_the_versions_list_and_the_full_limits_have_the_real_keys(sf, session):
    real_versions = fixture("restforce_services_data_success_response.json")
    real_limits = fixture("simple_salesforce_extracted_fixtures.json")[
        "limits_response (GET /services/data/vXX.X/limits/)"
    ]

    versions = session.get(f"https://{sf.sf_instance}/services/data/", timeout=10).json()
    limits = sf.limits()

    assert all(set(v) == set(real_versions[0]) for v in versions)
    assert "62.0" in [v["version"] for v in versions]
    assert set(real_limits) <= set(limits)
    assert all(set(v) == {"Max", "Remaining"} for v in limits.values())


# --- single records -----------------------------------------------------------------------------


def test_create_get_update_and_delete_one_contact(sf):
    created = sf.Contact.create({"LastName": "Lovelace", "Email": "ada@example.com"})
    record_id = created["id"]

    assert set(created) == set(fixture("restforce_create_success_response.json"))
    assert created["success"] is True and len(record_id) == 18 and record_id == to_18(record_id[:15])
    assert sf.Contact.get(record_id[:15])["Id"] == record_id  # a 15-character id finds the same record
    assert sf.Contact.update(record_id, {"FirstName": "Ada"}) == 204
    got = sf.Contact.get(record_id)
    assert (got["FirstName"], got["Name"], got["IsDeleted"], got["Title"]) == ("Ada", "Ada Lovelace", False, None)
    assert sf.Contact.delete(record_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(record_id)


def test_get_by_external_id_reads_without_writing(sf):
    sf.Contact.upsert(f"{KEY}/c-1", {"LastName": "Hopper"})
    before = MockRecord.objects.get(system="salesforce")

    found = sf.Contact.get_by_custom_id(KEY, "c-1")

    after = MockRecord.objects.get(system="salesforce")
    assert found["LastName"] == "Hopper" and found[KEY] == "c-1"
    assert (after.modified_at, after.fields) == (before.modified_at, before.fields)
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get_by_custom_id(KEY, "nobody")


def test_upsert_by_external_id_creates_updates_and_update_only_never_creates(sf):
    assert sf.Contact.upsert(f"{KEY}/c-1", {"LastName": "Hopper"}) == 201
    updated = sf.Contact.upsert(f"{KEY}/c-1", {"Title": "Rear Admiral"}, raw_response=True)
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.upsert(f"{KEY}/c-2?updateOnly=true", {"LastName": "Nobody"})

    assert updated.status_code == 200 and set(updated.json()) >= set(
        fixture("restforce_upsert_created_success_response.json")
    )
    assert updated.json()["created"] is False
    assert [r.fields.get(KEY) for r in mock_store.live("Contact")] == ["c-1"]


def test_delete_by_external_id_removes_the_record(sf):
    sf.Contact.upsert(f"{KEY}/c-1", {"LastName": "Hopper"})

    assert sf.Contact.delete(f"{KEY}/c-1") == 204
    assert not mock_store.live("Contact").exists()


def test_an_ambiguous_external_id_answers_300_with_the_records(sf):
    sf.Contact.create({"LastName": "A", "Legacy_Id__c": "dup"})
    sf.Contact.create({"LastName": "B", "Legacy_Id__c": "dup"})

    with pytest.raises(SalesforceMoreThanOneRecord) as raised:
        sf.Contact.upsert("Legacy_Id__c/dup", {"LastName": "C"})

    assert len(raised.value.content) == 2


def test_writes_are_checked_against_the_schema_and_name_the_field(sf):
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Contact.create({"LastName": "X", "Shoe_Size__c": 42})
    with pytest.raises(SalesforceMalformedRequest) as required:
        sf.Contact.create({"Email": "x@example.com"})
    with pytest.raises(SalesforceMalformedRequest) as read_only:
        sf.Contact.create({"LastName": "X", "Name": "X"})
    with pytest.raises(SalesforceMalformedRequest) as wrong_type:
        sf.Account.create({"Name": "Acme", "NumberOfEmployees": "many"})

    assert first_error(unknown)["errorCode"] == "INVALID_FIELD" and "Shoe_Size__c" in first_error(unknown)["message"]
    assert (first_error(required)["errorCode"], first_error(required)["fields"]) == (
        "REQUIRED_FIELD_MISSING",
        ["LastName"],
    )
    assert first_error(read_only)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert first_error(wrong_type)["errorCode"] == "JSON_PARSER_ERROR"
    assert not MockRecord.objects.exists()


# --- queries -------------------------------------------------------------------------------------


def bulk_contacts(count: int, *, at: datetime | None = None) -> None:
    at = at or mock_store.stamp()
    MockRecord.objects.bulk_create(
        [
            MockRecord(
                system="salesforce",
                object="Contact",
                record_id=mock_store.new_id("Contact"),
                fields={"LastName": f"L{i:05d}", KEY: f"c-{i}"},
                created_at=at,
                modified_at=at,
                modified_by=mock_store.CRM_USER,
            )
            for i in range(count)
        ]
    )


def test_query_all_reads_more_than_two_thousand_records_across_batches(sf):
    bulk_contacts(2500)

    first = sf.query("SELECT Id, LastName FROM Contact")
    everything = sf.query_all("select id, lastname from contact order by LastName")

    assert (first["totalSize"], len(first["records"]), first["done"]) == (2500, 2000, False)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")
    assert everything["totalSize"] == 2500 and len({r["Id"] for r in everything["records"]}) == 2500
    assert [r["LastName"] for r in everything["records"][:2]] == ["L00000", "L00001"]


def test_query_all_with_deleted_records_and_the_batch_size_header(sf):
    bulk_contacts(450)
    gone = mock_store.live("Contact").first()
    assert gone is not None
    mock_store.delete(gone)

    live = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=200"})
    with_deleted = sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)

    assert (live["totalSize"], len(live["records"])) == (449, 200)
    assert with_deleted["totalSize"] == 450
    assert [r["Id"] for r in with_deleted["records"] if r["IsDeleted"]] == [gone.record_id]


def test_a_query_naming_an_unknown_field_or_object_or_bad_syntax_is_refused(sf):
    with pytest.raises(SalesforceMalformedRequest) as field:
        sf.query("SELECT Id, Shoe_Size__c FROM Contact")
    with pytest.raises(SalesforceMalformedRequest) as sobject:
        sf.query("SELECT Id FROM Spaceship")
    with pytest.raises(SalesforceMalformedRequest) as syntax:
        sf.query("SELECT Id FROM Contact WHERE")
    with pytest.raises(SalesforceMalformedRequest) as quoted:
        sf.query("SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'")

    assert first_error(field)["errorCode"] == "INVALID_FIELD" and "'Shoe_Size__c'" in first_error(field)["message"]
    assert first_error(sobject)["errorCode"] == "INVALID_TYPE"
    assert first_error(syntax)["errorCode"] == "MALFORMED_QUERY"
    assert first_error(quoted)["errorCode"] == "INVALID_FIELD"


def test_where_order_by_and_limit_work_as_soql_does(sf):
    for name, email in [("Hopper", "grace@navy.mil"), ("Lovelace", "ada@example.com"), ("Turing", None)]:
        sf.Contact.create({"LastName": name, "Email": email})

    like = sf.query("SELECT LastName FROM Contact WHERE Email LIKE '%example.com' OR LastName IN ('Turing')")
    ordered = sf.query("SELECT LastName FROM Contact WHERE Email != null ORDER BY LastName DESC LIMIT 1")
    counted = sf.query("SELECT COUNT() FROM Contact WHERE NOT (LastName = 'hopper')")

    assert sorted(r["LastName"] for r in like["records"]) == ["Lovelace", "Turing"]
    assert [r["LastName"] for r in ordered["records"]] == ["Lovelace"]
    assert counted["totalSize"] == 2
    assert set(like) == set(fixture("restforce_query_success_response.json")) - {"nextRecordsUrl"}


# --- getUpdated / getDeleted --------------------------------------------------------------------


def test_get_updated_and_get_deleted_cover_whole_minutes(sf, monkeypatch):
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    monkeypatch.setattr(mock_store, "clock", lambda: now - timedelta(minutes=5))
    kept = sf.Contact.create({"LastName": "Kept"})["id"]
    gone = sf.Contact.create({"LastName": "Gone"})["id"]
    sf.Contact.delete(gone)
    monkeypatch.setattr(mock_store, "clock", lambda: now)

    updated = sf.Contact.updated(now - timedelta(minutes=10), now)
    deleted = sf.Contact.deleted(now - timedelta(minutes=10), now)

    assert updated["ids"] == [kept]
    assert [d["id"] for d in deleted["deletedRecords"]] == [gone]
    assert updated["latestDateCovered"].endswith(":00.000+0000")  # the seconds of `end` are ignored
    assert set(updated) == set(fixture("restforce_get_updated_success_response.json"))
    assert set(deleted) == set(fixture("restforce_get_deleted_success_response.json"))
    with pytest.raises(SalesforceMalformedRequest):
        sf.Contact.deleted(now - timedelta(days=20), now)  # beyond the 15 days Salesforce keeps


# --- sObject Collections ---------------------------------------------------------------------------


def test_collections_create_reports_each_record_and_all_or_none_rolls_back(sf):
    good, bad = {"attributes": {"type": "Contact"}, "LastName": "Hopper"}, {"attributes": {"type": "Contact"}}

    partial = sf.restful(
        "composite/sobjects", method="POST", data=json.dumps({"allOrNone": False, "records": [good, bad]})
    )
    strict = sf.restful(
        "composite/sobjects", method="POST", data=json.dumps({"allOrNone": True, "records": [good, bad]})
    )

    assert [r["success"] for r in partial] == [True, False]
    assert partial[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert [r["errors"][0]["statusCode"] for r in strict] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUIRED_FIELD_MISSING",
    ]
    assert mock_store.live("Contact").count() == 1  # only the partial call's good record
    real = fixture("restforce_composite_sobjects_success_response.json")
    assert set(partial[0]) == set(real[0])


def test_collections_upsert_with_all_or_none_writes_nothing_when_one_fails(sf):
    records = [
        {"attributes": {"type": "Contact"}, KEY: "c-1", "LastName": "A"},
        {"attributes": {"type": "Contact"}, KEY: "c-2", "Email": "not-an-email"},
    ]

    answer = sf.restful(
        f"composite/sobjects/Contact/{KEY}", method="PATCH", data=json.dumps({"allOrNone": True, "records": records})
    )

    assert [r["success"] for r in answer] == [False, False]
    assert answer[1]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert not MockRecord.objects.exists()


# --- Bulk API 2.0 -----------------------------------------------------------------------------------


def test_bulk2_upsert_reports_failed_records_for_download(sf):
    rows = [{KEY: f"c-{i}", "LastName": f"L{i}"} for i in range(5)] + [{KEY: "c-bad", "Email": "bad@example.com"}]

    (result,) = sf.bulk2.Contact.upsert(records=rows, external_id_field=KEY, wait=0)
    failed = sf.bulk2.Contact.get_failed_records(result["job_id"])
    everything = sf.bulk2.Contact.get_all_ingest_records(result["job_id"])

    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (6, 1)
    assert "REQUIRED_FIELD_MISSING" in failed and "c-bad" in failed
    assert len(everything["successfulRecords"]) == 5 and everything["unprocessedRecords"] == []
    assert {r["sf__Created"] for r in everything["successfulRecords"]} == {"true"}
    assert mock_store.live("Contact").count() == 5


def test_bulk2_insert_update_and_delete_jobs(sf):
    (inserted,) = sf.bulk2.Contact.insert(records=[{"LastName": "A"}, {"LastName": "B"}], wait=0)
    ids = [r["sf__Id"] for r in sf.bulk2.Contact.get_all_ingest_records(inserted["job_id"])["successfulRecords"]]
    (updated,) = sf.bulk2.Contact.update(records=[{"Id": ids[0], "Title": "Dr"}], wait=0)
    (deleted,) = sf.bulk2.Contact.delete(records=[{"Id": ids[1]}], wait=0)

    assert (inserted["numberRecordsFailed"], updated["numberRecordsFailed"], deleted["numberRecordsFailed"]) == (
        0,
        0,
        0,
    )
    assert [(r.record_id, r.fields.get("Title")) for r in mock_store.live("Contact")] == [(ids[0], "Dr")]


def test_an_aborted_bulk2_job_hands_back_its_unprocessed_records(sf):
    client = sf.bulk2.Contact._client  # the library's own job steps; its public helpers always close the job
    job = client.create_job("insert")
    client.upload_job_data(job["id"], "LastName\nA\nB\n")
    client.abort_job(job["id"], False)

    unprocessed = sf.bulk2.Contact.get_unprocessed_records(job["id"])

    assert unprocessed.splitlines() == ["LastName", "A", "B"]
    assert not MockRecord.objects.exists()


def test_bulk2_query_pages_its_csv_with_locators(sf):
    bulk_contacts(5)
    real = fixture("airbyte_bulk2_query_job_response.json")

    pages = list(sf.bulk2.Contact.query("SELECT Id, LastName FROM Contact ORDER BY LastName", max_records=2, wait=0))
    job = sf.bulk2.Contact._client.create_job("query", "SELECT Id FROM Contact")

    assert set(real) <= set(job)
    rows = [line for page in pages for line in page.splitlines()[1:]]
    assert len(pages) == 3 and [r.split(",")[1] for r in rows] == [f"L{i:05d}" for i in range(5)]


def test_ids_are_15_or_18_characters_with_the_case_safe_suffix():
    assert to_18("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert normal_id("001d000000iqhslIAZ") == "001D000000IqhSLIAZ"
    assert normal_id("001D000000IqhSLXX") is None

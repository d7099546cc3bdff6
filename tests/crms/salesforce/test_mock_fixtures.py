"""The mock org's answers compared, field by field (names and JSON types), with answers Salesforce gave
to the authors of restforce, simple-salesforce and Airbyte (tests/crms/salesforce/fixtures, SOURCE.md).

A fixture's key must be in the mock's answer with a value of the same JSON type; the mock may say more.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from crms.salesforce import mock as salesforce_mock
from crms.salesforce.soql import soql_datetime
from tests.conftest import salesforce_minute_passes

pytestmark = pytest.mark.django_db(transaction=True)
FIXTURES = Path(__file__).parent / "fixtures"
KEY = "RecordSync_Id__c"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def mismatches(real: Any, ours: Any, where: str = "") -> list[str]:
    """Where `ours` lacks a key of `real` or holds another JSON type (a null in `real` says nothing)."""
    if real is None:
        return []
    if isinstance(real, dict):
        if not isinstance(ours, dict):
            return [f"{where or '/'}: object expected, got {type(ours).__name__}"]
        found = [f"{where}/{k}: missing" for k in real if k not in ours]
        return found + [m for k in real if k in ours for m in mismatches(real[k], ours[k], f"{where}/{k}")]
    if isinstance(real, list):
        if not isinstance(ours, list):
            return [f"{where or '/'}: array expected, got {type(ours).__name__}"]
        return mismatches(real[0], ours[0], f"{where}/0") if real and ours else []
    same = (
        isinstance(ours, bool)
        if isinstance(real, bool)
        else isinstance(ours, type(real)) and not isinstance(ours, bool)
    )
    if isinstance(real, int | float) and not isinstance(real, bool):
        same = isinstance(ours, int | float) and not isinstance(ours, bool)
    return [] if same else [f"{where}: {type(real).__name__} expected, got {type(ours).__name__}"]


@pytest.fixture
def org(live_server: Any, settings: Any) -> dict[str, Any]:
    base = f"{live_server.url}/mock/salesforce"
    form = {
        "grant_type": "client_credentials",
        "client_id": salesforce_mock.app_client_id(),
        "client_secret": salesforce_mock.app_client_secret(),
    }
    login = requests.post(f"{base}/services/oauth2/token", data=form, timeout=10)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    return {"base": base, "api": f"{base}/services/data/v62.0", "headers": headers, "login": login.json()}


def call(org: dict[str, Any], method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, f"{org['api']}{path}", headers=org["headers"], timeout=10, **kwargs)
    return response.json() if response.content else None


def test_the_token_answer_matches_a_real_one(org):
    assert mismatches(fixture("restforce_auth_success_response.json"), org["login"]) == []


def test_writes_and_their_results_match_real_ones(org):
    created = call(org, "POST", "/sobjects/Contact/", json={"LastName": "Hopper"})
    upserted = call(org, "PATCH", f"/sobjects/Contact/{KEY}/c-1", json={"LastName": "Lovelace"})
    collection = call(
        org,
        "POST",
        "/composite/sobjects",
        json={"records": [{"attributes": {"type": "Contact"}, "LastName": "Turing"}]},
    )
    destroyed = call(org, "DELETE", "/composite/sobjects", params={"ids": created["id"]})

    assert mismatches(fixture("restforce_create_success_response.json"), created) == []
    assert mismatches(fixture("restforce_upsert_created_success_response.json"), upserted) == []
    assert mismatches(fixture("restforce_composite_sobjects_success_response.json"), collection) == []
    assert mismatches(fixture("restforce_composite_sobjects_destroy_success_response.json"), destroyed) == []


def test_errors_match_real_ones(org):
    unknown_field = call(org, "POST", "/sobjects/Contact/", json={"LastName": "X", "foo": 1})
    expired = requests.get(f"{org['api']}/limits", headers={"Authorization": "Bearer gone"}, timeout=10).json()
    bad_query = call(org, "GET", "/query", params={"q": "SELECT foo FROM Contact"})

    assert mismatches(fixture("restforce_write_error_response.json"), unknown_field) == []
    assert unknown_field[0]["errorCode"] == "INVALID_FIELD"
    assert mismatches(fixture("restforce_expired_session_response.json"), expired) == []
    assert expired == fixture("restforce_expired_session_response.json")
    assert mismatches(fixture("restforce_write_error_response.json"), bad_query) == []


def test_reads_match_real_ones(org, settings):
    settings.MOCK_SALESFORCE_QUERY_PAGE = 1
    for name in ("Hopper", "Lovelace"):
        call(org, "POST", "/sobjects/Contact/", json={"LastName": name})
    page = call(org, "GET", "/query", params={"q": "SELECT Id, LastName FROM Contact"})
    last = requests.get(f"{org['base']}{page['nextRecordsUrl']}", headers=org["headers"], timeout=10).json()
    described = call(org, "GET", "/sobjects/Contact/describe")
    real_describe = fixture("restforce_sobject_describe_success_response.json")

    first = fixture("restforce_query_paginated_first_page_response.json")
    first["records"][0].pop("Text_Label")  # the fixture's Whizbang has a field a Contact does not
    assert mismatches(first, page) == []
    assert (
        mismatches(
            {k: v for k, v in fixture("restforce_query_paginated_last_page_response.json").items() if k != "records"},
            last,
        )
        == []
    )
    assert mismatches({k: v for k, v in real_describe.items() if k != "fields"}, described) == []
    assert all(mismatches(real_describe["fields"][0], field) == [] for field in described["fields"])


def test_replication_limits_and_versions_match_real_ones(org, monkeypatch):
    created = call(org, "POST", "/sobjects/Contact/", json={"LastName": "Hopper"})
    call(org, "DELETE", f"/sobjects/Contact/{created['id']}")
    salesforce_minute_passes(monkeypatch)  # getDeleted covers minutes that are over
    window = {
        "start": soql_datetime(datetime.now(UTC) - timedelta(days=1)),
        "end": soql_datetime(datetime.now(UTC) + timedelta(minutes=2)),
    }
    updated = call(org, "GET", "/sobjects/Contact/updated/", params=window)
    deleted = call(org, "GET", "/sobjects/Contact/deleted/", params=window)
    limits = call(org, "GET", "/limits")
    versions = requests.get(f"{org['base']}/services/data/", timeout=10).json()
    real_limits = fixture("simple_salesforce_extracted_fixtures.json")[
        "limits_response (GET /services/data/vXX.X/limits/)"
    ]

    assert mismatches(fixture("restforce_get_updated_success_response.json"), {**updated, "ids": ["x"]}) == []
    assert mismatches(fixture("restforce_get_deleted_success_response.json"), deleted) == []
    assert [d["id"] for d in deleted["deletedRecords"]] == [created["id"]]
    assert mismatches(real_limits, limits) == []
    assert mismatches(fixture("restforce_services_data_success_response.json"), versions) == []


def test_a_bulk_job_matches_a_real_one(org):
    job = call(org, "POST", "/jobs/query", json={"operation": "queryAll", "query": "SELECT Id FROM Contact"})

    assert mismatches(fixture("airbyte_bulk2_query_job_response.json"), job) == []

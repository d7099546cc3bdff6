"""/v1/crms/mock/{crm}/…: staff act on a mock CRM as its users would, and watch what it received."""

from __future__ import annotations

import pytest

from crms.salesforce import mock_store

pytestmark = pytest.mark.django_db

BASE = "/v1/crms/mock/salesforce"


def test_staff_push_creates_records_a_crm_user_made(staff_api):
    response = staff_api.post(f"{BASE}/push", {"object": "Contact", "records": [{"LastName": "Hopper"}]}, format="json")

    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert row["LastName"] == "Hopper" and row["Id"].startswith("003")
    assert row["LastModifiedById"] == mock_store.CRM_USER
    listed = staff_api.get(f"{BASE}/records?object=Contact").json()
    assert [r["Id"] for r in listed["results"]] == [row["Id"]]
    assert "next" in listed and "previous" in listed  # cursor-paginated


def test_push_refuses_an_unknown_object_naming_the_field(staff_api):
    response = staff_api.post(f"{BASE}/push", {"object": "Spaceship", "records": [{}]}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "object"


def test_requests_lists_the_calls_the_mock_received(staff_api, client):
    client.post("/mock/salesforce/services/data/v62.0/query?q=SELECT+Id+FROM+Contact")

    calls = staff_api.get(f"{BASE}/requests").json()["results"]

    assert calls[0]["path"] == "/mock/salesforce/services/data/v62.0/query"
    assert calls[0]["status"] == 401  # no bearer token


def test_a_fault_needs_a_kind_and_a_duration(staff_api):
    no_kind = staff_api.post(f"{BASE}/faults", {"calls": 1}, format="json")
    no_duration = staff_api.post(f"{BASE}/faults", {"status": 503}, format="json")

    assert no_kind.status_code == no_duration.status_code == 400
    assert no_kind.json()["error"]["fields"][0]["field"] == "status"
    assert no_duration.json()["error"]["fields"][0]["field"] == "calls"


def test_faults_can_be_cleared(staff_api):
    staff_api.post(f"{BASE}/faults", {"status": 503, "seconds": 60}, format="json")

    assert staff_api.delete(f"{BASE}/faults").status_code == 204


def test_mock_endpoints_are_staff_only(api):
    assert api.get(f"{BASE}/records").status_code == 403


def test_an_unknown_mock_is_404(staff_api):
    assert staff_api.get("/v1/crms/mock/zoho/records").status_code == 404


def test_mock_endpoints_are_off_unless_enabled(staff_api, settings):
    settings.MOCK_CRMS_ENABLED = False

    assert staff_api.get(f"{BASE}/records").status_code == 404

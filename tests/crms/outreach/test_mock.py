"""The real Outreach connector over real HTTP against the local mock Outreach (live server),
and the mock's answers checked against Outreach's own OpenAPI reference."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import requests
import responses

from crms.base import OutboundRecord
from crms.http import HttpClient
from crms.mocks.models import MockRecord, MockToken
from crms.models import Connection
from crms.outreach import connector as outreach_module
from crms.outreach import mock as outreach_mock
from crms.outreach.connector import OutreachConnector
from crms.state import DatabaseStateStore
from tests.crms.outreach import contract

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base(live_server) -> str:
    return f"{live_server.url}/mock/outreach"


def make_connector(base: str, settings: Any, name: str = "outreach") -> OutreachConnector:
    return OutreachConnector(
        config={
            "client_id": outreach_mock.app_client_id(),
            "api_url": f"{base}/api/v2",
            "token_url": f"{base}/oauth/token",
        },
        secrets={
            "client_secret": outreach_mock.app_client_secret(),
            "refresh_token": outreach_mock.first_refresh_token(),
        },
        http=HttpClient(connection_name=name),
        store=DatabaseStateStore(Connection.objects.create(name=name, kind="outreach")),
    )


@pytest.fixture
def connector(base, settings) -> OutreachConnector:
    return make_connector(base, settings)


def prospect(record_id: str, email: str | None, external_id: str | None = None, **fields: Any) -> OutboundRecord:
    values = {"firstName": "Ada", **fields}
    if email:
        values["emails"] = [email]
    return OutboundRecord(record_id, "prospect", "upsert", values, external_id)


def in_outreach(kind: str = "prospect") -> list[MockRecord]:
    return list(MockRecord.objects.filter(system="outreach", object=kind, deleted_at__isnull=True))


def bearer(connector: OutreachConnector) -> dict[str, str]:
    return {"Authorization": f"Bearer {connector._token(refused=None)['access_token']}"}


def test_a_new_prospect_is_created_then_found_by_email_and_updated(connector):
    (created,) = connector.push([prospect("c-1", "ada@example.com")])
    (again,) = connector.push([prospect("c-1", "ada@example.com", title="Countess")])

    assert (created.outcome, again.outcome) == ("created", "updated")
    assert created.external_id == again.external_id
    (stored,) = in_outreach()
    assert stored.fields["emails"] == ["ada@example.com"] and stored.fields["title"] == "Countess"


def test_a_prospect_a_user_already_made_is_matched_not_duplicated(connector, staff_api):
    staff_api.post(
        "/v1/crms/mock/outreach/push",
        {"object": "prospect", "records": [{"emails": ["ADA@example.com"], "firstName": "A"}]},
        format="json",
    )

    (result,) = connector.push([prospect("c-1", "ada@example.com")])

    assert result.outcome == "updated"
    assert len(in_outreach()) == 1


def test_an_account_is_matched_on_its_domain(connector):
    record = OutboundRecord("a-1", "account", "upsert", {"name": "Analytical Engines", "domain": "engines.example"})

    assert [r.outcome for r in connector.push([record])] == ["created"]
    assert [r.outcome for r in connector.push([record])] == ["updated"]
    assert len(in_outreach("account")) == 1


def test_a_prospect_without_an_email_is_refused_before_any_call(connector):
    (result,) = connector.push([prospect("c-1", None)])

    assert result.error is not None and (result.error.code, result.error.permanent) == ("MISSING_MATCH_KEY", True)


def test_the_mock_refuses_a_body_that_is_not_json_api_with_415(connector, base):
    response = requests.post(f"{base}/api/v2/prospects", json={"data": {}}, headers=bearer(connector), timeout=10)

    assert response.status_code == 415
    assert response.json()["errors"][0]["id"] == "unsupportedMediaType"


def test_an_unknown_attribute_is_a_422_naming_the_field(connector):
    (result,) = connector.push([prospect("c-1", "ada@example.com", shoeSize=42)])

    assert result.error is not None
    assert (result.error.http_status, result.error.permanent, result.error.fields) == (422, True, ("shoeSize",))


def test_a_refresh_token_is_spent_once_used(connector, base, settings):
    connector.push([prospect("c-1", "ada@example.com")])
    second = make_connector(base, settings, name="outreach-2")  # holds the same, now spent, first token

    (result,) = second.push([prospect("c-2", "bob@example.com")])

    assert result.error is not None
    assert (result.error.permanent, result.error.pause_connection) == (True, True)
    assert "invalid_grant" in f"{result.error.code} {result.error.message}"


def test_the_connector_refreshes_fifty_times_in_a_row_and_every_call_succeeds(connector):
    """Every second refresh of a chain used to be a 500 IntegrityError (a spent token was inserted twice)."""
    for n in range(50):
        connector.clock = lambda n=n: time.time() + n * 7200  # each call finds the last access token expired
        result = connector.check()
        assert result.ok, (n, result.message)

    assert MockToken.objects.filter(system="outreach-refresh-used").count() == 50
    assert MockToken.objects.filter(system="outreach-refresh").count() == 1  # the one the chain holds now


def test_the_hourly_cap_answers_429_with_the_reset_and_the_connector_waits(connector, settings):
    settings.MOCK_OUTREACH_HOURLY_LIMIT = 2
    connector.push([prospect("c-1", "ada@example.com")])  # a lookup and a create: the whole allowance

    (result,) = connector.push([prospect("c-2", "bob@example.com")])

    assert result.error is not None
    assert (result.error.code, result.error.permanent) == ("RATE_LIMITED", False)
    assert result.error.retry_after is not None and 0 < result.error.retry_after <= 3600
    assert connector.rate_limit["limit"] == 2 and connector.rate_limit["remaining"] == 0


def test_changes_page_through_links_next(connector, staff_api, monkeypatch):
    monkeypatch.setattr(outreach_module, "PAGE_SIZE", 2)
    staff_api.post(
        "/v1/crms/mock/outreach/push",
        {"object": "prospect", "records": [{"emails": [f"p{i}@example.com"]} for i in range(5)]},
        format="json",
    )

    pages = [connector.changes("prospect", None)]
    while pages[-1].has_more:
        pages.append(connector.changes("prospect", pages[-1].cursor))

    emails = sorted(c.fields["emails"][0] for p in pages for c in p.changes)
    assert emails == [f"p{i}@example.com" for i in range(5)]
    assert len(pages) == 3


def test_a_502_page_is_asked_again_smaller(connector, staff_api):
    staff_api.post(
        "/v1/crms/mock/outreach/push", {"object": "prospect", "records": [{"emails": ["p@example.com"]}]}, format="json"
    )
    connector.push([prospect("c-9", "z@example.com")])  # log in before the fault is armed
    staff_api.post("/v1/crms/mock/outreach/faults", {"status": 502, "calls": 1}, format="json")

    page = connector.changes("prospect", None)

    assert len(page.changes) == 2


def test_a_delete_removes_the_prospect(connector):
    (created,) = connector.push([prospect("c-1", "ada@example.com")])

    (gone,) = connector.push([OutboundRecord("c-1", "prospect", "delete", external_id=created.external_id)])

    assert gone.outcome == "deleted" and in_outreach() == []


def test_read_returns_prospects_by_id(connector):
    (created,) = connector.push([prospect("c-1", "ada@example.com")])
    assert created.external_id is not None

    found = connector.read("prospect", [created.external_id])

    assert found[created.external_id]["emails"] == ["ada@example.com"]


def test_check_passes_and_reports_the_rate_limit(connector):
    result = connector.check()

    assert result.ok, result.message


def test_webhooks_are_called_back_signed_on_every_change(connector, base, live_server):
    headers = {**bearer(connector), "Content-Type": "application/vnd.api+json"}
    hook = {
        "data": {
            "type": "webhook",
            "attributes": {
                "url": "https://receiver.invalid/hooks",
                "resource": "prospect",
                "action": "*",
                "secret": "hook-secret",
            },
        }
    }
    assert requests.post(f"{base}/api/v2/webhooks", json=hook, headers=headers, timeout=10).status_code == 201

    with responses.RequestsMock() as receiver:
        receiver.add_passthru(live_server.url)
        receiver.post("https://receiver.invalid/hooks", status=200)
        connector.push([prospect("c-1", "ada@example.com")])
        deliveries = [c for c in receiver.calls if c.request.url == "https://receiver.invalid/hooks"]

    (delivery,) = deliveries
    body = delivery.request.body
    assert isinstance(body, bytes)
    expected = hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert delivery.request.headers["Outreach-Webhook-Signature"] == expected
    assert json.loads(body)["meta"]["eventName"] == "prospect.created"


def test_the_mocks_answers_match_outreachs_reference(connector, base):
    """Over real HTTP; contract.py says how the reference is read (three errata, and every attribute required)."""
    headers = {**bearer(connector), "Content-Type": "application/vnd.api+json"}
    body = {"data": {"type": "prospect", "attributes": {"emails": ["ada@example.com"], "firstName": "Ada"}}}
    created = requests.post(f"{base}/api/v2/prospects", json=body, headers=headers, timeout=10)
    new_id = created.json()["data"]["id"]
    patch = {"data": {"type": "prospect", "id": new_id, "attributes": {"title": "Countess"}}}
    answers = [
        ("post", "/prospects", created),
        (
            "get",
            "/prospects",
            requests.get(
                f"{base}/api/v2/prospects", params={"filter[emails]": "ada@example.com"}, headers=headers, timeout=10
            ),
        ),
        ("get", f"/prospects/{new_id}", requests.get(f"{base}/api/v2/prospects/{new_id}", headers=headers, timeout=10)),
        (
            "patch",
            f"/prospects/{new_id}",
            requests.patch(f"{base}/api/v2/prospects/{new_id}", json=patch, headers=headers, timeout=10),
        ),
        (
            "delete",
            f"/prospects/{new_id}",
            requests.delete(f"{base}/api/v2/prospects/{new_id}", headers=headers, timeout=10),
        ),
    ]

    assert [answer.status_code for _, _, answer in answers] == [201, 200, 200, 200, 204]
    for method, path, answer in answers:
        contract.check_answer(method, path, answer)

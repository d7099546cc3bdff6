"""Logs end to end: one request id finds every line of a record's journey (request, job, batch, CRM
call, and the change captured back), and no secret or token ever appears in a log line."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import pytest
from rest_framework.test import APIClient

from crms.mocks.models import MockRecord
from crms.models import Connection
from crms.outreach import mock as outreach_mock
from crms.outreach import mock_store as outreach_store
from crms.salesforce import mock as salesforce_mock
from crms.salesforce import mock_store
from crms.state import DatabaseStateStore
from crms.systema import mock as system_a_mock
from sync.api.auth import api_token_create
from sync.delivery.engine import throttled_connector
from sync.inbound.changes import poll
from tests.conftest import drain, mock_outreach, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)

HOOK_SECRET = "hook-secret-never-logged"


@pytest.fixture
def outreach(live_server, settings) -> Connection:
    return mock_outreach(live_server.url, webhook_secret=HOOK_SECRET)


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """Every record as the JSON formatter would see it: message plus all its extra fields."""
    return [{**record.__dict__, "message": record.getMessage()} for record in caplog.records]


def test_one_request_id_finds_the_whole_journey_of_a_record(caplog, live_server, system_a):
    salesforce = mock_salesforce(live_server.url)
    caplog.set_level(logging.INFO)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(username='platform')}")
    body = {
        "operation": "create",
        "record_id": "c-1",
        "object_type": "Contact",
        "data": {"LastName": "Lovelace", "Email": "ada@example.com"},
    }

    answer = api.post(
        "/v1/sync/", data=json.dumps(body), content_type="application/json", HTTP_X_REQUEST_ID="journey-42"
    )
    drain(salesforce)

    assert answer.status_code == 202 and answer["X-Request-ID"] == "journey-42"
    found = [line for line in lines(caplog) if "journey-42" in str(line.get("request_id") or "")]
    messages = {line["message"] for line in found}
    assert {"request", "event accepted", "job state", "crm call"} <= messages
    crm_calls = [line for line in found if line["message"] == "crm call"]
    assert crm_calls and all(line["connection"] == "salesforce" for line in crm_calls)
    engine_states = [line for line in found if line["message"] == "job state" and line.get("job_id")]
    assert [line["state"] for line in engine_states] == ["synced"]


def test_a_change_captured_back_carries_the_polls_id_through_its_own_journey(caplog, live_server, system_a):
    salesforce = mock_salesforce(live_server.url)
    mock_store.staff_push("Contact", [{"LastName": "Hopper", "Email": "grace@example.com"}], [])
    caplog.set_level(logging.INFO)

    poll(connection=salesforce, object_type="Contact", connector=throttled_connector(salesforce), owner="t")
    drain(system_a)

    polled = next(line for line in lines(caplog) if line["message"] == "polled")
    poll_id = str(polled["request_id"])
    assert poll_id.startswith("poll-")
    journey = {line["message"] for line in lines(caplog) if poll_id in str(line.get("request_id") or "")}
    assert {"event accepted", "job state", "crm call", "polled"} <= journey
    assert any(
        line["message"] == "crm call" and line["connection"] == "system_a" and poll_id in str(line["request_id"])
        for line in lines(caplog)
    )


def test_no_secret_or_token_ever_appears_in_a_log_line(caplog, live_server, settings, system_a, outreach):
    salesforce = mock_salesforce(live_server.url)
    caplog.set_level(logging.DEBUG)
    token = api_token_create(username="platform")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    MockRecord.objects.create(
        system="outreach",
        object=outreach_store.WEBHOOKS,
        record_id="1",
        fields={
            "resource": "*",
            "action": "*",
            "secret": HOOK_SECRET,
            "url": f"{live_server.url}/v1/webhooks/outreach",
        },
    )

    body = {
        "operation": "create",
        "record_id": "c-1",
        "object_type": "contact",
        "data": {"LastName": "Lovelace", "Email": "ada@example.com", "emails": ["ada@example.com"]},
    }
    api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    drain(salesforce)
    drain(outreach)
    mock_store.staff_push("Contact", [{"LastName": "Hopper"}], [])
    poll(connection=salesforce, object_type="Contact", connector=throttled_connector(salesforce), owner="t")
    drain(system_a)
    delivery = json.dumps(
        {
            "data": {
                "type": "prospect",
                "id": 9,
                "attributes": {"updatedAt": "2026-11-25T10:00:00.000Z", "firstName": "Grace"},
            },
            "meta": {},
        }
    ).encode()
    signature = hmac.new(HOOK_SECRET.encode(), delivery, hashlib.sha256).hexdigest()
    APIClient().post(
        "/v1/webhooks/outreach",
        data=delivery,
        content_type="application/json",
        HTTP_OUTREACH_WEBHOOK_SIGNATURE=signature,
    )

    issued = [json.dumps(DatabaseStateStore(c).get("oauth") or {}) for c in (salesforce, outreach)]
    secrets = [
        token,
        HOOK_SECRET,
        signature,
        salesforce_mock.app_client_secret(),
        outreach_mock.app_client_secret(),
        outreach_mock.first_refresh_token(),
        system_a_mock.signing_secret(),
    ]
    for stored in issued:  # the OAuth access (and rotated refresh) tokens the flow obtained
        secrets += [v for k, v in json.loads(stored).items() if "token" in k and isinstance(v, str)]
    logged = "\n".join(repr(line) for line in lines(caplog))
    assert len(caplog.records) > 20  # the flow did log plenty
    assert len([s for s in secrets if s]) >= 8
    leaked = [secret[:6] + "…" for secret in secrets if secret and secret in logged]
    assert leaked == []

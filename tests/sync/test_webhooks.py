"""Webhook receivers: Outreach's signed deliveries become events (verified, or refused naming the
header), and the deliveries our own writes cause are echoes, even before those writes return."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from crms.mocks.models import MockRecord
from crms.models import Connection
from crms.outreach import mock_store
from sync.models import JobState, RecordLink, SyncEvent, SyncJob
from tests.conftest import drain, mock_outreach, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "hook-secret-for-tests"


@pytest.fixture
def outreach(live_server, settings) -> Connection:
    connection = mock_outreach(live_server.url, webhook_secret=SECRET)
    # The webhook as registered in Outreach (POST /api/v2/webhooks): every resource and action.
    MockRecord.objects.create(
        system="outreach",
        object=mock_store.WEBHOOKS,
        record_id="1",
        fields={"resource": "*", "action": "*", "secret": SECRET, "url": f"{live_server.url}/v1/webhooks/outreach"},
    )
    return connection


def delivery(**attributes: Any) -> bytes:
    data = {"type": "prospect", "id": 77, "attributes": {"updatedAt": "2026-11-25T10:00:00.000Z", **attributes}}
    meta = {"eventName": "prospect.updated", "deliveredAt": "2026-11-25T10:00:01.000Z"}
    return json.dumps({"data": data, "meta": meta}).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(client: Any, body: bytes, signature: str | None, connection: str = "outreach") -> Any:
    headers = {"HTTP_OUTREACH_WEBHOOK_SIGNATURE": signature} if signature is not None else {}
    return client.post(f"/v1/webhooks/{connection}", data=body, content_type="application/json", **headers)


@pytest.mark.parametrize("signature", [None, "", "0" * 64, "wrong-secret", "é" * 64])  # é: a 500 before issue 15
def test_a_delivery_that_does_not_verify_is_refused_and_the_log_names_the_header(anon, outreach, signature, caplog):
    body = delivery(firstName="Grace")
    if signature == "wrong-secret":
        signature = sign(body, "another-secret")

    response = send(anon, body, signature)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "bad_signature" and error["fields"][0]["field"] == "signature"
    logged = [r for r in caplog.records if r.getMessage() == "webhook refused"]
    assert [(r.connection, r.header) for r in logged] == [("outreach", "Outreach-Webhook-Signature")]
    assert not SyncEvent.objects.exists()


def test_a_verified_delivery_is_captured_once(anon, outreach, system_a):
    body = delivery(firstName="Grace", lastName="Hopper", emails=["grace@example.com"])

    first = send(anon, body, sign(body))
    again = send(anon, body, sign(body))  # a repeat of the same delivery

    assert first.status_code == 200 and first.json() == {"captured": 1, "echo": 0, "already_captured": 0}
    assert again.json()["already_captured"] == 1
    event = SyncEvent.objects.get(source="outreach")
    assert (event.record_id, event.object_type) == ("outreach-77", "prospect")
    assert (event.payload or {}).get("firstName") == "Grace"
    assert SyncJob.objects.get(source="outreach").target == system_a


def test_unknown_connections_bad_bodies_and_connections_without_webhooks_are_refused(anon, outreach, settings):
    mock_salesforce("http://127.0.0.1:9")
    garbage = b'{"no": "data"}'

    unknown = send(anon, delivery(), sign(delivery()), connection="nope")
    bad_body = send(anon, garbage, sign(garbage))
    assert bad_body.status_code == 400 and bad_body.json()["error"]["fields"][0]["field"] == "body"
    known = send(anon, delivery(), sign(delivery()), connection="salesforce")
    # Issue 15: an unknown name answered 404 and a known one 401, so names could be listed by trying them.
    assert unknown.status_code == known.status_code == 401
    assert {k: v for k, v in unknown.json()["error"].items() if k != "request_id"} == {
        k: v for k, v in known.json()["error"].items() if k != "request_id"
    }


def test_a_prospect_created_in_outreach_reaches_system_a_by_webhook(outreach, system_a):
    (row,) = mock_store.staff_push(
        "prospect", [{"firstName": "Grace", "lastName": "Hopper", "emails": ["grace@example.com"]}], []
    )

    drained = drain(system_a)

    event = SyncEvent.objects.get(source="outreach")
    assert event.operation == "create" and event.record_id == f"outreach-{row['id']}"
    assert drained["synced"] == 1
    (in_a,) = MockRecord.objects.filter(system="system_a", object="prospect")
    assert in_a.fields["firstName"] == "Grace"
    assert RecordLink.objects.filter(system=outreach, external_id=str(row["id"])).exists()


def test_the_delivery_our_own_write_causes_is_an_echo_even_before_the_write_returns(api, outreach, system_a):
    body = {
        "operation": "create",
        "record_id": "c-1",
        "object_type": "prospect",
        "data": {"firstName": "Ada", "lastName": "Lovelace", "emails": ["ada@example.com"]},
    }
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
    SyncJob.objects.filter(target=system_a).delete()

    drained = drain(outreach)  # Outreach calls the webhook while our create is still in flight

    assert drained["synced"] == 1
    echo = SyncEvent.objects.get(source="outreach")
    assert echo.routing["mode"] == "skipped" and echo.routing["reason"].startswith("echo")
    assert echo.record_id == "c-1"  # shown in the status of the record whose write it echoes
    assert not SyncJob.objects.filter(source="outreach").exists()  # nothing bounces back to System A
    assert SyncJob.objects.get(record_id="c-1").state == JobState.SYNCED

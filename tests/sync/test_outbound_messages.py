"""Salesforce Outbound Messages at POST /v1/webhooks/<connection>: the SOAP notifications Salesforce
sends (the shape of its outbound messaging WSDL), proved by the URL's token and the org id,
captured once however often Salesforce resends them, and acknowledged with the SOAP Ack."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from crms.mocks.models import MockRecord
from crms.models import Connection
from crms.services import connection_save
from sync.models import SyncEvent, SyncJob
from tests.conftest import drain, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "om-token-for-tests"
ORG = "00D5e000000KQ2eEAG"


@pytest.fixture
def salesforce(live_server) -> Connection:
    connection = mock_salesforce(live_server.url)
    return connection_save(
        name="salesforce",
        kind="salesforce",
        config={**connection.config, "organization_id": ORG},
        secrets={"outbound_message_token": TOKEN},
    )


def message(org: str = ORG, stamp: str | None = "2026-11-25T10:00:00.000Z", **fields: str) -> bytes:
    """A notifications() call as Salesforce sends it for a Contact workflow rule."""
    values = {"Id": "003D000000Q8Bb2IAF", "LastName": "Hopper", "Email": "grace@example.com", **fields}
    if stamp is not None:
        values["SystemModstamp"] = stamp
    sobject = "".join(f"<sf:{name}>{value}</sf:{name}>" for name, value in values.items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5e000000CaRkAAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/62.0/{org[:15]}</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/62.0/{org[:15]}</PartnerUrl>
   <Notification>
    <Id>04l5e00000Gx7QzAAJ</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{sobject}
     <sf:Title xsi:nil="true"/></sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()


def deliver(body: bytes, token: str | None = TOKEN) -> Any:
    query = f"?token={token}" if token is not None else ""
    return APIClient().post(f"/v1/webhooks/salesforce{query}", data=body, content_type="text/xml; charset=utf-8")


def test_a_message_is_captured_acknowledged_and_reaches_system_a(salesforce, system_a):
    answer = deliver(message())
    drain(system_a)

    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/xml")
    assert b"<Ack>true</Ack>" in answer.content
    event = SyncEvent.objects.get(source="salesforce")
    assert (event.object_type, event.operation, event.record_id) == (
        "Contact",
        "create",
        "salesforce-003D000000Q8Bb2IAF",
    )
    assert event.payload == {"LastName": "Hopper", "Email": "grace@example.com"}
    (record,) = MockRecord.objects.filter(system="system_a")
    assert record.fields["Email"] == "grace@example.com"


def test_a_resent_message_is_acknowledged_and_captured_once(salesforce, system_a):
    first, again = deliver(message()), deliver(message())

    assert first.status_code == again.status_code == 200 and b"<Ack>true</Ack>" in again.content
    assert SyncEvent.objects.filter(source="salesforce").count() == 1
    assert SyncJob.objects.filter(source="salesforce").get().version == 1


def refusal(answer: Any, caplog: Any) -> tuple[str, str]:
    """Every refusal answers the same 401 (issue 15: names could be listed); the log says which field and why."""
    assert answer.status_code == 401 and answer.json()["error"]["fields"][0]["field"] == "signature"
    (logged,) = [r for r in caplog.records if r.getMessage() == "webhook refused"]
    return getattr(logged, "header", ""), logged.reason


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_message_without_this_connections_token_is_refused_naming_it(salesforce, token, caplog):
    answer = deliver(message(), token=token)

    assert refusal(answer, caplog)[0] == "token"
    assert not SyncEvent.objects.exists()


def test_a_message_from_another_org_is_refused(salesforce, caplog):
    answer = deliver(message(org="00D000000000001AAA"))

    assert refusal(answer, caplog)[0] == "OrganizationId"
    assert not SyncEvent.objects.exists()


def test_a_connection_without_a_token_takes_no_messages(live_server, caplog):
    mock_salesforce(live_server.url)

    answer = deliver(message())

    assert "outbound_message_token" in refusal(answer, caplog)[1]


def test_a_message_without_systemmodstamp_is_refused_with_the_fix(salesforce):
    answer = deliver(message(stamp=None))

    assert answer.status_code == 400 and "SystemModstamp" in answer.json()["error"]["message"]
    assert not SyncEvent.objects.exists()


def test_entities_and_doctypes_are_refused_not_expanded(salesforce):
    hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'

    answer = deliver(hostile)

    assert answer.status_code == 400 and "DTD" in answer.json()["error"]["message"]

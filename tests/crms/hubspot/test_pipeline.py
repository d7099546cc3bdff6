"""HubSpot in the whole pipeline, both ways: a contact posted to the API reaches the mock HubSpot, and a
change a HubSpot user makes there comes back to System A (by search polling, and by a signed webhook)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core.management import call_command
from django_q.conf import Conf
from hubspot.utils.signature import Signature

from crms.hubspot import mock as hubspot_mock
from crms.hubspot import mock_store
from crms.mocks.models import MockRecord
from crms.models import Connection
from sync.delivery.engine import throttled_connector
from sync.inbound.changes import poll
from sync.management.commands.sync_dispatch import Command as Dispatcher
from sync.models import RecordLink, SyncEvent, SyncJob
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def post_contact(api: Any, **data: Any) -> None:
    body = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": data}
    response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content


def in_system_a(record_id: str = "c-1") -> dict[str, Any]:
    return dict(MockRecord.objects.get(system="system_a", record_id=record_id, deleted_at__isnull=True).fields)


def test_a_contact_reaches_hubspot_and_a_change_made_there_comes_back(
    api: Any, hubspot: Connection, system_a: Connection
) -> None:
    post_contact(api, email="Ada@Example.com", firstname="Ada")
    assert drain(hubspot)["claimed"] == 1
    [contact] = mock_store.live("contacts")
    assert contact.fields == {"email": "ada@example.com", "firstname": "Ada"}
    assert RecordLink.objects.get(system=hubspot, record_id="c-1").external_id == contact.record_id

    mock_store.staff_push("contacts", [{"id": contact.record_id, "lastname": "Lovelace"}], [])
    polled = poll(connection=hubspot, object_type="contact", connector=throttled_connector(hubspot), owner="t")
    drain(system_a)

    assert polled.counts.get("captured") == 1, polled.counts
    event = SyncEvent.objects.filter(source="hubspot").get()
    assert event.record_id == "c-1" and (event.payload or {})["lastname"] == "Lovelace"
    assert in_system_a()["lastname"] == "Lovelace"


def test_a_signed_webhook_delivery_brings_a_hubspot_change_to_system_a(
    api: Any, client: Any, hubspot: Connection, system_a: Connection
) -> None:
    post_contact(api, email="grace@example.com", firstname="Grace")
    drain(hubspot)
    [contact] = mock_store.live("contacts")
    mock_store.staff_push("contacts", [{"id": contact.record_id, "jobtitle": "Admiral"}], [])
    body = json.dumps(
        [
            {
                "objectId": int(contact.record_id),
                "subscriptionType": "contact.propertyChange",
                "occurredAt": 1,
                "propertyName": "jobtitle",
                "propertyValue": "Admiral",
                "eventId": 9,
                "attemptNumber": 0,
            }
        ]
    )
    uri = "http://testserver/v1/webhooks/hubspot"
    stamp = str(int(datetime.now(UTC).timestamp() * 1000))
    secret = hubspot_mock.app_client_secret()
    signature = Signature.get_signature(secret, body, http_uri=uri, signature_version="v3", timestamp=stamp)

    refused = client.post(
        "/v1/webhooks/hubspot",
        data=body,
        content_type="application/json",
        HTTP_X_HUBSPOT_SIGNATURE_V3="forged",
        HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=stamp,
    )
    answer = client.post(
        "/v1/webhooks/hubspot",
        data=body,
        content_type="application/json",
        HTTP_X_HUBSPOT_SIGNATURE_V3=signature,
        HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=stamp,
    )
    drain(system_a)

    assert refused.status_code == 401 and answer.status_code == 200, answer.content
    assert in_system_a()["jobtitle"] == "Admiral"


def test_under_the_demo_set_up_a_contact_crosses_to_hubspot_and_a_hubspot_edit_comes_back(
    live_server: Any, monkeypatch: pytest.MonkeyPatch, settings: Any, api: Any
) -> None:
    """`make run`'s own set-up (load_demo: the mock connections and demo rules) driven by the dispatcher's passes."""
    monkeypatch.setenv("PORT", str(urlsplit(live_server.url).port))
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 tasks run in line
    call_command("load_demo", stdout=StringIO())
    dispatcher = Dispatcher(stdout=StringIO(), stderr=StringIO())
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        post_contact(api, email="Hedy@Example.com", first_name="Hedy", last_name="Kiesler")
        clock.shift(timedelta(seconds=5))  # an unfilled batch is sent once it is old enough
        for _ in range(6):
            dispatcher.dispatch_pass()
        [contact] = mock_store.live("contacts")
        mock_store.staff_push("contacts", [{"id": contact.record_id, "lastname": "Lamarr"}], [])
        clock.shift(timedelta(minutes=2))  # a poll of HubSpot is due
        for _ in range(6):
            dispatcher.dispatch_pass()
        clock.shift(timedelta(seconds=5))  # and the change it found is sent on to System A
        for _ in range(6):
            dispatcher.dispatch_pass()

    assert contact.fields == {"email": "hedy@example.com", "firstname": "Hedy", "lastname": "Kiesler"}
    assert in_system_a()["last_name"] == "Lamarr"


def test_a_record_the_service_wrote_is_read_back_as_an_echo_not_a_change(
    api: Any, hubspot: Connection, system_a: Connection
) -> None:
    post_contact(api, email="echo@example.com", firstname="Echo")
    drain(hubspot)

    polled = poll(connection=hubspot, object_type="contact", connector=throttled_connector(hubspot), owner="t")

    assert polled.counts == {"echo": 1}
    assert not SyncJob.objects.filter(source="hubspot").exists()  # kept in the log as an echo, sent nowhere

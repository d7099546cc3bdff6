"""The System A webhook connector over real HTTP against the local mock System A."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crms.base import ConnectorError, OutboundRecord
from crms.http import HttpClient
from crms.mocks.models import MockCall, MockRecord
from crms.models import Connection
from crms.state import DatabaseStateStore
from crms.systema import mock as system_a_mock
from crms.systema.connector import SystemAConnector
from crms.systema.signing import sign, verify

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def connector(live_server, settings) -> SystemAConnector:
    return SystemAConnector(
        config={"url": f"{live_server.url}/mock/system_a"},
        secrets={"signing_secret": system_a_mock.signing_secret()},
        http=HttpClient(connection_name="system_a"),
        store=DatabaseStateStore(Connection.objects.create(name="system_a", kind="system_a")),
    )


def upsert(source_id: str, external_id: str | None = None, **fields: Any) -> OutboundRecord:
    return OutboundRecord(source_id, "contact", "upsert", {"email": "ada@example.com", **fields}, external_id)


def in_system_a() -> list[MockRecord]:
    return list(MockRecord.objects.filter(system="system_a", deleted_at__isnull=True))


def test_a_create_answers_with_system_as_id_which_becomes_the_link(connector):
    (result,) = connector.push([upsert("003SF0000000001AAA")])

    assert result.outcome == "created"
    assert result.external_id is not None and result.external_id.startswith("A-")
    assert [r.record_id for r in in_system_a()] == [result.external_id]


def test_an_update_through_the_link_changes_the_same_record(connector):
    (created,) = connector.push([upsert("003SF")])
    (updated,) = connector.push([upsert("003SF", created.external_id, email="new@example.com")])

    assert updated.outcome == "updated" and updated.external_id == created.external_id
    assert [r.fields["email"] for r in in_system_a()] == ["new@example.com"]


def test_a_retry_of_the_same_state_is_answered_not_applied_twice(connector):
    first = connector.push([upsert("003SF")])
    again = connector.push([upsert("003SF")])  # as after a crash that lost the first answer

    assert first == again
    assert len(in_system_a()) == 1


def test_a_wrong_secret_is_refused_permanently(connector):
    connector.secrets = {"signing_secret": "not-the-one"}

    (result,) = connector.push([upsert("003SF")])

    assert result.error is not None
    assert (result.error.code, result.error.permanent, result.error.http_status) == ("bad_signature", True, 401)
    assert in_system_a() == []


def test_a_stale_timestamp_is_refused(connector):
    connector.clock = lambda: time.time() - 600

    (result,) = connector.push([upsert("003SF")])

    assert result.error is not None and result.error.code == "bad_signature"


def test_an_unavailable_system_a_fails_the_rest_of_the_batch_without_calling_it(connector, staff_api):
    staff_api.post("/v1/crms/mock/system_a/faults", {"status": 503, "calls": 1, "retry_after": 30}, format="json")
    before = MockCall.objects.filter(system="system_a").count()

    results = connector.push([upsert("a"), upsert("b"), upsert("c")])

    assert [(r.outcome, r.error.permanent if r.error else None) for r in results] == [("error", False)] * 3
    assert results[0].error is not None and results[0].error.retry_after == 30
    assert MockCall.objects.filter(system="system_a").count() == before + 1


def test_delete_removes_the_record_and_a_missing_one_counts_as_deleted(connector):
    (created,) = connector.push([upsert("003SF")])
    gone = OutboundRecord("003SF", "contact", "delete", external_id=created.external_id)

    assert [r.outcome for r in connector.push([gone])] == ["deleted"]
    assert [r.outcome for r in connector.push([OutboundRecord("x", "contact", "delete", external_id="A-none")])] == [
        "deleted"
    ]
    assert in_system_a() == []


def test_read_returns_what_system_a_holds(connector):
    (created,) = connector.push([upsert("003SF", email="a@example.com")])
    assert created.external_id is not None

    assert connector.read("contact", [created.external_id, "A-missing"]) == {
        created.external_id: {"email": "a@example.com"}
    }


def test_check_reports_a_signature_mismatch(connector):
    assert connector.check().ok
    connector.secrets = {"signing_secret": "wrong"}
    assert "signing_secret" in connector.check().message


def test_system_a_is_never_polled(connector):
    with pytest.raises(ConnectorError) as raised:
        connector.changes("contact", None)
    assert raised.value.permanent


def test_signatures_bind_the_body_and_the_time():
    body = b'{"a":1}'
    signature = sign("s", 1_000_000, body)

    assert verify("s", "1000000", body, signature, now=1_000_100)
    assert not verify("s", "1000000", b'{"a":2}', signature, now=1_000_100)
    assert not verify("s", "1000000", body, signature, now=1_000_000 + 301)
    assert not verify("other", "1000000", body, signature, now=1_000_100)
    assert not verify("s", "1000000", body, "v1=" + "é" * 64, now=1_000_100)  # a TypeError (500) before issue 15

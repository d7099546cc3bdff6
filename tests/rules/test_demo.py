"""The demo rule set `make run` loads is valid and routes the README's events."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from rules.models import Rule

pytestmark = pytest.mark.django_db


def test_load_demo_creates_connections_and_rules_and_is_safe_to_run_twice():
    first, second = StringIO(), StringIO()
    call_command("load_demo", stdout=first)
    call_command("load_demo", stdout=second)

    assert "loaded 7 demo rules (rule set v1)" in first.getvalue()
    assert "kept the 7 rules in place" in second.getvalue()
    assert Rule.objects.count() == 7


def test_the_readmes_events_are_routed_by_the_demo_rules(api):
    call_command("load_demo", stdout=StringIO())

    def post(body: object) -> dict[str, object]:
        response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 202, response.content
        result: dict[str, object] = response.json()
        return result

    contact = post(
        {
            "operation": "create",
            "record_id": "c-42",
            "object_type": "contact",
            "data": {"email": "Ada@Example.com", "first_name": "Ada"},
        }
    )
    test_delete = post({"operation": "delete", "record_id": "test-1", "object_type": "account"})
    inbound = post(
        {
            "operation": "update",
            "record_id": "003XYZ",
            "object_type": "Contact",
            "source": "salesforce",
            "data": {"Email": "grace@example.com", "LastName": "Hopper"},
        }
    )

    assert contact["routing"]["targets"] == ["salesforce", "outreach", "hubspot"]  # type: ignore[index]
    assert contact["routing"]["payloads"]["hubspot"]["fields"]["email"] == "ada@example.com"  # type: ignore[index]
    assert contact["routing"]["payloads"]["salesforce"]["fields"]["LastName"] == "Unknown"  # type: ignore[index]
    # Both rules match the delete; the skip wins for every target, and says why.
    assert test_delete["jobs"] == []
    assert test_delete["routing"]["matched"] == ["skip-test-account-deletes", "accounts"]  # type: ignore[index]
    assert {s["reason"] for s in test_delete["routing"]["skipped"]} == {  # type: ignore[index]
        "test accounts are never deleted in the CRMs"
    }
    # FirstName was not in the change: it is left out, not sent as null.
    assert inbound["routing"]["payloads"]["system_a"]["fields"] == {  # type: ignore[index]
        "email": "grace@example.com",
        "last_name": "Hopper",
    }
    update = post(
        {"operation": "update", "record_id": "c-42", "object_type": "contact", "data": {"email": "ada@example.com"}}
    )
    assert update["routing"]["payloads"]["salesforce"]["fields"] == {"Email": "ada@example.com"}  # type: ignore[index]


def test_load_demo_registers_one_signed_webhook_in_the_mock_outreach(settings):
    from crms import secrets
    from crms.mocks.models import MockRecord
    from crms.models import Connection

    settings.MOCK_CRMS_ENABLED = True
    call_command("load_demo", stdout=StringIO())
    call_command("load_demo", stdout=StringIO())

    (hook,) = MockRecord.objects.filter(system="outreach", object="webhook")
    stored = secrets.decrypt(Connection.objects.get(name="outreach").secrets_encrypted)
    assert hook.fields["url"].endswith("/v1/webhooks/outreach")
    assert hook.fields["secret"] == stored["webhook_secret"]

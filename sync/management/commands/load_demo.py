"""Demo data for `make run`: connections pointing at the local mock CRMs. Safe to run twice."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from crms.mocks.models import MockRecord
from crms.models import Connection
from crms.outreach import mock_store as outreach_store
from crms.services import connection_save
from rules.demo import DEMO_RULES
from rules.models import Rule
from rules.services import rule_set_replace


def _mock_url(system: str) -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/mock/{system}"


def _salesforce() -> dict[str, Any]:
    return {
        "config": {
            "login_url": _mock_url("salesforce"),
            "instance_url": _mock_url("salesforce"),
            "auth": "client_credentials",
            "client_id": settings.MOCK_SALESFORCE_CLIENT_ID,
            "external_id_field": "RecordSync_Id__c",
        },
        "secrets": {"client_secret": settings.MOCK_SALESFORCE_CLIENT_SECRET},
    }


def _system_a() -> dict[str, Any]:
    return {
        "config": {"url": _mock_url("system_a")},
        "secrets": {"signing_secret": settings.MOCK_SYSTEM_A_SIGNING_SECRET},
    }


def _outreach() -> dict[str, Any]:
    return {
        "config": {
            "client_id": settings.MOCK_OUTREACH_CLIENT_ID,
            "api_url": f"{_mock_url('outreach')}/api/v2",
            "token_url": f"{_mock_url('outreach')}/oauth/token",
        },
        "secrets": {
            "client_secret": settings.MOCK_OUTREACH_CLIENT_SECRET,
            "refresh_token": settings.MOCK_OUTREACH_REFRESH_TOKEN,
            "webhook_secret": _demo_webhook_secret(),
        },
    }


def _demo_webhook_secret() -> str:
    """Derived from SECRET_KEY: stable across runs, never a shared constant."""
    return hashlib.sha256(f"demo-outreach-webhook:{settings.SECRET_KEY}".encode()).hexdigest()


def _outreach_webhook_register() -> bool:
    """The mock Outreach calls the service's receiver on every change (as a registered webhook would)."""
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/v1/webhooks/outreach"
    hooks = MockRecord.objects.filter(system="outreach", object=outreach_store.WEBHOOKS, deleted_at__isnull=True)
    if any(hook.fields.get("url") == url for hook in hooks):
        return False
    next_id = (
        max(
            (int(h.record_id) for h in MockRecord.objects.filter(system="outreach") if h.record_id.isdigit()), default=0
        )
        + 1
    )
    registration = {"resource": "*", "action": "*", "url": url, "secret": _demo_webhook_secret()}
    MockRecord.objects.create(
        system="outreach", object=outreach_store.WEBHOOKS, record_id=str(next_id), fields=registration
    )
    return True


DEMO = {"salesforce": _salesforce, "outreach": _outreach, "system_a": _system_a}


class Command(BaseCommand):
    help = "Create the demo connections (on the local mocks) and the demo rule set, if missing."

    def handle(self, *args: Any, **options: Any) -> None:
        created: list[str] = []
        for name, build in DEMO.items():
            existing = Connection.objects.filter(name=name).first()
            if existing is not None and existing.config:
                self.stdout.write(f"kept connection {name}")
                continue
            connection_save(name=name, kind=name, **build())
            created.append(name)
            self.stdout.write(f"created connection {name} (local mock)")
        # Only beside the demo connection made here, which holds the same webhook_secret.
        if settings.MOCK_CRMS_ENABLED and "outreach" in created and _outreach_webhook_register():
            self.stdout.write("registered the demo webhook in the mock Outreach")
        if Rule.objects.exists():
            self.stdout.write(f"kept the {Rule.objects.count()} rules in place")
        else:
            version = rule_set_replace(specs=DEMO_RULES, actor="load_demo")
            self.stdout.write(f"loaded {len(DEMO_RULES)} demo rules (rule set v{version})")

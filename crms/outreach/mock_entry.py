"""The mock Outreach org as the rest of the service sees it (crms.mocks.declare)."""

from __future__ import annotations

import hashlib

from django.conf import settings

from crms.mocks.declare import DemoConnection, Mock
from crms.mocks.models import MockRecord
from crms.outreach import mock, mock_store


def _webhook_secret() -> str:
    """Derived from SECRET_KEY: stable across runs, never a shared constant."""
    return hashlib.sha256(f"demo-outreach-webhook:{settings.SECRET_KEY}".encode()).hexdigest()


def _demo(base_url: str) -> DemoConnection:
    return DemoConnection(
        config={
            "client_id": mock.app_client_id(),
            "api_url": f"{base_url}/api/v2",
            "token_url": f"{base_url}/oauth/token",
            "authorize_url": f"{base_url}/oauth/authorize",
        },
        secrets={
            "client_secret": mock.app_client_secret(),
            "refresh_token": mock.first_refresh_token(),
            "webhook_secret": _webhook_secret(),
        },
    )


def _webhook_register(service_url: str) -> str:
    """The mock Outreach calls the service's receiver on every change, as a registered webhook would.

    Only beside the demo connection made by the same run, which holds the same webhook_secret.
    """
    url = f"{service_url}/v1/webhooks/outreach"
    hooks = MockRecord.objects.filter(system=mock_store.SYSTEM, object=mock_store.WEBHOOKS, deleted_at__isnull=True)
    if any(hook.fields.get("url") == url for hook in hooks):
        return ""
    ids = MockRecord.objects.filter(system=mock_store.SYSTEM).values_list("record_id", flat=True)
    next_id = max((int(i) for i in ids if i.isdigit()), default=0) + 1
    registration = {"resource": "*", "action": "*", "url": url, "secret": _webhook_secret()}
    MockRecord.objects.create(
        system=mock_store.SYSTEM, object=mock_store.WEBHOOKS, record_id=str(next_id), fields=registration
    )
    return "registered the demo webhook in the mock Outreach"


MOCK = Mock(
    urls="crms.outreach.mock_urls",
    staff_push=mock_store.staff_push,
    as_row=mock_store.as_row,
    demo=_demo,
    demo_after=_webhook_register,
    secrets=("MOCK_OUTREACH_CLIENT_SECRET", "MOCK_OUTREACH_REFRESH_TOKEN"),
)

"""The mock HubSpot account as the rest of the service sees it (crms.mocks.declare)."""

from __future__ import annotations

from crms.hubspot import mock, mock_store
from crms.mocks.declare import DemoConnection, Mock

# `make run`: contacts with an email also go to HubSpot, beside the demo rule set's Salesforce and Outreach, and
# contacts changed in HubSpot come back to System A.
DEMO_RULES = [
    {
        "name": "contacts-to-hubspot",
        "order": 12,
        "description": "Contacts with an email go to HubSpot as contacts, upserted by email.",
        "match_source": "system_a",
        "match_object_type": "contact",
        "match_operations": ["create", "update", "delete"],
        "condition": 'operation == "delete" or data.email != null',
        "action": "sync",
        "targets": [
            {
                "target": "hubspot",
                "object": "contact",
                "mapping": {
                    "email": "$lower(data.email)",
                    "firstname": "data.first_name",
                    "lastname": "data.last_name",
                    "phone": "data.phone",
                },
            }
        ],
    },
    {
        "name": "contacts-from-hubspot",
        "order": 45,
        "description": "Contacts changed in HubSpot come back to System A.",
        "match_source": "hubspot",
        "match_object_type": "contact",
        "action": "sync",
        "targets": [
            {
                "target": "system_a",
                "object": "contact",
                "mapping": {"email": "data.email", "first_name": "data.firstname", "last_name": "data.lastname"},
            }
        ],
    },
]


def _demo(base_url: str) -> DemoConnection:
    return DemoConnection(
        config={
            "auth": "private_app",
            "api_url": base_url,
            # The admin's Connect on this connection links an account of the mock through its consent page.
            "client_id": mock.app_client_id(),
            "authorize_url": f"{base_url}/oauth/authorize",
            "token_url": f"{base_url}/oauth/v1/token",
        },
        secrets={"access_token": mock.private_app_token(), "client_secret": mock.app_client_secret()},
    )


MOCK = Mock(
    urls="crms.hubspot.mock_urls",
    staff_push=mock_store.staff_push,
    as_row=mock_store.as_row,
    demo=_demo,
    demo_rules=DEMO_RULES,
    secrets=("MOCK_HUBSPOT_CLIENT_SECRET", "MOCK_HUBSPOT_PRIVATE_APP_TOKEN", "MOCK_HUBSPOT_REFRESH_TOKEN"),
)

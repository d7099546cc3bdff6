"""The mock Salesforce org as the rest of the service sees it (crms.mocks.declare)."""

from __future__ import annotations

from crms.mocks.declare import DemoConnection, Mock
from crms.salesforce import mock, mock_store


def _demo(base_url: str) -> DemoConnection:
    return DemoConnection(
        config={
            "login_url": base_url,
            "instance_url": base_url,
            "auth": "client_credentials",
            "client_id": mock.app_client_id(),
            "external_id_field": "RecordSync_Id__c",
        },
        secrets={"client_secret": mock.app_client_secret()},
    )


MOCK = Mock(
    urls="crms.salesforce.mock_urls",
    staff_push=mock_store.staff_push,
    as_row=mock_store.as_row,
    demo=_demo,
    secrets=("MOCK_SALESFORCE_CLIENT_SECRET",),
)

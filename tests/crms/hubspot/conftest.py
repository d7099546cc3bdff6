from __future__ import annotations

from typing import Any

import pytest

from crms.hubspot import mock as hubspot_mock
from crms.models import Connection


def mock_hubspot(base_url: str, **config: Any) -> Connection:
    """A `hubspot` connection to the mock account served at `base_url` (a live server), by private-app token."""
    from crms.services import connection_save

    return connection_save(
        name="hubspot",
        kind="hubspot",
        config={"auth": "private_app", "api_url": f"{base_url}/mock/hubspot", **config},
        secrets={"access_token": hubspot_mock.private_app_token(), "client_secret": hubspot_mock.app_client_secret()},
    )


@pytest.fixture
def hubspot(live_server: Any) -> Connection:
    return mock_hubspot(live_server.url)

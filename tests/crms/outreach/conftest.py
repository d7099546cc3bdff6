"""The mock Outreach's API through Django's test client, holding a valid access token."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from crms.mocks.models import MockToken

JSONAPI = "application/vnd.api+json"
PREFIX = "/mock/outreach/api/v2"


class MockOutreach:
    def __init__(self, client: Client) -> None:
        self.client = client
        token = MockToken.objects.create(
            system="outreach", token="test-access-token", expires_at=timezone.now() + timedelta(hours=2)
        )
        self.headers = {"Authorization": f"Bearer {token.token}"}

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.get(f"{PREFIX}{path}", params or {}, headers=self.headers)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(f"{PREFIX}{path}", json.dumps(body), content_type=JSONAPI, headers=self.headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(f"{PREFIX}{path}", json.dumps(body), content_type=JSONAPI, headers=self.headers)

    def delete(self, path: str) -> Any:
        return self.client.delete(f"{PREFIX}{path}", headers=self.headers)

    def create(self, kind: str, relationships: dict[str, Any] | None = None, /, **attributes: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"type": kind, "attributes": attributes}
        if relationships:
            data["relationships"] = relationships
        answer = self.post(f"/{kind}s", {"data": data})
        assert answer.status_code == 201, answer.content
        created: dict[str, Any] = answer.json()["data"]
        return created


@pytest.fixture
def outreach_api(db: None, settings: Any) -> MockOutreach:
    settings.MOCK_CRMS_ENABLED = True
    return MockOutreach(Client())

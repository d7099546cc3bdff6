"""Every /v1 route, called by anonymous, a token with no scope, a token with every scope and a staff token (issue 15),
generated from the URL conf through the published schema: a route added later is covered without an edit."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from rest_framework.test import APIClient

from sync.api.auth import api_token_create
from sync.models import TokenScope

pytestmark = pytest.mark.django_db

# Who may call what: open to a delivery's own signature, staff only, or a scope of the token.
WEBHOOK = "/v1/webhooks/{connection}"
STAFF_ONLY = re.compile(r"^/v1/(sync/rules|sync/config|sync/connections|crms/mock)")


def routes() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    paths = json.loads(OpenApiJsonRenderer().render(schema))["paths"]
    return sorted(
        (method.upper(), path)
        for path, methods in paths.items()
        for method in methods
        if path.startswith("/v1/") and method in ("get", "post", "put", "patch", "delete")
    )


ROUTES = routes()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "00000000-0000-0000-0000-000000000000" if "id" in m.group() else "x", path)


def call(client: APIClient, method: str, path: str) -> int:
    response = client.generic(method, concrete(path), data="{}", content_type="application/json")
    return int(response.status_code)


def client_for(**grant: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(**grant)}")
    return client


def test_the_matrix_covers_the_whole_api():
    assert len(ROUTES) >= 15 and ("POST", "/v1/sync/") in ROUTES and ("POST", WEBHOOK) in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_each_route_answers_each_kind_of_caller_as_documented(method: str, path: str, connections: Any) -> None:
    anonymous = call(APIClient(), method, path)
    unscoped = call(client_for(username="nothing", scopes=[], sources=[]), method, path)
    scoped = call(client_for(username="everything", scopes=TokenScope.values, sources=["*"]), method, path)
    staff = call(client_for(username="ops", staff=True), method, path)

    assert anonymous == 401, (method, path, anonymous)  # a webhook's missing signature is a 401 too
    if path == WEBHOOK:
        assert unscoped == scoped == staff == 401  # tokens mean nothing there: the signature is the credential
    elif STAFF_ONLY.match(path):
        assert unscoped == scoped == 403 and staff not in (401, 403), (unscoped, scoped, staff)
    elif path.startswith("/v1/crms/") or path.startswith("/v1/schema"):
        assert unscoped not in (401, 403) and scoped not in (401, 403)  # any token: the kinds and their schemas
    else:
        assert unscoped == 403 and scoped not in (401, 403) and staff not in (401, 403), (unscoped, scoped, staff)

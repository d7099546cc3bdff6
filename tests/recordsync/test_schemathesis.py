"""Schemathesis over the whole published schema (issue 15): generated requests — valid, and invalid on purpose — to
every /v1 operation as a staff token with every scope. None may answer 5xx, and every answer must be one the schema
documents, in the declared content type and shape.

Requests go in-process through the WSGI handler, inside the test's transaction: no server, no commit, so
queued work never runs and each operation starts from the same connections and rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sync.api.auth import ANY_SOURCE, api_token_create
from sync.models import TokenScope


def _schema_document() -> dict[str, Any]:
    generated = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    document: dict[str, Any] = json.loads(OpenApiJsonRenderer().render(generated))
    return document


schema = schemathesis.openapi.from_dict(_schema_document())
schema.app = WSGIHandler()

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def token(db: None, connections: Any) -> Iterator[str]:
    # The handler would close the test's connection (and its transaction) after each request, as Django's own
    # test client keeps it from doing.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield api_token_create(username="fuzz", staff=True, scopes=TokenScope.values, sources=[ANY_SOURCE])
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(case: Any, token: str) -> None:
    case.call_and_validate(base_url="http://testserver", headers={"Authorization": f"Token {token}"}, checks=CHECKS)


def test_the_run_covers_every_operation() -> None:
    # A schema that lost its paths would make the test above pass by having nothing to try.
    document = _schema_document()
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    tried = {(operation.method.upper(), operation.path) for operation in operations}
    assert tried == documented and len(tried) >= 19
    assert ("POST", "/v1/sync/") in tried and ("POST", "/v1/webhooks/{connection}") in tried

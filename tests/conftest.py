"""Shared fixtures: an API client that checks every /v1 answer against the OpenAPI schema,
connections, and the service markers (postgres, redis) that skip on the embedded default."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from openapi_core import OpenAPI
from openapi_core.templating.paths.exceptions import PathNotFound
from openapi_core.testing import MockRequest, MockResponse
from pytest_django.fixtures import validate_django_db
from rest_framework.test import APIClient

from crms.models import Connection
from crms.outreach import mock as outreach_mock
from crms.salesforce import mock as salesforce_mock
from crms.systema import mock as system_a_mock
from sync.api.auth import ANY_SOURCE, api_token_create
from sync.models import TokenScope

REQUIRE_SERVICES = os.environ.get("RECORDSYNC_REQUIRE_SERVICES") == "1"
HOW_TO_RUN = "DATABASE_URL=postgres://postgres@127.0.0.1:5432/recordsync REDIS_URL=redis://127.0.0.1:6379/0 make test"


def _transactional(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("django_db")
    transaction, reset_sequences, *_ = validate_django_db(marker) if marker else (False, False)
    fixtures = getattr(item, "fixturenames", [])
    return bool(transaction or reset_sequences or "transactional_db" in fixtures or "live_server" in fixtures)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RECORDSYNC_PROOFS_FIRST") == "1":
        # One of CI's two concurrent runs takes its proofs first of its transactional tests (pytest-django has run
        # the others, which see the rows the migrations wrote, before any of them), while the other run keeps
        # them last: the proofs, which take turns (RECORDSYNC_PROOF_LOCK), then seldom wait for each other.
        proofs = [item for item in items if item.get_closest_marker("proof")]
        rest = [item for item in items if not item.get_closest_marker("proof")]
        at = next((n for n, item in enumerate(rest) if _transactional(item)), len(rest))
        items[:] = rest[:at] + proofs + rest[at:]
    on_postgres = connection.vendor == "postgresql"
    on_redis = bool(settings.REDIS_URL)
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason=f"needs PostgreSQL; run: {HOW_TO_RUN}"))
        if "redis" in item.keywords and not on_redis:
            item.add_marker(pytest.mark.skip(reason=f"needs Redis; run: {HOW_TO_RUN}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Against the real services (CI's second run), a skipped test is a failure."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if REQUIRE_SERVICES and skipped:
        if reporter:
            reporter.write_line(f"FAILED: {skipped} test(s) skipped while RECORDSYNC_REQUIRE_SERVICES=1", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """CI runs its two setups at once (.ci/run). Proofs that start real processes and time them take turns
    across both runs, so that each is measured beside ordinary tests only, never beside another proof; the
    wait comes before the test's setup, outside anything it times."""
    lock_path = os.environ.get("RECORDSYNC_PROOF_LOCK")
    if not lock_path or item.get_closest_marker("proof") is None:
        return (yield)
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def openapi_spec() -> OpenAPI:
    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    return OpenAPI.from_dict(json.loads(OpenApiJsonRenderer().render(schema)))


class SchemaCheckedClient(APIClient):
    """Every answer under /v1/ must match the published schema, status code included."""

    spec: OpenAPI

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        request = response.wsgi_request
        path = urlsplit(request.get_full_path()).path
        if path.startswith("/v1/") and not path.startswith("/v1/schema") and self._documented(request.method, path):
            self.spec.validate_response(
                MockRequest("http://testserver", request.method or "get", path, args=dict(request.GET.items())),
                MockResponse(
                    response.content,
                    status_code=response.status_code,
                    headers=dict(response.headers),
                    content_type=response.headers.get("Content-Type", "application/json").split(";")[0],
                ),
            )
        return response

    def _documented(self, method: str | None, path: str) -> bool:
        """A path the schema does not have is not an endpoint (its 404 is checked by the test itself)."""
        try:
            self.spec.validate_request(MockRequest("http://testserver", method or "get", path))
        except PathNotFound:
            return False
        except Exception:
            return True  # the path exists; a bad request is fine, the answer is what we check
        return True


@pytest.fixture
def anon(openapi_spec: OpenAPI) -> SchemaCheckedClient:
    client = SchemaCheckedClient()
    client.spec = openapi_spec
    return client


@pytest.fixture
def api(anon: SchemaCheckedClient, db: None) -> SchemaCheckedClient:
    # Every scope and source: these tests are about what the API does (tests/sync/test_scopes.py: what a token may).
    token = api_token_create(username="platform", scopes=TokenScope.values, sources=[ANY_SOURCE])
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return anon


@pytest.fixture
def staff_api(openapi_spec: OpenAPI, db: None) -> SchemaCheckedClient:
    client = SchemaCheckedClient()
    client.spec = openapi_spec
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(username='ops', staff=True)}")
    return client


@pytest.fixture
def connections(db: None) -> dict[str, Connection]:
    names = [("salesforce", "salesforce"), ("outreach", "outreach"), ("system_a", "system_a")]
    return {name: Connection.objects.create(name=name, kind=kind) for name, kind in names}


def drain(connection: Connection, now: Any = None) -> dict[str, int]:
    """Claim and send every pending batch of a connection in this process; the outcome counts."""
    from django.utils import timezone

    from sync.delivery import engine

    totals: dict[str, int] = {}
    for job_ids in engine.batches_claim(connection=connection, now=now or timezone.now(), force=True):
        for key, count in engine.batch_run(job_ids=job_ids, now=now).items():
            totals[key] = totals.get(key, 0) + count
    return totals


def mock_salesforce(base_url: str, **extra: Any) -> Connection:
    """A `salesforce` connection to the mock org served at `base_url` (a live server)."""
    from crms.services import connection_save

    org = f"{base_url}/mock/salesforce"
    return connection_save(
        name="salesforce",
        kind="salesforce",
        config={
            "login_url": org,
            "instance_url": org,
            "auth": "client_credentials",
            "client_id": salesforce_mock.app_client_id(),
            "external_id_field": "RecordSync_Id__c",
        },
        secrets={"client_secret": salesforce_mock.app_client_secret()},
        **extra,
    )


def mock_outreach(base_url: str, *, webhook_secret: str | None = None, refresh_token: str | None = None) -> Connection:
    """An `outreach` connection to the mock Outreach served at `base_url` (a live server)."""
    from crms.services import connection_save

    base = f"{base_url}/mock/outreach"
    secrets = {
        "client_secret": outreach_mock.app_client_secret(),
        "refresh_token": refresh_token or outreach_mock.first_refresh_token(),
    }
    if webhook_secret is not None:
        secrets["webhook_secret"] = webhook_secret
    return connection_save(
        name="outreach",
        kind="outreach",
        config={
            "client_id": outreach_mock.app_client_id(),
            "api_url": f"{base}/api/v2",
            "token_url": f"{base}/oauth/token",
        },
        secrets=secrets,
    )


def salesforce_minute_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """getDeleted covers only whole minutes that are over: move the mock org's and the connector's
    clocks a minute on instead of waiting for it."""
    from datetime import UTC, datetime, timedelta

    from crms.salesforce import connector as salesforce_connector
    from crms.salesforce import mock_store

    later = datetime.now(UTC) + timedelta(minutes=1)
    monkeypatch.setattr(mock_store, "clock", lambda: later)
    monkeypatch.setattr(salesforce_connector, "utc_now", lambda: later)


def mock_system_a(base_url: str) -> Connection:
    """A `system_a` connection to the mock System A served at `base_url` (a live server)."""
    from crms.services import connection_save

    return connection_save(
        name="system_a",
        kind="system_a",
        config={"url": f"{base_url}/mock/system_a"},
        secrets={"signing_secret": system_a_mock.signing_secret()},
    )


@pytest.fixture
def system_a(live_server: Any) -> Connection:
    return mock_system_a(live_server.url)


@pytest.fixture
def event() -> Iterator[dict[str, Any]]:
    yield {
        "operation": "create",
        "record_id": "c-1",
        "object_type": "contact",
        "data": {"email": "ada@example.com", "first_name": "Ada"},
    }


def loopback_resolver(host: str, port: int, **kwargs: Any) -> list[Any]:
    """Names resolve without a DNS query: an address is itself, localhost is loopback, any other name is
    unknown (tests send nothing off this machine; the CRM hosts they name are answered by `responses`)."""
    import ipaddress
    import socket

    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return [(family, socket.SOCK_STREAM, 6, "", (str(address), port))]


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    from crms import egress

    monkeypatch.setattr(egress, "default_resolver", loopback_resolver)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Each test starts with empty caches (nudge debounce, readiness probe, connections, allowances heard)."""
    from django.core.cache import cache

    from crms.selectors import connections_forget
    from recordsync.auth import verified_tokens_forget
    from rules.selectors import rule_set_forget
    from sync.delivery import allowance, config, dispatch

    cache.clear()
    verified_tokens_forget()
    rule_set_forget()
    config.forget()
    allowance.forget()
    dispatch._last_nudge.clear()
    connections_forget()
    yield

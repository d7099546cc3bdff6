"""The egress policy (issue 15): staff-set URLs, redirects and links reached loopback, private networks and the
cloud's metadata service. Now each is refused before anything is sent, unless a setting allows it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses

from crms.egress import EgressRefused, check
from crms.http import HttpClient


@pytest.fixture(autouse=True)
def public_only(settings: Any) -> None:
    settings.EGRESS_ALLOWED_NETWORKS = []  # production's default (tests otherwise allow loopback for the mocks)
    settings.EGRESS_ALLOWED_HOSTS = []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8000/mock", "a loopback address"),
        ("http://localhost/", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address (cloud metadata lives there)"),
        ("http://10.1.2.3/", "a private address"),
        ("http://192.168.0.10/", "a private address"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://[::1]/", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "a loopback address"),
        ("http://0.0.0.0/", "the unspecified address"),
    ],
)
def test_calls_to_this_host_its_networks_and_cloud_metadata_are_refused(url: str, says: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        HttpClient(connection_name="sf").request("GET", url)

    assert says in refused.value.message and "EGRESS_ALLOWED_HOSTS=" in refused.value.message
    assert refused.value.code == "EGRESS_REFUSED" and refused.value.pause_connection


def test_a_host_resolving_to_any_private_address_is_refused() -> None:
    def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(2, 1, 6, "", ("93.184.216.34", port)), (2, 1, 6, "", ("10.0.0.7", port))]

    with pytest.raises(EgressRefused, match=r"crm\.example\.com resolves to 10\.0\.0\.7, a private address"):
        check("https://crm.example.com/x", resolve=resolve)


def test_a_public_address_and_whatever_the_settings_allow_pass(settings: Any) -> None:
    check("https://93.184.216.34/")
    settings.EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    check("http://127.0.0.1:8000/mock")
    settings.EGRESS_ALLOWED_HOSTS = ["db.internal"]
    check("http://db.internal/", resolve=lambda *a, **k: [(2, 1, 6, "", ("10.0.0.7", 80))])


def test_only_http_and_https_are_called() -> None:
    with pytest.raises(EgressRefused, match="file:// URLs are not called"):
        check("file:///etc/passwd")


@responses.activate
def test_a_redirect_to_cloud_metadata_is_refused_before_it_is_followed() -> None:
    responses.get("https://crm.example.com/api", status=302, headers={"Location": "http://169.254.169.254/latest/"})
    metadata = responses.get("http://169.254.169.254/latest/", body="iam credentials")

    with pytest.raises(EgressRefused, match=r"169\.254\.169\.254"):
        HttpClient(connection_name="sf").request("GET", "https://crm.example.com/api")

    assert metadata.call_count == 0


@responses.activate
def test_a_redirect_to_a_public_host_is_still_followed() -> None:
    responses.get("https://crm.example.com/old", status=301, headers={"Location": "https://93.184.216.34/new"})
    responses.get("https://93.184.216.34/new", json={"ok": True})

    answer = HttpClient(connection_name="sf").request("GET", "https://crm.example.com/old")

    assert answer.json() == {"ok": True} and isinstance(answer, requests.Response)


@pytest.mark.django_db
def test_a_database_connection_may_not_point_at_the_services_own_database(settings: Any) -> None:
    """Issue 15: a database connection could read and write the service's own tables (tokens, secrets)."""
    from django.db import connection as db
    from rest_framework.exceptions import ValidationError

    from crms.services import connection_save
    from tests.crms.database.test_connector import CONTACTS

    ours = db.settings_dict
    if db.vendor == "sqlite":
        url = f"sqlite:///{ours['NAME']}"
    else:
        url = f"postgres://{ours.get('USER') or 'postgres'}@localhost:{ours.get('PORT') or 5432}/{ours['NAME']}"

    with pytest.raises(ValidationError) as refused:
        connection_save(name="own", kind="database", config={"url": url, "tables": {"Contact": CONTACTS}})

    assert "the service's own database" in str(refused.value.detail["config.url"])  # type: ignore[call-overload]


@responses.activate
def test_credentials_a_call_sent_are_taken_out_of_error_texts_kept_afterwards() -> None:
    """Issue 15: error bodies that echo the request (a bearer token, a client secret) landed in last_error,
    which any token with status:read can read."""
    from functools import partial
    from types import SimpleNamespace

    from crms.base import Connector, ConnectorError
    from sync.delivery.engine import _redact_errors

    responses.post("https://93.184.216.34/token", status=400, body="bad client_secret=cs-0123456789")
    http = HttpClient(connection_name="sf")
    http.request(
        "POST",
        "https://93.184.216.34/token",
        headers={"Authorization": "Bearer at-abcdef123456"},
        data={"client_secret": "cs-0123456789", "grant_type": "client_credentials"},
    )
    errors = [ConnectorError("HTTP 400: bad client_secret=cs-0123456789 for Bearer at-abcdef123456; key pk-secret-1")]

    connector = SimpleNamespace(http=http, secrets={"private_key": "pk-secret-1"})
    connector.redact = partial(Connector.redact, connector)  # type: ignore[arg-type]
    _redact_errors(connector, errors)  # type: ignore[arg-type]

    assert errors[0].message == "HTTP 400: bad client_secret=[redacted] for Bearer [redacted]; key [redacted]"
    assert http.redact("grant_type client_credentials") == "grant_type client_credentials"  # not a credential


def test_a_host_found_allowed_is_not_looked_up_again_for_a_while(settings: Any) -> None:
    lookups: list[str] = []

    def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [(2, 1, 6, "", ("93.184.216.34", port))]

    check("https://api.example.org/a", resolve=resolve)
    check("https://api.example.org/b", resolve=resolve)
    settings.EGRESS_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # a changed policy is obeyed at once
    check("https://api.example.org/c", resolve=resolve)

    assert lookups == ["api.example.org", "api.example.org"]

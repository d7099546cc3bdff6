"""The admin's Connect: a staff user links a CRM account by OAuth's authorization-code flow (with state and
PKCE), through the mock CRMs' own consent pages over real HTTP. What comes back refused, tampered with or
stale stores nothing."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from crms import secrets as secret_box
from crms.build import connector_for
from crms.connect import LINK_KEY, challenge_of
from crms.hubspot import mock as hubspot_mock
from crms.mocks.models import MockCall, MockToken
from crms.models import Connection
from crms.services import connection_save
from crms.state import DatabaseStateStore
from tests.conftest import mock_outreach, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "connect-tests-only"))
    return client


def hubspot_app(base_url: str) -> Connection:
    mock = f"{base_url}/mock/hubspot"
    return connection_save(
        name="hubspot",
        kind="hubspot",
        config={
            "api_url": mock,
            "client_id": hubspot_mock.app_client_id(),
            "authorize_url": f"{mock}/oauth/authorize",
            "token_url": f"{mock}/oauth/v1/token",
        },
        secrets={"client_secret": hubspot_mock.app_client_secret()},
    )


def outreach_app(base_url: str) -> Connection:
    connection = mock_outreach(base_url)
    config = {**connection.config, "authorize_url": f"{base_url}/mock/outreach/oauth/authorize"}
    return connection_save(name="outreach", kind="outreach", config=config, secrets={"refresh_token": ""})


def salesforce_app(base_url: str) -> Connection:
    """A connected app that allows the web-server flow: Connect switches the connection to it."""
    return mock_salesforce(base_url)


APPS = {"hubspot": hubspot_app, "outreach": outreach_app, "salesforce": salesforce_app}


def start(staff: Client, connection: Connection) -> tuple[str, dict[str, str]]:
    """Click Connect: the redirect to the provider's consent page, and its query."""
    answer = staff.get(reverse("admin:crms_connection_connect", args=[connection.pk]))
    assert answer.status_code == 302, answer.content
    where = urlsplit(answer["Location"])
    return answer["Location"], {k: v[0] for k, v in parse_qs(where.query).items()}


def consent(authorize_url: str, decision: str = "allow") -> dict[str, str]:
    """The user's click on the consent page: where the provider sends the browser back to."""
    page = requests.get(authorize_url, timeout=10)
    assert page.status_code == 200 and 'id="allow"' in page.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    back = requests.post(
        authorize_url.split("?")[0], data={**query, "decision": decision}, allow_redirects=False, timeout=10
    )
    assert back.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(back.headers["Location"]).query).items()}


def finish(staff: Client, answer: dict[str, str]) -> Any:
    return staff.get(reverse("admin:crms_connection_callback"), answer)


def stored(connection: Connection) -> dict[str, Any]:
    return secret_box.decrypt(Connection.objects.get(pk=connection.pk).secrets_encrypted)


@pytest.mark.parametrize("kind", sorted(APPS))
def test_connect_sends_the_user_to_consent_and_stores_the_tokens_encrypted(staff, live_server, kind) -> None:
    connection = APPS[kind](live_server.url)
    authorize_url, asked = start(staff, connection)

    back = finish(staff, consent(authorize_url))

    assert back.status_code == 302 and back["Location"] == reverse("admin:crms_connection_change", args=[connection.pk])
    assert asked["redirect_uri"] == "http://testserver/admin/crms/connection/oauth/callback/"
    assert asked["code_challenge_method"] == "S256" and len(asked["state"]) >= 40
    refresh = stored(connection)["refresh_token"]
    assert refresh and refresh not in Connection.objects.get(pk=connection.pk).secrets_encrypted  # encrypted
    link = DatabaseStateStore(connection).get(LINK_KEY)
    assert link["account"] and link["scopes"] and link["by"] == "ops"
    linked = Connection.objects.get(pk=connection.pk)
    result = connector_for(linked).check()
    assert result.ok, result.message  # the linked account works, on the access token just stored
    page = staff.get(reverse("admin:crms_connection_change", args=[connection.pk]))
    assert b'id="oauth-account"' in page.content and link["account"].encode() in page.content
    assert b'id="oauth-disconnect"' in page.content and b'id="oauth-reconnect"' in page.content


def test_hubspot_is_switched_to_oauth_and_the_account_is_the_hub(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    authorize_url, _ = start(staff, connection)

    finish(staff, consent(authorize_url))

    assert Connection.objects.get(pk=connection.pk).config["auth"] == "oauth"
    link = DatabaseStateStore(connection).get(LINK_KEY)
    assert link["account"] == f"recordsync-mock.hubspot.com (hub {hubspot_mock.HUB_ID})"
    assert "crm.objects.contacts.write" in link["scopes"] and link["expires_at"] > 0


def test_the_provider_gets_the_pkce_challenge_of_the_verifier_kept_in_the_session(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    _, asked = start(staff, connection)

    verifier = staff.session["recordsync_connect"][asked["state"]]["verifier"]

    assert asked["code_challenge"] == challenge_of(verifier)


def test_a_refused_consent_stores_nothing_and_says_why(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    authorize_url, _ = start(staff, connection)

    back = finish(staff, consent(authorize_url, decision="deny"))

    assert back.status_code == 400 and b"access_denied" in back.content and b"Nothing was stored" in back.content
    assert "refresh_token" not in stored(connection) and DatabaseStateStore(connection).get(LINK_KEY) is None


def test_a_tampered_or_replayed_state_stores_nothing(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    authorize_url, _ = start(staff, connection)
    answer = consent(authorize_url)

    forged = finish(staff, {**answer, "state": "forged-" + answer["state"]})
    ok = finish(staff, answer)
    replayed = finish(staff, answer)

    assert forged.status_code == 400 and b"does not belong to a Connect started here" in forged.content
    assert ok.status_code == 302 and replayed.status_code == 400  # a state is good once


def test_an_answer_for_another_session_stores_nothing(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    authorize_url, _ = start(staff, connection)
    answer = consent(authorize_url)
    other = Client()
    other.force_login(User.objects.create_superuser("eve", "eve@example.com", "connect-tests-only"))

    back = other.get(reverse("admin:crms_connection_callback"), answer)

    assert back.status_code == 400 and "refresh_token" not in stored(connection)


def test_a_code_the_provider_refuses_stores_nothing(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    authorize_url, _ = start(staff, connection)
    answer = consent(authorize_url)
    MockToken.objects.filter(system="hubspot-code").delete()  # the code expired at the provider meanwhile

    back = finish(staff, answer)

    assert back.status_code == 400 and b"could not be exchanged" in back.content
    assert "refresh_token" not in stored(connection)


def test_connect_needs_the_apps_client_id_and_secret_first(staff, live_server) -> None:
    connection = connection_save(name="hubspot", kind="hubspot", config={}, secrets={})

    answer = staff.get(reverse("admin:crms_connection_connect", args=[connection.pk]), follow=True)

    assert b"Set the app&#x27;s client_id" in answer.content


def test_disconnect_forgets_the_tokens_and_takes_a_post(staff, live_server) -> None:
    connection = hubspot_app(live_server.url)
    authorize_url, _ = start(staff, connection)
    finish(staff, consent(authorize_url))
    url = reverse("admin:crms_connection_disconnect", args=[connection.pk])

    assert staff.get(url).status_code == 405
    assert staff.post(url).status_code == 302
    assert "refresh_token" not in stored(connection) and DatabaseStateStore(connection).get(LINK_KEY) is None
    page = staff.get(reverse("admin:crms_connection_change", args=[connection.pk]))
    assert b'id="oauth-connect"' in page.content


def test_connect_is_for_staff_who_may_change_connections(client, live_server) -> None:
    connection = hubspot_app(live_server.url)
    client.force_login(User.objects.create_user("viewer", password="x", is_staff=True))

    assert client.get(reverse("admin:crms_connection_connect", args=[connection.pk])).status_code == 403
    assert client.get(reverse("admin:crms_connection_callback"), {"state": "x", "code": "y"}).status_code == 403


def test_salesforce_switches_to_the_web_server_flow_and_logs_in_with_the_refresh_token(staff, live_server) -> None:
    connection = salesforce_app(live_server.url)
    authorize_url, asked = start(staff, connection)

    finish(staff, consent(authorize_url))

    linked = Connection.objects.get(pk=connection.pk)
    assert (
        urlsplit(authorize_url).path == "/mock/salesforce/services/oauth2/authorize"
        and asked["scope"] == "api refresh_token"
    )
    assert linked.config["auth"] == "web_server"
    refreshed = MockCall.objects.filter(system="salesforce", path__endswith="/oauth2/token", status=200).count()
    assert refreshed == 2  # the code exchanged, then one login with the refresh token (the account's description)
    assert DatabaseStateStore(connection).get(LINK_KEY)["account"] == f"{live_server.url}/mock/salesforce"

"""Connections in the admin: validated config, write-only encrypted secrets, the check action."""

from __future__ import annotations

import json

import pytest
import responses

from crms import secrets as secret_box
from crms.models import Connection
from tests.crms.test_api import SF_CONFIG

pytestmark = pytest.mark.django_db
ADD = "/admin/crms/connection/add/"


def form(**changes: object) -> dict[str, object]:
    return {
        "name": "sf",
        "kind": "salesforce",
        "enabled": "on",
        "quota_owner": "",
        "config": json.dumps(SF_CONFIG),
        "new_secrets": "",
        **changes,
    }


def test_a_connection_is_added_with_an_encrypted_secret(admin_client):
    response = admin_client.post(ADD, form(new_secrets='{"client_secret": "s3cr3t"}'))

    assert response.status_code == 302, response.content.decode()[:2000]
    stored = Connection.objects.get(name="sf")
    assert "s3cr3t" not in stored.secrets_encrypted
    assert secret_box.decrypt(stored.secrets_encrypted) == {"client_secret": "s3cr3t"}


def test_a_bad_config_is_shown_with_the_field_named_and_nothing_saved(admin_client):
    response = admin_client.post(ADD, form(config=json.dumps({**SF_CONFIG, "auth": "password"})))

    assert response.status_code == 200
    assert "config.auth" in response.content.decode()
    assert not Connection.objects.exists()


def test_secrets_that_are_not_an_object_are_refused(admin_client):
    response = admin_client.post(ADD, form(new_secrets="[1, 2]"))

    assert "Give an object" in response.content.decode()
    assert not Connection.objects.exists()


def test_the_secret_field_starts_empty_and_secrets_are_never_shown(admin_client):
    admin_client.post(ADD, form(new_secrets='{"client_secret": "s3cr3t"}'))
    page = admin_client.get(f"/admin/crms/connection/{Connection.objects.get().pk}/change/").content.decode()

    assert "s3cr3t" not in page
    assert "client_secret (set)" in page
    assert ">null<" not in page


def test_the_check_action_reports_what_the_connector_found(admin_client):
    admin_client.post(ADD, form(new_secrets='{"client_secret": "s3cr3t"}'))
    token_url = "https://example.my.salesforce.com/services/oauth2/token"

    with responses.RequestsMock() as sf:
        sf.post(
            token_url, status=400, json={"error": "invalid_client", "error_description": "invalid client credentials"}
        )
        response = admin_client.post(
            "/admin/crms/connection/",
            {"action": "check_connection", "_selected_action": [Connection.objects.get().pk]},
            follow=True,
        )

    # (the admin capitalises the first letter of a message)
    expected = '<li class="error">Sf: invalid_client: login refused: invalid client credentials</li>'
    assert expected in response.content.decode()

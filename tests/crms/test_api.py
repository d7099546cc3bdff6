"""/v1/crms: the registry as users see it; connection config and secrets."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.exceptions import ValidationError

from crms import secrets as secret_box
from crms.build import connector_for
from crms.models import Connection
from crms.services import connection_save

pytestmark = pytest.mark.django_db

SF_CONFIG: dict[str, Any] = {
    "login_url": "https://login.salesforce.com",
    "auth": "client_credentials",
    "client_id": "3MVG9-client",
    "instance_url": "https://example.my.salesforce.com",
    "external_id_field": "RecordSync_Id__c",
}


def test_available_lists_each_kind_with_its_capabilities_and_connections(api):
    connection_save(name="sf-prod", kind="salesforce", config=SF_CONFIG)

    body = api.get("/v1/crms/available").json()

    salesforce = next(k for k in body["results"] if k["name"] == "salesforce")
    assert salesforce["label"] == "Salesforce"
    assert salesforce["capabilities"]["batch_size"] == 200
    assert salesforce["capabilities"]["directions"] == ["outbound", "inbound"]
    assert "Contact" in salesforce["capabilities"]["objects"]
    assert salesforce["connections"] == [{"name": "sf-prod", "enabled": True}]


def test_the_schema_of_a_kind_is_its_config_json_schema(api):
    body = api.get("/v1/crms/salesforce/schema").json()

    assert body["config"]["required"] == ["login_url", "auth", "client_id", "external_id_field"]
    assert body["secrets"] == ["private_key", "client_secret", "outbound_message_token", "refresh_token"]
    assert {"conflict", "merge_fallback", "poll_objects", "organization_id"} <= set(body["config"]["properties"])


def test_an_unknown_kind_is_404_and_lists_the_known_ones(api):
    response = api.get("/v1/crms/zoho/schema")

    assert response.status_code == 404
    assert "salesforce" in response.json()["error"]["message"]


def test_crm_endpoints_need_a_token(anon):
    assert anon.get("/v1/crms/available").status_code == 401


def test_a_bad_config_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as raised:
        connection_save(name="sf", kind="salesforce", config={**SF_CONFIG, "auth": "password", "extra": 1})

    detail = dict(raised.value.detail)  # type: ignore[arg-type]
    assert "config.auth" in detail
    assert "config" in detail and "extra" in str(detail["config"])
    assert not Connection.objects.exists()


def test_secrets_are_encrypted_at_rest_and_never_stored_in_clear():
    connection = connection_save(
        name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": "s3cr3t-value"}
    )

    raw = Connection.objects.values_list("secrets_encrypted", flat=True).get()
    assert "s3cr3t-value" not in raw
    assert secret_box.decrypt(raw) == {"client_secret": "s3cr3t-value"}
    assert connector_for(connection).secrets == {"client_secret": "s3cr3t-value"}


def test_a_secret_can_be_a_reference_to_the_environment(monkeypatch):
    monkeypatch.setenv("CRM_SF_SECRET", "from-env")
    connection = connection_save(
        name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": {"env": "CRM_SF_SECRET"}}
    )

    assert connector_for(connection).secrets == {"client_secret": "from-env"}


@pytest.mark.parametrize("name", ["RECORDSYNC_SECRETS_KEYS", "SECRET_KEY", "DATABASE_URL", "CRM"])
def test_a_secret_may_not_name_the_services_own_variables(monkeypatch, name):
    """Issue 15: staff who edit connections read any variable by naming it and pointing token_url elsewhere."""
    monkeypatch.setenv(name, "the service's own")
    with pytest.raises(ValidationError) as refused:
        connection_save(name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": {"env": name}})

    message = str(refused.value.detail["secrets.client_secret"])  # type: ignore[call-overload]
    assert f"${name} is not a variable connections may read" in message and "SECRET_ENV_ALLOWED" in message
    assert not Connection.objects.exists()


def test_a_reference_saved_before_the_allowlist_is_refused_when_read(monkeypatch, settings):
    monkeypatch.setenv("SECRET_KEY", "the service's own")
    connection = connection_save(
        name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": {"env": "CRM_SF"}}
    )
    connection.secrets_encrypted = secret_box.encrypt({"client_secret": {"env": "SECRET_KEY"}})  # an older row

    with pytest.raises(ImproperlyConfigured, match=r"\$SECRET_KEY is not a variable connections may read"):
        connector_for(connection)
    settings.SECRET_ENV_ALLOWED = ["CRM_*", "SECRET_KEY"]  # the operator widens it, knowingly
    assert connector_for(connection).secrets == {"client_secret": "the service's own"}


def test_saving_without_secrets_keeps_the_stored_ones_and_empty_removes_one():
    connection_save(name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": "a", "private_key": "k"})
    connection_save(name="sf", kind="salesforce", config=SF_CONFIG)
    connection_save(name="sf", kind="salesforce", config=SF_CONFIG, secrets={"private_key": ""})

    stored = secret_box.decrypt(Connection.objects.get().secrets_encrypted)
    assert stored == {"client_secret": "a"}


def test_an_unknown_secret_or_kind_is_refused():
    with pytest.raises(ValidationError) as raised:
        connection_save(name="sf", kind="salesforce", config=SF_CONFIG, secrets={"password": "x"})
    assert "secrets.password" in dict(raised.value.detail)  # type: ignore[arg-type]

    with pytest.raises(ValidationError) as raised:
        connection_save(name="x", kind="zoho", config={})
    assert "kind" in dict(raised.value.detail)  # type: ignore[arg-type]

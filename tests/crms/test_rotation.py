"""Secrets at rest (issue 15): what connectors keep (rotated OAuth tokens) is encrypted like configured secrets,
and `rotate_secrets` moves every secret to the newest key, safely twice, with a deploy check naming stragglers."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from crms import secrets as secret_box
from crms.checks import secrets_under_the_newest_key
from crms.models import Connection, ConnectorState
from crms.services import connection_save
from crms.state import DatabaseStateStore
from tests.crms.test_api import SF_CONFIG

pytestmark = pytest.mark.django_db

OAUTH = {"access_token": "at-very-secret", "refresh_token": "rt-very-secret"}


def test_a_token_a_connector_keeps_is_stored_encrypted_and_read_back(settings):
    store = DatabaseStateStore(Connection.objects.create(name="outreach", kind="outreach"))

    store.set("oauth", OAUTH)

    raw = ConnectorState.objects.values_list("value", flat=True).get(key="oauth")
    assert raw is not None and "very-secret" not in str(raw) and set(raw) == {"sealed"}  # plain before issue 15
    assert store.get("oauth") == OAUTH


def test_rotate_secrets_moves_everything_to_the_newest_key_and_a_second_run_changes_nothing(settings):
    old = settings.RECORDSYNC_SECRETS_KEYS[0]
    connection_save(name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": "cs-very-secret"})
    store = DatabaseStateStore(Connection.objects.get(name="sf"))
    store.set("oauth", OAUTH)
    ConnectorState.objects.create(connection=Connection.objects.get(name="sf"), key="legacy", value={"token": "plain"})
    new = Fernet.generate_key().decode()
    settings.RECORDSYNC_SECRETS_KEYS = [new, old]

    warned = secrets_under_the_newest_key(None, databases=["default"])
    planned = StringIO()
    call_command("rotate_secrets", "--dry-run", stdout=planned)
    first = StringIO()
    call_command("rotate_secrets", stdout=first, stderr=StringIO())
    second = StringIO()
    call_command("rotate_secrets", stdout=second, stderr=StringIO())

    assert sorted(w.msg for w in warned) == [
        "connection sf (secrets) is not encrypted with the newest key (older key).",
        "connection sf (state legacy) is not encrypted with the newest key (plain).",
        "connection sf (state oauth) is not encrypted with the newest key (older key).",
    ]
    assert "would re-encrypt 3 row(s); nothing changed (--dry-run)" in planned.getvalue()
    assert "re-encrypted 3 row(s)" in first.getvalue() and "re-encrypted 0 row(s)" in second.getvalue()
    assert secrets_under_the_newest_key(None, databases=["default"]) == []
    settings.RECORDSYNC_SECRETS_KEYS = [new]  # the old key dropped: everything still opens
    assert secret_box.decrypt(Connection.objects.get(name="sf").secrets_encrypted) == {
        "client_secret": "cs-very-secret"
    }
    assert store.get("oauth") == OAUTH and store.get("legacy") == {"token": "plain"}


def test_the_deploy_check_looks_only_when_given_a_database():
    assert secrets_under_the_newest_key(None) == []

"""manage.py sync_config: connections round-trip as JSON, secrets only as references."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from crms import secrets as secret_box
from crms.models import Connection
from crms.services import connection_save
from tests.crms.test_api import SF_CONFIG

pytestmark = pytest.mark.django_db


def test_export_then_import_round_trips_with_secrets_as_env_references(tmp_path, monkeypatch):
    connection_save(name="sf", kind="salesforce", config=SF_CONFIG, secrets={"client_secret": "literal-value"})
    path = tmp_path / "config.json"
    err = StringIO()

    call_command("sync_config", "export", str(path), stderr=err)

    text = path.read_text()
    assert "literal-value" not in text
    document = json.loads(text)
    assert document["connections"][0]["secrets"] == {"client_secret": {"env": "CRM_SF_CLIENT_SECRET"}}
    assert "set $CRM_SF_CLIENT_SECRET" in err.getvalue()

    Connection.objects.all().delete()
    out = StringIO()
    call_command("sync_config", "import", str(path), stdout=out)
    assert out.getvalue().splitlines() == ["create connection sf", "unchanged rule set (0 rules)"]
    monkeypatch.setenv("CRM_SF_CLIENT_SECRET", "elsewhere")
    stored = secret_box.decrypt(Connection.objects.get().secrets_encrypted)
    assert stored == {"client_secret": {"env": "CRM_SF_CLIENT_SECRET"}}

    again = StringIO()
    call_command("sync_config", "import", str(path), stdout=again)
    assert again.getvalue().splitlines() == ["unchanged connection sf", "unchanged rule set (0 rules)"]


def test_a_dry_run_import_writes_nothing(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"version": 1, "connections": [{"name": "sf", "kind": "salesforce", "config": SF_CONFIG}]})
    )
    out = StringIO()

    call_command("sync_config", "import", str(path), "--dry-run", stdout=out)

    assert out.getvalue().strip() == "would create connection sf"
    assert not Connection.objects.exists()


def test_an_invalid_file_imports_nothing_and_names_the_field(tmp_path):
    good = {"name": "sf", "kind": "salesforce", "config": SF_CONFIG}
    bad = {"name": "sf2", "kind": "salesforce", "config": {**SF_CONFIG, "auth": "password"}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 1, "connections": [good, bad]}))

    with pytest.raises(CommandError, match=r"config\.auth"):
        call_command("sync_config", "import", str(path))

    assert not Connection.objects.exists()


def test_rules_round_trip_with_the_connections(tmp_path, connections):
    from rules.demo import DEMO_RULES
    from rules.models import Rule
    from rules.services import rule_set_replace

    rule_set_replace(specs=DEMO_RULES, actor="test")
    path = tmp_path / "config.json"
    call_command("sync_config", "export", str(path), stderr=StringIO())
    names = [r["name"] for r in json.loads(path.read_text())["rules"]]
    assert names == [r["name"] for r in sorted(DEMO_RULES, key=lambda r: r["order"])]

    Rule.objects.all().delete()
    out = StringIO()
    call_command("sync_config", "import", str(path), stdout=out)
    again = StringIO()
    call_command("sync_config", "import", str(path), stdout=again)

    assert "replace the rule set with 5 rules" in out.getvalue()
    assert "unchanged rule set (5 rules)" in again.getvalue()
    assert Rule.objects.count() == 5


def test_a_bad_rule_in_an_import_changes_nothing(tmp_path, connections):
    document = {
        "version": 1,
        "connections": [],
        "rules": [{"name": "bad", "condition": "data.x ==", "targets": [{"target": "salesforce"}]}],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))

    with pytest.raises(CommandError, match=r"rules\[0\]\.condition: syntax error"):
        call_command("sync_config", "import", str(path))

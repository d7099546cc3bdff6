"""Connections and rules as JSON, for version control: `manage.py sync_config export|import`.

Secrets never appear in an export: each is written as {"env": "NAME"}. A secret stored as a
literal is exported as a reference to a suggested variable name, which the operator must set.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from rest_framework.exceptions import ValidationError

from crms import secrets as secret_box
from crms.models import Connection
from crms.services import connection_save, connection_validate
from rules.models import Rule
from rules.services import rule_as_spec, rule_fields, rule_set_check, rule_set_replace

FORMAT_VERSION = 1


def suggested_env_name(connection: str, secret: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", f"CRM_{connection}_{secret}".upper())  # CRM_*: SECRET_ENV_ALLOWED's default


def config_export() -> tuple[dict[str, Any], list[str]]:
    """The document, and the variables that must be set for it to work elsewhere."""
    to_set: list[str] = []
    connections = []
    for connection in Connection.objects.order_by("name"):
        refs: dict[str, dict[str, str]] = {}
        for key, value in secret_box.decrypt(connection.secrets_encrypted).items():
            if secret_box.is_reference(value):
                refs[key] = value  # type: ignore[assignment]
            else:
                refs[key] = {"env": suggested_env_name(connection.name, key)}
                to_set.append(refs[key]["env"])
        connections.append(
            {
                "name": connection.name,
                "kind": connection.kind,
                "enabled": connection.enabled,
                "quota_owner": connection.quota_owner,
                "config": connection.config,
                "secrets": refs,
            }
        )
    rules = [rule_as_spec(r) for r in Rule.objects.order_by("order", "name")]
    return {"version": FORMAT_VERSION, "connections": connections, "rules": rules}, to_set


def config_import(document: dict[str, Any], *, dry_run: bool) -> list[str]:
    """Create or update every connection, then replace the rule set if the document has one;
    all or nothing. Returns what changed."""
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"version must be {FORMAT_VERSION}, got {document.get('version')!r}")
    changes: list[str] = []
    with transaction.atomic():
        for item in document.get("connections", []):
            existing = Connection.objects.filter(name=item["name"]).first()
            action = "update" if existing else "create"
            if existing and _same(existing, item):
                action = "unchanged"
            changes.append(f"{action} connection {item['name']}")
            if action == "unchanged":
                continue
            fields = {
                "name": item["name"],
                "kind": item["kind"],
                "config": item.get("config", {}),
                "secrets": item.get("secrets") or None,
            }
            if dry_run:
                connection_validate(**fields)
            else:
                connection_save(**fields, enabled=item.get("enabled", True), quota_owner=item.get("quota_owner", ""))
        if "rules" in document:
            changes.append(_import_rules(document["rules"], dry_run=dry_run))
    return changes


def _import_rules(specs: list[dict[str, Any]], *, dry_run: bool) -> str:
    current = [rule_as_spec(r) for r in Rule.objects.order_by("order", "name")]
    wanted = sorted((rule_fields(s) for s in specs), key=lambda s: (s["order"], s["name"]))
    if wanted == current:
        return f"unchanged rule set ({len(specs)} rules)"
    if dry_run:
        errors = rule_set_check(specs)
        if errors:
            raise ValidationError(errors)
        return f"replace the rule set ({len(current)} rules) with {len(specs)} rules"
    version = rule_set_replace(specs=specs, actor="sync_config import")
    return f"replace the rule set with {len(specs)} rules (v{version})"


def _same(connection: Connection, item: dict[str, Any]) -> bool:
    stored = secret_box.decrypt(connection.secrets_encrypted)
    return (
        connection.kind == item["kind"]
        and connection.config == item.get("config", {})
        and connection.enabled == item.get("enabled", True)
        and connection.quota_owner == item.get("quota_owner", "")
        and all(stored.get(k) == v for k, v in (item.get("secrets") or {}).items())
    )

"""Writes to connections: config validated against the kind's JSON Schema, secrets encrypted."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from jsonschema import Draft202012Validator
from rest_framework.exceptions import ValidationError

from crms import secrets as secret_box
from crms.models import NAME_VALIDATOR, Connection
from crms.registry import UnknownKind, connector_class, kinds
from crms.selectors import connections_forget


def connection_save(
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    secrets: dict[str, Any] | None = None,
    enabled: bool = True,
    quota_owner: str = "",
) -> Connection:
    """Create or update a connection. `secrets=None` keeps the stored ones; a key with "" removes it."""
    connection_validate(name=name, kind=kind, config=config, secrets=secrets)
    with transaction.atomic():
        connection, _ = Connection.objects.select_for_update().get_or_create(name=name, defaults={"kind": kind})
        stored = secret_box.decrypt(connection.secrets_encrypted)
        for key, value in (secrets or {}).items():
            if value == "":
                stored.pop(key, None)
            else:
                stored[key] = value
        connection.kind = kind
        connection.config = config
        connection.secrets_encrypted = secret_box.encrypt(stored)
        connection.enabled = enabled
        connection.quota_owner = quota_owner
        connection.save()
    connections_forget()
    return connection


def connection_validate(*, name: str, kind: str, config: dict[str, Any], secrets: dict[str, Any] | None) -> None:
    """Raise ValidationError naming every bad field; write nothing."""
    errors = _validate(name, kind, config, secrets or {})
    if errors:
        raise ValidationError(errors)


def config_errors(kind: str, config: dict[str, Any]) -> dict[str, str]:
    """JSON Schema errors keyed by path, e.g. {"config.login_url": "'x' is not a 'uri'"}."""
    schema = connector_class(kind).full_config_schema()
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    found: dict[str, str] = {}
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path)
        found[f"config.{path}" if path else "config"] = error.message
    return found


def _validate(name: str, kind: str, config: dict[str, Any], secrets: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    try:
        NAME_VALIDATOR(name)
    except Exception as exc:  # django's ValidationError: report it as ours
        errors["name"] = " ".join(getattr(exc, "messages", [str(exc)]))
    try:
        cls = connector_class(kind)
    except UnknownKind:
        errors["kind"] = f"Unknown kind '{kind}'. Available: {', '.join(kinds())}."
        return errors
    errors.update(config_errors(kind, config))
    if not errors:
        errors.update(cls.config_refusals(config))
    for key, value in secrets.items():
        if key not in cls.secret_fields:
            errors[f"secrets.{key}"] = f"Not a secret of {kind}. Allowed: {', '.join(cls.secret_fields)}."
        elif not (isinstance(value, str) or secret_box.is_reference(value)):
            errors[f"secrets.{key}"] = 'Give the secret as a string or as {"env": "CRM_VARIABLE_NAME"}.'
        elif secret_box.is_reference(value) and secret_box.env_refusal(value["env"]):
            errors[f"secrets.{key}"] = secret_box.env_refusal(value["env"]) + "."
    return errors

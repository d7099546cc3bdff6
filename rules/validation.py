"""Checking a rule set before it is saved: every error names the rule and the field."""

from __future__ import annotations

import re
from typing import Any

from crms.models import NAME_VALIDATOR, Connection
from crms.registry import UnknownKind, connector_class
from rules.engine import CONFLICT_POLICIES, DELETE_POLICIES, MERGE_FALLBACKS
from rules.expressions import ExpressionError, compile_expression

MAX_RULES = 500
MAX_TARGETS = 20
MAX_MAPPED_FIELDS = 200
OPERATIONS = {"create", "read", "update", "delete"}
ACTIONS = {"sync", "skip", "stop"}
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# The keys of a rule spec: a rule row's fields, as the admin, the API and sync_config exports write them.
RULE_FIELDS = (
    "name",
    "enabled",
    "order",
    "description",
    "match_source",
    "match_object_type",
    "match_operations",
    "condition",
    "action",
    "reason",
    "targets",
)
KNOWN_KEYS = frozenset(RULE_FIELDS)
TARGET_KEYS = {"target", "object", "mapping", "conflict", "merge_fallback", "on_delete", "soft_delete_field"}


def rule_set_errors(specs: list[dict[str, Any]]) -> dict[str, str]:
    """Errors keyed by path (`rules[2].targets[0].mapping.Email`); empty when the set can be saved."""
    if len(specs) > MAX_RULES:
        return {"rules": f"{len(specs)} rules; the limit is {MAX_RULES}"}
    connections = {c.name: c for c in Connection.objects.all()}
    errors: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        prefix = f"rules[{index}]"
        errors.update({f"{prefix}.{k}": v for k, v in rule_errors(spec, connections).items()})
        name = spec.get("name")
        if isinstance(name, str) and name in seen:
            errors[f"{prefix}.name"] = f"'{name}' is also the name of rules[{seen[name]}]; names must be unique"
        if isinstance(name, str):
            seen[name] = index
    return errors


def rule_errors(spec: dict[str, Any], connections: dict[str, Connection]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for key in sorted(set(spec) - KNOWN_KEYS):
        errors[key] = f"Unknown field. Allowed: {', '.join(sorted(KNOWN_KEYS))}."
    _check_name(spec, errors)
    _check_match(spec, errors)
    condition = spec.get("condition") or ""
    if not isinstance(condition, str):
        errors["condition"] = "Give an expression as a string, or leave it blank"
    elif condition.strip():
        _check_expression(condition, "condition", errors)
    action = spec.get("action", "sync")
    if action not in ACTIONS:
        errors["action"] = f"{action!r} is not an action: use sync, skip or stop"
    targets = spec.get("targets") or []
    if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
        errors["targets"] = f"Give a list of at most {MAX_TARGETS} targets"
        return errors
    if action == "sync" and not targets:
        errors["targets"] = "A sync rule needs at least one target"
    for index, target in enumerate(targets):
        for key, message in _target_errors(target, spec, connections).items():
            errors[f"targets[{index}].{key}" if key else f"targets[{index}]"] = message
    return errors


def _check_name(spec: dict[str, Any], errors: dict[str, str]) -> None:
    try:
        NAME_VALIDATOR(spec.get("name") or "")
    except Exception as exc:  # django's ValidationError
        errors["name"] = " ".join(getattr(exc, "messages", [str(exc)]))


def _check_match(spec: dict[str, Any], errors: dict[str, str]) -> None:
    operations = spec.get("match_operations") or []
    if not isinstance(operations, list) or not set(operations) <= OPERATIONS:
        errors["match_operations"] = "Give a list drawn from create, read, update, delete (empty: any)"
    order = spec.get("order", 100)
    if not isinstance(order, int) or isinstance(order, bool):
        errors["order"] = "Give a whole number"


def _check_expression(text: str, path: str, errors: dict[str, str]) -> None:
    try:
        compile_expression(text)
    except ExpressionError as exc:
        errors[path] = str(exc)


def _target_errors(target: Any, rule: dict[str, Any], connections: dict[str, Connection]) -> dict[str, str]:
    if not isinstance(target, dict):
        return {"": 'Give {"target": "<connection>", "object": "...", "mapping": {...}}'}
    errors = dict.fromkeys(sorted(set(target) - TARGET_KEYS), "Unknown field.")
    name = target.get("target")
    connection = connections.get(name) if isinstance(name, str) else None
    if connection is None:
        errors["target"] = f"No connection named {name!r}. Known: {', '.join(sorted(connections)) or 'none'}."
    elif rule.get("match_source") and name == rule.get("match_source"):
        errors["target"] = "Sends events back to the system they came from (a loop): choose another target"
    if target.get("conflict", "last_writer_wins") not in CONFLICT_POLICIES:
        errors["conflict"] = f"Use one of {', '.join(CONFLICT_POLICIES)}"
    if target.get("merge_fallback", "last_writer_wins") not in MERGE_FALLBACKS:
        errors["merge_fallback"] = f"Use one of {', '.join(MERGE_FALLBACKS)} (for a field changed on both sides)"
    if target.get("on_delete", "propagate") not in DELETE_POLICIES:
        errors["on_delete"] = f"Use one of {', '.join(DELETE_POLICIES)}"
    if target.get("on_delete") == "soft_delete" and not target.get("soft_delete_field"):
        errors["soft_delete_field"] = "Name the field that marks a record deleted"
    errors.update(_mapping_errors(target, connection))
    return errors


def _mapping_errors(target: dict[str, Any], connection: Connection | None) -> dict[str, str]:
    mapping = target.get("mapping") or {}
    if not isinstance(mapping, dict) or len(mapping) > MAX_MAPPED_FIELDS:
        return {"mapping": f"Give an object of at most {MAX_MAPPED_FIELDS} target fields"}
    errors: dict[str, str] = {}
    known = _known_fields(connection, target.get("object") or "")
    for field_name, expression in mapping.items():
        path = f"mapping.{field_name}"
        if not FIELD_NAME.match(field_name):
            errors[path] = "Not a field name: letters, digits and _ only"
        elif known is not None and field_name not in known and not _custom(field_name):
            close = sorted(f for f in known if f.lower() == field_name.lower())
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors[path] = f"Unknown field {field_name!r} of {target.get('object')}.{hint}"
        elif not isinstance(expression, str) or not expression.strip():
            errors[path] = 'Give an expression, e.g. "data.email", "$lower(data.email)" or "\\"Unknown\\""'
        else:
            _check_expression(expression, path, errors)
    return errors


def _known_fields(connection: Connection | None, object_name: str) -> set[str] | None:
    """The target object's fields when its connector lists them all (strict); None: any name goes."""
    if connection is None:
        return None
    try:
        objects = connector_class(connection.kind).capabilities.objects
    except UnknownKind:
        return None
    spec = objects.get(object_name) or {}
    return set(spec.get("fields", [])) if spec.get("strict_fields") else None


def _custom(field_name: str) -> bool:
    return (
        field_name.endswith("__c") or re.fullmatch(r"custom([1-9]|[1-9][0-9]|1[0-4][0-9]|150)", field_name) is not None
    )

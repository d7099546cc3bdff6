"""Writes to the rule set. Every change is validated as a whole and bumps the version."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from rest_framework.exceptions import ValidationError

from rules.models import Rule, RuleSetVersion
from rules.validation import RULE_FIELDS, rule_set_errors

FIELDS = RULE_FIELDS


def rule_as_spec(rule: Rule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in FIELDS}


def rule_set_replace(*, specs: list[dict[str, Any]], actor: str) -> int:
    """Replace every rule at once; on any error nothing changes. Returns the new version."""
    _refuse_errors(specs)
    with transaction.atomic():
        Rule.objects.all().delete()
        for spec in specs:
            Rule.objects.create(**rule_fields(spec))
        return _bump(actor)


def rule_upsert(*, spec: dict[str, Any], actor: str) -> int:
    """Create or change one rule by name, checked together with the others."""
    with transaction.atomic():
        others = [rule_as_spec(r) for r in Rule.objects.select_for_update().exclude(name=spec.get("name"))]
        errors = rule_set_errors([*others, spec])
        if errors:
            index = f"rules[{len(others)}]"
            raise ValidationError({k.replace(index, "rule", 1): v for k, v in errors.items()})
        Rule.objects.update_or_create(name=spec["name"], defaults=rule_fields(spec))
        return _bump(actor)


def rule_delete(*, name: str, actor: str) -> int:
    with transaction.atomic():
        Rule.objects.filter(name=name).delete()
        return _bump(actor)


def rule_set_check(specs: list[dict[str, Any]]) -> dict[str, str]:
    return rule_set_errors(specs)


def _refuse_errors(specs: list[dict[str, Any]]) -> None:
    errors = rule_set_errors(specs)
    if errors:
        raise ValidationError(errors)


def rule_fields(spec: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "enabled": True,
        "order": 100,
        "description": "",
        "match_source": "",
        "match_object_type": "",
        "match_operations": [],
        "condition": "",
        "action": "sync",
        "reason": "",
        "targets": [],
    }
    return {**defaults, **{k: v for k, v in spec.items() if k in FIELDS}}


def _bump(actor: str) -> int:
    row, _ = RuleSetVersion.objects.get_or_create(pk=1)
    RuleSetVersion.objects.filter(pk=1).update(version=F("version") + 1, updated_by=actor[:150])
    row.refresh_from_db()
    return row.version

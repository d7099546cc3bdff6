"""Compiling the rule set and deciding, for one event, where it goes and with which fields."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import rule_engine
from django.conf import settings

from crms.models import Connection
from rules.bounds import OverBudget, budget
from rules.contracts import Routing, RuleError, Skip
from rules.expressions import ExpressionError, Fields, compile_expression, evaluate, evaluate_field, plain

CONFLICT_POLICIES = ("last_writer_wins", "system_a_wins", "crm_wins", "field_merge", "hold")
MERGE_FALLBACKS = ("last_writer_wins", "system_a_wins", "crm_wins", "hold")
DELETE_POLICIES = ("propagate", "soft_delete", "ignore")


@dataclass(frozen=True)
class TargetSpec:
    target: str
    object: str
    mapping: dict[str, rule_engine.Rule]  # target field -> compiled expression
    conflict: str = "last_writer_wins"
    merge_fallback: str = "last_writer_wins"
    on_delete: str = "propagate"
    soft_delete_field: str = ""


@dataclass(frozen=True)
class CompiledRule:
    name: str
    match_source: str
    match_object_type: str
    match_operations: frozenset[str]
    condition: rule_engine.Rule | None
    action: str
    reason: str
    targets: tuple[TargetSpec, ...]

    def applies(self, event: dict[str, Any]) -> bool:
        return (
            (not self.match_source or self.match_source == event["source"])
            and (not self.match_object_type or self.match_object_type == event["object_type"])
            and (not self.match_operations or event["operation"] in self.match_operations)
        )


@dataclass(frozen=True)
class RuleSet:
    version: int
    rules: tuple[CompiledRule, ...]
    uses_changed: bool


@dataclass
class Decision:
    targets: list[Connection] = field(default_factory=list)
    routing: Routing = field(default_factory=lambda: Routing(mode="rules", targets=[]))


def compile_rules(version: int, specs: Iterable[dict[str, Any]]) -> RuleSet:
    """Specs are already validated (rules.services); compiling them again here cannot fail."""
    compiled = tuple(_compile_rule(spec) for spec in specs if spec.get("enabled", True))
    uses_changed = any("changed" in str(spec.get("condition", "")) for spec in specs)
    return RuleSet(version, compiled, uses_changed)


def _compile_rule(spec: dict[str, Any]) -> CompiledRule:
    condition = spec.get("condition") or ""
    return CompiledRule(
        name=spec["name"],
        match_source=spec.get("match_source") or "",
        match_object_type=spec.get("match_object_type") or "",
        match_operations=frozenset(spec.get("match_operations") or []),
        condition=compile_expression(condition) if condition.strip() else None,
        action=spec.get("action", "sync"),
        reason=spec.get("reason") or "",
        targets=tuple(_compile_target(t) for t in spec.get("targets") or []),
    )


def _compile_target(spec: dict[str, Any]) -> TargetSpec:
    return TargetSpec(
        target=spec["target"],
        object=spec.get("object") or "",
        mapping={name: compile_expression(text) for name, text in (spec.get("mapping") or {}).items()},
        conflict=spec.get("conflict") or "last_writer_wins",
        merge_fallback=spec.get("merge_fallback") or "last_writer_wins",
        on_delete=spec.get("on_delete") or "propagate",
        soft_delete_field=spec.get("soft_delete_field") or "",
    )


def event_context(
    *,
    operation: str,
    source: str,
    object_type: str,
    record_id: str,
    data: dict[str, Any] | None,
    occurred_at: datetime,
    changed: list[str],
) -> dict[str, Any]:
    return {
        "operation": operation,
        "source": source,
        "object_type": object_type,
        "record_id": record_id,
        "data": Fields(data or {}),
        "raw_data": data or {},
        "changed": changed,
        "occurred_at": occurred_at,
    }


UNMAPPED = "no matching rule maps this event to it (a named target is still mapped by the rules)"


def decide(
    rule_set: RuleSet, event: dict[str, Any], connections: dict[str, Connection], requested: list[str] | None
) -> Decision:
    """Evaluate the rules in order; record every match, every skipped target and why, and each payload. The
    whole evaluation has a time budget (rules/bounds.py): past it the event goes nowhere, with a rule error."""
    at = [""]  # the rule being evaluated, for the error if the budget runs out
    limit = settings.RULES_EVAL_BUDGET_MS
    try:
        with budget(limit / 1000):
            return _decide(rule_set, event, connections, requested, at)
    except OverBudget:
        message = f"evaluation took longer than {limit} ms and was stopped; simplify this rule"
        decision = Decision()
        decision.routing = {
            "mode": "rules",
            "version": rule_set.version,
            "matched": [],
            "targets": [],
            "skipped": [],
            "payloads": {},
            "errors": [{"rule": at[0], "message": message}],
            "reason": "rule evaluation ran past its time budget",
        }
        return decision


def _decide(
    rule_set: RuleSet,
    event: dict[str, Any],
    connections: dict[str, Connection],
    requested: list[str] | None,
    at: list[str],
) -> Decision:
    matched: list[str] = []
    errors: list[RuleError] = []
    chosen: dict[str, tuple[TargetSpec | None, str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    skip_all: dict[str, str] | None = None
    for rule in rule_set.rules:
        at[0] = rule.name
        if not rule.applies(event) or not _holds(rule, event, errors):
            continue
        matched.append(rule.name)
        if rule.action == "skip":
            reason = {"reason": rule.reason or "skipped by a rule", "rule": rule.name}
            if rule.targets:
                skipped.update({t.target: reason for t in rule.targets})
            else:
                skip_all = skip_all or reason
        else:
            for target in rule.targets:
                chosen.setdefault(target.target, (target, rule.name))
        if rule.action == "stop":
            break
    if requested is not None:  # the caller named the targets: rules still map and may skip them, and a named
        # target no matching rule maps gets nothing: a client's raw fields never reach a CRM unmapped (issue 15)
        for name in requested:
            if name not in chosen:
                skipped.setdefault(name, {"reason": UNMAPPED})
        chosen = {name: chosen.get(name, (None, "")) for name in requested}
    return _finish(rule_set, event, connections, matched, errors, chosen, skipped, skip_all, at)


def _holds(rule: CompiledRule, event: dict[str, Any], errors: list[RuleError]) -> bool:
    if rule.condition is None:
        return True
    try:
        return bool(evaluate(rule.condition, event))
    except ExpressionError as exc:
        errors.append({"rule": rule.name, "message": f"condition: {exc}"})
        return False


def _finish(
    rule_set: RuleSet,
    event: dict[str, Any],
    connections: dict[str, Connection],
    matched: list[str],
    errors: list[RuleError],
    chosen: dict[str, tuple[TargetSpec | None, str]],
    skipped: dict[str, dict[str, str]],
    skip_all: dict[str, str] | None,
    at: list[str],
) -> Decision:
    decision = Decision()
    payloads: dict[str, Any] = {}
    skips: list[Skip] = []
    for name, (spec, rule_name) in chosen.items():
        at[0] = rule_name
        why = skip_all or skipped.get(name) or _unusable(name, event, connections)
        payload = None
        if why is None:
            payload, why = _payload(spec, event, rule_name)
        if why is not None:
            skips.append(_skip(name, why))
            continue
        decision.targets.append(connections[name])
        payloads[name] = payload
    decision.routing = {
        "mode": "rules",
        "version": rule_set.version,
        "matched": matched,
        "targets": [c.name for c in decision.targets],
        "skipped": skips,
        "payloads": payloads,
    }
    if errors:
        decision.routing["errors"] = errors
    if not matched:
        decision.routing["reason"] = "no rule matched"
    elif not decision.targets:
        decision.routing["reason"] = "every target was skipped" if skips else "the matching rules name no target"
    return decision


def _skip(target: str, why: dict[str, str]) -> Skip:
    skip: Skip = {"target": target, "reason": why["reason"]}
    if "rule" in why:
        skip["rule"] = why["rule"]
    return skip


def _unusable(name: str, event: dict[str, Any], connections: dict[str, Connection]) -> dict[str, str] | None:
    connection = connections.get(name)
    if connection is None:
        return {"reason": f"no connection named {name!r}"}
    if not connection.enabled:
        return {"reason": f"connection {name!r} is disabled"}
    if name == event["source"]:
        return {"reason": "is the event's source"}
    return None


def _payload(spec: TargetSpec | None, event: dict[str, Any], rule_name: str) -> tuple[Any, dict[str, str] | None]:
    if spec is None:
        return {"object": event["object_type"], "fields": event["raw_data"], "rule": None}, None
    if event["operation"] == "delete":
        if spec.on_delete == "ignore":
            return None, {"reason": "deletes are ignored for this target", "rule": rule_name}
        return {
            "object": spec.object,
            "delete": spec.on_delete,
            "soft_delete_field": spec.soft_delete_field,
            "rule": rule_name,
        }, None
    fields: dict[str, Any] = {}
    for target_field, expression in spec.mapping.items():
        try:
            value, absent = evaluate_field(expression, event)
        except ExpressionError as exc:
            return None, {"reason": f"mapping of {target_field} failed: {exc}", "rule": rule_name}
        if not absent:
            fields[target_field] = _plain(value)
    return {
        "object": spec.object or event["object_type"],
        "fields": fields if spec.mapping else event["raw_data"],
        "conflict": spec.conflict,
        "merge_fallback": spec.merge_fallback,
        "on_delete": spec.on_delete,
        "rule": rule_name,
    }, None


def _plain(value: Any) -> Any:
    """Expression results as JSON: rule-engine hands back tuples, Decimals and datetimes."""
    value = plain(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if type(value).__name__ == "Decimal":
        return int(value) if value == int(value) else float(value)
    return value

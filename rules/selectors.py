"""The rule set in force, compiled once per version and re-checked at most once a second."""

from __future__ import annotations

import time

from rules.engine import RuleSet, compile_rules
from rules.models import Rule, RuleSetVersion
from rules.services import rule_as_spec

# A change made anywhere reaches every process within this long (one cheap query per second).
VERSION_CHECK_SECONDS = 1.0
clock = time.monotonic  # swappable in tests
_cache: dict[str, object] = {"checked": float("-inf"), "rule_set": None, "version": -1}


def rule_set_version() -> int:
    found = RuleSetVersion.objects.values_list("version", flat=True).first()
    return int(found or 0)


def rule_set_current() -> RuleSet | None:
    """The compiled rules, or None when there are none (the foundation's default routing applies)."""
    now = clock()
    if now - float(_cache["checked"]) >= VERSION_CHECK_SECONDS:  # type: ignore[arg-type]
        version = rule_set_version()
        if version != _cache["version"]:
            specs = [rule_as_spec(r) for r in Rule.objects.order_by("order", "name")]
            _cache["rule_set"] = compile_rules(version, specs) if any(s["enabled"] for s in specs) else None
            _cache["version"] = version
        _cache["checked"] = now
    rule_set = _cache["rule_set"]
    return rule_set if isinstance(rule_set, RuleSet) else None


def rule_set_forget() -> None:
    _cache.update({"checked": float("-inf"), "rule_set": None, "version": -1})

"""The admin's "test the rules" page: what would be sent where, for real or pasted events."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils import timezone

from crms.selectors import connections_by_name
from rules.engine import compile_rules, decide, event_context
from rules.models import Rule
from rules.services import rule_as_spec
from rules.validation import rule_set_errors
from sync.models import SyncEvent

MAX_RECENT = 50


class DryRunForm(forms.Form):
    event = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 90, "style": "font-family: monospace"}),
        help_text='An event as POST /v1/sync/ takes it, e.g. {"operation": "create", "record_id": "c-1", '
        '"object_type": "contact", "data": {"email": "ada@example.com"}}',
    )
    recent = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_RECENT,
        help_text=f"Or run the last N stored events (at most {MAX_RECENT})",
    )
    draft = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 90, "style": "font-family: monospace"}),
        help_text="Optional: a whole rule set as JSON (a list of rules) to try instead of the saved one",
    )

    def clean_event(self) -> dict[str, Any] | None:
        raw = self.cleaned_data.get("event", "").strip()
        return _json(raw, "event", dict) if raw else None

    def clean_draft(self) -> list[dict[str, Any]] | None:
        raw = self.cleaned_data.get("draft", "").strip()
        if not raw:
            return None
        specs: list[dict[str, Any]] = _json(raw, "draft", list)
        errors = rule_set_errors(specs)
        if errors:
            raise forms.ValidationError([f"{k}: {v}" for k, v in errors.items()])
        return specs

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("event") and not data.get("recent"):
            raise forms.ValidationError("Paste an event or choose how many recent events to run.")
        return data


def _json(raw: str, name: str, kind: type) -> Any:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise forms.ValidationError(f"{name} is not JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise forms.ValidationError(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def run(form: DryRunForm) -> list[dict[str, Any]]:
    specs = form.cleaned_data.get("draft") or [rule_as_spec(r) for r in Rule.objects.order_by("order", "name")]
    rule_set = compile_rules(0, specs)
    connections = connections_by_name()
    events = (
        _pasted(form.cleaned_data["event"]) if form.cleaned_data.get("event") else _recent(form.cleaned_data["recent"])
    )
    return [
        {
            "event": {k: v for k, v in e.items() if k not in ("occurred_at", "data")},
            "decision": decide(rule_set, e, connections, None).routing,
        }
        for e in events
    ]


def _pasted(event: dict[str, Any]) -> list[dict[str, Any]]:
    data = event.get("data")
    return [
        event_context(
            operation=str(event.get("operation", "")),
            source=str(event.get("source", "system_a")),
            object_type=str(event.get("object_type", "")),
            record_id=str(event.get("record_id", "")),
            data=data if isinstance(data, dict) else None,
            occurred_at=timezone.now(),
            changed=sorted(data) if isinstance(data, dict) else [],
        )
    ]


def _recent(count: int) -> list[dict[str, Any]]:
    return [
        event_context(
            operation=e.operation,
            source=e.source,
            object_type=e.object_type,
            record_id=e.record_id,
            data=e.payload,
            occurred_at=e.occurred_at,
            changed=sorted(e.payload or {}),
        )
        for e in SyncEvent.objects.order_by("-received_at")[:count]
    ]

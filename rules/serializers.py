from __future__ import annotations

from typing import Any

from rest_framework import serializers

from rules.models import Action


class TargetSpecSerializer(serializers.Serializer[dict[str, Any]]):
    target = serializers.CharField(help_text="A connection name")
    object = serializers.CharField(required=False, help_text="The target's object, e.g. Contact or prospect")
    mapping = serializers.DictField(
        child=serializers.CharField(), required=False, help_text="target field -> expression over the event"
    )
    conflict = serializers.CharField(
        required=False,
        help_text="last_writer_wins, system_a_wins, crm_wins, field_merge or hold (two-way sync: docs/two-way.md)",
    )
    merge_fallback = serializers.CharField(required=False, help_text="field_merge: a field changed on both sides")
    on_delete = serializers.CharField(required=False)
    soft_delete_field = serializers.CharField(required=False)


class RuleSerializer(serializers.Serializer[dict[str, Any]]):
    """One rule. Validation of expressions, targets and fields happens on the whole set (rules.validation)."""

    name = serializers.CharField()
    enabled = serializers.BooleanField(required=False, default=True)
    order = serializers.IntegerField(required=False, default=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    match_source = serializers.CharField(required=False, allow_blank=True, default="")
    match_object_type = serializers.CharField(required=False, allow_blank=True, default="")
    match_operations = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    condition = serializers.CharField(required=False, allow_blank=True, default="")
    action = serializers.ChoiceField(choices=Action.choices, required=False, default=Action.SYNC)
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    targets = TargetSpecSerializer(many=True, required=False, default=list)


class RuleSetInSerializer(serializers.Serializer[dict[str, Any]]):
    rules = RuleSerializer(many=True, required=False, help_text="Replace the whole rule set with these")
    rule = RuleSerializer(required=False, help_text="Or create or change this one rule, by name")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("rules" in attrs) == ("rule" in attrs):
            raise serializers.ValidationError({"rules": ["Send either `rules` (the whole set) or `rule` (one)."]})
        return attrs


class RuleSetSerializer(serializers.Serializer[dict[str, Any]]):
    version = serializers.IntegerField(help_text="Increases on every change")
    results = RuleSerializer(many=True)

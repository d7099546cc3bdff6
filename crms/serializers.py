from __future__ import annotations

from typing import Any

from rest_framework import serializers


class ConnectionBriefSerializer(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField()
    enabled = serializers.BooleanField()


class CapabilitiesSerializer(serializers.Serializer[dict[str, Any]]):
    batch_size = serializers.IntegerField(help_text="Records per call to the system.")
    directions = serializers.ListField(child=serializers.ChoiceField(choices=["outbound", "inbound"]))
    objects = serializers.ListField(child=serializers.CharField())


class CrmKindSerializer(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # API field name; DRF pops declared fields
    capabilities = CapabilitiesSerializer()
    connections = ConnectionBriefSerializer(many=True)


class CrmListSerializer(serializers.Serializer[dict[str, Any]]):
    results = CrmKindSerializer(many=True)


class CrmSchemaSerializer(serializers.Serializer[dict[str, Any]]):
    kind = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # API field name; DRF pops declared fields
    config = serializers.DictField(help_text="JSON Schema of the connection config.")
    secrets = serializers.ListField(child=serializers.CharField(), help_text="Secret names, encrypted at rest.")
    batch_size = serializers.IntegerField()
    directions = serializers.ListField(child=serializers.CharField())
    objects = serializers.DictField(help_text="Objects and their fields and match keys.")

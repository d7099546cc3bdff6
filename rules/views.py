"""/v1/sync/rules: staff read and change the rule set."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from recordsync.openapi import errors
from rules import services
from rules.models import Rule
from rules.selectors import rule_set_version
from rules.serializers import RuleSetInSerializer, RuleSetSerializer


def _current() -> dict[str, object]:
    return {"version": rule_set_version(), "results": [services.rule_as_spec(r) for r in Rule.objects.all()]}


class RuleSetViewSet(viewsets.ViewSet):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="sync_rules_list",
        summary="The rule set in force, with its version",
        responses={200: RuleSetSerializer, **errors(403)},
    )
    def rule_set(self, request: Request) -> Response:  # not `list`: that would be documented as an array
        return Response(RuleSetSerializer(_current()).data)

    @extend_schema(
        operation_id="sync_rules_update",
        summary="Replace the whole rule set atomically, or create or change one rule by name",
        request=RuleSetInSerializer,
        responses={200: RuleSetSerializer, **errors(400, 403)},
    )
    def rule_set_update(self, request: Request) -> Response:
        body = RuleSetInSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        actor = request.user.get_username()
        if "rules" in body.validated_data:
            services.rule_set_replace(specs=body.validated_data["rules"], actor=actor)
        else:
            services.rule_upsert(spec=body.validated_data["rule"], actor=actor)
        return Response(RuleSetSerializer(_current()).data)

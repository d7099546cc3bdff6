"""/v1/crms: which connector kinds exist and what each needs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from crms import selectors
from crms.registry import UnknownKind, kinds
from crms.serializers import CrmListSerializer, CrmSchemaSerializer
from recordsync.openapi import errors


class CrmViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="crms_available",
        summary="Every registered connector kind",
        responses={200: CrmListSerializer, **errors()},
    )
    def available(self, request: Request) -> Response:
        return Response(CrmListSerializer({"results": selectors.kinds_available()}).data)

    @extend_schema(
        operation_id="crms_schema",
        summary="The config JSON Schema and objects of one kind",
        responses={200: CrmSchemaSerializer, **errors(404)},
    )
    # Not named `schema`: that attribute of every APIView belongs to drf-spectacular.
    def kind_schema(self, request: Request, crm: str) -> Response:
        try:
            body = selectors.kind_schema(crm)
        except UnknownKind:
            raise NotFound(f"No connector kind '{crm}'. Available: {', '.join(kinds())}.") from None
        return Response(CrmSchemaSerializer(body).data)

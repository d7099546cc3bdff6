"""/v1/crms/mock/{crm}/…: staff tools to act on a mock CRM as its users would, and to watch it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from crms.mocks.models import MockCall, MockFault, MockRecord
from crms.mocks.runtime import fault_add
from crms.registry import mocks
from recordsync.openapi import errors
from recordsync.pagination import Cursor


class NewestFirst(Cursor):
    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


class PushSerializer(serializers.Serializer[dict[str, Any]]):
    object = serializers.CharField(help_text="e.g. Contact, Account")
    records = serializers.ListField(child=serializers.DictField(), required=False, default=list, max_length=1000)
    delete = serializers.ListField(child=serializers.CharField(), required=False, default=list, max_length=1000)


class PushedSerializer(serializers.Serializer[dict[str, Any]]):
    results = serializers.ListField(child=serializers.DictField(), help_text="Each record as the mock now holds it.")


class FaultSerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(choices=[403, 429, 500, 502, 503], required=False)
    code = serializers.CharField(required=False, allow_blank=True, default="", help_text="e.g. REQUEST_LIMIT_EXCEEDED")
    message = serializers.CharField(required=False, allow_blank=True, default="")
    retry_after = serializers.IntegerField(required=False, min_value=0, max_value=86400)
    latency_ms = serializers.IntegerField(required=False, default=0, min_value=0, max_value=10000)
    record_error = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="e.g. UNABLE_TO_LOCK_ROW"
    )
    calls = serializers.IntegerField(required=False, min_value=1, max_value=100000, help_text="For the next N calls")
    seconds = serializers.IntegerField(required=False, min_value=1, max_value=86400, help_text="Or for T seconds")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs.get("status") or attrs.get("latency_ms") or attrs.get("record_error")):
            raise ValidationError({"status": ["Give a status, a latency_ms or a record_error to inject."]})
        if not (attrs.get("calls") or attrs.get("seconds")):
            raise ValidationError({"calls": ["Say how long: for the next `calls` calls or for `seconds` seconds."]})
        return attrs


class CallSerializer(serializers.ModelSerializer[MockCall]):
    class Meta:
        model = MockCall
        fields = ["at", "method", "path", "status"]


class CursorPage(serializers.Serializer[dict[str, Any]]):
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last one.")
    previous = serializers.URLField(allow_null=True)


class RecordPageSerializer(CursorPage):
    results = serializers.ListField(child=serializers.DictField())


class CallPageSerializer(CursorPage):
    results = CallSerializer(many=True)


class MockCrmViewSet(viewsets.ViewSet):
    permission_classes = [IsAdminUser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not settings.MOCK_CRMS_ENABLED:
            raise NotFound("The mock CRMs are off (MOCK_CRMS_ENABLED).")
        if kwargs.get("crm") not in mocks():
            raise NotFound(f"No mock for '{kwargs.get('crm')}'. Mocks: {', '.join(mocks())}.")

    @extend_schema(
        operation_id="mock_push", request=PushSerializer, responses={200: PushedSerializer, **errors(400, 403, 404)}
    )
    def push(self, request: Request, crm: str) -> Response:
        body = PushSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            stored = mocks()[crm].staff_push(
                body.validated_data["object"], body.validated_data["records"], body.validated_data["delete"]
            )
        except ValueError as exc:
            raise ValidationError({"object": [str(exc)]}) from exc
        return Response({"results": stored})

    @extend_schema(
        operation_id="mock_records",
        parameters=[
            OpenApiParameter("object", str, description="Only this object, e.g. Contact"),
            OpenApiParameter("limit", int, description="Page size, at most 1000"),
        ],
        responses={200: RecordPageSerializer, **errors(403, 404)},
    )
    def records(self, request: Request, crm: str) -> Response:
        rows = MockRecord.objects.filter(system=crm, deleted_at__isnull=True)
        if request.query_params.get("object"):
            rows = rows.filter(object=request.query_params["object"])
        paginator = NewestFirst()
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response([mocks()[crm].as_row(r) for r in page])

    @extend_schema(
        operation_id="mock_requests",
        parameters=[OpenApiParameter("limit", int)],
        responses={200: CallPageSerializer, **errors(403, 404)},
    )
    def requests(self, request: Request, crm: str) -> Response:
        paginator = NewestFirst()
        page = paginator.paginate_queryset(MockCall.objects.filter(system=crm), request, view=self) or []
        return paginator.get_paginated_response(CallSerializer(page, many=True).data)

    @extend_schema(
        operation_id="mock_faults_add",
        request=FaultSerializer,
        responses={201: FaultSerializer, **errors(400, 403, 404)},
    )
    def faults_add(self, request: Request, crm: str) -> Response:
        body = FaultSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        fault_add(system=crm, calls=data.pop("calls", None), seconds=data.pop("seconds", None), **data)
        return Response(body.data, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="mock_faults_clear", responses={204: None, **errors(403, 404)})
    def faults_clear(self, request: Request, crm: str) -> Response:
        MockFault.objects.filter(system=crm).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

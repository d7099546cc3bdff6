"""/v1/sync: thin viewsets. Each validates input, calls one service or selector, shapes output."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from crms.base import ConnectorError, WebhookRefused
from crms.models import Connection
from recordsync.openapi import errors
from recordsync.pagination import Cursor
from sync.api.auth import Grant, ScopeDenied, scope_denied_message
from sync.api.serializers import (
    BatchAcceptedSerializer,
    ConfigInForceSerializer,
    ConfigOverrideInSerializer,
    EventAcceptedSerializer,
    EventBatchInSerializer,
    EventDetailSerializer,
    EventInSerializer,
    JobPageSerializer,
    JobQuerySerializer,
    JobSerializer,
    RecordStatusSerializer,
    ResumedSerializer,
    RetriedSerializer,
    RetryInSerializer,
    StatsSerializer,
    StatusQuerySerializer,
    WebhookAnswerSerializer,
)
from sync.contracts import EventInput
from sync.delivery import config, holds
from sync.delivery.retry import job_retry
from sync.inbound import changes as inbound
from sync.ingest import services
from sync.models import ConfigOverride, TokenScope
from sync.ops import selectors
from sync.ops.config_services import config_override_set
from sync.ops.stats import sync_stats

logger = logging.getLogger("recordsync.webhooks")

_IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="A repeat with the same key and body returns the first answer and stores nothing; "
    "the same key with another body is 409.",
)


class SyncEventViewSet(viewsets.ViewSet):
    scope = TokenScope.EVENTS_WRITE

    @extend_schema(
        operation_id="sync_event_ingest",
        summary="Accept one sync event or a list of up to 500",
        parameters=[_IDEMPOTENCY_HEADER],
        request=PolymorphicProxySerializer(
            component_name="SyncEventIn",
            serializers=[EventInSerializer, EventInSerializer(many=True)],  # 1..500: recordsync.openapi
            resource_type_field_name=None,
            many=False,
        ),
        responses={
            202: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="SyncEventAccepted",
                    serializers=[EventAcceptedSerializer, BatchAcceptedSerializer],
                    resource_type_field_name=None,
                ),
                description="Accepted: one answer, or `results` with one answer per item for a list.",
            ),
            **errors(400, 403, 409, 413, 415),
        },
    )
    def create(self, request: Request) -> Response:
        is_batch = isinstance(request.data, list)
        serializer = (EventBatchInSerializer if is_batch else EventInSerializer)(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw_items = request.data if is_batch else [request.data]
        validated = serializer.validated_data if is_batch else [serializer.validated_data]
        _check_grant(Grant(request), validated, is_batch)
        result = services.event_ingest(
            items=[_event_input(v, raw) for v, raw in zip(validated, raw_items, strict=True)],
            idempotency_key=_idempotency_key(request),
            is_batch=is_batch,
            request_id=request._request.request_id,  # type: ignore[attr-defined]
        )
        body: Any = {"results": result.answers} if is_batch else result.answers[0]
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


def _check_grant(grant: Grant, items: list[dict[str, Any]], is_batch: bool) -> None:
    """A token posts only as the sources it was given, and names targets only with the scope for it."""
    for index, item in enumerate(items):
        prefix = f"[{index}]." if is_batch else ""
        if not grant.may_post_as(item["source"]):
            allowed = ", ".join(sorted(grant.sources)) or "none"
            raise ScopeDenied(
                f"This token may not post events from '{item['source']}' (its sources: {allowed}). "
                "Ask for a token with --source for it.",
                field=f"{prefix}source",
            )
        if item.get("targets") is not None and not grant.allows(TokenScope.EVENTS_TARGETS):
            raise ScopeDenied(scope_denied_message(TokenScope.EVENTS_TARGETS), field=f"{prefix}targets")


def _event_input(data: dict[str, Any], raw: Any) -> EventInput:
    return EventInput(
        operation=data["operation"],
        record_id=data["record_id"],
        object_type=data["object_type"],
        source=data["source"],
        targets=data.get("targets"),
        data=data.get("data"),
        occurred_at=data.get("occurred_at"),
        event_id=data.get("event_id"),
        raw=raw,
    )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > settings.IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValidationError(
            {"Idempotency-Key": [f"Send 1-{settings.IDEMPOTENCY_KEY_MAX_LENGTH} characters, e.g. a UUID."]}
        )
    return key


class SyncStatusViewSet(viewsets.ViewSet):
    scope = TokenScope.STATUS_READ

    lookup_field = "record_id"

    @extend_schema(
        operation_id="sync_status_retrieve",
        summary="Where a record stands in every target",
        parameters=[StatusQuerySerializer],
        responses={200: RecordStatusSerializer, **errors(400, 403, 404)},
    )
    def retrieve(self, request: Request, record_id: str) -> Response:
        query = StatusQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = selectors.record_status(record_id=record_id, **query.validated_data)
        if found is None:
            raise NotFound(f"No event was ever accepted for record '{record_id}' with these filters.")
        return Response(RecordStatusSerializer(found).data)


class SyncRetryViewSet(viewsets.ViewSet):
    scope = TokenScope.RETRY

    @extend_schema(
        operation_id="sync_retry",
        summary="Retry a record's failed jobs (once: a second call while they wait is a 409)",
        request=RetryInSerializer,
        responses={202: RetriedSerializer, **errors(400, 403, 404, 409, 415)},
    )
    def retry(self, request: Request, record_id: str) -> Response:
        body = RetryInSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        jobs = job_retry(record_id=record_id, actor=request.user.get_username(), **body.validated_data)
        answer = {"record_id": record_id, "jobs": [{"target": j.target.name, "state": j.state} for j in jobs]}
        return Response(RetriedSerializer(answer).data, status=status.HTTP_202_ACCEPTED)


class ConnectionResumeViewSet(viewsets.ViewSet):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="sync_connection_resume",
        summary="Resume a held connection now: lift its quota owner's hold and breakers, make waiting jobs due",
        request=None,
        responses={200: ResumedSerializer, **errors(403, 404)},
    )
    def resume(self, request: Request, name: str) -> Response:
        resumed = holds.connection_resume(name=name, actor=request.user.get_username())
        return Response(ResumedSerializer({"connection": name, "quota_key": resumed.key, **vars(resumed)}).data)


def _config_in_force() -> dict[str, Any]:
    rows = {row.scope: row for row in ConfigOverride.objects.all()}
    effective = {"global": vars(config.effective(None))}
    for connection in Connection.objects.order_by("name"):
        effective[connection.name] = vars(config.effective(connection.pk))
    return {
        "defaults": vars(config.effective_defaults()),
        "overrides": {
            scope: {"values": r.values, "updated_by": r.updated_by, "updated_at": r.updated_at}
            for scope, r in rows.items()
        },
        "effective": effective,
    }


class ConfigOverrideViewSet(viewsets.ViewSet):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="sync_config_in_force",
        summary="The engine settings in force",
        responses={200: ConfigInForceSerializer, **errors(403)},
    )
    def in_force(self, request: Request) -> Response:
        return Response(ConfigInForceSerializer(_config_in_force()).data)

    @extend_schema(
        operation_id="sync_config_override",
        summary="Override batch size, flush interval or max attempts, globally or for one connection",
        request=ConfigOverrideInSerializer,
        responses={200: ConfigInForceSerializer, **errors(400, 403, 415)},
    )
    def override(self, request: Request) -> Response:
        body = ConfigOverrideInSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = dict(body.validated_data)
        connection = values.pop("connection", None)
        if not values:
            raise ValidationError({"batch_size": [f"Send at least one of {', '.join(config.KNOBS)}."]})
        config_override_set(values=values, connection=connection, actor=request.user.get_username())
        return Response(ConfigInForceSerializer(_config_in_force()).data)


WEBHOOK_REFUSED = (
    "The delivery does not verify for this URL: check the connection name in the URL and the secret the webhook "
    "was registered with (the reason is logged under this request id)."
)


class SignatureRefused(exceptions.AuthenticationFailed):
    """Any webhook delivery refused, whatever the reason: one answer, so that the connections' names cannot be
    listed by trying them (issue 15). The reason, naming the header to fix, goes to the log."""

    def __init__(self) -> None:
        super().__init__(WEBHOOK_REFUSED, "bad_signature")
        self.fields = [{"field": "signature", "message": WEBHOOK_REFUSED}]


class WebhookViewSet(viewsets.ViewSet):
    """Deliveries from a CRM's webhooks. The delivery's own signature, checked by the connection's
    connector against the connection's `webhook_secret`, is the authentication: the CRM holds no
    API token of ours."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes: list[type] = []  # a CRM's bursts are its own to send; each is checked by its signature

    def get_authenticate_header(self, request: Request) -> str:
        return 'Signature realm="webhooks"'  # so a refused signature is a 401, not DRF's 403

    @extend_schema(
        operation_id="webhook_receive",
        summary="A CRM webhook delivery (Outreach: signed JSON; Salesforce: an Outbound Message, SOAP, ?token=)",
        request={"application/json": {"type": "object"}, "text/xml": {"type": "string"}},
        responses={
            (200, "application/json"): WebhookAnswerSerializer,
            (200, "text/xml"): OpenApiResponse(OpenApiTypes.STR, description="Salesforce: the SOAP Ack, after storing"),
            **errors(400),
        },
        auth=[],
    )
    def receive(self, request: Request, connection: str) -> Response:
        try:
            result = inbound.webhook_receive(
                name=connection,
                body=request.body,
                headers=request.headers,
                query=request.query_params.dict(),
                uri=request.build_absolute_uri(),
            )
        except WebhookRefused as exc:
            logger.warning(
                "webhook refused", extra={"connection": connection, "header": exc.header, "reason": exc.message}
            )
            raise SignatureRefused from exc
        except NotFound as exc:
            logger.warning("webhook refused", extra={"connection": connection, "reason": str(exc.detail)})
            raise SignatureRefused from exc
        except ConnectorError as exc:
            raise ValidationError({"body": [exc.message]}) from exc
        if result.answer is not None:  # the sender's own acknowledgement (Salesforce: a SOAP Ack)
            content_type, body = result.answer
            return HttpResponse(body, content_type=content_type)  # type: ignore[return-value]
        return Response(WebhookAnswerSerializer(dict(result.counts)).data)


class NewestChanged(Cursor):
    """Jobs by their last change; a cursor stays valid while rows change (never an offset)."""

    ordering = ("-updated_at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500


class OldestChanged(NewestChanged):
    ordering = ("updated_at", "id")


class SyncJobViewSet(viewsets.ViewSet):
    scope = TokenScope.STATUS_READ

    @extend_schema(
        operation_id="sync_jobs_list",
        summary="Jobs by state, target, object type, error code, source and time, cursor-paginated",
        parameters=[JobQuerySerializer],
        responses={200: JobPageSerializer, **errors(400, 403)},
    )
    def jobs(self, request: Request) -> Response:
        query = JobQuerySerializer(data=_query_dict(request))
        query.is_valid(raise_exception=True)
        paginator = OldestChanged() if query.validated_data.get("order") == "oldest" else NewestChanged()
        page = paginator.paginate_queryset(selectors.jobs_query(query.validated_data), request, view=self) or []
        links = selectors.external_ids(page)
        rows = [selectors.job_row(job, links.get((job.record_id, job.target_id))) for job in page]
        return paginator.get_paginated_response(JobSerializer(rows, many=True).data)  # type: ignore[arg-type]


class SyncEventDetailViewSet(viewsets.ViewSet):
    scope = TokenScope.STATUS_READ

    @extend_schema(
        operation_id="sync_event_retrieve",
        summary="One event: what was received, where the rules sent it, and its jobs now",
        responses={200: EventDetailSerializer, **errors(403, 404)},
    )
    def retrieve(self, request: Request, event_id: str) -> Response:
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            raise NotFound(f"'{event_id}' is not an event id (a UUID from the answer to POST /v1/sync/).") from None
        found = selectors.event_detail(key)
        if found is None:
            raise NotFound(f"No event {event_id}.")
        return Response(EventDetailSerializer(found).data)


def _query_dict(request: Request) -> dict[str, Any]:
    """Query parameters as a dict, `state` as the list of every value given."""
    data: dict[str, Any] = request.query_params.dict()
    if "state" in request.query_params:
        data["state"] = request.query_params.getlist("state")
    return data


class SyncStatsViewSet(viewsets.ViewSet):
    scope = TokenScope.STATS_READ

    @extend_schema(
        operation_id="sync_stats",
        summary="Counts per state and target, throughput, lag and throttle use per connection, breakers",
        responses={200: StatsSerializer, **errors(403)},
    )
    def stats(self, request: Request) -> Response:
        return Response(StatsSerializer(sync_stats()).data)  # type: ignore[arg-type]

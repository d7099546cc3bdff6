"""A local System A that implements the webhook contract of docs/system-a.md: it checks the
signature and its timestamp, answers a repeated Idempotency-Key with its first answer, and keeps
records in the mock store under its own ids."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from crms.mocks.declare import mock_setting
from crms.mocks.models import MockRecord
from crms.mocks.runtime import mock_view
from crms.systema.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SYSTEM = "system_a"
IDEMPOTENCY_TTL = 24 * 3600


def signing_secret() -> str:
    """The secret the mock System A and the service share (environment, or a Django setting in tests)."""
    return mock_setting("MOCK_SYSTEM_A_SIGNING_SECRET", "mock-only-signing-secret")


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    ok = verify(
        signing_secret(),
        request.headers.get(TIMESTAMP_HEADER, ""),
        request.body,
        request.headers.get(SIGNATURE_HEADER, ""),
        now=timezone.now().timestamp(),
    )
    if not ok:
        return _error(401, "bad_signature", "Signature or timestamp missing, wrong or older than 5 minutes")
    fault = request.mock_fault  # type: ignore[attr-defined]
    if fault is not None and fault.status:
        response = _error(fault.status, fault.code or f"http_{fault.status}", fault.message or "injected")
        if fault.retry_after:
            response["Retry-After"] = str(fault.retry_after)
        return response
    return None


@mock_view(SYSTEM)
def health(request: HttpRequest) -> HttpResponse:
    return _refusal(request) or JsonResponse({"status": "ok"})


@mock_view(SYSTEM)
def records(request: HttpRequest, object_type: str) -> HttpResponse:
    refused = _refusal(request)
    if refused:
        return refused
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        return _error(400, "idempotency_key_missing", "Send an Idempotency-Key header")
    replay = cache.get(f"mock-system-a:{key}")
    if replay is not None:
        return JsonResponse(replay["body"], status=replay["status"])
    status, body = _apply(object_type, json.loads(request.body))
    cache.set(f"mock-system-a:{key}", {"status": status, "body": body}, IDEMPOTENCY_TTL)
    return JsonResponse(body, status=status)


@mock_view(SYSTEM)
def record(request: HttpRequest, object_type: str, record_id: str) -> HttpResponse:
    refused = _refusal(request)
    if refused:
        return refused
    found = _live(object_type).filter(record_id=record_id).first()
    if found is None:
        return _error(404, "not_found", f"No {object_type} {record_id}")
    return JsonResponse({"id": found.record_id, "fields": found.fields})


def _apply(object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    existing = _live(object_type).filter(record_id=body.get("id")).first() if body.get("id") else None
    if body.get("operation") == "delete":
        if existing is None:
            return 404, {"error": {"code": "not_found", "message": "nothing to delete"}}
        existing.deleted_at = existing.modified_at = timezone.now()
        existing.save(update_fields=["deleted_at", "modified_at"])
        return 200, {"id": existing.record_id, "deleted": True}
    if existing is None:
        # An id we were given is System A's own (a record it posted to us): the mock keeps it, as the
        # real System A, which has that record, would; no id means a record new to System A.
        record_id = str(body.get("id") or f"A-{secrets.token_hex(6)}")
        created = MockRecord.objects.create(
            system=SYSTEM,
            object=object_type,
            record_id=record_id,
            fields=body.get("fields", {}),
            modified_by="recordsync",
        )
        return 201, {"id": created.record_id}
    existing.fields = {**existing.fields, **body.get("fields", {})}
    existing.modified_at = timezone.now()
    existing.save(update_fields=["fields", "modified_at"])
    return 200, {"id": existing.record_id}


def _live(object_type: str) -> Any:
    return MockRecord.objects.filter(system=SYSTEM, object=object_type, deleted_at__isnull=True)


def as_row(record: MockRecord) -> dict[str, Any]:
    return {
        "id": record.record_id,
        "object": record.object,
        **record.fields,
        "modified_at": record.modified_at.isoformat(),
    }


def staff_push(object_type: str, rows: list[dict[str, Any]], delete: list[str]) -> list[dict[str, Any]]:
    """Change System A's records directly, as its own users would."""
    stored = []
    for row in rows:
        _, body = _apply(
            object_type,
            {"operation": "upsert", "id": row.get("id"), "fields": {k: v for k, v in row.items() if k != "id"}},
        )
        stored.append(as_row(_live(object_type).get(record_id=body["id"])))
    for record_id in delete:
        _apply(object_type, {"operation": "delete", "id": record_id})
        stored.append({"id": record_id, "deleted": True})
    return stored

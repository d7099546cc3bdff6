"""A local Salesforce org, faithful enough that the real connector runs against it unchanged.

It checks bearer tokens, caps sObject Collections at 200 records, enforces required fields and
the external id, counts `api-usage` in Sforce-Limit-Info and answers 403 REQUEST_LIMIT_EXCEEDED
at its daily cap, pages SOQL with nextRecordsUrl, and keeps deletions for getDeleted.
Bulk API 2.0 ingest jobs are in mock_bulk.py.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

import jwt
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from crms.mocks.models import MockRecord, MockToken
from crms.mocks.runtime import calls_in_window, mock_view
from crms.salesforce import mock_store as store

SYSTEM = store.SYSTEM
DAY = 24 * 3600
SOQL = re.compile(
    r"^SELECT\s+(?P<fields>[\w\s,]+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+SystemModstamp\s*>\s*(?P<since>[\dT:.Z+-]+))?"
    r"(?:\s+ORDER\s+BY\s+[\w\s,]+?)?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE,
)
Handler = Callable[..., HttpResponse]


def _errors(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse([{"message": message, "errorCode": code}], status=status, safe=False)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _limit() -> int:
    return int(settings.MOCK_SALESFORCE_DAILY_LIMIT)


def api(handler: Handler) -> Handler:
    """What every /services/data call goes through, in Salesforce's order of checks."""

    @mock_view(SYSTEM)
    @wraps(handler)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        used = calls_in_window(SYSTEM, DAY) + 1
        response = _refusal(request, used) or handler(request, *args, **kwargs)
        response["Sforce-Limit-Info"] = f"api-usage={min(used, _limit())}/{_limit()}"
        return response

    return wrapper


def _refusal(request: HttpRequest, used: int) -> HttpResponse | None:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    if not MockToken.objects.filter(system=SYSTEM, token=token, expires_at__gt=timezone.now()).exists():
        return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
    if used > _limit():
        return _errors(403, "REQUEST_LIMIT_EXCEEDED", f"TotalRequests Limit exceeded. ({_limit()} per 24 hours)")
    fault = request.mock_fault  # type: ignore[attr-defined]
    if fault is not None and fault.status:
        return _fault_response(fault)
    return None


def _fault_response(fault: Any) -> HttpResponse:
    defaults = {403: "REQUEST_LIMIT_EXCEEDED", 429: "REQUEST_LIMIT_EXCEEDED", 500: "UNKNOWN_EXCEPTION",
                503: "SERVER_UNAVAILABLE"}  # fmt: skip
    code = fault.code or defaults.get(fault.status, f"HTTP_{fault.status}")
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
    return _errors(fault.status, code, fault.message or f"injected {fault.status}", headers)


# --- OAuth --------------------------------------------------------------------------------------


@mock_view(SYSTEM, counted=False, faults=False)
def token(request: HttpRequest) -> HttpResponse:
    form = request.POST
    grant = form.get("grant_type", "")
    if grant == "client_credentials":
        ok = (form.get("client_id"), form.get("client_secret")) == (
            settings.MOCK_SALESFORCE_CLIENT_ID, settings.MOCK_SALESFORCE_CLIENT_SECRET,
        )  # fmt: skip
    elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        ok = _assertion_ok(form.get("assertion", ""), request)
    else:
        return JsonResponse({"error": "unsupported_grant_type", "error_description": "grant type not supported"},
                            status=400)  # fmt: skip
    if not ok:
        return JsonResponse({"error": "invalid_grant", "error_description": "authentication failure"}, status=400)
    issued = MockToken.objects.create(system=SYSTEM, token=f"00DMOCK!{secrets.token_urlsafe(32)}",
                                      expires_at=timezone.now() + timedelta(hours=2))  # fmt: skip
    instance = request.build_absolute_uri("/mock/salesforce")
    return JsonResponse({"access_token": issued.token, "instance_url": instance, "token_type": "Bearer",
                         "id": f"{instance}/id/00DMOCKORG000001/{store.INTEGRATION_USER}",
                         "issued_at": str(int(timezone.now().timestamp() * 1000)), "signature": "mock"})  # fmt: skip


def _assertion_ok(assertion: str, request: HttpRequest) -> bool:
    """The mock holds no certificate: it checks the claims a real org checks, not the signature."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False, "require": ["iss", "sub", "aud", "exp"]})
    except jwt.PyJWTError:
        return False
    return bool(claims["iss"] == settings.MOCK_SALESFORCE_CLIENT_ID and claims["exp"] > timezone.now().timestamp())


# --- sObject Collections -----------------------------------------------------------------------


@api
def collection_upsert(request: HttpRequest, version: str, object_type: str, key_field: str) -> HttpResponse:
    if request.method != "PATCH":
        return _errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are PATCH")
    refused = _check_object(object_type) or _check_key_field(key_field)
    if refused:
        return refused
    records = _collection_records(request)
    if isinstance(records, HttpResponse):
        return records
    for record in records:
        unknown = store.unknown_fields(object_type, record)
        if unknown:
            return _errors(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {object_type}")
    forced = request.mock_fault.record_error if request.mock_fault else ""  # type: ignore[attr-defined]
    results = [_forced(forced) if forced else store.upsert_one(object_type, key_field, r, by=store.INTEGRATION_USER)
               for r in records]  # fmt: skip
    return JsonResponse(results, safe=False)


def _forced(code: str) -> dict[str, Any]:
    return {"id": None, "success": False, "errors": [{"statusCode": code, "message": f"injected {code}", "fields": []}]}


@api
def collection(request: HttpRequest, version: str) -> HttpResponse:
    """DELETE …/composite/sobjects?ids=a,b&allOrNone=false, or PATCH with records that carry their Id."""
    if request.method == "PATCH":
        return _collection_update(request)
    if request.method != "DELETE":
        return _errors(405, "METHOD_NOT_ALLOWED",
                       f"HTTP Method '{request.method}' not allowed. Allowed are DELETE, PATCH")  # fmt: skip
    ids = [i for i in request.GET.get("ids", "").split(",") if i]
    if not ids:
        return _errors(400, "REQUIRED_FIELD_MISSING", "At least 1 Id is required.")
    if len(ids) > 200:
        return _errors(
            400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
        )
    return JsonResponse([store.delete_one(i) for i in ids], safe=False)


def _collection_records(request: HttpRequest) -> list[dict[str, Any]] | HttpResponse:
    """The `records` of a Collections body, or the error Salesforce answers for a malformed or too-long one."""
    body = _json(request)
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        return _errors(400, "JSON_PARSER_ERROR", 'Expected {"allOrNone": …, "records": […]}')
    if len(records) > 200:
        return _errors(
            400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
        )
    return records


def _collection_update(request: HttpRequest) -> HttpResponse:
    """Update by Salesforce id: each record names its type in `attributes` and its `id`."""
    records = _collection_records(request)
    if isinstance(records, HttpResponse):
        return records
    for record in records:
        object_type = str((record.get("attributes") or {}).get("type") or "")
        refused = _check_object(object_type)
        if refused:
            return refused
        unknown = store.unknown_fields(object_type, {k: v for k, v in record.items() if k.lower() != "id"})
        if unknown:
            return _errors(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {object_type}")
    forced = request.mock_fault.record_error if request.mock_fault else ""  # type: ignore[attr-defined]
    results = [_forced(forced) if forced else store.update_one(r, by=store.INTEGRATION_USER) for r in records]
    return JsonResponse(results, safe=False)


@api
def collection_read(request: HttpRequest, version: str, object_type: str) -> HttpResponse:
    refused = _check_object(object_type)
    if refused:
        return refused
    ids = [i for i in request.GET.get("ids", "").split(",") if i]
    fields = [f for f in request.GET.get("fields", "").split(",") if f]
    found = {r.record_id: r for r in store.live(object_type).filter(record_id__in=ids)}
    return JsonResponse([store.as_row(found[i], fields or None) if i in found else None for i in ids], safe=False)


# --- single records and describe ---------------------------------------------------------------


@api
def upsert_by_external_id(
    request: HttpRequest, version: str, object_type: str, key_field: str, value: str
) -> HttpResponse:
    refused = _check_object(object_type) or _check_key_field(key_field)
    if refused:
        return refused
    matches = list(store.matching(object_type, key_field, value)[:5])
    if len(matches) > 1:
        urls = [f"/services/data/v{version}/sobjects/{object_type}/{m.record_id}" for m in matches]
        return JsonResponse(urls, status=300, safe=False)
    result = store.upsert_one(object_type, key_field, {**_json(request), key_field: value}, by=store.INTEGRATION_USER)
    if not result["success"]:
        error = result["errors"][0]
        return _errors(400, error["statusCode"], error["message"])
    return JsonResponse(result, status=201) if result["created"] else HttpResponse(status=204)


@api
def describe(request: HttpRequest, version: str, object_type: str) -> HttpResponse:
    refused = _check_object(object_type)
    if refused:
        return refused
    names = [*store.READ_ONLY, *store.OBJECTS[object_type]["fields"], store.EXTERNAL_ID_FIELD]
    fields = [{"name": n, "externalId": n == store.EXTERNAL_ID_FIELD, "unique": n == store.EXTERNAL_ID_FIELD,
               "nillable": n not in store.OBJECTS[object_type]["required"]} for n in names]  # fmt: skip
    return JsonResponse({"name": object_type, "fields": fields})


@api
def limits(request: HttpRequest, version: str) -> HttpResponse:
    used = calls_in_window(SYSTEM, DAY) + 1
    return JsonResponse({"DailyApiRequests": {"Max": _limit(), "Remaining": max(_limit() - used, 0)}})


# --- reading changes ---------------------------------------------------------------------------


@api
def query(request: HttpRequest, version: str, locator: str = "") -> HttpResponse:
    if locator:
        state = json.loads(base64.urlsafe_b64decode(locator.encode()))
        soql, offset = state["q"], state["offset"]
    else:
        soql, offset = request.GET.get("q", ""), 0
    match = SOQL.match(soql.strip())
    if match is None:
        return _errors(400, "MALFORMED_QUERY", "The mock understands SELECT … FROM … [WHERE SystemModstamp > …] "
                       "[ORDER BY …] [LIMIT n]")  # fmt: skip
    refused = _check_object(match["object"])
    if refused:
        return refused
    rows = _query_rows(match)
    page_size = int(settings.MOCK_SALESFORCE_QUERY_PAGE)
    page = rows[offset : offset + page_size]
    body: dict[str, Any] = {"totalSize": len(rows), "done": offset + page_size >= len(rows), "records": page}
    if not body["done"]:
        next_locator = base64.urlsafe_b64encode(json.dumps({"q": soql, "offset": offset + page_size}).encode())
        body["nextRecordsUrl"] = f"/services/data/v{version}/query/01gMOCK{next_locator.decode()}"
    return JsonResponse(body)


def _query_rows(match: re.Match[str]) -> list[dict[str, Any]]:
    fields = [f.strip() for f in match["fields"].split(",")]
    records = store.live(match["object"])
    if match["since"]:
        records = records.filter(modified_at__gt=_parse_soql_time(match["since"]))
    rows = [store.as_row(r, fields) for r in records.order_by("modified_at", "record_id")]
    return rows[: int(match["limit"])] if match["limit"] else rows


@api
def deleted(request: HttpRequest, version: str, object_type: str) -> HttpResponse:
    refused = _check_object(object_type)
    if refused:
        return refused
    start, end = _parse_soql_time(request.GET["start"]), _parse_soql_time(request.GET["end"])
    gone = MockRecord.objects.filter(system=SYSTEM, object=object_type, deleted_at__gte=start,
                                           deleted_at__lte=end).order_by("deleted_at")  # fmt: skip
    return JsonResponse({
        "deletedRecords": [{"id": r.record_id, "deletedDate": store.sf_time(r.deleted_at or end)} for r in gone],
        "earliestDateAvailable": store.sf_time(timezone.now() - timedelta(days=15)),
        "latestDateCovered": store.sf_time(end),
    })  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------


def _check_object(object_type: str) -> HttpResponse | None:
    if object_type not in store.OBJECTS:
        return _errors(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{object_type}'")
    return None


def _check_key_field(key_field: str) -> HttpResponse | None:
    if key_field != store.EXTERNAL_ID_FIELD:
        return _errors(400, "INVALID_FIELD", f"Field {key_field} is not an External ID or Id field")
    return None


def _json(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except ValueError:
        return {}


def _parse_soql_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))

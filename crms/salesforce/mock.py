"""A local Salesforce org, faithful enough that the real connector, and simple-salesforce, run against it unchanged.

What every call shares (bearer tokens, the daily allocation counted in Sforce-Limit-Info and refused with
403 REQUEST_LIMIT_EXCEEDED, injected faults), OAuth (client credentials by form or HTTP Basic, JWT bearer
checked against the connected app's certificate), the API's directory, `/limits`, SOQL (`query`,
`queryAll`, server-side cursors read a batch at a time) and getUpdated / getDeleted. Single records and
sObject Collections are in mock_sobjects.py, Bulk API 2.0 in mock_bulk.py, the data rules in mock_store.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from crms.mocks.declare import mock_setting, mock_setting_int
from crms.mocks.models import MockQueryLocator, MockRecord, MockToken
from crms.mocks.runtime import calls_in_window, mock_view
from crms.salesforce import mock_oauth
from crms.salesforce import mock_store as store
from crms.salesforce.mock_schema import OBJECTS, SObject, new_id, sf_time, sobject
from crms.salesforce.mock_soql import SoqlError, parse, run

SYSTEM = store.SYSTEM
DAY = 24 * 3600
DEFAULT_BATCH, MIN_BATCH, MAX_BATCH = 2000, 200, 2000  # Sforce-Query-Options: batchSize bounds
LOCATOR_LIFETIME = timedelta(minutes=15)
LOOKBACK_DAYS = {"updated": 30, "deleted": 15}  # how far back getUpdated / getDeleted reach
VERSIONS = [("Summer '24", "61.0"), ("Winter '25", "62.0"), ("Spring '25", "63.0"), ("Summer '25", "64.0")]
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


# The mock's own settings (environment, or a Django setting of the same name in tests); `make run`
# writes random client secrets to .env.
def app_client_id() -> str:
    return mock_setting("MOCK_SALESFORCE_CLIENT_ID", "recordsync-mock")


def app_client_secret() -> str:
    return mock_setting("MOCK_SALESFORCE_CLIENT_SECRET", "mock-only-secret")


def jwt_certificate() -> str:
    """The connected app's certificate (PEM) for the JWT bearer flow; none uploaded by default."""
    return mock_setting("MOCK_SALESFORCE_JWT_CERTIFICATE", "")


# /limits: the org's allocations; DailyApiRequests is the one the mock counts.
LIMITS = {
    "ConcurrentAsyncGetReportInstances": 200,
    "ConcurrentSyncReportRuns": 20,
    "DailyAsyncApexExecutions": 250000,
    "DailyBulkApiBatches": 15000,
    "DailyBulkApiRequests": 10000,
    "DailyBulkV2QueryFileStorageMB": 976562,
    "DailyBulkV2QueryJobs": 10000,
    "DailyDurableGenericStreamingApiEvents": 10000,
    "DailyDurableStreamingApiEvents": 10000,
    "DailyGenericStreamingApiEvents": 10000,
    "DailyStreamingApiEvents": 10000,
    "DailyWorkflowEmails": 390,
    "DataStorageMB": 5,
    "DurableStreamingApiConcurrentClients": 20,
    "FileStorageMB": 20,
    "HourlyAsyncReportRuns": 1200,
    "HourlyDashboardRefreshes": 200,
    "HourlyDashboardResults": 5000,
    "HourlyDashboardStatuses": 999999999,
    "HourlyODataCallout": 10000,
    "HourlySyncReportRuns": 500,
    "HourlyTimeBasedWorkflow": 50,
    "MassEmail": 10,
    "SingleEmail": 15,
    "StreamingApiConcurrentClients": 20,
}
Handler = Callable[..., HttpResponse]


def errors(status: int, code: str, message: str, fields: list[str] | None = None) -> JsonResponse:
    """Salesforce's request-level error body: a JSON array of {message, errorCode[, fields]}."""
    item: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        item["fields"] = fields
    return JsonResponse([item], status=status, safe=False)


def refused(exc: store.RequestRefused | store.RecordRefused | SoqlError, status: int = 400) -> JsonResponse:
    fields = getattr(exc, "fields", None)
    return errors(status, exc.code, exc.message, fields if fields else None)


def _limit() -> int:
    return mock_setting_int("MOCK_SALESFORCE_DAILY_LIMIT", 15000)


def api(handler: Handler) -> Handler:
    """What every /services/data call goes through, in Salesforce's order of checks."""

    @mock_view(SYSTEM)
    @wraps(handler)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        used = calls_in_window(SYSTEM, DAY) + 1
        response = _refusal(request, used)
        if response is None:
            try:
                response = handler(request, *args, **kwargs)
            except (store.RequestRefused, SoqlError) as exc:
                response = refused(exc)
        response["Sforce-Limit-Info"] = f"api-usage={min(used, _limit())}/{_limit()}"
        return response

    return wrapper


def _refusal(request: HttpRequest, used: int) -> HttpResponse | None:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").removeprefix("OAuth ").strip()
    if not MockToken.objects.filter(system=SYSTEM, token=token, expires_at__gt=timezone.now()).exists():
        return errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
    if used > _limit():
        return errors(403, "REQUEST_LIMIT_EXCEEDED", f"TotalRequests Limit exceeded. ({_limit()} per 24 hours)")
    fault = request.mock_fault  # type: ignore[attr-defined]
    if fault is not None and fault.status:
        return _fault_response(fault)
    return None


def _fault_response(fault: Any) -> HttpResponse:
    defaults = {
        403: "REQUEST_LIMIT_EXCEEDED",
        429: "REQUEST_LIMIT_EXCEEDED",
        500: "UNKNOWN_EXCEPTION",
        503: "SERVER_UNAVAILABLE",
    }
    code = fault.code or defaults.get(fault.status, f"HTTP_{fault.status}")
    response = errors(fault.status, code, fault.message or f"injected {fault.status}")
    if fault.retry_after:
        response["Retry-After"] = str(fault.retry_after)
    return response


def body_json(request: HttpRequest) -> Any:
    """The request's JSON, or a 400 JSON_PARSER_ERROR as Salesforce answers malformed bodies."""
    try:
        return json.loads(request.body or b"{}")
    except ValueError as exc:
        raise store.RequestRefused("JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None


def object_or_404(object_type: str) -> SObject | HttpResponse:
    found = sobject(object_type)
    if found is None:
        return errors(404, "NOT_FOUND", "The requested resource does not exist")
    return found


def method_not_allowed(request: HttpRequest, allowed: str) -> HttpResponse:
    return errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}")


# --- OAuth --------------------------------------------------------------------------------------


@mock_view(SYSTEM, counted=False, faults=False)
def authorize(request: HttpRequest) -> HttpResponse:
    """The web-server flow's consent page (mock_oauth.py). An unknown client or a bad redirect_uri is answered
    here, never redirected to."""
    query = request.GET if request.method == "GET" else request.POST
    client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
    where = urlsplit(redirect_uri)
    if client_id != app_client_id() or where.scheme not in ("http", "https") or not where.netloc:
        return HttpResponse("<h1>error=invalid_client_id or redirect_uri_mismatch</h1>", status=400)
    return mock_oauth.authorize_answer(request, redirect_uri, query.get("state"), client_id)


@mock_view(SYSTEM, counted=False, faults=False)
def token(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return JsonResponse({"error": "invalid_request", "error_description": "must use HTTP POST"}, status=400)
    grant, form = request.POST.get("grant_type", ""), request.POST
    refresh: str | None = None
    if grant == "client_credentials":
        problem = _client_credentials_problem(request)
    elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        problem = _assertion_problem(request.POST.get("assertion", ""), request)
    elif grant == "authorization_code":
        problem = _client_credentials_problem(request)
        if not problem:
            code, verifier = form.get("code", ""), form.get("code_verifier", "")
            refresh = mock_oauth.spend_code(code, form.get("client_id", ""), form.get("redirect_uri", ""), verifier)
            problem = "" if refresh else "invalid authorization code"
    elif grant == "refresh_token":
        problem = _client_credentials_problem(request)
        if not problem and not mock_oauth.refresh_known(form.get("refresh_token", "")):
            problem = "expired access/refresh token"
    else:
        return JsonResponse(
            {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, status=400
        )
    if problem:
        return JsonResponse(
            {
                "error": "invalid_grant" if problem != "invalid_client" else "invalid_client",
                "error_description": problem,
            },
            status=400,
        )
    issued = MockToken.objects.create(
        system=SYSTEM,
        token=f"{store.ORGANIZATION_ID[:15]}!{secrets.token_urlsafe(32)}",
        expires_at=timezone.now() + timedelta(hours=2),
    )
    instance = request.build_absolute_uri("/mock/salesforce")
    return JsonResponse(
        {
            "access_token": issued.token,
            "instance_url": instance,
            "token_type": "Bearer",
            "id": f"{instance}/id/{store.ORGANIZATION_ID}/{store.INTEGRATION_USER}",
            "scope": "api",
            "issued_at": str(int(timezone.now().timestamp() * 1000)),
            "signature": secrets.token_urlsafe(32),
            **({"refresh_token": refresh} if refresh else {}),  # a code gives one; a refresh keeps it
        }
    )


def _client_credentials_problem(request: HttpRequest) -> str:
    """The client's id and secret, from the form or from HTTP Basic (both are documented)."""
    client = (request.POST.get("client_id"), request.POST.get("client_secret"))
    basic = request.headers.get("Authorization", "")
    if basic.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "invalid_client"
        client = (user, password)
    expected = (app_client_id(), app_client_secret())
    if client[0] != expected[0]:
        return "invalid_client"
    given = str(client[1] or "").encode("utf-8", "surrogateescape")  # bytes: non-ASCII is a mismatch, not a 500
    return "" if secrets.compare_digest(given, expected[1].encode()) else "authentication failure"


def _assertion_problem(assertion: str, request: HttpRequest) -> str:
    """What a real org checks: the signature against the connected app's certificate, the issuer, the
    audience (login, test or this org's own URL) and the expiry (a number, or a numeric string)."""
    key = _certificate_key()
    if key is None:
        return "invalid assertion: no certificate is uploaded for this connected app"
    try:
        claims = jwt.decode(
            assertion,
            key,
            algorithms=["RS256"],
            options={"verify_aud": False, "verify_exp": False, "require": ["iss", "sub", "aud", "exp"]},
        )
    except jwt.PyJWTError:
        return "invalid assertion"
    if claims["iss"] != app_client_id():
        return "invalid_client"
    audiences = (*LOGIN_AUDIENCES, request.build_absolute_uri("/mock/salesforce"))
    if str(claims["aud"]).rstrip("/") not in audiences:
        return "audience is invalid"
    try:
        expires = float(claims["exp"])
    except (TypeError, ValueError):
        return "invalid assertion"
    return "" if expires > timezone.now().timestamp() else "expired authorization code"


def _certificate_key() -> Any:
    pem = jwt_certificate().strip().encode()
    if not pem:
        return None
    if b"CERTIFICATE" in pem:
        return x509.load_pem_x509_certificate(pem).public_key()
    return pem


# --- the API's directory and limits --------------------------------------------------------------


@mock_view(SYSTEM, counted=False)
def versions(request: HttpRequest) -> HttpResponse:
    """`GET /services/data/`: the API versions this org serves (no session needed)."""
    rows = [{"label": label, "url": f"/services/data/v{v}", "version": v} for label, v in VERSIONS]
    return JsonResponse(rows, safe=False)


@api
def resources(request: HttpRequest, version: str) -> HttpResponse:
    base = f"/services/data/v{version}"
    names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
    return JsonResponse({name: f"{base}/{name}" for name in names})


@api
def limits(request: HttpRequest, version: str) -> HttpResponse:
    used = calls_in_window(SYSTEM, DAY) + 1
    body = {name: {"Max": cap, "Remaining": cap} for name, cap in LIMITS.items()}
    body["DailyApiRequests"] = {"Max": _limit(), "Remaining": max(_limit() - used, 0)}
    return JsonResponse(dict(sorted(body.items())))


# --- SOQL --------------------------------------------------------------------------------------


@api
def query(request: HttpRequest, version: str, locator: str = "", offset: str = "0") -> HttpResponse:
    include_deleted = "/queryAll" in request.path
    if locator:
        cursor = MockQueryLocator.objects.filter(system=SYSTEM, locator=locator).first()
        if cursor is None:
            return errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return JsonResponse(_batch(cursor, int(offset), version))
    q = request.GET.get("q", "")
    if not q:
        return errors(400, "MALFORMED_QUERY", "A query string has to be specified")
    parsed = parse(q)
    rows = _rows(parsed.object.name, include_deleted)
    matched = run(parsed, [store.as_row(r) for r in rows])
    if parsed.count:
        return JsonResponse({"totalSize": len(matched), "done": True, "records": []})
    pk_of = {r.record_id: r.pk for r in rows}
    pks = [pk_of[row["Id"]] for row in matched]
    # A query cursor lives 15 minutes after its last use on a real org; the mock keeps them 15 after creation.
    MockQueryLocator.objects.filter(system=SYSTEM, created_at__lt=timezone.now() - LOCATOR_LIFETIME).delete()
    cursor = MockQueryLocator.objects.create(
        system=SYSTEM,
        locator=new_id("Contact").replace("003", "01g", 1),
        object=parsed.object.name,
        fields=parsed.fields,
        record_pks=pks,
        include_deleted=include_deleted,
        batch_size=_batch_size(request),
    )
    return JsonResponse(_batch(cursor, 0, version))


def _rows(object_type: str, include_deleted: bool) -> list[MockRecord]:
    rows = MockRecord.objects.filter(system=SYSTEM, object=object_type)
    return list(rows if include_deleted else rows.filter(deleted_at__isnull=True))


def _batch_size(request: HttpRequest) -> int:
    """`Sforce-Query-Options: batchSize=n` (200 to 2,000: a request, not a guarantee) or the org's default."""
    default = mock_setting_int("MOCK_SALESFORCE_QUERY_PAGE", 2000)
    header = request.headers.get("Sforce-Query-Options", "")
    options = {name.strip(): value.strip() for name, _, value in (p.partition("=") for p in header.split(","))}
    try:
        asked = int(options.get("batchSize", ""))
    except ValueError:
        return default
    return min(max(asked, MIN_BATCH), MAX_BATCH)


def _batch(cursor: MockQueryLocator, offset: int, version: str) -> dict[str, Any]:
    pks = cursor.record_pks[offset : offset + cursor.batch_size]
    found = {r.pk: r for r in MockRecord.objects.filter(pk__in=pks)}
    records = [store.as_row(found[pk], cursor.fields) for pk in pks if pk in found]
    done = offset + cursor.batch_size >= len(cursor.record_pks)
    body: dict[str, Any] = {"totalSize": len(cursor.record_pks), "done": done, "records": records}
    if not done:
        endpoint = "queryAll" if cursor.include_deleted else "query"
        body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{cursor.locator}-{offset + cursor.batch_size}"
    return body


# --- getUpdated / getDeleted -------------------------------------------------------------------


@api
def replication(request: HttpRequest, version: str, object_type: str, kind: str) -> HttpResponse:
    """getUpdated / getDeleted: the seconds of start and end are ignored, as Salesforce documents."""
    obj = object_or_404(object_type)
    if isinstance(obj, HttpResponse):
        return obj
    window = _window(request, kind)
    if isinstance(window, HttpResponse):
        return window
    start, end, earliest = window
    rows = MockRecord.objects.filter(system=SYSTEM, object=obj.name)
    if kind == "deleted":
        gone = rows.filter(deleted_at__gte=start, deleted_at__lt=end).order_by("deleted_at", "record_id")
        return JsonResponse(
            {
                "deletedRecords": [{"id": r.record_id, "deletedDate": sf_time(r.deleted_at or end)} for r in gone],
                "earliestDateAvailable": sf_time(earliest),
                "latestDateCovered": sf_time(end),
            }
        )
    changed = rows.filter(deleted_at__isnull=True, modified_at__gte=start, modified_at__lt=end)
    return JsonResponse(
        {
            "ids": list(changed.order_by("modified_at", "record_id").values_list("record_id", flat=True)),
            "latestDateCovered": sf_time(end),
        }
    )


def _window(request: HttpRequest, kind: str) -> tuple[datetime, datetime, datetime] | HttpResponse:
    raw = {name: request.GET.get(name, "") for name in ("start", "end")}
    missing = [name for name, value in raw.items() if not value]
    if missing:
        return errors(400, "MISSING_ARGUMENT", f"{missing[0]} parameter is required", missing)
    try:
        start, end = (_minute(_parse_time(raw["start"])), _minute(_parse_time(raw["end"])))
    except ValueError:
        return errors(400, "INVALID_DATE_FORMAT", "start and end must be ISO 8601 dateTimes with a time zone")
    now = store.clock()
    earliest = _minute(now - timedelta(days=LOOKBACK_DAYS[kind]))
    if end <= start:
        return errors(400, "INVALID_REPLICATION_DATE", "end date must be after start date")
    if start < earliest:
        return errors(400, "INVALID_REPLICATION_DATE", f"start date cannot be before {sf_time(earliest)}")
    return start, min(end, _minute(now)), earliest


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().replace(" ", "+").replace("Z", "+00:00").replace("+0000", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed


__all__ = ["OBJECTS", "api", "body_json", "errors", "method_not_allowed", "object_or_404", "refused"]

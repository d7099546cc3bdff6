"""A local Outreach, faithful enough that the real connector runs against it unchanged.

OAuth refresh with rotated refresh tokens, JSON:API with a 415 for any other content type,
422 validation (the email-taken race included), cursor paging through links.next, the
X-RateLimit-* headers with a 429 at the hourly cap, and webhooks called back on every change.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from crms.mocks.models import MockCall, MockToken
from crms.mocks.runtime import mock_view
from crms.outreach import mock_store as store
from crms.outreach.mock_store import Invalid

SYSTEM = store.SYSTEM
JSONAPI = "application/vnd.api+json"
RESOURCES = {"prospects": "prospect", "accounts": "account", "webhooks": store.WEBHOOKS}
MAX_PAGE = 1000
REFRESH = "outreach-refresh"  # MockToken.system for issued refresh tokens
USED_REFRESH = "outreach-refresh-used"


def _errors(status: int, code: str, title: str, detail: str, extra: dict[str, Any] | None = None) -> JsonResponse:
    item = {"id": code, "title": title, "detail": detail, **(extra or {})}
    return JsonResponse({"errors": [item]}, status=status, content_type=JSONAPI)


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/mock/outreach/api/v2")


# --- OAuth --------------------------------------------------------------------------------------


@mock_view(SYSTEM, counted=False, faults=False)
def token(request: HttpRequest) -> HttpResponse:
    form = request.POST
    if (form.get("client_id"), form.get("client_secret")) != (
        settings.MOCK_OUTREACH_CLIENT_ID, settings.MOCK_OUTREACH_CLIENT_SECRET,
    ):  # fmt: skip
        return JsonResponse(
            {"error": "invalid_client", "error_description": "Client authentication failed"}, status=401
        )
    if form.get("grant_type") != "refresh_token" or not _refresh_usable(form.get("refresh_token", "")):
        return JsonResponse({"error": "invalid_grant", "error_description": "The provided authorization grant is "
                             "invalid, expired, revoked, or was issued to another client."}, status=400)  # fmt: skip
    # Rotation: the refresh token just used is spent; a second refresher holding it is refused.
    MockToken.objects.create(system=USED_REFRESH, token=form["refresh_token"], expires_at=timezone.now())
    access = MockToken.objects.create(system=SYSTEM, token=secrets.token_urlsafe(32),
                                      expires_at=timezone.now() + timedelta(seconds=7200))  # fmt: skip
    refresh = MockToken.objects.create(system=REFRESH, token=secrets.token_urlsafe(32),
                                       expires_at=timezone.now() + timedelta(days=14))  # fmt: skip
    return JsonResponse({"access_token": access.token, "token_type": "bearer", "expires_in": 7200,
                         "refresh_token": refresh.token, "scope": "prospects.all accounts.all webhooks.all",
                         "created_at": int(timezone.now().timestamp())})  # fmt: skip


def _refresh_usable(candidate: str) -> bool:
    if not candidate or MockToken.objects.filter(system=USED_REFRESH, token=candidate).exists():
        return False
    if candidate == settings.MOCK_OUTREACH_REFRESH_TOKEN:
        return True
    return MockToken.objects.filter(system=REFRESH, token=candidate, expires_at__gt=timezone.now()).exists()


# --- the API ------------------------------------------------------------------------------------


def api(view: Any) -> Any:
    @mock_view(SYSTEM)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        used = _calls_this_hour() + 1
        response = _refusal(request, used)
        if response is None:
            try:
                response = view(request, *args, **kwargs)
            except Invalid as exc:
                response = JsonResponse({"errors": [exc.item]}, status=422, content_type=JSONAPI)
        _rate_headers(response, used)
        return response

    wrapper.__name__ = view.__name__
    return wrapper


def _calls_this_hour() -> int:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    return MockCall.objects.filter(system=SYSTEM, counted=True, at__gte=hour).count()


def _rate_headers(response: HttpResponse, used: int) -> None:
    limit = int(settings.MOCK_OUTREACH_HOURLY_LIMIT)
    reset = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    response["X-RateLimit-Limit"] = str(limit)
    response["X-RateLimit-Remaining"] = str(max(limit - used, 0))
    response["X-RateLimit-Reset"] = str(int(reset.timestamp()))


def _refusal(request: HttpRequest, used: int) -> HttpResponse | None:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not MockToken.objects.filter(system=SYSTEM, token=token, expires_at__gt=timezone.now()).exists():
        return _errors(401, "unauthorizedOauthToken", "Unauthorized OAuth Token",
                       "The OAuth token provided is invalid or expired.")  # fmt: skip
    if used > int(settings.MOCK_OUTREACH_HOURLY_LIMIT):
        return _errors(429, "rateLimitExceeded", "Rate Limit Exceeded", "You have exceeded your permitted rate limit")
    if request.method in ("POST", "PATCH") and request.content_type != JSONAPI:
        response = JsonResponse({"errors": [{"id": "unsupportedMediaType", "title": "Unsupported Media Type",
                                 "details": "Expected Content-Type header to be 'application/vnd.api+json'."}]},
                                status=415, content_type=JSONAPI)  # fmt: skip
        return response
    fault = request.mock_fault  # type: ignore[attr-defined]
    if fault is not None and fault.status:
        response = _errors(fault.status, fault.code or f"http{fault.status}", "Injected fault", fault.message or "")
        if fault.retry_after:
            response["Retry-After"] = str(fault.retry_after)
        return response
    return None


@api
def root(request: HttpRequest) -> HttpResponse:
    links = {"prospects": f"{_base(request)}/prospects", "accounts": f"{_base(request)}/accounts"}
    return JsonResponse({"links": links, "meta": {"user": {"email": "integration@example.com"}}}, content_type=JSONAPI)


@api
def collection(request: HttpRequest, plural: str) -> HttpResponse:
    kind = RESOURCES.get(plural)
    if kind is None:
        return _errors(404, "resourceNotFound", "Resource Not Found", f"Could not find '{plural}'")
    if request.method == "POST":
        attributes = _attributes(request, kind, creating=True)
        record = store.create(kind, attributes, _base(request))
        return JsonResponse({"data": store.resource(record, _base(request))}, status=201, content_type=JSONAPI)
    return _list(request, kind)


@api
def member(request: HttpRequest, plural: str, record_id: str) -> HttpResponse:
    kind = RESOURCES.get(plural)
    record = store.live(kind).filter(record_id=record_id).first() if kind else None
    if record is None:
        return _errors(404, "resourceNotFound", "Resource Not Found", f"Could not find {kind} with id {record_id}")
    if request.method == "DELETE":
        store.destroy(record, _base(request))
        return HttpResponse(status=204)
    if request.method == "PATCH":
        data = _data(request)
        if data.get("id") != int(record_id):
            raise Invalid("data.id must be the id in the path, as an integer", "/data/id")
        store.update(record, store.validate(kind or "", data.get("attributes", {}), creating=False), _base(request))
    return JsonResponse({"data": store.resource(record, _base(request))}, content_type=JSONAPI)


def _data(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise Invalid("the body is not JSON") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise Invalid('the body must be {"data": {"type", "attributes"}}')
    return data


def _attributes(request: HttpRequest, kind: str, *, creating: bool) -> dict[str, Any]:
    data = _data(request)
    if data.get("type") != kind:
        raise Invalid(f"data.type must be '{kind}'", "/data/type")
    if kind == store.WEBHOOKS:
        return dict(data.get("attributes") or {})
    return store.validate(kind, data.get("attributes", {}), creating=creating)


# --- collections: filters, sort, cursor paging -------------------------------------------------


def _list(request: HttpRequest, kind: str) -> HttpResponse:
    params = request.GET
    size = int(params.get("page[size]", 50))
    if not 1 <= size <= MAX_PAGE:
        return _errors(400, "invalidPageSize", "Invalid Page Size", f"page[size] must be 1..{MAX_PAGE}")
    try:
        rows = _filtered(kind, params)
    except BadFilter as exc:
        return _errors(400, "invalidFilter", "Invalid Filter", str(exc))
    descending = params.get("sort", "id").startswith("-")
    rows.sort(key=lambda r: (r.modified_at, int(r.record_id)) if "updatedAt" in params.get("sort", "") else
              (int(r.record_id),), reverse=descending)  # fmt: skip
    start = _after(params.get("page[after]"))
    page = rows[start : start + size]
    body: dict[str, Any] = {"data": [store.resource(r, _base(request)) for r in page], "links": {}}
    if start + size < len(rows):
        query = {k: v for k, v in params.items() if k != "page[after]"}
        query["page[after]"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        body["links"]["next"] = f"{_base(request)}/{kind}s?{urlencode(query)}"
    if params.get("count", "true") != "false":
        body["meta"] = {"count": len(rows)}
    return JsonResponse(body, content_type=JSONAPI)


def _after(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except ValueError:
        return 0


def _filtered(kind: str, params: Any) -> list[Any]:
    records = store.live(kind)
    for key, value in params.items():
        if not key.startswith("filter["):
            continue
        name = key[len("filter[") :].split("]")[0]
        records = _apply_filter(kind, records, name, key, value)
    return list(records)


def _apply_filter(kind: str, records: Any, name: str, key: str, value: str) -> Any:
    if name == "id":
        return records.filter(record_id__in=value.split(","))
    if name == "emails" and kind == "prospect":
        return records.filter(record_id__in=[r.record_id for r in store.find_by_email(value)])
    if name == "updatedAt":
        low, _, high = value.partition("..") if ".." in value else (value, "", "inf")
        if key.endswith("[gte]"):
            low, high = value, "inf"
        records = records.filter(modified_at__gte=_parse(low)) if low not in ("", "neginf") else records
        return records.filter(modified_at__lte=_parse(high)) if high not in ("", "inf") else records
    if name in store.FILTERABLE.get(kind, set()):
        return records.filter(pk__in=store.matching(kind, name, value).values("pk"))
    raise BadFilter(f"'{name}' is not a filterable attribute of {kind}")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class BadFilter(Exception):
    pass

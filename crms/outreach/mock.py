"""A local Outreach, faithful enough that the real connector runs against it unchanged.

OAuth 2.0: an authorize step issuing single-use codes, the authorization_code grant, and refresh
tokens rotated on every refresh (a spent one is refused) for as long as the chain goes on. The API
is JSON:API as Outreach's reference (reference.json) shapes it: every attribute and relationship in
every answer (mock_schema), 422s naming the attribute for unknown, read-only or mistyped values, a
415 for any other content type, the reference's filters and sorts with keyset cursor paging through
links.next (mock_query), the X-RateLimit-* headers with a 429 and Retry-After at the hourly cap, and
webhooks called back on every change.
"""

from __future__ import annotations

import json
import math
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from crms.mocks import consent
from crms.mocks.declare import mock_setting, mock_setting_int
from crms.mocks.models import MockCall, MockFault, MockToken
from crms.mocks.runtime import mock_view
from crms.outreach import mock_query, mock_schema
from crms.outreach import mock_store as store
from crms.outreach.mock_schema import Invalid

SYSTEM = store.SYSTEM
JSONAPI = "application/vnd.api+json"
RESOURCES = {"prospects": "prospect", "accounts": "account", "webhooks": store.WEBHOOKS}
ACCESS_SECONDS = 7200  # Outreach's access tokens last two hours
REFRESH_LIFETIME = timedelta(days=14)
CODE_LIFETIME = timedelta(minutes=10)  # RFC 6749 4.1.2: "a maximum authorization code lifetime of 10 minutes"
SCOPE = "prospects.all accounts.all webhooks.all"
# MockToken.system of each kind of token; a spent one moves to the "-used" system (its row is kept).
REFRESH, USED_REFRESH = "outreach-refresh", "outreach-refresh-used"
CODE, USED_CODE = "outreach-code", "outreach-code-used"
# A fault code that is a switch, not an error id: X-RateLimit-Remaining holds two numbers ("9999, 19988"),
# as connector authors report. Arm it with a latency_ms=1 fault to leave the answers otherwise alone.
TWO_NUMBERS = "two_number_remaining"
# Another switch: page[after] counts rows (offset paging) instead of holding the last row's keys, so a
# record that moves mid-walk makes the next page skip one: for proving a reader survives such an API.
OFFSET_PAGING = "offset_paging"
SWITCHES = frozenset({TWO_NUMBERS, OFFSET_PAGING})


def _errors(status: int, code: str, title: str, detail: str) -> JsonResponse:
    return JsonResponse(
        {"errors": [{"id": code, "title": title, "detail": detail}]}, status=status, content_type=JSONAPI
    )


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/mock/outreach/api/v2")


# The mock's own settings (environment, or a Django setting of the same name in tests); `make run`
# writes random ones to .env.
def app_client_id() -> str:
    return mock_setting("MOCK_OUTREACH_CLIENT_ID", "recordsync-mock")


def app_client_secret() -> str:
    return mock_setting("MOCK_OUTREACH_CLIENT_SECRET", "mock-only-secret")


def first_refresh_token() -> str:
    """The seed of the refresh-token chain, as if an operator had linked the account elsewhere."""
    return mock_setting("MOCK_OUTREACH_REFRESH_TOKEN", "mock-only-first-refresh-token")


def hourly_limit() -> int:
    return mock_setting_int("MOCK_OUTREACH_HOURLY_LIMIT", 10000)


# --- OAuth --------------------------------------------------------------------------------------


@mock_view(SYSTEM, counted=False, faults=False)
def authorize(request: HttpRequest) -> HttpResponse:
    """The consent page: the user clicks Authorize or Cancel, and is sent back to redirect_uri with a code and
    the state, or with error=access_denied.

    As RFC 6749 4.1.2.1 says, an unknown client or a bad redirect_uri is answered here, never redirected to.
    """
    query = request.GET if request.method == "GET" else request.POST
    client_id, redirect_uri, state = query.get("client_id", ""), query.get("redirect_uri", ""), query.get("state")
    if client_id != app_client_id():
        return _oauth_error(400, "invalid_client", "client_id is not a registered application")
    where = urlsplit(redirect_uri)
    if where.scheme not in ("http", "https") or not where.netloc or where.fragment:
        return _oauth_error(400, "invalid_request", "redirect_uri must be an absolute http(s) URI without a fragment")
    if query.get("response_type") != "code":
        return consent.redirect(redirect_uri, {"error": "unsupported_response_type", "state": state})
    if request.method == "GET":
        return _consent(request)
    if query.get("decision") != "allow":
        return consent.redirect(redirect_uri, {"error": "access_denied", "state": state})
    code = f"{secrets.token_urlsafe(24)}.{_binding(client_id, redirect_uri)}"
    MockToken.objects.create(system=CODE, token=code, expires_at=timezone.now() + CODE_LIFETIME)
    return consent.redirect(redirect_uri, {"code": code, "state": state})


def _consent(request: HttpRequest) -> HttpResponse:
    return consent.page(
        request,
        title="Authorize application (mock Outreach)",
        lines=["RecordSync would like to access the Outreach account of <strong>integration@example.com</strong>:"],
        allow="Authorize",
        deny="Cancel",
    )


def _binding(client_id: str, redirect_uri: str) -> str:
    """Part of each code: the client and redirect_uri it was issued to (a token row has no room for more)."""
    return consent.binding(client_id, redirect_uri)


@mock_view(SYSTEM, counted=False, faults=False)
def token(request: HttpRequest) -> HttpResponse:
    form = request.POST
    client_id = form.get("client_id", "")
    if (client_id, form.get("client_secret")) != (app_client_id(), app_client_secret()):
        return _oauth_error(401, "invalid_client", "Client authentication failed")
    grant = form.get("grant_type")
    if grant == "refresh_token":
        granted = _spend_refresh(form.get("refresh_token", ""))
    elif grant == "authorization_code":
        granted = _spend_code(form.get("code", ""), client_id, form.get("redirect_uri", ""))
    else:
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
    if not granted:
        return _oauth_error(
            400,
            "invalid_grant",
            "The provided authorization grant is invalid, expired, revoked, "
            "does not match the redirection URI used in the authorization request, or was issued "
            "to another client.",
        )
    return _issue()


def _oauth_error(status: int, error: str, description: str) -> JsonResponse:
    return JsonResponse({"error": error, "error_description": description}, status=status)


def _spend_refresh(candidate: str) -> bool:
    """Rotation: a refresh token is good once. Spending it moves its row to USED_REFRESH in one
    conditional UPDATE, so of two refreshers holding it only one wins, and no row is ever duplicated."""
    if not candidate:
        return False
    now = timezone.now()
    if candidate == first_refresh_token():  # the chain's seed, never issued by us
        try:
            with transaction.atomic():
                MockToken.objects.create(system=USED_REFRESH, token=candidate, expires_at=now)
        except IntegrityError:
            return False
        return True
    spent = MockToken.objects.filter(system=REFRESH, token=candidate, expires_at__gt=now)
    return spent.update(system=USED_REFRESH, expires_at=now) == 1


def _spend_code(code: str, client_id: str, redirect_uri: str) -> bool:
    """A code is good once, for ten minutes, for the client and redirect_uri it was issued to."""
    if not code or not code.endswith(f".{_binding(client_id, redirect_uri)}"):
        return False
    now = timezone.now()
    issued = MockToken.objects.filter(system=CODE, token=code, expires_at__gt=now)
    return issued.update(system=USED_CODE, expires_at=now) == 1


def _issue() -> JsonResponse:
    now = timezone.now()
    access = MockToken.objects.create(
        system=SYSTEM, token=secrets.token_urlsafe(32), expires_at=now + timedelta(seconds=ACCESS_SECONDS)
    )
    refresh = MockToken.objects.create(
        system=REFRESH, token=secrets.token_urlsafe(32), expires_at=now + REFRESH_LIFETIME
    )
    return JsonResponse(
        {
            "access_token": access.token,
            "token_type": "bearer",
            "expires_in": ACCESS_SECONDS,
            "refresh_token": refresh.token,
            "scope": SCOPE,
            "created_at": int(now.timestamp()),
        }
    )


# --- the API ------------------------------------------------------------------------------------


def api(view: Any) -> Any:
    @mock_view(SYSTEM)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        used = _calls_this_hour() + 1
        fault: MockFault | None = request.mock_fault  # type: ignore[attr-defined]
        response = _refusal(request, used, fault)
        if response is None:
            try:
                response = view(request, *args, **kwargs)
            except Invalid as exc:
                response = JsonResponse({"errors": exc.items}, status=422, content_type=JSONAPI)
            except mock_query.BadRequest as exc:
                response = JsonResponse({"errors": [exc.item]}, status=400, content_type=JSONAPI)
        _rate_headers(response, used, two_numbers=fault is not None and fault.code == TWO_NUMBERS)
        return response

    wrapper.__name__ = view.__name__
    return wrapper


def _calls_this_hour() -> int:
    return MockCall.objects.filter(system=SYSTEM, counted=True, at__gte=_hour_start()).count()


def _hour_start() -> datetime:
    return timezone.now().replace(minute=0, second=0, microsecond=0)


def _seconds_to_reset() -> int:
    return max(math.ceil((_hour_start() + timedelta(hours=1) - timezone.now()).total_seconds()), 1)


def _rate_headers(response: HttpResponse, used: int, *, two_numbers: bool) -> None:
    limit = hourly_limit()
    remaining = str(max(limit - used, 0))
    if two_numbers:  # the second figure: an allowance twice the user's (the org's, as reported), same usage
        remaining = f"{remaining}, {max(2 * limit - used, 0)}"
    response["X-RateLimit-Limit"] = str(limit)
    response["X-RateLimit-Remaining"] = remaining
    response["X-RateLimit-Reset"] = str(int((_hour_start() + timedelta(hours=1)).timestamp()))


def _refusal(request: HttpRequest, used: int, fault: MockFault | None) -> HttpResponse | None:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not MockToken.objects.filter(system=SYSTEM, token=token, expires_at__gt=timezone.now()).exists():
        return _errors(
            401, "unauthorizedOauthToken", "Unauthorized OAuth Token", "The OAuth token provided is invalid or expired."
        )
    if used > hourly_limit():
        response = _errors(
            429, "rateLimitExceeded", "Rate Limit Exceeded", "You have exceeded your permitted rate limit"
        )
        response["Retry-After"] = str(_seconds_to_reset())
        return response
    if request.method in ("POST", "PATCH") and request.content_type != JSONAPI:
        return JsonResponse(
            {
                "errors": [
                    {
                        "id": "unsupportedMediaType",
                        "title": "Unsupported Media Type",
                        "details": "Expected Content-Type header to be 'application/vnd.api+json'.",
                    }
                ]
            },
            status=415,
            content_type=JSONAPI,
        )
    if fault is not None and fault.status:
        code = fault.code if fault.code and fault.code not in SWITCHES else f"http{fault.status}"
        response = _errors(fault.status, code, "Injected fault", fault.message or "")
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
    return _create(request, kind) if request.method == "POST" else _list(request, kind, plural)


def _create(request: HttpRequest, kind: str) -> HttpResponse:
    data, base = _data(request), _base(request)
    if data.get("type") != kind:
        raise Invalid(f"data.type must be '{kind}'", "/data/type")
    if kind == store.WEBHOOKS:
        record = store.create(kind, dict(data.get("attributes") or {}), base)
    else:
        attributes, links = _write(kind, data, creating=True)
        record = store.create(kind, attributes, base, links=links)
    return JsonResponse({"data": mock_schema.resource(record, base)}, status=201, content_type=JSONAPI)


def _list(request: HttpRequest, kind: str, plural: str) -> HttpResponse:
    fault: MockFault | None = request.mock_fault  # type: ignore[attr-defined]
    found = mock_query.page(kind, request.GET, by_offset=fault is not None and fault.code == OFFSET_PAGING)
    base = _base(request)
    body: dict[str, Any] = {"data": [mock_schema.resource(row.record, base) for row in found.rows], "links": {}}
    next_link = found.next_link(f"{base}/{plural}")
    if next_link:
        body["links"]["next"] = next_link
    if found.count is not None:
        body["meta"] = {"count": found.count}
    return JsonResponse(body, content_type=JSONAPI)


@api
def member(request: HttpRequest, plural: str, record_id: str) -> HttpResponse:
    kind = RESOURCES.get(plural)
    record = store.live(kind).filter(record_id=record_id).first() if kind and record_id.isdigit() else None
    if kind is None or record is None:
        return _errors(404, "resourceNotFound", "Resource Not Found", f"Could not find '{kind}' with ID '{record_id}'.")
    if request.method == "DELETE":
        store.destroy(record, _base(request))
        return HttpResponse(status=204)
    if request.method == "PATCH":
        data = _data(request)
        if data.get("type") != kind:
            raise Invalid(f"data.type must be '{kind}'", "/data/type")
        if data.get("id") != int(record_id) or isinstance(data.get("id"), bool):
            raise Invalid("data.id must be the id in the path, as an integer", "/data/id")
        if kind == store.WEBHOOKS:
            store.update(record, dict(data.get("attributes") or {}), _base(request))
        else:
            attributes, links = _write(kind, data, creating=False)
            store.update(record, attributes, _base(request), links=links)
    return JsonResponse({"data": mock_schema.resource(record, _base(request))}, content_type=JSONAPI)


def _data(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise Invalid("the body is not JSON") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise Invalid('the body must be {"data": {"type", "attributes"}}')
    return data


def _write(kind: str, data: dict[str, Any], *, creating: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes and to-one relationships of a write; every problem with either in one 422."""
    errors: list[Invalid] = []
    attributes: dict[str, Any] = {}
    links: dict[str, Any] = {}
    try:
        attributes = mock_schema.validate(kind, data.get("attributes", {}), creating=creating)
    except Invalid as exc:
        errors.append(exc)
    try:
        links = mock_schema.relationships_given(kind, data.get("relationships"))
    except Invalid as exc:
        errors.append(exc)
    if errors:
        raise Invalid.joined(errors)
    return attributes, links

"""A local HubSpot account, faithful enough that the real connector, and hubspot-api-client, run against it unchanged.

What every API call shares: bearer tokens (a private app's, or OAuth access tokens of 30 minutes), the burst
window (per 10 seconds) and the daily allowance counted in X-HubSpot-RateLimit-* and refused with a 429 naming
the policy, the search API's own per-second limit (its answers carry no rate-limit headers), injected faults,
and HubSpot's error body. OAuth: a consent page, the authorization-code grant (with PKCE when the client
asked for it) and the refresh grant. The CRM endpoints are in mock_api.py, the records in mock_store.py.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.html import escape

from crms.hubspot.mock_schema import SYSTEM, Invalid, error
from crms.mocks import consent
from crms.mocks.declare import mock_setting, mock_setting_int
from crms.mocks.models import MockCall, MockFault, MockToken
from crms.mocks.runtime import mock_view

CODE, REFRESH = f"{SYSTEM}-code", f"{SYSTEM}-refresh"
ACCESS_LIFETIME = timedelta(minutes=30)
CODE_LIFETIME = timedelta(minutes=10)
BURST_WINDOW_MS = 10_000
SCOPES = [
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.schemas.contacts.read",
    "crm.schemas.companies.read",
    "oauth",
]
HUB_ID = 24681357
Handler = Callable[..., HttpResponse]


# The mock's own settings (environment, or a Django setting of the same name in tests); `make run`
# writes random secrets to .env.
def app_client_id() -> str:
    return mock_setting("MOCK_HUBSPOT_CLIENT_ID", "recordsync-mock")


def app_client_secret() -> str:
    return mock_setting("MOCK_HUBSPOT_CLIENT_SECRET", "mock-only-secret")


def private_app_token() -> str:
    return mock_setting("MOCK_HUBSPOT_PRIVATE_APP_TOKEN", "pat-mock-only")


def first_refresh_token() -> str:
    """A refresh token as if the account had been connected elsewhere (the Connect button issues real ones)."""
    return mock_setting("MOCK_HUBSPOT_REFRESH_TOKEN", "mock-only-first-refresh-token")


def burst_limit() -> int:
    return mock_setting_int("MOCK_HUBSPOT_BURST_LIMIT", 190)  # per 10 s: Professional, private app


def daily_limit() -> int:
    return mock_setting_int("MOCK_HUBSPOT_DAILY_LIMIT", 625_000)


def search_per_second() -> int:
    return mock_setting_int("MOCK_HUBSPOT_SEARCH_PER_SECOND", 5)


# --- what every API call goes through -------------------------------------------------------------


def api(view: Handler) -> Handler:
    """Authentication, limits, injected faults and error bodies, in HubSpot's order."""

    @mock_view(SYSTEM)
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        fault: MockFault | None = request.mock_fault  # type: ignore[attr-defined]
        private, refusal = _authenticate(request)
        if refusal is not None:
            return refusal
        searching = request.path.endswith("/search")
        limited, used = _limits(searching)
        if limited is not None:
            return limited
        if fault is not None and fault.status:
            response = _fault(fault)
        else:
            try:
                response = view(request, *args, **kwargs)
            except Invalid as exc:
                body = error(exc.status, exc.category, exc.message, {"propertyName": exc.names} if exc.names else None)
                response = JsonResponse(body, status=exc.status)
        if not searching:  # "Responses from the search API endpoints will not include any of the rate limit headers"
            _rate_headers(response, used, private=private)
        return response

    return wrapper


def body_json(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except ValueError as exc:
        raise Invalid(f"Invalid input JSON on line 1: {exc}", []) from None


def _authenticate(request: HttpRequest) -> tuple[bool, HttpResponse | None]:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if token and secrets.compare_digest(token.encode(), private_app_token().encode()):
        return True, None
    found = MockToken.objects.filter(system=SYSTEM, token=token).first() if token else None
    if found is not None and found.expires_at > timezone.now():
        return False, None
    if found is not None:
        ago = int((timezone.now() - found.expires_at).total_seconds())
        body = error(
            401, "EXPIRED_AUTHENTICATION", f"The OAuth token used to make this call expired {ago} second(s) ago."
        )
    else:
        body = error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
            "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )
    return False, JsonResponse(body, status=401)


def _limits(searching: bool) -> tuple[HttpResponse | None, dict[str, int]]:
    now = timezone.now()
    calls = MockCall.objects.filter(system=SYSTEM, counted=True)
    if searching:
        recent = calls.filter(path__endswith="/search", at__gte=now - timedelta(seconds=1)).count() + 1
        if recent > search_per_second():
            body = {"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT"}
            body["correlationId"] = error(429, "", "")["correlationId"]
            return JsonResponse(body, status=429), {}
        return None, {}
    burst = calls.exclude(path__endswith="/search").filter(at__gte=now - timedelta(milliseconds=BURST_WINDOW_MS))
    used = {"burst": burst.count() + 1, "daily": calls.filter(at__gte=now - timedelta(days=1)).count() + 1}
    for policy, key, limit in (("DAILY", "daily", daily_limit()), ("TEN_SECONDLY_ROLLING", "burst", burst_limit())):
        if used[key] > limit:
            body = error(429, "RATE_LIMITS", f"You have reached your {policy.lower()} limit.")
            body |= {"errorType": "RATE_LIMIT", "policyName": policy}
            response = JsonResponse(body, status=429)
            _rate_headers(response, used, private=True)
            return response, used
    return None, used


def _rate_headers(response: HttpResponse, used: dict[str, int], *, private: bool) -> None:
    if not used:
        return
    response["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(BURST_WINDOW_MS)
    response["X-HubSpot-RateLimit-Max"] = str(burst_limit())
    response["X-HubSpot-RateLimit-Remaining"] = str(max(burst_limit() - used["burst"], 0))
    if private:  # "not included for calls using OAuth"
        response["X-HubSpot-RateLimit-Daily"] = str(daily_limit())
        response["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(daily_limit() - used["daily"], 0))


def _fault(fault: MockFault) -> HttpResponse:
    categories = {403: "MISSING_SCOPES", 429: "RATE_LIMITS"}
    category = fault.code or categories.get(fault.status or 0, "INTERNAL_ERROR")
    body = error(fault.status or 500, category, fault.message or "Injected fault")
    if fault.status == 429:
        body |= {"errorType": "RATE_LIMIT", "policyName": fault.code or "TEN_SECONDLY_ROLLING"}
    response = JsonResponse(body, status=fault.status or 500)
    if fault.retry_after is not None:
        response["Retry-After"] = str(fault.retry_after)
    return response


# --- OAuth ------------------------------------------------------------------------------------------


@mock_view(SYSTEM, counted=False, faults=False)
def authorize(request: HttpRequest) -> HttpResponse:
    """The consent page: the user picks Allow or Deny, and is sent back to redirect_uri with a code or an error.

    An unknown client or a bad redirect_uri is answered here, never redirected to (RFC 6749 4.1.2.1).
    """
    query = request.GET if request.method == "GET" else request.POST
    client_id, redirect_uri, state = query.get("client_id", ""), query.get("redirect_uri", ""), query.get("state")
    if client_id != app_client_id():
        return _page("Authorization failed", "This app's client_id is not known to this HubSpot account.", 400)
    where = urlsplit(redirect_uri)
    if where.scheme not in ("http", "https") or not where.netloc or where.fragment:
        return _page("Authorization failed", "redirect_uri must be an absolute http(s) URL without a fragment.", 400)
    challenge, method = query.get("code_challenge", ""), query.get("code_challenge_method", "")
    if challenge and method != "S256":
        return consent.redirect(
            redirect_uri, {"error": "invalid_request", "error_description": "S256 only", "state": state}
        )
    if request.method == "GET":
        return _consent(request)
    if query.get("decision") != "allow":
        return consent.redirect(redirect_uri, {"error": "access_denied", "state": state})
    code = f"{secrets.token_urlsafe(24)}.{_binding(client_id, redirect_uri, challenge)}"
    MockToken.objects.create(system=CODE, token=code, expires_at=timezone.now() + CODE_LIFETIME)
    return consent.redirect(redirect_uri, {"code": code, "state": state})


def _consent(request: HttpRequest) -> HttpResponse:
    return consent.page(
        request,
        title="Connect to HubSpot (mock)",
        lines=[f"Account <strong>recordsync-mock.hubspot.com</strong> (hub {HUB_ID}). This app asks to:"],
        allow="Connect app",
        deny="Cancel",
    )


def _page(title: str, message: str, status: int) -> HttpResponse:
    html = f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1><p>{escape(message)}</p>"
    return HttpResponse(html, status=status)


def _binding(client_id: str, redirect_uri: str, challenge: str) -> str:
    """Part of each code: the client, redirect_uri and PKCE challenge it was issued for."""
    return consent.binding(client_id, redirect_uri, challenge)


@mock_view(SYSTEM, counted=False, faults=False)
def token(request: HttpRequest) -> HttpResponse:
    form = request.POST
    client_id = form.get("client_id", "")
    if (client_id, form.get("client_secret")) != (app_client_id(), app_client_secret()):
        return _oauth_error(400, "invalid_client", "missing or unknown client id")
    grant = form.get("grant_type")
    if grant == "refresh_token":
        refresh = form.get("refresh_token", "")
        known = refresh == first_refresh_token() or MockToken.objects.filter(system=REFRESH, token=refresh).exists()
        if not known:
            return _oauth_error(400, "BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        return _issue(refresh)
    if grant == "authorization_code":
        if not _spend_code(
            form.get("code", ""), client_id, form.get("redirect_uri", ""), form.get("code_verifier", "")
        ):
            return _oauth_error(400, "BAD_AUTH_CODE", "missing or unknown auth code")
        refresh = secrets.token_urlsafe(32)
        MockToken.objects.create(system=REFRESH, token=refresh, expires_at=timezone.now() + timedelta(days=3650))
        return _issue(refresh)
    return _oauth_error(400, "BAD_GRANT_TYPE", "grant_type must be authorization_code or refresh_token")


def _spend_code(code: str, client_id: str, redirect_uri: str, verifier: str) -> bool:
    """A code is good once, in its lifetime, for the client, redirect_uri (and PKCE verifier) it was issued to."""
    head, _, binding = code.rpartition(".")
    if not head:
        return False
    challenge = consent.s256(verifier) if verifier else ""
    if not secrets.compare_digest(binding, _binding(client_id, redirect_uri, challenge)):
        return False
    return bool(MockToken.objects.filter(system=CODE, token=code, expires_at__gt=timezone.now()).delete()[0])


def _issue(refresh: str) -> JsonResponse:
    """HubSpot refresh tokens do not rotate: the answer holds the same one."""
    access = f"mock-{secrets.token_urlsafe(32)}"
    MockToken.objects.create(system=SYSTEM, token=access, expires_at=timezone.now() + ACCESS_LIFETIME)
    expires_in = int(ACCESS_LIFETIME.total_seconds())
    body = {"token_type": "bearer", "refresh_token": refresh, "access_token": access, "expires_in": expires_in}
    return JsonResponse(body)


def _oauth_error(status: int, status_code: str, message: str) -> JsonResponse:
    body = {"status": status_code, "message": message, "correlationId": error(status, "", "")["correlationId"]}
    return JsonResponse(body, status=status)


@mock_view(SYSTEM, counted=False, faults=False)
def access_token_info(request: HttpRequest, access_token: str) -> HttpResponse:
    """GET /oauth/v1/access-tokens/{token}: the account, user and scopes a token stands for."""
    found = MockToken.objects.filter(system=SYSTEM, token=access_token, expires_at__gt=timezone.now()).first()
    if found is None:
        return _oauth_error(404, "NOT_FOUND", "the access token is unknown or expired")
    return JsonResponse(
        {
            "token": access_token,
            "user": "owner@recordsync-mock.example",
            "hub_domain": "recordsync-mock.hubspot.com",
            "scopes": SCOPES,
            "hub_id": HUB_ID,
            "app_id": 424242,
            "expires_in": max(int((found.expires_at - timezone.now()).total_seconds()), 0),
            "user_id": 1001,
            "token_type": "access",
        }
    )

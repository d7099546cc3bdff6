"""The mock org's web-server flow (OAuth authorization code), for connected apps that allow it: a consent page
at /services/oauth2/authorize, codes bound to the client, the redirect URI and a PKCE challenge, and the
refresh-token grant. Salesforce keeps the refresh token: a refresh answers without a new one."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from crms.mocks import consent
from crms.mocks.models import MockToken
from crms.salesforce import mock_store as store

CODE, REFRESH = f"{store.SYSTEM}-code", f"{store.SYSTEM}-refresh"
CODE_LIFETIME = timedelta(minutes=15)  # Salesforce: an authorization code is good for 15 minutes


def authorize_answer(request: HttpRequest, redirect_uri: str, state: str | None, client_id: str) -> HttpResponse:
    """Allow or Deny, then back to redirect_uri with a code or access_denied (the caller checked the client)."""
    query = request.GET if request.method == "GET" else request.POST
    if query.get("response_type") != "code":
        return consent.redirect(redirect_uri, {"error": "unsupported_response_type", "state": state})
    if request.method == "GET":
        return consent.page(
            request,
            title="Allow Access? (mock Salesforce)",
            lines=["RecordSync is asking to:"],
            allow="Allow",
            deny="Deny",
        )
    if query.get("decision") != "allow":
        denied = {"error": "access_denied", "error_description": "end-user denied authorization", "state": state}
        return consent.redirect(redirect_uri, denied)
    code = f"{secrets.token_urlsafe(24)}.{_binding(client_id, redirect_uri, query.get('code_challenge', ''))}"
    MockToken.objects.create(system=CODE, token=code, expires_at=timezone.now() + CODE_LIFETIME)
    return consent.redirect(redirect_uri, {"code": code, "state": state})


def spend_code(code: str, client_id: str, redirect_uri: str, verifier: str) -> str | None:
    """A new refresh token for a good code (once, in time, for its client, redirect URI and PKCE verifier)."""
    challenge = consent.s256(verifier)
    head, _, binding = code.rpartition(".")
    expected = _binding(client_id, redirect_uri, challenge if verifier else "")
    if not head or not secrets.compare_digest(binding, expected):
        return None
    if not MockToken.objects.filter(system=CODE, token=code, expires_at__gt=timezone.now()).delete()[0]:
        return None
    refresh = secrets.token_urlsafe(32)
    MockToken.objects.create(system=REFRESH, token=refresh, expires_at=timezone.now() + timedelta(days=3650))
    return refresh


def refresh_known(refresh: str) -> bool:
    return bool(refresh) and MockToken.objects.filter(system=REFRESH, token=refresh).exists()


def _binding(client_id: str, redirect_uri: str, challenge: str) -> str:
    return consent.binding(client_id, redirect_uri, challenge)

"""API users and tokens, and what each token may do.

Tokens are django-rest-knox's: only a SHA-512 digest is stored. Each has a `TokenGrant`: its scopes
(`TokenScope`) and the `source` values its events may carry. A staff user's token may do everything; a
token without a grant (made some other way) may do nothing but what its user's staff status allows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from knox.models import AuthToken
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from sync.models import DEFAULT_SCOPES, DEFAULT_SOURCES, TokenGrant, TokenScope


def api_token_create(
    *, username: str, staff: bool = False, scopes: Sequence[str] | None = None, sources: Sequence[str] | None = None
) -> str:
    """Return a new token for `username`, creating the user (without a password) if needed."""
    unknown = sorted(set(scopes or ()) - set(TokenScope.values))
    if unknown:
        raise ValueError(f"Unknown scope(s) {', '.join(unknown)}: use {', '.join(TokenScope.values)}.")
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
        if staff and not user.is_staff:
            user.is_staff = True
        user.save()
        instance, token = AuthToken.objects.create(user=user, expiry=None)
        TokenGrant.objects.create(
            token=instance,
            scopes=list(DEFAULT_SCOPES if scopes is None else scopes),
            sources=list(DEFAULT_SOURCES if sources is None else sources),
        )
    return str(token)


ANY_SOURCE = "*"  # in a grant's sources: any source (a trusted integration relaying every system's changes)


class Grant:
    """What the request's credentials may do: everything for staff, else the token's grant (or nothing)."""

    def __init__(self, request: Request) -> None:
        user = request.user
        self.staff = bool(user and user.is_authenticated and user.is_staff)
        grant = _grant_of(request.auth) if not self.staff else None
        self.scopes = frozenset(grant.scopes if grant else ())
        self.sources = frozenset(grant.sources if grant else ())

    def allows(self, scope: str) -> bool:
        return self.staff or scope in self.scopes

    def may_post_as(self, source: str) -> bool:
        return self.staff or source in self.sources or ANY_SOURCE in self.sources


def _grant_of(auth: Any) -> TokenGrant | None:
    """The token's grant, kept on the token object (which the authenticator itself keeps for a few seconds)."""
    if not isinstance(auth, AuthToken):
        return None
    if not hasattr(auth, "_grant_cached"):
        auth._grant_cached = TokenGrant.objects.filter(token=auth).first()
    cached: TokenGrant | None = auth._grant_cached
    return cached


class RequestRate(BaseThrottle):
    """At most API_REQUESTS_PER_MINUTE requests per token (or per staff session), in fixed one-minute windows
    counted in the cache (Redis in production: one INCR per request). DRF's SimpleRateThrottle keeps every
    request's time in one cache entry, which costs more the higher the limit. Requests without credentials are
    refused (401) before throttles run, so they are not counted. If the cache is down, requests pass: ingest
    must go on while Redis is away."""

    def __init__(self) -> None:
        self.retry_after = 60.0

    def allow_request(self, request: Request, view: Any) -> bool:
        limit: int = settings.API_REQUESTS_PER_MINUTE
        if limit <= 0:
            return True
        token = request.auth if isinstance(request.auth, AuthToken) else None
        user = request.user if request.user and request.user.is_authenticated else None
        if token is not None:
            who = f"token:{token.digest[:32]}"
        elif user is not None:
            who = f"user:{user.pk}"
        else:
            return True
        now = time.time()
        key = f"recordsync:rate:{who}:{int(now // 60)}"
        try:
            cache.add(key, 0, timeout=120)
            count = cache.incr(key)
        except Exception:  # the cache (Redis) is away: never refuse a request for that
            return True
        self.retry_after = 60 - now % 60
        return bool(count <= limit)

    def wait(self) -> float:
        return self.retry_after


class ScopeDenied(PermissionDenied):
    """403 naming what the token lacks, and where in the request."""

    def __init__(self, message: str, *, field: str = "Authorization") -> None:
        super().__init__(message)
        self.fields = [{"field": field, "message": message}]


def scope_denied_message(scope: str) -> str:
    return (
        f"This token lacks the '{scope}' scope. Ask for a token that has it: "
        f"manage.py create_api_token NAME --scope {scope} (or staff can edit its grant in the admin)."
    )


class HasScope(BasePermission):
    """A view's `scope` (a TokenScope) must be in the token's grant. Views without one need only authentication."""

    def has_permission(self, request: Request, view: Any) -> bool:
        scope: str | None = getattr(view, "scope", None)
        if scope is None:
            return True
        if not Grant(request).allows(scope):
            raise ScopeDenied(scope_denied_message(scope))
        return True

"""Request id, the one access-log line per request, and Django's session stack left out of token API calls."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from recordsync.logging import request_id_var

logger = logging.getLogger("recordsync.access")

# A caller's id is kept only if it is short and plain, so it cannot forge log lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(request: HttpRequest) -> str:
    given = request.META.get("HTTP_X_REQUEST_ID", "")  # request.headers would copy every header first
    return given if _SAFE_ID.match(given) else uuid.uuid4().hex


def _username(request: HttpRequest) -> str | None:
    """Who made the request, for the access line. The user is lazy: reading it may load the session,
    and with the database down that must not turn the 503 already answered into a traceback."""
    try:
        return getattr(getattr(request, "user", None), "username", None) or None
    except DatabaseError:
        return None


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = _request_id(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            if not logger.isEnabledFor(logging.INFO):  # LOG_LEVEL=WARNING: not even the line's fields
                return response
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "user": _username(request),
                },
            )
            return response
        finally:
            request_id_var.reset(token)


class HealthProbeMiddleware:
    """/healthz and /readyz answered before Django checks the Host header.

    Load balancers probe each task by its private address (an AWS ALB sends `Host: 10.0.1.23:8000`),
    which no ALLOWED_HOSTS list can know in advance; without this, every probe would be a 400 and
    every task unhealthy. Only these two read-only paths skip the check.
    """

    PROBES = {"/healthz": "healthz", "/readyz": "readyz"}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = self.PROBES.get(request.path_info.rstrip("/") or "/")
        if probe is None:
            return self.get_response(request)
        from recordsync import health

        view: Callable[[HttpRequest], HttpResponse] = getattr(health, probe)
        return view(request)


# --- token API calls skip the session stack ---------------------------------------------------------------------

API_PREFIX = "/v1/"


def token_api_call(request: HttpRequest) -> bool:
    """A call to the API that brings its token: DRF authenticates it by the token alone (and refuses a bad one
    without trying the session), and nothing under /v1/ reads a session, sets a cookie or shows a message."""
    scheme = f"{settings.REST_KNOX['AUTH_HEADER_PREFIX']} "
    return request.path_info.startswith(API_PREFIX) and request.META.get("HTTP_AUTHORIZATION", "").startswith(scheme)


class _NotForTokenCalls(MiddlewareMixin):
    """Django's middleware, passed by for token API calls. A session, a lazy user and two message stores were
    4.5% of a single-event ingest's Python time (docs/BENCHMARKS.md). Staff using the browsable API with their
    admin session send no token and get the whole stack."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if token_api_call(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_NotForTokenCalls, DjangoSessionMiddleware):
    pass


class AuthenticationMiddleware(_NotForTokenCalls, DjangoAuthenticationMiddleware):
    pass


class MessageMiddleware(_NotForTokenCalls, DjangoMessageMiddleware):
    pass

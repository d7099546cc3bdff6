"""Request id and the one access-log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

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

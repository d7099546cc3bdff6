"""One error shape for every /v1 answer: {"error": {code, message, request_id, fields}}."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from recordsync.logging import request_id_var
from recordsync.parsers import PayloadTooLarge, too_large_message

logger = logging.getLogger("recordsync.errors")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."

    def __init__(self, detail: str, *, code: str = "conflict", fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail, code)
        self.fields = fields or []


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "request_id": request_id_var.get() or None,
            "fields": fields or [],
        }
    }


def flatten_errors(detail: Any, path: str = "") -> list[dict[str, str]]:
    """Turn DRF's nested error detail into [{"field": "[3].data.email", "message": ...}]."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                out.extend(flatten_errors(value, path))
            elif isinstance(key, int):  # a list serializer's errors, keyed by item index
                out.extend(flatten_errors(value, f"{path}[{key}]"))
            else:
                out.extend(flatten_errors(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"field": path or "body", "message": str(item)} for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out.extend(flatten_errors(item, f"{path}[{index}]"))
        return out
    return [{"field": path or "body", "message": str(detail)}]


def _validation_message(fields: list[dict[str, str]]) -> str:
    if not fields:
        return "The request is not valid."
    first = fields[0]
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return f"{first['field']}: {first['message']}{more}"


# --- a dependency down ----------------------------------------------------------------------------

OUTAGE_RETRY_AFTER_SECONDS = 5
# Requests that fail within this long of the last failure belong to the same outage: one log line for it.
OUTAGE_QUIET_SECONDS = 60.0


class Outages:
    """One warning per outage of a dependency, not a traceback per request (swappable clock for tests)."""

    clock: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def seen(self, dependency: str, error: Exception) -> None:
        now = self.clock()
        with self._lock:
            last = self._last.get(dependency)
            self._last[dependency] = now
        if last is None or now - last > OUTAGE_QUIET_SECONDS:
            logger.warning("dependency unavailable", extra={"dependency": dependency, "error": str(error)[:300]})


outages = Outages()


def is_outage(exc: BaseException) -> bool:
    """The database cannot be reached or cannot answer now (refused, lost, shut down, locked): not a bug
    in this request, and worth retrying. Integrity and data errors are answers, not outages."""
    return isinstance(exc, OperationalError | InterfaceError)


def outage_body() -> dict[str, Any]:
    return error_body(
        "service_unavailable",
        f"The database is unavailable; nothing was stored. Retry in {OUTAGE_RETRY_AFTER_SECONDS} seconds "
        "with the same Idempotency-Key.",
    )


def outage_response(exc: BaseException) -> JsonResponse:
    outages.seen("database", exc if isinstance(exc, Exception) else Exception(str(exc)))
    response = JsonResponse(outage_body(), status=503)
    response["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
    return response


class OutageMiddleware:
    """The same 503 for pages outside the API (admin, dashboard) when the database is down."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.get_response(request)
        except (OperationalError, InterfaceError) as exc:  # raised by a middleware, before any view
            return outage_response(exc)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return outage_response(exception) if is_outage(exception) else None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if is_outage(exc):
        outages.seen("database", exc)
        set_rollback()
        return Response(outage_body(), status=503, headers={"Retry-After": str(OUTAGE_RETRY_AFTER_SECONDS)})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):  # Django's own guard can fire before our parser's
        exc = PayloadTooLarge(too_large_message(None, settings.INGEST_MAX_BODY_BYTES))
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        message = f"{exc.detail} Send the body as JSON with Content-Type: application/json."
        exc.fields = [{"field": "Content-Type", "message": message}]  # type: ignore[attr-defined]

    if not isinstance(exc, exceptions.APIException):
        logger.exception("unhandled error", extra={"view": type(context.get("view")).__name__})
        set_rollback()
        return Response(
            error_body("internal_error", "An unexpected error occurred; it has been logged with this request id."),
            status=500,
        )

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]

    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        body = error_body("validation_error", _validation_message(fields), fields)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        body = error_body(str(code), str(exc.detail), getattr(exc, "fields", None))
    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


def _json_handler(status_code: int, code: str, message: str) -> Any:
    def view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
        return JsonResponse(error_body(code, message), status=status_code)

    return view


handler400 = _json_handler(400, "bad_request", "The request could not be understood.")
handler403 = _json_handler(403, "permission_denied", "You do not have permission to perform this action.")
handler404 = _json_handler(404, "not_found", "No such path. The API lives under /v1/; see /docs.")
handler500 = _json_handler(
    500, "internal_error", "An unexpected error occurred; it has been logged with this request id."
)

"""Helpers that declare every error an endpoint can return, in the one error shape."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    class ErrorBody(serializers.Serializer[dict[str, Any]]):
        class FieldError(serializers.Serializer[dict[str, Any]]):
            field = serializers.CharField(help_text="Path of the bad field, e.g. data.email or [3].operation")
            message = serializers.CharField(help_text="What is wrong and how to fix it.")

        code = serializers.CharField()
        message = serializers.CharField()
        request_id = serializers.CharField(allow_null=True)
        fields = FieldError(many=True)  # type: ignore[assignment]  # API field name; DRF pops declared fields

    error = ErrorBody()


_DESCRIPTIONS = {
    400: "Invalid input; `fields` names each bad field and how to fix it.",
    401: "No or invalid token: send `Authorization: Token <token>`.",
    403: "Authenticated, but not allowed: a staff-only endpoint, or a scope or source the token was not given.",
    404: "Not found.",
    409: "Conflicts with the current state (e.g. an idempotency key reused with another body).",
    413: "Request body over the size limit.",
    415: "Body is not JSON: send `Content-Type: application/json`.",
    429: "Over the token's requests per minute (API_REQUESTS_PER_MINUTE): retry after `Retry-After` seconds.",
    500: "Unexpected error; logged with the request id.",
    503: "The database is unavailable: nothing was stored; retry after `Retry-After` seconds (same Idempotency-Key).",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[code]) for code in (*codes, 401, 429, 500, 503)
    }


def declare_batch_limit(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular drops a list serializer's max_length: state the 1..500 bound of a batch."""
    for branch in result.get("components", {}).get("schemas", {}).get("SyncEventInRequest", {}).get("oneOf", []):
        if branch.get("type") == "array":
            branch.update({"minItems": 1, "maxItems": settings.INGEST_MAX_BATCH})
    return result


class TokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Declares our knox-based token header in the schema (registered on import, from SyncConfig.ready)."""

    target_class = "recordsync.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>` from `manage.py create_api_token`",
        }

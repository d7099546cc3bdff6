"""A JSON parser that refuses oversized bodies with 413 before reading them whole."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "Request body is too large."


class LimitedJSONParser(JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        limit: int = settings.INGEST_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if declared > limit:
            raise PayloadTooLarge(too_large_message(declared, limit))
        # The body may arrive chunked with no length: read at most one byte past the limit.
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(too_large_message(len(body), limit))
        return super().parse(io.BytesIO(body), media_type, parser_context)


def too_large_message(size: int | None, limit: int) -> str:
    told = f"Request body is {size} bytes; the" if size is not None else "The request body is over the"
    return f"{told} limit is {limit} bytes. Send fewer events per request (at most 500) or smaller data."

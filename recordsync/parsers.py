"""The JSON parser of every /v1 body: what it cannot take it refuses with a 4xx naming the limit and where.

- too big: 413, before the body is read whole;
- not JSON (bad syntax, bad UTF-8, NaN): 400 naming `body`;
- nested deeper than INGEST_MAX_JSON_DEPTH (32): 400 naming the path where it goes too deep (Python's own
  parser would raise RecursionError, a 500, near 1,000 levels);
- a NUL or a lone surrogate (`"\\ud800"`) in any key or string: 400 naming its path. PostgreSQL's jsonb
  refuses both, and a lone surrogate cannot even be written back out as UTF-8, so nothing accepted may
  hold one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "Request body is too large."

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.fields = [{"field": "body", "message": message}]


class BadJSON(ParseError):
    """400 `parse_error`, naming where in the body."""

    def __init__(self, message: str, *, field: str = "body") -> None:
        super().__init__(message)
        self.fields = [{"field": field, "message": message}]


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
        depth: int = settings.INGEST_MAX_JSON_DEPTH
        try:
            data = super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError as exc:
            raise BadJSON(f"JSON may be nested at most {depth} levels deep.") from exc
        except ParseError as exc:
            raise BadJSON(f"Not valid JSON: {exc.detail}".replace("JSON parse error - ", "")) from exc
        problem = json_problem(data, max_depth=depth)
        if problem is not None:
            raise BadJSON(problem[1], field=problem[0])
        return data


def json_problem(data: Any, *, max_depth: int) -> tuple[str, str] | None:
    """The first (path, reason) that makes parsed JSON unacceptable, or None. Iterative: no depth can crash it."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                return path or "body", f"JSON may be nested at most {max_depth} levels deep."
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    reason = text_problem(key)
                    if reason:
                        return _join(path, key), f"the key {reason}"
                stack.append((item, _join(path, key), depth + 1))
        elif isinstance(value, str):
            reason = text_problem(value)
            if reason:
                return path or "body", f"the value {reason}"
    return None


def text_problem(text: str) -> str:
    if "\x00" in text:
        return "holds a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (\\ud800-\\udfff), which is not text"
    return ""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\u0000")  # a path we can answer with
    return f"{path}.{key}" if path else key


def too_large_message(size: int | None, limit: int) -> str:
    told = f"The request body is {size} bytes" if size is not None else "The request body is too large"
    return f"{told}; the limit is {limit} bytes. Send fewer events per request (at most 500) or smaller data."

"""Cursor pagination whose bad cursor is the client's mistake (400 naming `cursor`), not a missing page."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    def decode_cursor(self, request: Any) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound as exc:  # DRF answers 404 for a cursor it cannot read
            raise ValidationError(
                {"cursor": "Not a cursor this list gave out: pass `next` or `previous` from a page as it is."}
            ) from exc

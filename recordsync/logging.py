"""Log context: the ids that let one search find every line of a record's journey."""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")


class ContextFilter(logging.Filter):
    """Stamps each record with the current request id unless the caller gave one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or None
        return True

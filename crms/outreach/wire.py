"""Outreach's wire format, in small pure functions: JSON:API bodies and links, server time, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from crms.base import (
    Change,
    ConnectorError,
    OutboundRecord,
    PushResult,
)
from crms.outreach.resources import (
    parse_time,
)


def change_from(object_type: str, row: dict[str, Any]) -> Change:
    attributes = dict(row.get("attributes") or {})
    return Change(object_type, str(row["id"]), attributes, parse_time(attributes["updatedAt"]))


def json_body(response: requests.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise ConnectorError(
            f"Outreach answered {response.status_code} with a body that is not JSON",
            code="BAD_RESPONSE",
            http_status=response.status_code,
        ) from None


def next_link(body: Any, api_url: str) -> str | None:
    """The page's `links.next`, only on the API's own scheme and host: the bearer token goes with it."""
    links = body.get("links") if isinstance(body, dict) else None
    link = links.get("next") if isinstance(links, dict) else None
    if not link:
        return None
    ours, theirs = urlsplit(api_url), urlsplit(str(link))
    if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
        raise ConnectorError(
            f"links.next points at {theirs.scheme}://{theirs.netloc}, not {ours.scheme}://{ours.netloc}: "
            "not followed (the access token would go with it)",
            code="FOREIGN_LINK",
            permanent=True,
        )
    return str(link)


def with_query(url: str, changes: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def refused(record: OutboundRecord, message: str, code: str, *, fields: Sequence[str] = ()) -> PushResult:
    error = ConnectorError(message, code=code, permanent=True, fields=fields)
    return PushResult(record.record_id, "error", record.external_id, error)

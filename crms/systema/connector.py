"""System A over HTTP: changes captured in the CRMs are delivered to System A's own API.

One signed call per record (docs/system-a.md is the contract System A implements):
`POST {url}/records/{object_type}` with {"operation", "id", "source_id", "fields"}, headers
X-RecordSync-Timestamp, X-RecordSync-Signature and an Idempotency-Key derived from the state
sent, so a retry after a lost answer is recognised by System A and never creates twice.
System A's own changes reach us through POST /v1/sync/, so this connector reads no changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from crms.base import (
    Capabilities,
    ChangePage,
    CheckResult,
    Connector,
    ConnectorError,
    OutboundRecord,
    Outcome,
    PushResult,
)
from crms.http import TransportError
from crms.systema.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


class SystemAConnector(Connector):
    kind = "system_a"
    mock = "crms.systema.mock_entry.MOCK"
    label = "System A (HTTP webhook)"
    secret_fields = ("signing_secret",)
    capabilities = Capabilities(
        batch_size=100,
        directions=("outbound",),
        calls_per_record=True,
        objects={"*": {"match_key": "System A's id (from the record link)", "fields": []}},
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "Base URL of System A's sync receiver."},
            "objects": {"type": "array", "items": {"type": "string"}, "description": "Object types it accepts."},
        },
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock: Callable[[], float] = time.time  # swappable: tests move time

    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        results: list[PushResult] = []
        for record in batch:
            result = self._push_one(record)
            results.append(result)
            if result.error is not None and not result.error.permanent:
                # The endpoint itself is struggling (429, 5xx, timeout): stop calling it and let
                # the rest of the batch retry with the same wait.
                rest = batch[len(results) :]
                results += [
                    PushResult(r.record_id, "error", external_id=r.external_id, error=result.error) for r in rest
                ]
                break
        return results

    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for record_id in ids:
            response = self._send("GET", f"/records/{object_type}/{record_id}", None)
            if response.status_code == 404:
                continue
            _raise_for(response)
            found[record_id] = response.json().get("fields", {})
        return found

    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        raise ConnectorError(
            "System A sends its changes to POST /v1/sync/; there is nothing to poll.",
            code="NOT_SUPPORTED",
            permanent=True,
        )

    def check(self) -> CheckResult:
        try:
            response = self._send("GET", "/health", None)
        except ConnectorError as exc:
            return CheckResult(False, f"{exc.code}: {exc.message}")
        if response.status_code == 401:
            return CheckResult(False, "System A refused our signature: is signing_secret the same on both sides?")
        return CheckResult(response.status_code == 200, f"System A answered {response.status_code}")

    def _push_one(self, record: OutboundRecord) -> PushResult:
        body = {
            "operation": record.operation,
            "id": record.external_id,
            "source_id": record.record_id,
            "fields": record.fields,
        }
        try:
            response = self._send("POST", f"/records/{record.object_type}", body)
            if record.operation == "delete" and response.status_code == 404:
                return PushResult(record.record_id, "deleted", external_id=record.external_id)
            _raise_for(response)
        except ConnectorError as exc:
            return PushResult(record.record_id, "error", external_id=record.external_id, error=exc)
        answer = response.json() if response.content else {}
        if record.operation == "delete":
            return PushResult(record.record_id, "deleted", external_id=record.external_id)
        outcome: Outcome = "created" if response.status_code == 201 else "updated"
        return PushResult(record.record_id, outcome, external_id=str(answer.get("id") or record.external_id))

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> requests.Response:
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode() if body is not None else b""
        stamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(self.secrets.get("signing_secret", ""), stamp, raw),
        }
        if body is not None:
            headers["Idempotency-Key"] = hashlib.sha256(f"{path}\n".encode() + raw).hexdigest()
        try:
            return self.http.request(
                method,
                f"{self.config['url'].rstrip('/')}{path}",
                headers=headers,
                data=raw if body is not None else None,
            )
        except TransportError as exc:
            raise ConnectorError(str(exc), code=exc.code) from exc


def _raise_for(response: requests.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    try:
        detail = response.json().get("error", {})
        message, code = str(detail.get("message", response.reason)), str(detail.get("code", f"HTTP_{status}"))
    except (ValueError, AttributeError):
        message, code = response.text[:300] or response.reason, f"HTTP_{status}"
    retry_after = float(response.headers["Retry-After"]) if response.headers.get("Retry-After", "").isdigit() else None
    transient = status in (408, 429) or status >= 500
    raise ConnectorError(message, code=code, permanent=not transient, retry_after=retry_after, http_status=status)

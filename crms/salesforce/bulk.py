"""Bulk API 2.0 ingest jobs as a saved state machine: started once, advanced by later ticks.

simple-salesforce's bulk helper waits in a loop (for hours on a busy org); a worker must not.
`bulk_start` uploads and closes a job and saves what it needs in the state store; `bulk_poll`
looks once and returns None until the job has finished, then one result per record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any, Protocol

from crms.base import ConnectorError, OutboundRecord, Outcome, PushResult, StateStore
from crms.salesforce.errors import RETRYABLE_CODES

RUNNING = {"Open", "UploadComplete", "InProgress"}


class Caller(Protocol):
    store: StateStore
    config: dict[str, Any]

    def _call(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def _call_text(self, method: str, path: str, **kwargs: Any) -> str: ...


def to_csv(records: Sequence[OutboundRecord], key_field: str) -> str:
    columns = sorted({name for r in records for name in r.fields} - {key_field})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key_field, *columns])
    for record in records:
        writer.writerow([record.record_id, *[_cell(record.fields.get(c)) for c in columns]])
    return out.getvalue()


def _cell(value: Any) -> str:
    return "#N/A" if value is None else str(value)  # Bulk API's way of writing null


def bulk_start(api: Caller, object_type: str, records: Sequence[OutboundRecord]) -> str:
    key_field = api.config["external_id_field"]
    job = api._call(
        "POST",
        "/jobs/ingest",
        json_body={
            "object": object_type,
            "externalIdFieldName": key_field,
            "contentType": "CSV",
            "operation": "upsert",
            "lineEnding": "LF",
        },
    )
    job_id = str(job["id"])
    api.store.set(f"bulk:{job_id}", {"object": object_type, "record_ids": [r.record_id for r in records]})
    api._call_text("PUT", f"/jobs/ingest/{job_id}/batches", body=to_csv(records, key_field))
    api._call("PATCH", f"/jobs/ingest/{job_id}", json_body={"state": "UploadComplete"})
    return job_id


def bulk_poll(api: Caller, job_id: str) -> list[PushResult] | None:
    saved = api.store.get(f"bulk:{job_id}")
    if saved is None:
        raise ConnectorError(f"no saved bulk job {job_id}", code="UNKNOWN_BULK_JOB", permanent=True)
    info = api._call("GET", f"/jobs/ingest/{job_id}")
    if info["state"] in RUNNING:
        return None
    key_field = api.config["external_id_field"]
    by_id: dict[str, PushResult] = {}
    for row in _rows(api._call_text("GET", f"/jobs/ingest/{job_id}/successfulResults/")):
        outcome: Outcome = "created" if row.get("sf__Created", "").lower() == "true" else "updated"
        by_id[row[key_field]] = PushResult(row[key_field], outcome, external_id=row.get("sf__Id"))
    for row in _rows(api._call_text("GET", f"/jobs/ingest/{job_id}/failedResults/")):
        by_id[row[key_field]] = PushResult(row[key_field], "error", error=_row_error(row.get("sf__Error", "")))
    for row in _rows(api._call_text("GET", f"/jobs/ingest/{job_id}/unprocessedrecords/")):
        by_id[row[key_field]] = PushResult(
            row[key_field], "error", error=ConnectorError(f"not processed: job {info['state']}", code="UNPROCESSED")
        )
    missing = ConnectorError("missing from the job's results", code="UNPROCESSED")
    return [by_id.get(rid) or PushResult(rid, "error", error=missing) for rid in saved["record_ids"]]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _row_error(text: str) -> ConnectorError:
    """`REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --`"""
    code, _, message = text.partition(":")
    return ConnectorError(message or text, code=code or "UNKNOWN", permanent=code not in RETRYABLE_CODES)

"""Bulk API 2.0 ingest jobs in the mock org. A job finishes on the second status poll after
UploadComplete (InProgress first), so a caller that waits in a loop is as visible as on a real org."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from crms.mocks.models import MockBulkJob
from crms.salesforce import mock_store as store
from crms.salesforce.mock import _check_key_field, _check_object, _errors, api


def _info(job: MockBulkJob) -> dict[str, Any]:
    counts = job.results.get("counts", {})
    return {
        "id": job.job_id, "operation": job.operation, "object": job.object, "createdById": store.INTEGRATION_USER,
        "createdDate": store.sf_time(job.created_at), "systemModstamp": store.sf_time(job.created_at),
        "state": job.state, "externalIdFieldName": job.external_id_field, "concurrencyMode": "Parallel",
        "contentType": "CSV", "apiVersion": 62.0, "lineEnding": "LF", "columnDelimiter": "COMMA",
        "numberRecordsProcessed": counts.get("processed", 0), "numberRecordsFailed": counts.get("failed", 0),
    }  # fmt: skip


@api
def jobs(request: HttpRequest, version: str) -> HttpResponse:
    spec = json.loads(request.body or b"{}")
    refused = _check_object(spec.get("object", "")) or _check_key_field(spec.get("externalIdFieldName", ""))
    if refused:
        return refused
    if spec.get("operation") != "upsert" or spec.get("contentType", "CSV") != "CSV":
        return _errors(400, "INVALIDJOB", "The mock runs CSV upsert ingest jobs only")
    job = MockBulkJob.objects.create(system=store.SYSTEM, job_id=store.new_id("Contact").replace("003", "750", 1),
                                     object=spec["object"], external_id_field=spec["externalIdFieldName"],
                                     operation="upsert")  # fmt: skip
    return JsonResponse(_info(job))


@api
def job(request: HttpRequest, version: str, job_id: str) -> HttpResponse:
    found = MockBulkJob.objects.filter(system=store.SYSTEM, job_id=job_id).first()
    if found is None:
        return _errors(404, "NOT_FOUND", f"Job {job_id} not found")
    if request.method == "PATCH":
        wanted = json.loads(request.body or b"{}").get("state")
        if wanted not in ("UploadComplete", "Aborted") or found.state != "Open":
            return _errors(400, "INVALIDJOBSTATE", f"cannot move a job from {found.state} to {wanted}")
        found.state = wanted
        found.save(update_fields=["state"])
    elif found.state == "UploadComplete":
        found.state = "InProgress"
        found.save(update_fields=["state"])
    elif found.state == "InProgress":
        _run(found)
    return JsonResponse(_info(found))


@api
def batches(request: HttpRequest, version: str, job_id: str) -> HttpResponse:
    found = MockBulkJob.objects.filter(system=store.SYSTEM, job_id=job_id, state="Open").first()
    if found is None:
        return _errors(400, "INVALIDJOBSTATE", "Data can be uploaded only to an Open job")
    found.uploaded += request.body.decode() if not found.uploaded else request.body.decode().split("\n", 1)[1]
    found.save(update_fields=["uploaded"])
    return HttpResponse(status=201)


@api
def results(request: HttpRequest, version: str, job_id: str, kind: str) -> HttpResponse:
    found = MockBulkJob.objects.filter(system=store.SYSTEM, job_id=job_id).first()
    if found is None or found.state != "JobComplete":
        return _errors(400, "INVALIDJOBSTATE", "Results are available once the job is complete")
    key = {"successfulResults": "successful", "failedResults": "failed", "unprocessedrecords": "unprocessed"}[kind]
    return HttpResponse(found.results.get(key, ""), content_type="text/csv")


def _run(job: MockBulkJob) -> None:
    rows = list(csv.DictReader(io.StringIO(job.uploaded)))
    columns = list(rows[0]) if rows else [job.external_id_field]
    ok, failed = _writer(["sf__Id", "sf__Created", *columns]), _writer(["sf__Id", "sf__Error", *columns])
    processed = failures = 0
    for row in rows:
        values = {k: (None if v == "#N/A" else v) for k, v in row.items()}
        result = store.upsert_one(job.object, job.external_id_field, values, by=store.INTEGRATION_USER)
        processed += 1
        if result["success"]:
            ok[1].writerow([result["id"], str(result["created"]).lower(), *row.values()])
        else:
            failures += 1
            error = result["errors"][0]
            failed[1].writerow(["", f"{error['statusCode']}:{error['message']}", *row.values()])
    job.results = {
        "successful": ok[0].getvalue(),
        "failed": failed[0].getvalue(),
        "unprocessed": ",".join(columns) + "\n",
        "counts": {"processed": processed, "failed": failures},
    }
    job.state = "JobComplete"
    job.save(update_fields=["results", "state"])


def _writer(header: list[str]) -> tuple[io.StringIO, Any]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    return out, writer

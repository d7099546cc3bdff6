"""Bulk API 2.0 in the mock org: ingest jobs (insert, update, upsert, delete, hardDelete) and query jobs.

A job finishes on the second status look after UploadComplete (InProgress first), so a caller that
waits in a loop is as visible as on a real org. Ingest results come back as Salesforce writes them:
`successfulResults` (sf__Id, sf__Created, the row), `failedResults` (sf__Id, sf__Error, the row) and
`unprocessedrecords` (the rows of a job aborted or failed before they ran). CSV cells are text: an
empty cell leaves a field as it is, `#N/A` sets it to null.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from crms.mocks.models import MockBulkJob, MockRecord
from crms.salesforce import mock_store as store
from crms.salesforce.mock import api, body_json, errors, method_not_allowed, object_or_404
from crms.salesforce.mock_schema import NUMBER_TYPES, SObject, new_id, sf_time, sobject
from crms.salesforce.mock_soql import parse, run

INGEST = ("insert", "update", "upsert", "delete", "hardDelete")
QUERY = ("query", "queryAll")
RUNNING = ("UploadComplete", "InProgress")
DEFAULT_MAX_RECORDS = 50000


def _info(job: MockBulkJob, version: str) -> dict[str, Any]:
    counts = job.results.get("counts", {})
    info: dict[str, Any] = {
        "id": job.job_id,
        "operation": job.operation,
        "object": job.object,
        "createdById": store.INTEGRATION_USER,
        "createdDate": sf_time(job.created_at),
        "systemModstamp": sf_time(job.created_at),
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(version),
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
        "numberRecordsProcessed": counts.get("processed", 0),
        "retries": 0,
        "totalProcessingTime": 0,
    }
    if job.operation in QUERY:
        info["jobType"] = "V2Query"
        return info
    info.update(
        {
            "externalIdFieldName": job.external_id_field or None,
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/v{version}/jobs/ingest/{job.job_id}/batches",
            "numberRecordsFailed": counts.get("failed", 0),
        }
    )
    return info


def _job(job_id: str, query: bool) -> MockBulkJob | HttpResponse:
    found = MockBulkJob.objects.filter(system=store.SYSTEM, job_id=job_id).first()
    if found is None or (found.operation in QUERY) != query:
        return errors(404, "NOT_FOUND", f"Job {job_id} not found")
    return found


# --- ingest ----------------------------------------------------------------------------------------


@api
def ingest_jobs(request: HttpRequest, version: str) -> HttpResponse:
    if request.method == "GET":
        jobs = MockBulkJob.objects.filter(system=store.SYSTEM).exclude(operation__in=QUERY).order_by("created_at")
        return JsonResponse({"done": True, "records": [_info(j, version) for j in jobs], "nextRecordsUrl": None})
    if request.method != "POST":
        return method_not_allowed(request, "GET, POST")
    spec = body_json(request)
    obj = object_or_404(str(spec.get("object") or ""))
    if isinstance(obj, HttpResponse):
        return errors(400, "INVALIDENTITY", f"Entity '{spec.get('object')}' is not supported by the Bulk API.")
    operation = spec.get("operation")
    if operation not in INGEST:
        return errors(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
    if spec.get("contentType", "CSV") != "CSV":
        return errors(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
    key = ""
    if operation == "upsert":
        field = obj.field(str(spec.get("externalIdFieldName") or ""))
        if field is None or not (field.external_id or field.name == "Id"):
            return errors(
                400,
                "INVALIDJOB",
                f"InvalidJob : Field name provided, {spec.get('externalIdFieldName')} "
                f"is not an External ID or indexed field for {obj.name}",
            )
        key = field.name
    job = MockBulkJob.objects.create(
        system=store.SYSTEM, job_id=_job_id(), object=obj.name, external_id_field=key, operation=operation
    )
    return JsonResponse(_info(job, version))


Step = Callable[[HttpRequest, MockBulkJob], "HttpResponse | None"]


def _job_view(request: HttpRequest, version: str, job_id: str, *, query: bool, step: Step) -> HttpResponse:
    """One job, ingest or query alike: DELETE removes it; GET and PATCH are the kind's own `step` (which may
    refuse); the answer is the job's info."""
    found = _job(job_id, query=query)
    if isinstance(found, HttpResponse):
        return found
    if request.method == "DELETE":
        found.delete()
        return HttpResponse(status=204)
    refused = step(request, found)
    return refused or JsonResponse(_info(found, version))


def _ingest_step(request: HttpRequest, found: MockBulkJob) -> HttpResponse | None:
    """PATCH closes the upload or aborts; GET is a poll, which moves a closed job on."""
    if request.method != "PATCH":
        _advance(found)
        return None
    wanted = body_json(request).get("state")
    if wanted not in ("UploadComplete", "Aborted") or found.state not in ("Open", *RUNNING):
        return errors(400, "INVALIDJOBSTATE", f"cannot move a job from {found.state} to {wanted}")
    if wanted == "UploadComplete" and found.state != "Open":
        return errors(400, "INVALIDJOBSTATE", f"cannot move a job from {found.state} to {wanted}")
    found.state = wanted
    if wanted == "Aborted":
        _unprocessed(found)
    found.save(update_fields=["state", "results"])
    return None


@api
def ingest_job(request: HttpRequest, version: str, job_id: str) -> HttpResponse:
    return _job_view(request, version, job_id, query=False, step=_ingest_step)


@api
def ingest_batches(request: HttpRequest, version: str, job_id: str) -> HttpResponse:
    if request.method != "PUT":
        return method_not_allowed(request, "PUT")
    found = _job(job_id, query=False)
    if isinstance(found, HttpResponse):
        return found
    if found.state != "Open" or found.uploaded:
        return errors(400, "INVALIDJOBSTATE", "Data can be uploaded only once, to an Open job")
    found.uploaded = request.body.decode()
    found.save(update_fields=["uploaded"])
    return HttpResponse(status=201)


@api
def ingest_results(request: HttpRequest, version: str, job_id: str, kind: str) -> HttpResponse:
    found = _job(job_id, query=False)
    if isinstance(found, HttpResponse):
        return found
    if found.state not in ("JobComplete", "Aborted", "Failed"):
        return errors(400, "INVALIDJOBSTATE", "Results are available once the job is complete or aborted")
    key = {"successfulresults": "successful", "failedresults": "failed", "unprocessedrecords": "unprocessed"}[
        kind.lower()
    ]
    return HttpResponse(found.results.get(key, ""), content_type="text/csv")


def _advance(job: MockBulkJob) -> None:
    if job.state == "UploadComplete":
        job.state = "InProgress"
        job.save(update_fields=["state"])
    elif job.state == "InProgress":
        _process(job)


def _process(job: MockBulkJob) -> None:
    rows = list(csv.DictReader(io.StringIO(job.uploaded)))
    columns = list(rows[0]) if rows else []
    ok, ok_out = _writer(["sf__Id", "sf__Created", *columns])
    failed, failed_out = _writer(["sf__Id", "sf__Error", *columns])
    obj = sobject(job.object)
    assert obj is not None  # noqa: S101 - checked when the job was made
    failures = 0
    for row in rows:
        try:
            record_id, created = _ingest_row(job, obj, row)
            ok.writerow([record_id, str(created).lower(), *row.values()])
        except (store.RecordRefused, store.RequestRefused) as exc:
            failures += 1
            fields = ",".join(exc.fields)
            failed.writerow([row.get("Id", ""), f"{exc.code}:{exc.message}:{fields} --", *row.values()])
    job.results = {
        "successful": ok_out.getvalue(),
        "failed": failed_out.getvalue(),
        "unprocessed": ",".join(columns) + "\n",
        "counts": {"processed": len(rows), "failed": failures},
    }
    job.state = "JobComplete"
    job.save(update_fields=["results", "state"])


def _ingest_row(job: MockBulkJob, obj: SObject, row: dict[str, str]) -> tuple[str, bool]:
    values = _from_csv(obj, row)
    by = store.INTEGRATION_USER
    if job.operation == "insert":
        return store.create(obj, values, by=by).record_id, True
    if job.operation == "upsert" and job.external_id_field != "Id":
        result = store.upsert(obj, job.external_id_field, values, by=by)
        return str(result["id"]), bool(result["created"])
    record_id = str(values.pop("Id", "") or "")
    found = store.by_id(obj.name, record_id)
    if found is None:
        raise store.missing_record(record_id)
    if job.operation in ("delete", "hardDelete"):
        if values:
            raise store.RequestRefused("INVALIDBATCH", "A delete job's rows hold only the Id column")
        store.delete(found)
        if job.operation == "hardDelete":
            MockRecord.objects.filter(pk=found.pk).delete()
        return found.record_id, False
    return store.update(found, values, by=by).record_id, False


def _from_csv(obj: SObject, row: dict[str, str]) -> dict[str, Any]:
    """CSV cells in their fields' types: empty leaves a field unchanged, #N/A writes null."""
    named = store.known_fields(obj, {k: v for k, v in row.items() if v != ""})
    values: dict[str, Any] = {}
    for name, text in named.items():
        field = obj.field(name)
        assert field is not None  # noqa: S101 - known_fields named it
        if text == "#N/A":
            values[name] = None
        elif field.type == "boolean":
            values[name] = text.strip().lower() in ("true", "1", "yes")
        elif field.type in NUMBER_TYPES:
            values[name] = text.strip()
        else:
            values[name] = text
    return values


def _unprocessed(job: MockBulkJob) -> None:
    """An aborted job hands back every uploaded row it never ran."""
    if job.results.get("counts"):
        return
    job.results = {"successful": "", "failed": "", "unprocessed": job.uploaded, "counts": {"processed": 0}}


# --- query ---------------------------------------------------------------------------------------


@api
def query_jobs(request: HttpRequest, version: str) -> HttpResponse:
    if request.method != "POST":
        return method_not_allowed(request, "POST")
    spec = body_json(request)
    operation = spec.get("operation")
    if operation not in QUERY:
        return errors(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
    parsed = parse(str(spec.get("query") or ""))  # a bad query refuses the job, as on a real org
    job = MockBulkJob.objects.create(
        system=store.SYSTEM,
        job_id=_job_id(),
        object=parsed.object.name,
        external_id_field="",
        operation=operation,
        state="UploadComplete",
        uploaded=str(spec["query"]),
    )
    return JsonResponse(_info(job, version))


def _query_step(request: HttpRequest, found: MockBulkJob) -> HttpResponse | None:
    """PATCH aborts; GET is a poll: the first finds it running, the next finds it done."""
    if request.method == "PATCH":
        found.state = "Aborted"
        found.save(update_fields=["state"])
    elif found.state == "UploadComplete":
        found.state = "InProgress"
        found.save(update_fields=["state"])
    elif found.state == "InProgress":
        _run_query(found)
    return None


@api
def query_job(request: HttpRequest, version: str, job_id: str) -> HttpResponse:
    return _job_view(request, version, job_id, query=True, step=_query_step)


@api
def query_results(request: HttpRequest, version: str, job_id: str) -> HttpResponse:
    found = _job(job_id, query=True)
    if isinstance(found, HttpResponse):
        return found
    if found.state != "JobComplete":
        return errors(400, "INVALIDJOBSTATE", "Results are available once the job is complete")
    try:
        size = int(request.GET.get("maxRecords") or DEFAULT_MAX_RECORDS)
        start = int(request.GET.get("locator") or 0)
    except ValueError:
        return errors(400, "INVALID_LOCATOR", "locator and maxRecords must be numbers")
    lines: list[str] = found.results.get("lines", [])
    page = lines[start : start + size]
    response = HttpResponse(found.results.get("header", "") + "".join(page), content_type="text/csv")
    more = start + size < len(lines)
    response["Sforce-Locator"] = str(start + size) if more else "null"
    response["Sforce-NumberOfRecords"] = str(len(page))
    return response


def _run_query(job: MockBulkJob) -> None:
    parsed = parse(job.uploaded)
    rows = MockRecord.objects.filter(system=store.SYSTEM, object=parsed.object.name)
    if job.operation == "query":
        rows = rows.filter(deleted_at__isnull=True)
    matched = run(parsed, [store.as_row(r) for r in rows])
    job.results = {
        "header": _line(parsed.fields),
        "lines": [_line([_csv_value(row.get(f)) for f in parsed.fields]) for row in matched],
        "counts": {"processed": len(matched)},
    }
    job.state = "JobComplete"
    job.save(update_fields=["results", "state"])


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def _writer(header: list[str]) -> tuple[Any, io.StringIO]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    return writer, out


def _job_id() -> str:
    return new_id("Contact").replace("003", "750", 1)

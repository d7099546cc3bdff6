"""The mock HubSpot's CRM v3 endpoints: objects, batches, search and properties (HubSpot's OpenAPI specs).

Status codes are exactly the spec's (the official client reads only those): create 201, batch create 201,
batch read/update/upsert 200, 207 when some inputs failed, archive 204. A batch's inputs carry an
`objectWriteTraceId` to get per-input errors (a 207); without them the first error fails the whole call
and nothing of it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from crms.hubspot import mock_store as store
from crms.hubspot.mock import api, body_json
from crms.hubspot.mock_schema import OBJECTS, SYSTEM, Invalid, batch_error, error, hs_time, public_object
from crms.hubspot.mock_search import search_page
from crms.mocks.models import MockFault, MockRecord

BATCH_LIMIT = 100
LIST_LIMIT = 100


def _object(obj: str) -> str:
    if obj not in OBJECTS:
        raise Invalid(f"Unable to infer object type from: {obj}", [])
    return obj


def _listed(request: HttpRequest, name: str) -> list[str]:
    """A list parameter, repeated (`?properties=a&properties=b`, as the client sends) or comma-separated (the docs)."""
    return [part for raw in request.GET.getlist(name) for part in raw.split(",") if part]


def _flag(request: HttpRequest, name: str) -> bool:
    return request.GET.get(name, "false").lower() == "true"  # the client sends Python's `False`


@api
def objects(request: HttpRequest, obj: str) -> HttpResponse:
    obj = _object(obj)
    if request.method == "POST":
        given = body_json(request).get("properties") or {}
        return JsonResponse(public_object(store.create(obj, given), list(given)), status=201)
    limit = min(int(request.GET.get("limit") or 10), LIST_LIMIT)
    rows = MockRecord.objects.filter(system=SYSTEM, object=obj, deleted_at__isnull=not _flag(request, "archived"))
    after = request.GET.get("after")
    ordered = sorted(rows, key=lambda r: int(r.record_id))
    if after and after.isdigit():
        ordered = [r for r in ordered if int(r.record_id) >= int(after)]
    page, rest = ordered[:limit], ordered[limit : limit + 1]
    body: dict[str, Any] = {"results": [public_object(r, _listed(request, "properties")) for r in page]}
    if rest:  # "after" is the Record ID of the next record
        link = request.build_absolute_uri(f"{request.path}?after={rest[0].record_id}&limit={limit}")
        body["paging"] = {"next": {"after": rest[0].record_id, "link": link}}
    return JsonResponse(body)


@api
def member(request: HttpRequest, obj: str, record_id: str) -> HttpResponse:
    obj = _object(obj)
    id_property = request.GET.get("idProperty") or "hs_object_id"
    record = (
        store.find(obj, id_property, record_id)
        if request.method != "GET" or not _flag(request, "archived")
        else store.by_id(obj, record_id, archived=True)
    )
    if request.method == "DELETE":
        if record is not None:
            store.archive(record)
        return HttpResponse(status=204)
    if record is None:
        body = error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", {"id": [record_id]})
        return JsonResponse(body, status=404)
    if request.method == "PATCH":
        properties = body_json(request).get("properties") or {}
        return JsonResponse(public_object(store.update(record, properties), list(properties)))
    return JsonResponse(public_object(record, _listed(request, "properties")))


@api
def batch(request: HttpRequest, obj: str, action: str) -> HttpResponse:
    obj = _object(obj)
    body = body_json(request)
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise Invalid("Invalid input JSON: inputs must be an array", [])
    if len(inputs) > BATCH_LIMIT:
        raise Invalid(f"Batch input limit is {BATCH_LIMIT} inputs; got {len(inputs)}.", [])
    if action not in BATCHES:
        return JsonResponse(error(404, "NOT_FOUND", f"No batch action {action}"), status=404)
    started = timezone.now()
    if action == "read":
        return _read(request, obj, body, inputs, started)
    if action == "archive":
        with transaction.atomic():
            for item in inputs:
                record = store.by_id(obj, str(item.get("id")))
                if record is not None:
                    store.archive(record)
        return HttpResponse(status=204)
    fault: MockFault | None = request.mock_fault  # type: ignore[attr-defined]
    results, errors = [], []
    with transaction.atomic():
        for item in inputs:
            trace = str(item.get("objectWriteTraceId") or "") or None
            try:
                if fault is not None and fault.record_error:
                    raise Invalid(f"injected {fault.record_error}", [], category=fault.record_error)
                results.append(BATCHES[action](obj, item, trace))  # type: ignore[misc]
            except Invalid as exc:
                if trace is None:  # no per-input errors asked for: the first one fails the call, nothing is kept
                    transaction.set_rollback(True)
                    context = {"propertyName": exc.names} if exc.names else None
                    return JsonResponse(error(exc.status, exc.category, exc.message, context), status=exc.status)
                context = {"objectWriteTraceId": [trace]}
                if exc.category == "OBJECT_NOT_FOUND":
                    context["ids"] = [str(item.get("id"))]
                errors.append(batch_error(exc.category, exc.message, context))
    return _batch_answer(results, errors, started, created=action == "create")


def _create(obj: str, item: dict[str, Any], trace: str | None) -> dict[str, Any]:
    record = store.create(obj, item.get("properties") or {})
    return public_object(record, list(item.get("properties") or []), trace=trace)


def _update(obj: str, item: dict[str, Any], trace: str | None) -> dict[str, Any]:
    id_property = item.get("idProperty") or "hs_object_id"
    if id_property not in ("hs_object_id",) and not OBJECTS[obj].get(id_property, None):
        raise Invalid(f"Unable to perform update/upsert by non-unique property {id_property}", [id_property])
    record = store.find(obj, id_property, str(item.get("id")))
    if record is None:
        raise Invalid("Object not found.  objectId are usually numeric.", [], category="OBJECT_NOT_FOUND", status=404)
    return public_object(
        store.update(record, item.get("properties") or {}), list(item.get("properties") or []), trace=trace
    )


def _upsert(obj: str, item: dict[str, Any], trace: str | None) -> dict[str, Any]:
    id_property, key = str(item.get("idProperty") or ""), str(item.get("id") or "")
    if not id_property or not key:
        raise Invalid("idProperty and id are required for an upsert", ["idProperty"])
    record, new = store.upsert(obj, id_property, key, item.get("properties") or {})
    wanted = [*(item.get("properties") or []), id_property]
    return {**public_object(record, wanted, trace=trace), "new": new}


BATCHES: dict[str, Callable[[str, dict[str, Any], str | None], dict[str, Any]] | None] = {
    "create": _create,
    "update": _update,
    "upsert": _upsert,
    "read": None,
    "archive": None,
}


def _read(request: HttpRequest, obj: str, body: dict[str, Any], inputs: list[Any], started: datetime) -> HttpResponse:
    id_property = body.get("idProperty") or "hs_object_id"
    wanted = list(body.get("properties") or [])
    results, missing = [], []
    for item in inputs:
        key = str(item.get("id"))
        record = (
            store.by_id(obj, key, archived=True) if _flag(request, "archived") else store.find(obj, id_property, key)
        )
        if record is None:
            missing.append(key)
        else:
            results.append(public_object(record, wanted))
    errors = (
        [
            batch_error(
                "OBJECT_NOT_FOUND", "Could not get some objects, they may be deleted or not exist.", {"ids": missing}
            )
        ]
        if missing
        else []
    )
    return _batch_answer(results, errors, started, created=False)


def _batch_answer(results: list[Any], errors: list[Any], started: datetime, *, created: bool) -> JsonResponse:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": hs_time(started),
        "completedAt": hs_time(timezone.now()),
    }
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
        return JsonResponse(body, status=207)
    return JsonResponse(body, status=201 if created else 200)


@api
def search(request: HttpRequest, obj: str) -> HttpResponse:
    return JsonResponse(search_page(_object(obj), body_json(request)))


@api
def properties(request: HttpRequest, obj: str) -> HttpResponse:
    obj = _object(obj)
    return JsonResponse({"results": [prop.as_json(obj) for prop in OBJECTS[obj].values()]})


@api
def property_member(request: HttpRequest, obj: str, name: str) -> HttpResponse:
    prop = OBJECTS[_object(obj)].get(name)
    if prop is None:
        return JsonResponse(error(404, "OBJECT_NOT_FOUND", f"property {name} does not exist"), status=404)
    return JsonResponse(prop.as_json(obj))

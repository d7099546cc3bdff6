"""The mock org's sObject resources: single records (by id and by external id), describe, and sObject
Collections (create, update, upsert, delete, retrieve; `allOrNone` rolls every record back).

A GET never writes; a PATCH by external id upserts (201 created, 200 updated, 300 for several matches,
404 with `updateOnly=true` when nothing matches); unknown fields refuse the whole request with
INVALID_FIELD, and a record's own problems (required field, read-only field, too long, bad email,
duplicate external id) fail that record alone.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from crms.salesforce import mock_store as store
from crms.salesforce.mock import api, body_json, errors, method_not_allowed, object_or_404, refused
from crms.salesforce.mock_schema import OBJECTS, SObject, describe_object, object_summary, sobject

COLLECTION_LIMIT = 200
UPSERT_BODY_VERSION = 46.0  # from this API version an update by upsert answers 200 with a body, not 204
Result = dict[str, Any]


# --- the object, describe -------------------------------------------------------------------------


@api
def global_describe(request: HttpRequest, version: str) -> HttpResponse:
    return JsonResponse(
        {
            "encoding": "UTF-8",
            "maxBatchSize": COLLECTION_LIMIT,
            "sobjects": [object_summary(o, version) for o in OBJECTS.values()],
        }
    )


@api
def describe(request: HttpRequest, version: str, object_type: str) -> HttpResponse:
    obj = object_or_404(object_type)
    return obj if isinstance(obj, HttpResponse) else JsonResponse(describe_object(obj, version))


@api
def sobject_root(request: HttpRequest, version: str, object_type: str) -> HttpResponse:
    """GET: the object's summary and recent items; POST: create one record."""
    obj = object_or_404(object_type)
    if isinstance(obj, HttpResponse):
        return obj
    if request.method == "POST":
        named = store.known_fields(obj, _body_dict(request))
        try:
            record = store.create(obj, named, by=store.INTEGRATION_USER)
        except store.RecordRefused as exc:
            return refused(exc)
        return JsonResponse({"id": record.record_id, "success": True, "errors": []}, status=201)
    if request.method != "GET":
        return method_not_allowed(request, "GET, HEAD, POST")
    recent = store.live(obj.name).order_by("-modified_at")[:3]
    return JsonResponse(
        {
            "objectDescribe": object_summary(obj, version),
            "recentItems": [store.as_row(r, ["Id", "Name"] if obj.field("Name") else ["Id"]) for r in recent],
        }
    )


# --- one record by id -------------------------------------------------------------------------------


@api
def record(request: HttpRequest, version: str, object_type: str, record_id: str) -> HttpResponse:
    obj = object_or_404(object_type)
    return obj if isinstance(obj, HttpResponse) else _record(request, obj, record_id)


def _record(request: HttpRequest, obj: SObject, record_id: str) -> HttpResponse:
    found = store.by_id(obj.name, record_id)
    if found is None:
        missing = store.missing_record(record_id)
        return errors(
            404,
            "ENTITY_IS_DELETED" if missing.code == "ENTITY_IS_DELETED" else "NOT_FOUND",
            "entity is deleted" if missing.code == "ENTITY_IS_DELETED" else "The requested resource does not exist",
        )
    if request.method == "GET":
        return JsonResponse(store.as_row(found, _wanted(request, obj)))
    if request.method == "PATCH":
        try:
            store.update(found, store.known_fields(obj, _body_dict(request)), by=store.INTEGRATION_USER)
        except store.RecordRefused as exc:
            return refused(exc)
        return HttpResponse(status=204)
    if request.method == "DELETE":
        store.delete(found)
        return HttpResponse(status=204)
    return method_not_allowed(request, "GET, HEAD, PATCH, DELETE")


# --- one record by external id ------------------------------------------------------------------


@api
def by_external_id(request: HttpRequest, version: str, object_type: str, key_field: str, value: str) -> HttpResponse:
    obj = object_or_404(object_type)
    if isinstance(obj, HttpResponse):
        return obj
    key = _key_field(obj, key_field)
    if isinstance(key, HttpResponse):
        return key
    if key == "Id":  # …/sobjects/Contact/Id/003… is the record by id
        return _record(request, obj, value)
    matches = list(store.matching(obj.name, key, value)[:5])
    if len(matches) > 1:
        urls = [f"/services/data/v{version}/sobjects/{obj.name}/{m.record_id}" for m in matches]
        return JsonResponse(urls, status=300, safe=False)
    if request.method == "GET":
        if not matches:
            return errors(404, "NOT_FOUND", "The requested resource does not exist")
        return JsonResponse(store.as_row(matches[0], _wanted(request, obj)))
    if request.method == "DELETE":
        if not matches:
            return errors(404, "NOT_FOUND", "The requested resource does not exist")
        store.delete(matches[0])
        return HttpResponse(status=204)
    if request.method in ("PATCH", "POST"):
        return _upsert_one(request, version, obj, key, value)
    return method_not_allowed(request, "GET, HEAD, PATCH, DELETE")


def _upsert_one(request: HttpRequest, version: str, obj: SObject, key: str, value: str) -> HttpResponse:
    named = store.known_fields(obj, _body_dict(request))
    if key in named:
        return errors(400, "INVALID_FIELD", f"The {key} field should not be specified in the sobject data.", [key])
    update_only = request.GET.get("updateOnly", "").lower() == "true"
    try:
        result = store.upsert(obj, key, {**named, key: value}, by=store.INTEGRATION_USER, update_only=update_only)
    except store.RecordRefused as exc:
        return refused(exc, status=404 if exc.code == "NOT_FOUND" else 400)
    if result["created"]:
        return JsonResponse(result, status=201)
    if float(version) < UPSERT_BODY_VERSION:
        return HttpResponse(status=204)
    return JsonResponse(result, status=200)


# --- sObject Collections ---------------------------------------------------------------------------


@api
def collection(request: HttpRequest, version: str) -> HttpResponse:
    """POST creates, PATCH updates by id, DELETE …?ids=a,b deletes."""
    if request.method == "DELETE":
        ids = [i for i in request.GET.get("ids", "").split(",") if i]
        if not ids:
            return errors(400, "REQUIRED_FIELD_MISSING", "At least 1 Id is required.")
        if len(ids) > COLLECTION_LIMIT:
            return _too_many()
        all_or_none = request.GET.get("allOrNone", "false").lower() == "true"
        results = store.each_record(len(ids), lambda i: _delete_one(ids[i]), all_or_none=all_or_none)
        return JsonResponse(results, safe=False)
    if request.method not in ("POST", "PATCH"):
        return method_not_allowed(request, "DELETE, PATCH, POST")
    records, all_or_none = _collection_body(request)
    typed = [_typed(r) for r in records]
    write = _create_one if request.method == "POST" else _update_one
    forced = _forced(request)
    results = store.each_record(len(typed), lambda i: forced or write(*typed[i]), all_or_none=all_or_none)
    return JsonResponse(results, safe=False)


@api
def collection_object(request: HttpRequest, version: str, object_type: str) -> HttpResponse:
    """Retrieve by ids: GET …?ids=&fields= or POST {"ids", "fields"}; null stands in for a missing id."""
    obj = object_or_404(object_type)
    if isinstance(obj, HttpResponse):
        return obj
    if request.method == "POST":
        body = _body_dict(request)
        ids, fields = [str(i) for i in body.get("ids") or []], [str(f) for f in body.get("fields") or []]
    elif request.method == "GET":
        ids = [i for i in request.GET.get("ids", "").split(",") if i]
        fields = [f for f in request.GET.get("fields", "").split(",") if f]
    else:
        return method_not_allowed(request, "GET, POST")
    if not fields:
        return errors(400, "MISSING_ARGUMENT", "fields is required", ["fields"])
    wanted = list(store.known_fields(obj, dict.fromkeys(fields)))
    found = [store.by_id(obj.name, i) for i in ids]
    return JsonResponse([store.as_row(r, wanted) if r else None for r in found], safe=False)


@api
def collection_upsert(request: HttpRequest, version: str, object_type: str, key_field: str) -> HttpResponse:
    if request.method != "PATCH":
        return method_not_allowed(request, "PATCH")
    obj = object_or_404(object_type)
    if isinstance(obj, HttpResponse):
        return obj
    key = _key_field(obj, key_field)
    if isinstance(key, HttpResponse):
        return key
    records, all_or_none = _collection_body(request)
    named = [store.known_fields(obj, r) for r in records]
    forced = _forced(request)

    def upsert(index: int) -> Result:
        return forced or store.upsert(obj, key, named[index], by=store.INTEGRATION_USER)

    return JsonResponse(store.each_record(len(named), upsert, all_or_none=all_or_none), safe=False)


def _create_one(obj: SObject, named: dict[str, Any]) -> Result:
    created = store.create(obj, named, by=store.INTEGRATION_USER)
    return {"id": created.record_id, "success": True, "errors": []}


def _update_one(obj: SObject, named: dict[str, Any]) -> Result:
    record_id = str(named.pop("Id", "") or "")
    found = store.by_id(obj.name, record_id)
    if found is None:
        raise store.missing_record(record_id)
    store.update(found, named, by=store.INTEGRATION_USER)
    return {"id": found.record_id, "success": True, "errors": []}


def _delete_one(record_id: str) -> Result:
    result = store.delete_result(record_id)
    if not result["success"]:
        error = result["errors"][0]
        raise store.RecordRefused(error["statusCode"], error["message"])
    return result


def _typed(values: dict[str, Any]) -> tuple[SObject, dict[str, Any]]:
    """A Collections record names its type in `attributes`; the Id travels as a field for updates."""
    attributes = values.get("attributes")
    type_name = str(attributes.get("type") or "") if isinstance(attributes, dict) else ""
    obj = sobject(type_name)
    if obj is None:
        raise store.RequestRefused("INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
    return obj, store.known_fields(obj, values)


def _collection_body(request: HttpRequest) -> tuple[list[dict[str, Any]], bool]:
    body = body_json(request)
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise store.RequestRefused("JSON_PARSER_ERROR", 'Expected {"allOrNone": …, "records": […]}')
    if len(records) > COLLECTION_LIMIT:
        raise store.RequestRefused(
            "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
        )
    return records, bool(body.get("allOrNone", False))


def _too_many() -> HttpResponse:
    return errors(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")


def _forced(request: HttpRequest) -> Result | None:
    """A per-record error injected through the mock's fault API (e.g. UNABLE_TO_LOCK_ROW)."""
    code = request.mock_fault.record_error if request.mock_fault else ""  # type: ignore[attr-defined]
    if not code:
        return None
    return {"id": None, "success": False, "errors": [{"statusCode": code, "message": f"injected {code}", "fields": []}]}


def _key_field(obj: SObject, key_field: str) -> str | HttpResponse:
    field = obj.field(key_field)
    if field is None:
        return errors(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {key_field}")
    if not (field.external_id or field.name == "Id"):
        return errors(400, "INVALID_FIELD", f"Field {field.name} is not an External ID or Id field", [field.name])
    return field.name


def _wanted(request: HttpRequest, obj: SObject) -> list[str] | None:
    fields = [f for f in request.GET.get("fields", "").split(",") if f]
    return list(store.known_fields(obj, dict.fromkeys(fields))) if fields else None


def _body_dict(request: HttpRequest) -> dict[str, Any]:
    body = body_json(request)
    if not isinstance(body, dict):
        raise store.RequestRefused("JSON_PARSER_ERROR", "Expected a JSON object of field values")
    return body

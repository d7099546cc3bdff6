"""The mock Salesforce org's data rules: fields checked against the schema, ids, whole-second stamps,
external-id matching, and the per-record results of creates, updates, upserts and deletes.

Every write stamps `SystemModstamp` with whole seconds, as real orgs do: a bulk edit gives thousands of
records the same stamp, which is exactly what a poller must survive.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from crms.mocks.models import MockRecord
from crms.salesforce.mock_schema import (
    DEFAULTS,
    EXTERNAL_ID_FIELD,
    OBJECTS,
    BadValue,
    NotDeserializable,
    SObject,
    check_value,
    new_id,
    normal_id,
    sf_time,
    to_18,
)

SYSTEM = "salesforce"
INTEGRATION_USER = to_18("005MOCKINTEGRAT")  # who the API's writes are attributed to
CRM_USER = to_18("005MOCKCRMUSER1")  # who staff pushes ("a CRM user") are attributed to
ORGANIZATION_ID = to_18("00DMOCKORG00001")
ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"
Result = dict[str, Any]
__all__ = ["EXTERNAL_ID_FIELD", "OBJECTS", "new_id", "sf_time"]


class RequestRefused(Exception):
    """The whole request is refused (HTTP 400), before any record is written."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or []


class RecordRefused(Exception):
    """One record is refused; the others of the call go on (unless allOrNone)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or []


# The org's clock: swappable, so tests move time instead of waiting for a minute to pass.
clock: Callable[[], datetime] = timezone.now


def stamp() -> datetime:
    """Now, to the whole second, as Salesforce stamps records."""
    return clock().replace(microsecond=0)


def as_row(record: MockRecord, wanted: list[str] | None = None) -> dict[str, Any]:
    """The record as the REST API shows it: every field of the object, null when unset."""
    obj = OBJECTS[record.object]
    values = {f.name: record.fields.get(f.name, DEFAULTS.get(f.name)) for f in obj.fields}
    values.update(
        {
            "Id": record.record_id,
            "IsDeleted": record.deleted_at is not None,
            "OwnerId": record.fields.get("OwnerId") or INTEGRATION_USER,
            "CreatedDate": sf_time(record.created_at),
            "CreatedById": record.fields.get("CreatedById") or INTEGRATION_USER,
            "LastModifiedDate": sf_time(record.modified_at),
            "LastModifiedById": record.modified_by,
            "SystemModstamp": sf_time(record.modified_at),
        }
    )
    if "Name" in values and obj.field("LastName"):
        values["Name"] = " ".join(str(v) for v in (values.get("FirstName"), values.get("LastName")) if v)
    if wanted is not None:
        values = {name: values.get(name) for name in wanted}
    url = f"/services/data/v62.0/sobjects/{record.object}/{record.record_id}"
    return {"attributes": {"type": record.object, "url": url}, **values}


def live(object_type: str) -> QuerySet[MockRecord]:
    return MockRecord.objects.filter(system=SYSTEM, object=object_type, deleted_at__isnull=True)


def by_id(object_type: str | None, record_id: str, *, with_deleted: bool = False) -> MockRecord | None:
    """A record by its 15- or 18-character id."""
    full = normal_id(record_id)
    if full is None:
        return None
    rows = MockRecord.objects.filter(system=SYSTEM, record_id=full)
    if object_type:
        rows = rows.filter(object=object_type)
    if not with_deleted:
        rows = rows.filter(deleted_at__isnull=True)
    return rows.first()


def matching(object_type: str, field: str, value: Any) -> QuerySet[MockRecord]:
    """Live records whose `field` equals `value`. (A `fields__X__c` lookup would split on the "__".)

    The value is looked up alone first, so the external-id index is the only one that fits
    whatever the planner's statistics say; the object and liveness are checked on those few rows.
    """
    as_text = Cast(KeyTextTransform(field, "fields"), output_field=TextField())
    found = list(MockRecord.objects.annotate(_match=as_text).filter(_match=str(value)).values_list("pk", flat=True))
    return live(object_type).filter(pk__in=found).order_by("pk")


# --- checking what a caller sends ----------------------------------------------------------------


def known_fields(obj: SObject, values: dict[str, Any], *, allow: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The caller's fields under their canonical names; an unknown one refuses the request (INVALID_FIELD)."""
    named: dict[str, Any] = {}
    for name, value in values.items():
        if name == "attributes" or name.lower() in allow:
            continue
        field = obj.field(name)
        if field is None:
            raise RequestRefused("INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}", [name])
        named[field.name] = value
    return named


def checked(obj: SObject, named: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Values as stored, or RecordRefused / RequestRefused as the org would answer."""
    refused = [n for n in named if not (obj.field(n).createable if creating else obj.field(n).updateable)]  # type: ignore[union-attr]
    if refused:
        verb = "create" if creating else "update"
        raise RecordRefused(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to {verb} fields: {', '.join(refused)}. "
            "Please check the security settings of this field and verify that it is read/write "
            "for your profile or permission set.",
            refused,
        )
    stored: dict[str, Any] = {}
    for name, value in named.items():
        field = obj.field(name)
        assert field is not None  # noqa: S101 - known_fields named it
        try:
            stored[name] = check_value(field, value)
        except BadValue as exc:
            raise RecordRefused(exc.code, exc.message, [exc.field]) from None
        except NotDeserializable as exc:
            raise RequestRefused("JSON_PARSER_ERROR", str(exc), [name]) from None
    if creating:
        missing = [n for n in obj.required if stored.get(n) in (None, "")]
        if missing:
            raise RecordRefused(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
            )
    return stored


def _unique_key(obj: SObject, stored: dict[str, Any], exclude: int | None) -> None:
    key = stored.get(EXTERNAL_ID_FIELD)
    if key in (None, ""):
        return
    clash = matching(obj.name, EXTERNAL_ID_FIELD, key)
    if exclude is not None:
        clash = clash.exclude(pk=exclude)
    found = clash.first()
    if found is not None:
        raise RecordRefused(
            "DUPLICATE_VALUE",
            f"duplicate value found: {EXTERNAL_ID_FIELD} duplicates value on record with id: {found.record_id}",
            [EXTERNAL_ID_FIELD],
        )


# --- writes ------------------------------------------------------------------------------------


def create(obj: SObject, named: dict[str, Any], *, by: str) -> MockRecord:
    stored = checked(obj, named, creating=True)
    _unique_key(obj, stored, None)
    now = stamp()
    return MockRecord.objects.create(
        system=SYSTEM,
        object=obj.name,
        record_id=new_id(obj.name),
        fields={**stored, "CreatedById": by},
        created_at=now,
        modified_at=now,
        modified_by=by,
    )


def update(record: MockRecord, named: dict[str, Any], *, by: str) -> MockRecord:
    obj = OBJECTS[record.object]
    stored = checked(obj, named, creating=False)
    _unique_key(obj, stored, record.pk)
    record.fields = {**record.fields, **stored}
    record.modified_at, record.modified_by = stamp(), by
    record.save(update_fields=["fields", "modified_at", "modified_by"])
    return record


def upsert(obj: SObject, key_field: str, named: dict[str, Any], *, by: str, update_only: bool = False) -> Result:
    """One record of an upsert by external id: the result row for it (`created` says which happened)."""
    key = named.get(key_field)
    if key in (None, ""):
        raise RecordRefused("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])
    matches = list(matching(obj.name, key_field, key)[:2])
    if len(matches) > 1:
        raise RecordRefused(
            "DUPLICATE_EXTERNAL_ID",
            f"{key_field}: more than one record found for external id "
            f"field: [{', '.join(m.record_id for m in matches)}]",
            [key_field],
        )
    if matches:
        record = update(matches[0], named, by=by)
        return {"id": record.record_id, "success": True, "errors": [], "created": False}
    if update_only:
        raise RecordRefused("NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {key}")
    record = create(obj, named, by=by)
    return {"id": record.record_id, "success": True, "errors": [], "created": True}


def delete(record: MockRecord) -> None:
    record.deleted_at = record.modified_at = stamp()
    record.save(update_fields=["deleted_at", "modified_at"])


def delete_result(record_id: str) -> Result:
    """One record of a Collections delete by id."""
    record = by_id(None, record_id, with_deleted=True)
    if record is None:
        return failure(RecordRefused("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"), record_id)
    if record.deleted_at is not None:
        return failure(RecordRefused("ENTITY_IS_DELETED", "entity is deleted"), record.record_id)
    delete(record)
    return {"id": record.record_id, "success": True, "errors": []}


def missing_record(record_id: str) -> RecordRefused:
    gone = by_id(None, record_id, with_deleted=True)
    if gone is not None and gone.deleted_at is not None:
        return RecordRefused("ENTITY_IS_DELETED", "entity is deleted")
    if normal_id(record_id) is None:
        return RecordRefused("MALFORMED_ID", f"malformed id {record_id}")
    return RecordRefused("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}")


def failure(exc: RecordRefused, record_id: str | None = None) -> Result:
    error = {"statusCode": exc.code, "message": exc.message, "fields": exc.fields}
    return {"id": record_id, "success": False, "errors": [error]}


def each_record(count: int, write: Callable[[int], Result], *, all_or_none: bool) -> list[Result]:
    """Collections semantics: one result per record; with allOrNone, one failure rolls back every record."""
    results: list[Result] = []
    try:
        with transaction.atomic():
            for index in range(count):
                try:
                    with transaction.atomic():
                        results.append(write(index))
                except RecordRefused as exc:
                    results.append(failure(exc))
            if all_or_none and not all(r["success"] for r in results):
                raise _RollBack
    except _RollBack:
        return [
            r
            if not r["success"]
            else failure(
                RecordRefused(
                    ROLLED_BACK,
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                )
            )
            for r in results
        ]
    return results


class _RollBack(Exception):
    pass


# --- what a person in Salesforce does ------------------------------------------------------------


def _editable(obj: SObject, name: str) -> bool:
    """What a person can type into a record: the org's own fields (Id, stamps, a Contact's Name) are not."""
    field = obj.field(name)
    return field is not None and (field.createable or field.updateable)


def staff_push(object_type: str, records: list[dict[str, Any]], delete_ids: list[str]) -> list[dict[str, Any]]:
    """Change the org as a person in Salesforce would: the service learns of it only by polling."""
    obj = OBJECTS.get(object_type)
    if obj is None:
        raise ValueError(f"object must be one of {', '.join(OBJECTS)}")
    stored: list[dict[str, Any]] = []
    for values in records:
        try:
            named = {k: v for k, v in known_fields(obj, values, allow=frozenset({"id"})).items() if _editable(obj, k)}
        except RequestRefused as exc:
            raise ValueError(f"{exc.code}: {exc.message}") from None
        record = by_id(obj.name, str(values.get("Id") or values.get("id") or ""))
        try:
            record = update(record, named, by=CRM_USER) if record else create(obj, named, by=CRM_USER)
        except (RecordRefused, RequestRefused) as exc:
            raise ValueError(f"{exc.code}: {exc.message}") from None
        stored.append(as_row(record))
    stored.extend(delete_result(record_id) for record_id in delete_ids)
    return stored

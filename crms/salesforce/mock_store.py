"""The mock Salesforce org's data rules: objects, required fields, ids, external-id matching."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from crms.mocks.models import MockRecord

SYSTEM = "salesforce"
EXTERNAL_ID_FIELD = "RecordSync_Id__c"  # marked External ID and Unique in the mock's describe
INTEGRATION_USER = "005MOCKINTEGRATN"  # who the API's writes are attributed to
CRM_USER = "005MOCKCRMUSER01"  # who staff pushes ("a CRM user") are attributed to
OBJECTS: dict[str, dict[str, Any]] = {
    "Contact": {"prefix": "003", "required": ["LastName"],
                "fields": ["FirstName", "LastName", "Email", "Phone", "Title", "AccountId"]},
    "Account": {"prefix": "001", "required": ["Name"], "fields": ["Name", "Website", "Phone", "Industry"]},
    "Lead": {"prefix": "00Q", "required": ["LastName", "Company"],
             "fields": ["FirstName", "LastName", "Email", "Company", "Phone"]},
}  # fmt: skip
READ_ONLY = ["Id", "SystemModstamp", "LastModifiedById", "CreatedDate", "LastModifiedDate"]
_ALPHABET = string.ascii_letters + string.digits


def new_id(object_type: str) -> str:
    """An 18-character id with the object's key prefix, like Salesforce's."""
    prefix: str = OBJECTS[object_type]["prefix"]
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12)) + "AAA"


def sf_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def unknown_fields(object_type: str, fields: dict[str, Any]) -> list[str]:
    allowed = set(OBJECTS[object_type]["fields"]) | {"attributes"}
    return [name for name in fields if name not in allowed and not name.endswith("__c")]


def as_row(record: MockRecord, wanted: list[str] | None = None) -> dict[str, Any]:
    row = {
        **record.fields,
        "Id": record.record_id,
        "SystemModstamp": sf_time(record.modified_at),
        "LastModifiedDate": sf_time(record.modified_at),
        "CreatedDate": sf_time(record.created_at),
        "LastModifiedById": record.modified_by,
    }
    if wanted is not None:
        row = {name: row.get(name) for name in wanted}
    return {
        "attributes": {
            "type": record.object,
            "url": f"/services/data/v62.0/sobjects/{record.object}/{record.record_id}",
        },
        **row,
    }


def live(object_type: str) -> Any:
    return MockRecord.objects.filter(system=SYSTEM, object=object_type, deleted_at__isnull=True)


def matching(object_type: str, field: str, value: Any) -> Any:
    """Live records whose `field` equals `value`. (A `fields__X__c` lookup would split on the "__".)

    The value is looked up alone first, so the external-id index is the only one that fits
    whatever the planner's statistics say; the object and liveness are checked on those few rows.
    """
    as_text = Cast(KeyTextTransform(field, "fields"), output_field=TextField())
    found = list(MockRecord.objects.annotate(_match=as_text).filter(_match=str(value)).values_list("pk", flat=True))
    return live(object_type).filter(pk__in=found).order_by("pk")


def upsert_one(object_type: str, key_field: str, values: dict[str, Any], *, by: str) -> dict[str, Any]:
    """One record of an upsert by external id: the Collections result row for it."""
    key = values.get(key_field)
    if key in (None, ""):
        return _error("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])
    fields = {k: v for k, v in values.items() if k != "attributes"}
    with transaction.atomic():
        matches = list(matching(object_type, key_field, key)[:2])
        if len(matches) > 1:
            return _error("DUPLICATE_EXTERNAL_ID", f"{key_field}: more than one record found for {key}", [key_field])
        if matches:
            record = matches[0]
            record.fields = {**record.fields, **fields}
            record.modified_at, record.modified_by = timezone.now(), by
            record.save()
            return {"id": record.record_id, "success": True, "errors": [], "created": False}
        missing = [f for f in OBJECTS[object_type]["required"] if not fields.get(f)]
        if missing:
            return _error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        record = MockRecord.objects.create(system=SYSTEM, object=object_type, record_id=new_id(object_type),
                                           fields=fields, modified_by=by)  # fmt: skip
    return {"id": record.record_id, "success": True, "errors": [], "created": True}


def update_one(values: dict[str, Any], *, by: str) -> dict[str, Any]:
    """One record of a Collections update by id: the result row for it."""
    record_id = str(values.get("id") or values.get("Id") or "")
    object_type = str((values.get("attributes") or {}).get("type") or "")
    fields = {k: v for k, v in values.items() if k not in ("attributes", "id", "Id")}
    with transaction.atomic():
        record = live(object_type).filter(record_id=record_id).first()
        if record is None:
            gone = MockRecord.objects.filter(system=SYSTEM, record_id=record_id, deleted_at__isnull=False).exists()
            code = "ENTITY_IS_DELETED" if gone else "INVALID_CROSS_REFERENCE_KEY"
            return _error(code, f"{'entity is deleted' if gone else 'invalid cross reference id'}: {record_id}", [],
                          record_id)  # fmt: skip
        key = fields.get(EXTERNAL_ID_FIELD)
        if key not in (None, "") and matching(object_type, EXTERNAL_ID_FIELD, key).exclude(pk=record.pk).exists():
            return _error("DUPLICATE_VALUE", f"duplicate value found: {EXTERNAL_ID_FIELD} duplicates value on "
                          f"another record with id {key}", [EXTERNAL_ID_FIELD], record_id)  # fmt: skip
        record.fields = {**record.fields, **fields}
        record.modified_at, record.modified_by = timezone.now(), by
        record.save()
    return {"id": record.record_id, "success": True, "errors": []}


def delete_one(record_id: str) -> dict[str, Any]:
    record = MockRecord.objects.filter(system=SYSTEM, record_id=record_id).first()
    if record is None:
        return _error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [], record_id)
    if record.deleted_at is not None:
        return _error("ENTITY_IS_DELETED", "entity is deleted", [], record_id)
    record.deleted_at = record.modified_at = timezone.now()
    record.save(update_fields=["deleted_at", "modified_at"])
    return {"id": record_id, "success": True, "errors": []}


def _error(code: str, message: str, fields: list[str], record_id: str | None = None) -> dict[str, Any]:
    return {"id": record_id, "success": False, "errors": [{"statusCode": code, "message": message, "fields": fields}]}


def staff_push(object_type: str, records: list[dict[str, Any]], delete: list[str]) -> list[dict[str, Any]]:
    """Change the org as a person in Salesforce would: the service learns of it only by polling."""
    if object_type not in OBJECTS:
        raise ValueError(f"object must be one of {', '.join(OBJECTS)}")
    stored: list[dict[str, Any]] = []
    now = timezone.now()
    for values in records:
        fields = {k: v for k, v in values.items() if k not in READ_ONLY}
        record = live(object_type).filter(record_id=values.get("Id")).first() if values.get("Id") else None
        if record is None:
            record = MockRecord(system=SYSTEM, object=object_type, record_id=values.get("Id") or new_id(object_type))
        record.fields = {**record.fields, **fields}
        record.modified_at, record.modified_by = now, CRM_USER
        record.save()
        stored.append(as_row(record))
    for record_id in delete:
        stored.append(delete_one(record_id))
    return stored

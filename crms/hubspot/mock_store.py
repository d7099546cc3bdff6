"""The mock HubSpot account's records: create, update, upsert, archive, find; what its users change by hand."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from crms.hubspot.mock_schema import OBJECTS, SYSTEM, Invalid, public_object, validate
from crms.mocks.models import MockRecord

# The account's clock: swappable, so tests move time instead of waiting.
clock: Callable[[], datetime] = timezone.now
USER = "user"  # a person in HubSpot, as opposed to the API


def live(obj: str) -> QuerySet[MockRecord]:
    return MockRecord.objects.filter(system=SYSTEM, object=obj, deleted_at__isnull=True)


def by_id(obj: str, record_id: str, *, archived: bool = False) -> MockRecord | None:
    rows = MockRecord.objects.filter(system=SYSTEM, object=obj, record_id=str(record_id))
    return rows.filter(deleted_at__isnull=not archived).first()


def find(obj: str, prop: str, value: str) -> MockRecord | None:
    """The live record whose `prop` holds `value` (emails compare in lower case, as HubSpot keeps them)."""
    if prop == "hs_object_id":
        return by_id(obj, value)
    wanted = value.strip().lower() if prop == "email" else value
    return live(obj).filter(**{f"fields__{prop}": wanted}).first()


def create(obj: str, properties: dict[str, Any], *, by: str = "api") -> MockRecord:
    cleaned = validate(obj, properties)
    if obj == "contacts" and not any(cleaned.get(n) for n in ("email", "firstname", "lastname")):
        raise Invalid("A contact needs at least one of email, firstname or lastname", ["email"])
    _refuse_taken(obj, cleaned, None)
    for _ in range(5):  # ids are random numbers; a clash is retried
        try:
            with transaction.atomic():
                now = clock()
                return MockRecord.objects.create(
                    system=SYSTEM,
                    object=obj,
                    record_id=str(10**10 + secrets.randbelow(9 * 10**10)),
                    fields={k: v for k, v in cleaned.items() if v != ""},
                    created_at=now,
                    modified_at=now,
                    modified_by=by,
                )
        except IntegrityError:
            continue
    raise Invalid("could not allocate an id, try again", [], category="INTERNAL_ERROR", status=500)


def update(record: MockRecord, properties: dict[str, Any], *, by: str = "api") -> MockRecord:
    """ "" clears a property, as in HubSpot."""
    cleaned = validate(record.object, properties)
    _refuse_taken(record.object, cleaned, record.pk)
    merged = {**record.fields, **cleaned}
    record.fields = {k: v for k, v in merged.items() if v != ""}
    record.modified_at, record.modified_by = clock(), by
    record.save(update_fields=["fields", "modified_at", "modified_by"])
    return record


def upsert(obj: str, id_property: str, key: str, properties: dict[str, Any]) -> tuple[MockRecord, bool]:
    """By a property with unique values: the record holding `key` is updated, else one is created with it."""
    prop = OBJECTS[obj].get(id_property)
    if prop is None or not prop.unique:
        raise Invalid(f"Unable to perform update/upsert by non-unique property {id_property}", [id_property])
    found = find(obj, id_property, key)
    if found is not None:
        return update(found, properties), False
    return create(obj, {**properties, id_property: key}), True


def archive(record: MockRecord) -> None:
    record.deleted_at = record.modified_at = clock()
    record.save(update_fields=["deleted_at", "modified_at"])


def _refuse_taken(obj: str, cleaned: dict[str, str], own_pk: int | None) -> None:
    for name, prop in OBJECTS[obj].items():
        value = cleaned.get(name)
        if not prop.unique or name == "hs_object_id" or not value:
            continue
        holder = find(obj, name, value)
        if holder is not None and holder.pk != own_pk:
            noun = "Contact" if obj == "contacts" else "Object"
            raise Invalid(
                f"{noun} already exists. Existing ID: {holder.record_id}", [name], category="CONFLICT", status=409
            )


def as_row(record: MockRecord) -> dict[str, Any]:
    return public_object(record, sorted(OBJECTS[record.object]))


def staff_push(obj: str, rows: list[dict[str, Any]], delete: list[str]) -> list[dict[str, Any]]:
    """Change the account as a HubSpot user would (the service finds out by searching, or by a webhook)."""
    if obj not in OBJECTS:
        raise ValueError(f"object must be one of {', '.join(OBJECTS)}")
    stored = []
    with transaction.atomic():
        for row in rows:
            properties = dict(row.get("properties") or {k: v for k, v in row.items() if k != "id"})
            existing = by_id(obj, str(row["id"])) if row.get("id") else None
            try:
                record = update(existing, properties, by=USER) if existing else create(obj, properties, by=USER)
            except Invalid as exc:
                raise ValueError(exc.message) from exc
            stored.append(as_row(record))
        for record_id in delete:
            gone = by_id(obj, record_id)
            if gone is not None:
                archive(gone)
    return stored

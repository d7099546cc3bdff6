"""The mock Outreach org's data rules: JSON:API resources, validation, filters, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from crms.http import HttpClient, TransportError
from crms.mocks.models import MockRecord
from crms.outreach.resources import ACCOUNT_FIELDS, CUSTOM_FIELD, PROSPECT_FIELDS

SYSTEM = "outreach"
WEBHOOKS = "webhook"  # webhook registrations are records of this type
WRITABLE = {"prospect": set(PROSPECT_FIELDS), "account": set(ACCOUNT_FIELDS)}
REQUIRED_ON_CREATE = {"prospect": [], "account": ["name"]}
FILTERABLE = {"prospect": {"emails", "id", "updatedAt"}, "account": {"domain", "customId", "id", "updatedAt", "name"}}
logger = logging.getLogger("recordsync.mock.outreach")


class Invalid(Exception):
    """A 422 with JSON:API errors."""

    def __init__(self, detail: str, pointer: str = "/data") -> None:
        super().__init__(detail)
        self.item = {"id": "validationError", "title": "Validation Error", "detail": detail,
                     "source": {"pointer": pointer}}  # fmt: skip


def ol_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def resource(record: MockRecord, base: str) -> dict[str, Any]:
    attributes = {**record.fields, "createdAt": ol_time(record.created_at), "updatedAt": ol_time(record.modified_at)}
    return {"type": record.object, "id": int(record.record_id), "attributes": attributes, "relationships": {},
            "links": {"self": f"{base}/{record.object}s/{record.record_id}"}}  # fmt: skip


def live(kind: str) -> Any:
    return MockRecord.objects.filter(system=SYSTEM, object=kind, deleted_at__isnull=True)


def validate(kind: str, attributes: Any, *, creating: bool) -> dict[str, Any]:
    if not isinstance(attributes, dict):
        raise Invalid("data.attributes must be an object", "/data/attributes")
    for name, value in attributes.items():
        if name not in WRITABLE[kind] and not re.fullmatch(CUSTOM_FIELD, name):
            raise Invalid(f"{name} is not a writable attribute of {kind}", f"/data/attributes/{name}")
        if name == "emails" and not (isinstance(value, list) and all(isinstance(e, str) and "@" in e for e in value)):
            raise Invalid("emails must be a list of email addresses", "/data/attributes/emails")
    for name in REQUIRED_ON_CREATE[kind] if creating else []:
        if not attributes.get(name):
            raise Invalid(f"{name} can't be blank", f"/data/attributes/{name}")
    return attributes


def find_by_email(email: str, exclude: str | None = None) -> list[MockRecord]:
    needle = email.strip().lower()
    candidates = live("prospect").filter(fields__emails__icontains=needle)
    return [
        r for r in candidates if r.record_id != exclude and needle in [e.lower() for e in r.fields.get("emails", [])]
    ]


def matching(kind: str, field: str, value: str) -> Any:
    as_text = Cast(KeyTextTransform(field, "fields"), output_field=TextField())
    return live(kind).annotate(_match=as_text).filter(_match=value)


def create(kind: str, attributes: dict[str, Any], base: str) -> MockRecord:
    _refuse_taken_emails(kind, attributes, None)
    for _ in range(5):  # ids are increasing integers; concurrent creators retry on a clash
        try:
            with transaction.atomic():
                next_id = _next_id(kind)
                record = MockRecord.objects.create(
                    system=SYSTEM, object=kind, record_id=str(next_id), fields=attributes
                )
            break
        except IntegrityError:
            continue
    else:
        raise Invalid("could not allocate an id, try again")
    deliver(kind, "created", record, attributes, base)
    return record


def update(record: MockRecord, attributes: dict[str, Any], base: str) -> MockRecord:
    _refuse_taken_emails(record.object, attributes, record.record_id)
    changed = {k: v for k, v in attributes.items() if record.fields.get(k) != v}
    record.fields = {**record.fields, **attributes}
    record.modified_at = timezone.now()
    record.save(update_fields=["fields", "modified_at"])
    if changed:
        deliver(record.object, "updated", record, changed, base)
    return record


def destroy(record: MockRecord, base: str) -> None:
    record.deleted_at = record.modified_at = timezone.now()
    record.save(update_fields=["deleted_at", "modified_at"])
    deliver(record.object, "destroyed", record, record.fields, base)


def _next_id(kind: str) -> int:
    ids = MockRecord.objects.filter(system=SYSTEM, object=kind).values_list("record_id", flat=True)
    return max((int(i) for i in ids), default=0) + 1


def _refuse_taken_emails(kind: str, attributes: dict[str, Any], exclude: str | None) -> None:
    if kind != "prospect":
        return
    for email in attributes.get("emails") or []:
        if find_by_email(email, exclude):
            raise Invalid("Contacts email hash has already been taken.")


# --- webhooks (Outreach calls them back on every change, API writes included) ------------------


def deliver(kind: str, action: str, record: MockRecord, attributes: dict[str, Any], base: str) -> None:
    for hook in live(WEBHOOKS):
        wanted = hook.fields
        if wanted.get("resource") not in (kind, "*") or wanted.get("action") not in (action, "*"):
            continue
        body = json.dumps({
            "data": {"type": kind, "id": int(record.record_id), "attributes": attributes,
                     "links": {"self": f"{base}/{kind}s/{record.record_id}"}},
            "meta": {"deliveredAt": ol_time(timezone.now()), "eventName": f"{kind}.{action}"},
        }).encode()  # fmt: skip
        headers = {"Content-Type": "application/json", "Outreach-Webhook-ID": hook.record_id}
        if wanted.get("secret"):
            headers["Outreach-Webhook-Signature"] = hmac.new(
                wanted["secret"].encode(), body, hashlib.sha256
            ).hexdigest()
        _post(wanted["url"], body, headers)


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    """One delivery. Outreach retries only network failures (3 times); a 4xx/5xx counts as delivered."""
    client = HttpClient(connection_name="mock-outreach-webhooks", timeout=(2.0, 5.0))
    for _ in range(3):
        try:
            client.request("POST", url, data=body, headers=headers)
            return
        except TransportError as exc:
            logger.warning("webhook delivery failed", extra={"url": url, "error": str(exc)})


def as_row(record: MockRecord) -> dict[str, Any]:
    return resource(record, "/mock/outreach/api/v2")


def staff_push(kind: str, rows: list[dict[str, Any]], delete: list[str]) -> list[dict[str, Any]]:
    """Change the org as an Outreach user would (webhooks fire; the service may also poll)."""
    if kind not in WRITABLE:
        raise ValueError("object must be prospect or account")
    base = "/mock/outreach/api/v2"
    stored = []
    for row in rows:
        attributes = validate(kind, {k: v for k, v in row.items() if k != "id"}, creating="id" not in row)
        existing = live(kind).filter(record_id=str(row["id"])).first() if "id" in row else None
        record = update(existing, attributes, base) if existing else create(kind, attributes, base)
        stored.append(as_row(record))
    for record_id in delete:
        found = live(kind).filter(record_id=record_id).first()
        if found is not None:
            destroy(found, base)
        stored.append({"id": record_id, "deleted": found is not None})
    return stored

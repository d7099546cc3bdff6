"""The mock Outreach org's data: records, writes, webhooks. How they look and what a write may hold: mock_schema."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from crms.http import HttpClient, TransportError
from crms.mocks.models import MockRecord
from crms.outreach.mock_schema import API_USER, LINKS, ORG_USER, Invalid, resource, validate
from crms.outreach.mock_schema import ol_time as ol_time  # re-exported: sync's conformance tests stamp with it
from crms.outreach.reference import KINDS

SYSTEM = "outreach"
WEBHOOKS = "webhook"  # webhook registrations are records of this type
logger = logging.getLogger("recordsync.mock.outreach")


def stamp() -> datetime:
    """Now, to the whole second: Outreach's createdAt and updatedAt have no fraction (.000Z)."""
    return timezone.now().replace(microsecond=0)


def live(kind: str) -> Any:
    return MockRecord.objects.filter(system=SYSTEM, object=kind, deleted_at__isnull=True)


def find_by_email(email: str, exclude: str | None = None) -> list[MockRecord]:
    needle = email.strip().lower()
    candidates = live("prospect").filter(fields__emails__icontains=needle)
    return [
        r for r in candidates if r.record_id != exclude and needle in [e.lower() for e in r.fields.get("emails") or []]
    ]


def create(
    kind: str, attributes: dict[str, Any], base: str, *, links: dict[str, Any] | None = None, user: int = API_USER
) -> MockRecord:
    """A new record; the acting user becomes its creator and updater (read-only relationships)."""
    _refuse_taken_emails(kind, attributes, None)
    fields = dict(attributes)
    if kind in KINDS:
        fields[LINKS] = {**(links or {}), **_by(user, "creator", "updater")}
    for _ in range(5):  # ids are increasing integers; concurrent creators retry on a clash
        try:
            with transaction.atomic():
                next_id = _next_id(kind)
                now = stamp()
                record = MockRecord.objects.create(
                    system=SYSTEM, object=kind, record_id=str(next_id), fields=fields, created_at=now, modified_at=now
                )
            break
        except IntegrityError:
            continue
    else:
        raise Invalid("could not allocate an id, try again")
    deliver(kind, "created", record, attributes, base)
    return record


def update(
    record: MockRecord,
    attributes: dict[str, Any],
    base: str,
    *,
    links: dict[str, Any] | None = None,
    user: int = API_USER,
) -> MockRecord:
    _refuse_taken_emails(record.object, attributes, record.record_id)
    changed = {k: v for k, v in attributes.items() if record.fields.get(k) != v}
    record.fields = {**record.fields, **attributes}
    if record.object in KINDS:
        record.fields[LINKS] = {**(record.fields.get(LINKS) or {}), **(links or {}), **_by(user, "updater")}
    record.modified_at = stamp()
    record.save(update_fields=["fields", "modified_at"])
    if changed:
        deliver(record.object, "updated", record, changed, base)
    return record


def destroy(record: MockRecord, base: str) -> None:
    record.deleted_at = record.modified_at = stamp()
    record.save(update_fields=["deleted_at", "modified_at"])
    deliver(record.object, "destroyed", record, resource(record, base)["attributes"], base)


def _by(user: int, *names: str) -> dict[str, Any]:
    return {name: {"type": "user", "id": user} for name in names}


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
        body = json.dumps(
            {
                "data": {
                    "type": kind,
                    "id": int(record.record_id),
                    "attributes": attributes,
                    "links": {"self": f"{base}/{kind}s/{record.record_id}"},
                },
                "meta": {"deliveredAt": ol_time(timezone.now()), "eventName": f"{kind}.{action}"},
            }
        ).encode()
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
    if kind not in KINDS:
        raise ValueError("object must be prospect or account")
    base = "/mock/outreach/api/v2"
    stored = []
    for row in rows:
        try:
            attributes = validate(kind, {k: v for k, v in row.items() if k != "id"}, creating="id" not in row)
        except Invalid as exc:
            raise ValueError("; ".join(str(item["detail"]) for item in exc.items)) from exc
        existing = live(kind).filter(record_id=str(row["id"])).first() if "id" in row else None
        record = (
            update(existing, attributes, base, user=ORG_USER)
            if existing
            else create(kind, attributes, base, user=ORG_USER)
        )
        stored.append(as_row(record))
    for record_id in delete:
        found = live(kind).filter(record_id=record_id).first()
        if found is not None:
            destroy(found, base)
        stored.append({"id": record_id, "deleted": found is not None})
    return stored

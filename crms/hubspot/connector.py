"""HubSpot over its CRM v3 API: batch upserts by a unique property, changes through the search API.

We call the API through our HTTP seam, as for Salesforce and Outreach: the official client
(hubspot-api-client, generated from HubSpot's OpenAPI specs) judges the mock in the tests, but it retries
and deserialises on its own terms, and our throttle, redaction and fences need every call in one place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import requests

from crms import oauth
from crms.base import (
    Capabilities,
    Change,
    ChangePage,
    CheckResult,
    Connector,
    ConnectorError,
    Inbound,
    OAuthApp,
    OutboundRecord,
    PushResult,
    QuotaSignal,
    WebhookRefused,
    chunks,
    unsent,
)
from crms.http import HttpClient, TransportError, server_time
from crms.hubspot import errors
from crms.hubspot.objects import (
    COMPANY_FIELDS,
    CONTACT_FIELDS,
    DEFAULT_OBJECTS,
    SYSTEM_PROPERTIES,
    ObjectMap,
    mappings,
    unknown_object,
)
from crms.hubspot.wire import (
    SEARCH_CAP,
    batch_outcomes,
    epoch_ms,
    parse_time,
    row_fields,
    search_body,
    signature_base,
    webhook_events,
)
from crms.stamp_cursor import PollCursor

API_URL = "https://api.hubapi.com"
TOKEN_URL = "https://api.hubapi.com/oauth/v1/token"  # noqa: S105 - an endpoint, not a secret
TOKEN_KEY = "oauth"  # noqa: S105 - the state-store key (and lock name), not a secret
BATCH_SIZE = 100  # HubSpot: "Batch operations are limited to 100 records at a time"
PAGE_SIZE = 100  # search pages: 100 is within every documented maximum (100, later 200)
SEARCH_SPACING = 0.25  # seconds between two searches of one connector: the search API allows 4-5 per second
SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
SIGNATURE_WINDOW = 300.0  # HubSpot: reject a delivery whose timestamp is more than 5 minutes old
OBJECT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "object": {"type": "string", "minLength": 1, "description": "contacts, companies, deals, or 2-<id>"},
        "id_property": {"type": "string", "minLength": 1, "description": "A property with unique values."},
        "modified_property": {"type": "string", "minLength": 1},
        "fields": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}


class HubSpotConnector(Connector):
    kind = "hubspot"
    mock = "crms.hubspot.mock_entry.MOCK"
    label = "HubSpot"
    secret_fields = ("access_token", "client_secret", "refresh_token")
    oauth_app = OAuthApp(
        authorize_url="https://app.hubspot.com/oauth/authorize",
        token_url=TOKEN_URL,
        scopes=(
            "oauth",
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "crm.objects.companies.read",
            "crm.objects.companies.write",
            "crm.schemas.contacts.read",
            "crm.schemas.companies.read",
        ),
    )
    capabilities = Capabilities(
        batch_size=BATCH_SIZE,
        directions=("outbound", "inbound"),
        objects={
            "contact": {"match_key": "email", "required": ["email"], "fields": list(CONTACT_FIELDS)},
            "company": {"match_key": "recordsync_id", "required": [], "fields": list(COMPANY_FIELDS)},
        },
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "auth": {
                "enum": ["private_app", "oauth"],
                "default": "private_app",
                "description": "private_app: the app's access token (secret access_token); oauth: a refresh token "
                "from the Connect button or pasted (secrets client_secret, refresh_token) and config client_id.",
            },
            "client_id": {"type": "string"},
            "api_url": {"type": "string", "format": "uri", "default": API_URL},
            "token_url": {"type": "string", "format": "uri", "default": TOKEN_URL},
            "authorize_url": {"type": "string", "format": "uri"},
            "webhook_url": {
                "type": "string",
                "format": "uri",
                "description": "The target URL set in the app's webhook settings, exactly: deliveries are signed over "
                "it. Default: the URL the request arrived at.",
            },
            "objects": {
                "type": "object",
                "minProperties": 1,
                "default": DEFAULT_OBJECTS,
                "description": "Our object names → HubSpot object, the unique property upserts match on, the "
                "property changes are searched by, and the properties synced.",
                "additionalProperties": OBJECT_SCHEMA,
            },
        },
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock: Callable[[], float] = time.time  # tests move it instead of sleeping
        self.sleep: Callable[[float], None] = time.sleep
        self.rate_limit: dict[str, int] = {}  # the last X-HubSpot-RateLimit-* figures seen
        self.server_time: float | None = None  # HubSpot's clock at its last answer (the Date header)
        self.objects = mappings(self.config)
        self.api_url = str(self.config.get("api_url") or API_URL).rstrip("/")
        self._searched_at = float("-inf")

    @classmethod
    def config_refusals(cls, config: dict[str, Any]) -> dict[str, str]:
        if config.get("auth") == "oauth" and not config.get("client_id"):
            return {"config.client_id": "OAuth needs the app's client_id (the app's Auth settings in HubSpot)."}
        return {}

    @classmethod
    def objects_named(cls, config: Mapping[str, Any]) -> list[str]:
        return [*super().objects_named(config), *(str(name) for name in config.get("objects") or [])]

    @classmethod
    def since_cursor(cls, since: datetime) -> str:
        return json.dumps({"since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"})

    @classmethod
    def quota_signal(cls, response: requests.Response, now: float) -> QuotaSignal | None:
        return errors.quota_signal(response, now)

    # --- writes ----------------------------------------------------------------------------

    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        """Per object, one batch call per kind of write (at most 100 inputs): linked records are updated by
        id, the others upserted by the unique property, deletes archived. A call that fails for the whole
        connection stops the calls after it; their records say they were not sent."""
        results: dict[int, PushResult] = {}
        stopped: ConnectorError | None = None
        for (object_type, write), indexed in self._groups(batch, results).items():
            for part in chunks(indexed, BATCH_SIZE):
                if stopped is not None:
                    for index, record in part:
                        results[index] = PushResult(record.record_id, "error", record.external_id, unsent(stopped))
                    continue
                try:
                    results.update(self._write(self.objects[object_type], write, part))
                except ConnectorError as exc:
                    results.update({i: PushResult(r.record_id, "error", r.external_id, exc) for i, r in part})
                    stopped = exc if errors.concerns_connection(exc) else None
        return [results[index] for index in range(len(batch))]

    def _groups(
        self, batch: Sequence[OutboundRecord], results: dict[int, PushResult]
    ) -> dict[tuple[str, str], list[tuple[int, OutboundRecord]]]:
        groups: dict[tuple[str, str], list[tuple[int, OutboundRecord]]] = {}
        for index, record in enumerate(batch):
            mapping = self.objects.get(record.object_type)
            refusal = self._refusal(record, mapping)
            if refusal is not None:
                results[index] = refusal
                continue
            if record.operation == "delete":
                if not record.external_id:  # never written there, or the link is lost: nothing to archive
                    results[index] = PushResult(record.record_id, "unchanged")
                    continue
                write = "archive"
            else:
                write = "update" if record.external_id else "upsert"
            groups.setdefault((record.object_type, write), []).append((index, record))
        return groups

    def _refusal(self, record: OutboundRecord, mapping: ObjectMap | None) -> PushResult | None:
        if mapping is None:
            return PushResult(record.record_id, "error", record.external_id, unknown_object(record.object_type))
        if record.external_id and not record.external_id.isdigit():
            error = ConnectorError(
                f"the record link {record.external_id!r} is not a HubSpot id", code="BAD_LINK", permanent=True
            )
            return PushResult(record.record_id, "error", record.external_id, error)
        if record.operation != "delete" and not record.external_id and mapping.match_value(record) is None:
            error = ConnectorError(
                f"{mapping.id_property} is empty: HubSpot {mapping.object} are upserted by it",
                code="MISSING_MATCH_KEY",
                permanent=True,
                fields=(mapping.id_property,),
            )
            return PushResult(record.record_id, "error", record.external_id, error)
        return None

    def _write(
        self, mapping: ObjectMap, write: str, part: Sequence[tuple[int, OutboundRecord]]
    ) -> dict[int, PushResult]:
        if write == "archive":
            inputs = [{"id": record.external_id} for _, record in part]
            self._call("POST", f"{mapping.path}/batch/archive", body={"inputs": inputs})
            return {i: PushResult(r.record_id, "deleted", external_id=r.external_id) for i, r in part}
        inputs = [self._input(mapping, write, str(i), record) for i, record in part]
        body = self._call("POST", f"{mapping.path}/batch/{write}", body={"inputs": inputs})
        found = batch_outcomes(body, mapping, part, write)
        missing = [(i, r) for i, r in part if write == "update" and _gone(found.get(i))]
        if missing:  # linked records deleted in HubSpot since: upserted by the unique property instead
            retry = [(i, r) for i, r in missing if mapping.match_value(r) is not None]
            found.update(self._write(mapping, "upsert", [(i, _unlinked(r)) for i, r in retry]) if retry else {})
        return found

    @staticmethod
    def _input(mapping: ObjectMap, write: str, trace: str, record: OutboundRecord) -> dict[str, Any]:
        # objectWriteTraceId turns on per-input errors (207) and ties each result and error to its input.
        item: dict[str, Any] = {"properties": mapping.properties(record), "objectWriteTraceId": trace}
        if write == "update":
            item["id"] = record.external_id
        else:
            item |= {"idProperty": mapping.id_property, "id": mapping.match_value(record)}
        return item

    # --- reads -----------------------------------------------------------------------------

    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        mapping = self._mapping(object_type)
        found: dict[str, dict[str, Any]] = {}
        for part in chunks([str(i) for i in ids if str(i).isdigit()], BATCH_SIZE):
            body = {"inputs": [{"id": i} for i in part], "properties": mapping.wanted(), "propertiesWithHistory": []}
            answer = self._call("POST", f"{mapping.path}/batch/read", body=body, params={"archived": "false"})
            found.update({str(row["id"]): row_fields(row) for row in answer.get("results") or []})
        return found

    def modified_at(self, fields: Mapping[str, Any]) -> datetime | None:
        for name in ("lastmodifieddate", "hs_lastmodifieddate"):
            stamp = fields.get(name)
            if isinstance(stamp, str) and stamp:
                return parse_time(stamp)
        return None

    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        """One search page of records changed since the cursor, each change once (crms/stamp_cursor.py).

        Searched `modified_property >= floor`, sorted on it ascending. HubSpot's `after` is an offset, and an
        offset skips a record when one read before it is edited mid-pass (it moves to the end, and every
        later record moves up one). So each page starts again at the last stamp read (`floor`), with offset
        0; the records that share that stamp are read again and skipped by the cursor. Only a page whose
        records all share one stamp pages on by offset within it. That also keeps far inside the 10,000
        results one query may page through: past it (a single stamp held by thousands) the pass ends and the
        next one starts after it. Archived records are not searched: deletions come by webhook or a reconcile.
        """
        mapping = self._mapping(object_type)
        state = PollCursor.load(cursor, PAGE_SIZE)
        floor, _, offset = (state.next or f"{state.since}|0").rpartition("|")
        self._space_searches()
        query = search_body(mapping, floor, int(offset), PAGE_SIZE)
        body = self._call("POST", f"{mapping.path}/search", body=query)
        rows = [row for row in body.get("results") or [] if row_fields(row).get(mapping.modified_property)]
        stamps = [str(row_fields(row)[mapping.modified_property]) for row in rows]
        changes = [
            _change(object_type, row, mapping)
            for row, stamp in zip(rows, stamps, strict=True)
            if state.take(str(row["id"]), stamp, row_fields(row))
        ]
        state.next = _next_page(floor, int(offset), stamps, bool((body.get("paging") or {}).get("next")))
        capped = state.next is not None and int(state.next.rpartition("|")[2]) + PAGE_SIZE > SEARCH_CAP
        if capped or state.next is None:
            state.next = None
            state.finish(now=self.server_time or self.clock(), capped=capped)
        return ChangePage(changes, state.dump(), has_more=state.next is not None)

    def _space_searches(self) -> None:
        wait = self._searched_at + SEARCH_SPACING - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        self._searched_at = time.monotonic()

    # --- inbound ---------------------------------------------------------------------------

    def webhook_changes(
        self,
        body: bytes,
        headers: Mapping[str, str],
        now: datetime,
        query: Mapping[str, str] | None = None,
        *,
        uri: str = "",
    ) -> list[Change]:
        """A v3-signed delivery: base64 HMAC-SHA256, under the app's client secret, of method + URI + body +
        timestamp, the timestamp no older than 5 minutes. Each event names a record; its current state is
        read (one batch read per object), so a creation or a change arrives whole. Deletions carry no fields."""
        self._verify(body, headers, now, uri)
        try:
            events = webhook_events(json.loads(body), self.objects)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(f"not a HubSpot webhook delivery: {exc}", code="invalid_body", permanent=True) from exc
        changes: list[Change] = []
        for object_type, ids in events.changed.items():
            current = self.read(object_type, sorted(ids))
            stamps = {i: events.occurred[(object_type, i)] for i in ids}
            for record_id in sorted(ids):
                if record_id in current:  # gone since: its deletion event says so, or a later one will
                    fields = current[record_id]
                    changes.append(
                        Change(object_type, record_id, fields, self.modified_at(fields) or stamps[record_id])
                    )
        for (object_type, record_id), stamp in sorted(events.deleted.items()):
            changes.append(Change(object_type, record_id, {}, stamp, deleted=True))
        return changes

    def _verify(self, body: bytes, headers: Mapping[str, str], now: datetime, uri: str) -> None:
        secret = self.secrets.get("client_secret")
        if not secret:
            raise WebhookRefused(
                "this connection has no client_secret: set the app's client secret, which signs its webhooks",
                header=SIGNATURE_HEADER,
            )
        stamp = headers.get(TIMESTAMP_HEADER, "").strip()
        if not stamp.isdigit() or abs(now.timestamp() - int(stamp) / 1000) > SIGNATURE_WINDOW:
            raise WebhookRefused(
                "the delivery's timestamp is missing or more than 5 minutes away", header=TIMESTAMP_HEADER
            )
        target = str(self.config.get("webhook_url") or uri)
        digest = hmac.new(secret.encode(), signature_base("POST", target, body, stamp), hashlib.sha256).digest()
        given = headers.get(SIGNATURE_HEADER, "").strip().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, base64.b64encode(digest)):
            raise WebhookRefused(
                "the signature does not match the delivery under this connection's client_secret",
                header=SIGNATURE_HEADER,
            )

    def inbound(self, change: Change) -> Inbound:
        """HubSpot's own properties (ids, stamps) are never synced as data. System A's id comes back in the
        unique property when the mapping writes it there (recordsync_id)."""
        mapping = self.objects.get(change.object_type)
        fields = {k: v for k, v in change.fields.items() if k not in SYSTEM_PROPERTIES}
        key = change.fields.get(mapping.id_property) if mapping is not None and mapping.holds_source_id else None
        return Inbound(record_id=str(key) if key else None, fields=fields)

    # --- linking an account (the admin's Connect) -------------------------------------------

    @classmethod
    def oauth_linked_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "auth": "oauth"}

    def oauth_account(self, access_token: str) -> dict[str, Any]:
        """GET /oauth/v1/access-tokens/{token}: the account (hub domain and id), the user and the scopes granted."""
        # The token is in the path: a client that logs the host only, and forgets the token in any error text.
        client = HttpClient(connection_name=self.http.connection_name, secret_path=True)
        try:
            response = client.request("GET", f"{self.api_url}/oauth/v1/access-tokens/{access_token}")
        except TransportError as exc:
            raise ConnectorError(str(exc), code=exc.code) from exc
        if response.status_code >= 400:
            raise errors.response_error(response)
        info = errors.body_of(response)
        return {
            "account": f"{info.get('hub_domain', '')} (hub {info.get('hub_id', '?')})",
            "user": str(info.get("user") or ""),
            "scopes": list(info.get("scopes") or []),
        }

    # --- health ----------------------------------------------------------------------------

    def check(self) -> CheckResult:
        """Each configured object's properties: the unique property exists and is unique, the synced ones exist."""
        problems: dict[str, str] = {}
        try:
            for name, mapping in self.objects.items():
                answer = self._call("GET", f"/crm/v3/properties/{mapping.object}")
                problems.update(_property_problems(name, mapping, answer.get("results") or []))
        except ConnectorError as exc:
            return CheckResult(False, f"{exc.code}: {exc.message}", {"rate_limit": dict(self.rate_limit)})
        details = {"rate_limit": dict(self.rate_limit), "fields": problems}
        if problems:
            return CheckResult(False, "; ".join(problems.values()), details)
        left = self.rate_limit.get("remaining")
        message = "connected" if left is None else f"connected; {left} of {self.rate_limit.get('max')} calls left"
        return CheckResult(True, message, details)

    def probe(self) -> None:
        first = next(iter(self.objects.values()))
        self._call("GET", first.path, params={"limit": "1"})

    # --- the HTTP conversation -------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        refused: str | None = None
        for attempt in range(2):
            token = self._access_token(refused=refused)
            response = self._send(method, f"{self.api_url}{path}", params, body, token)
            self.rate_limit.update(errors.parse_rate_limit(response.headers))
            self.server_time = server_time(response) or self.server_time
            if response.status_code == 401 and attempt == 0 and self.config.get("auth") == "oauth":
                refused = token  # refresh once (unless another worker already has), then retry
                continue
            if response.status_code >= 400:
                raise errors.response_error(response)
            return errors.body_of(response) if response.content else {}
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, params: Any, body: Any, access_token: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            return self.http.request(method, url, params=params, json=body, headers=headers)
        except TransportError as exc:
            raise ConnectorError(str(exc), code=exc.code) from exc

    def _access_token(self, *, refused: str | None) -> str:
        if self.config.get("auth") != "oauth":
            token = self.secrets.get("access_token", "")
            if not token:
                raise ConnectorError(
                    "no access_token: paste the private app's access token into the connection's secrets",
                    code="NOT_AUTHORISED",
                    permanent=True,
                    pause_connection=True,
                )
            return token
        return self._oauth_token(refused=refused)["access_token"]

    def _oauth_token(self, *, refused: str | None) -> oauth.Token:
        """A usable OAuth access token (30 minutes), refreshed under the connection's lock."""
        form = {
            "client_id": str(self.config.get("client_id", "")),
            "client_secret": self.secrets.get("client_secret", ""),
        }
        return oauth.current(
            self.store,
            self.http,
            key=TOKEN_KEY,
            token_url=str(self.config.get("token_url") or TOKEN_URL),
            form=form,
            first_refresh_token=self.secrets.get("refresh_token", ""),
            now=self.clock(),
            refused=refused,
            unlinked="no refresh token: connect the HubSpot account (the connection's Connect button) or paste one",
        )

    def _mapping(self, object_type: str) -> ObjectMap:
        mapping = self.objects.get(object_type)
        if mapping is None:
            raise unknown_object(object_type)
        return mapping


def _next_page(floor: str, offset: int, stamps: list[str], more: bool) -> str | None:
    """Where the next page of a pass starts, as "stamp|offset"; None when the pass is over."""
    if not more or len(stamps) < PAGE_SIZE:
        return None
    first, last = epoch_ms(stamps[0]), epoch_ms(stamps[-1])
    if first == last:  # a whole page of one stamp: page on by offset within it
        return f"{stamps[-1]}|{(offset if epoch_ms(floor) == last else 0) + len(stamps)}"
    return f"{stamps[-1]}|0"


def _change(object_type: str, row: Mapping[str, Any], mapping: ObjectMap) -> Change:
    fields = row_fields(row)
    return Change(object_type, str(row["id"]), fields, parse_time(str(fields[mapping.modified_property])))


def _property_problems(name: str, mapping: ObjectMap, described: list[dict[str, Any]]) -> dict[str, str]:
    known = {str(p.get("name")): p for p in described}
    problems: dict[str, str] = {}
    key = known.get(mapping.id_property)
    if key is None:
        problems[f"objects.{name}.id_property"] = (
            f"{mapping.object} has no property {mapping.id_property}: create it in HubSpot (single-line text, "
            "unique values) or name another unique property"
        )
    elif not key.get("hasUniqueValue") and mapping.id_property != "email":
        problems[f"objects.{name}.id_property"] = (
            f"{mapping.object}.{mapping.id_property} does not require unique values: upserts need a unique property"
        )
    missing = [f for f in mapping.fields if f not in known]
    if missing:
        problems[f"objects.{name}.fields"] = (
            f"{mapping.object} has no propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}"
        )
    return problems


def _gone(result: PushResult | None) -> bool:
    return result is not None and result.error is not None and result.error.code == "OBJECT_NOT_FOUND"


def _unlinked(record: OutboundRecord) -> OutboundRecord:
    return OutboundRecord(record.record_id, record.object_type, record.operation, record.fields, external_id=None)

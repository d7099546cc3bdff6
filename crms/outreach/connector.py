"""Outreach over its JSON:API v2: match-then-write upserts (there is no upsert), updatedAt polling.

We call the API through our HTTP seam, as for Salesforce: the one Python wrapper on PyPI
(python-outreach 0.1.5, 2022) has no token rotation, rate-limit headers or the paging quirks in
CRM-FACTS. The refresh grant is one form POST; what matters is doing it once under the connection's
lock and keeping the rotated token, which requests-oauthlib / Authlib leave to the caller anyway.
"""

from __future__ import annotations

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
from crms.http import TransportError, server_time
from crms.outreach import errors
from crms.outreach.resources import (
    ACCOUNT_FIELDS,
    ACCOUNT_MATCH_KEY,
    DEFAULT_OBJECTS,
    FIELD_TYPES,
    PROSPECT_FIELDS,
    ObjectMap,
    document,
    field_problems,
    mappings,
    parse_time,
    read_only,
)
from crms.outreach.wire import change_from, json_body, next_link, refused, with_query
from crms.stamp_cursor import PollCursor

API_URL = "https://api.outreach.io/api/v2"
TOKEN_URL = "https://api.outreach.io/oauth/token"  # noqa: S105 - an endpoint, not a secret
TOKEN_KEY = "oauth"  # noqa: S105 - the state-store key (and lock name), not a secret
JSONAPI = "application/vnd.api+json"
BATCH_SIZE = 100
PAGE_SIZE = 1000  # Outreach's largest page
MIN_PAGE_SIZE = 50  # a 502 on a large page is retried smaller, halving down to this
READ_CHUNK = 100  # ids per filter[id] call
SIGNATURE_HEADER = "Outreach-Webhook-Signature"
# Outreach's own bookkeeping on every resource: never synced as data.
SYSTEM_FIELDS = frozenset({"createdAt", "updatedAt"})
FIELDS_SCHEMA = {
    "type": "object",
    "additionalProperties": {"enum": list(FIELD_TYPES)},
    "description": "The attributes this object syncs, each with the type of the values System A holds for it, "
    'e.g. {"emails": "array", "numberOfEmployees": "integer"}; check() compares them with Outreach\'s reference.',
}


class OutreachConnector(Connector):
    kind = "outreach"
    mock = "crms.outreach.mock_entry.MOCK"
    label = "Outreach"
    secret_fields = ("client_secret", "refresh_token", "webhook_secret")
    oauth_app = OAuthApp(
        authorize_url="https://api.outreach.io/oauth/authorize",
        token_url=TOKEN_URL,
        scopes=("prospects.all", "accounts.all", "webhooks.all"),
    )
    capabilities = Capabilities(
        batch_size=BATCH_SIZE,
        directions=("outbound", "inbound"),
        calls_per_record=True,
        objects={
            "prospect": {
                "match_key": "emails",
                "required": ["emails"],
                "fields": list(PROSPECT_FIELDS),
                "custom_fields": "custom1..custom150",
                "strict_fields": True,
            },
            "account": {
                "match_key": "domain",
                "match_keys": ["domain", "customId", "custom1..custom150"],
                "required": [],
                "fields": list(ACCOUNT_FIELDS),
                "custom_fields": "custom1..custom150",
                "strict_fields": True,
            },
        },
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["client_id"],
        "properties": {
            "client_id": {"type": "string", "minLength": 1},
            "api_url": {"type": "string", "format": "uri", "default": API_URL},
            "token_url": {"type": "string", "format": "uri", "default": TOKEN_URL},
            "authorize_url": {
                "type": "string",
                "format": "uri",
                "description": "Where Connect sends the staff user to allow access (default: Outreach's own).",
            },
            "redirect_uri": {
                "type": "string",
                "format": "uri",
                "description": "The app's redirect URI, sent with each refresh when set (Outreach's examples do).",
            },
            "objects": {
                "type": "object",
                "minProperties": 1,
                "default": DEFAULT_OBJECTS,
                "description": "Our object names → Outreach resource and match key. Prospects match on emails; "
                "accounts on domain, or on customId / customN holding System A's id.",
                "additionalProperties": {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["resource"],
                            "properties": {
                                "resource": {"const": "prospect"},
                                "match_key": {"const": "emails"},
                                "fields": FIELDS_SCHEMA,
                            },
                        },
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["resource", "match_key"],
                            "properties": {
                                "resource": {"const": "account"},
                                "match_key": {"type": "string", "pattern": ACCOUNT_MATCH_KEY},
                                "fields": FIELDS_SCHEMA,
                            },
                        },
                    ]
                },
            },
        },
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock: Callable[[], float] = time.time  # tests move it instead of sleeping
        # The last X-RateLimit-* figures seen, {"limit", "remaining", "reset"}: the throttle reads them.
        self.rate_limit: dict[str, int] = {}
        self.server_time: float | None = None  # Outreach's clock at its last answer (the Date header)
        self.objects = mappings(self.config)
        self.api_url = str(self.config.get("api_url") or API_URL).rstrip("/")

    # --- the interface ---------------------------------------------------------------------

    @classmethod
    def quota_signal(cls, response: requests.Response, now: float) -> QuotaSignal | None:
        return errors.quota_signal(response, now)

    def webhook_changes(
        self,
        body: bytes,
        headers: Mapping[str, str],
        now: datetime,
        query: Mapping[str, str] | None = None,
        *,
        uri: str = "",
    ) -> list[Change]:
        """Outreach signs each delivery: the hex SHA-256 HMAC of the raw body under the webhook's secret.
        `created`/`updated` carry only the attributes that changed; `destroyed` the last known ones."""
        secret = self.secrets.get("webhook_secret")
        if not secret:
            raise WebhookRefused(
                "this connection has no webhook_secret: set the secret the webhook was registered with",
                header=SIGNATURE_HEADER,
            )
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        # As bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, a 500).
        given = headers.get(SIGNATURE_HEADER, "").strip().lower().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected.encode()):
            raise WebhookRefused(
                "the signature does not match the body under this connection's webhook_secret", header=SIGNATURE_HEADER
            )
        try:
            delivery = json.loads(body)
            data, meta = delivery["data"], delivery.get("meta") or {}
            if data.get("id") in (None, ""):
                raise KeyError("data.id")
            kind, record_id = str(data["type"]), str(data["id"])
            attributes = dict(data.get("attributes") or {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(
                f"not an Outreach webhook delivery: {exc}", code="invalid_body", permanent=True
            ) from exc
        stamp = attributes.get("updatedAt") or meta.get("deliveredAt")
        modified = parse_time(stamp) if stamp else now
        destroyed = str(meta.get("eventName", "")).endswith(".destroyed")
        return [Change(kind, record_id, attributes, modified, deleted=destroyed)]

    def modified_at(self, fields: Mapping[str, Any]) -> datetime | None:
        stamp = fields.get("updatedAt")
        return parse_time(stamp) if isinstance(stamp, str) else None

    def inbound(self, change: Change) -> Inbound:
        """System A's id is in the match field when the mapping writes it there (customId, customN).
        Read-only attributes (createdAt, name, clickCount, …) are Outreach's own: never synced as data."""
        mapping = self.objects.get(change.object_type)
        computed = read_only(mapping.resource) if mapping is not None else SYSTEM_FIELDS
        fields = {k: v for k, v in change.fields.items() if k not in computed}
        key = change.fields.get(mapping.match_key) if mapping is not None and mapping.holds_source_id else None
        return Inbound(record_id=str(key) if key else None, fields=fields)

    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        """One record at a time (about two calls each, one with a link). When a call fails for the whole
        connection (429, 401, 5xx, no answer), the records after it are not sent and say so."""
        results: list[PushResult] = []
        stopped: ConnectorError | None = None
        for record in batch:
            if stopped is not None:
                results.append(PushResult(record.record_id, "error", record.external_id, unsent(stopped)))
                continue
            try:
                results.append(self._push_one(record))
            except ConnectorError as exc:
                results.append(PushResult(record.record_id, "error", record.external_id, exc))
                stopped = exc if errors.concerns_connection(exc) else None
        return results

    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        mapping = self._mapping(object_type)
        found: dict[str, dict[str, Any]] = {}
        for part in chunks([i for i in ids if str(i).isdigit()], READ_CHUNK):
            url: str | None = f"{self.api_url}{mapping.path}"
            params: dict[str, Any] | None = {"filter[id]": ",".join(part), "page[size]": READ_CHUNK, "count": "false"}
            while url:
                body = self._call("GET", url, params=params)
                rows = body.get("data") or []
                found.update({str(row["id"]): dict(row.get("attributes") or {}) for row in rows})
                url, params = (next_link(body, self.api_url) if rows else None), None
        return found

    @classmethod
    def objects_named(cls, config: Mapping[str, Any]) -> list[str]:
        return [*super().objects_named(config), *(str(name) for name in config.get("objects") or [])]  # its resources

    @classmethod
    def since_cursor(cls, since: datetime) -> str:
        # filter[updatedAt]=since..inf is inclusive, in milliseconds
        return json.dumps({"since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"})

    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        """One page of records changed since the cursor, each change exactly once (crms/stamp_cursor.py explains how):
        `filter[updatedAt]=since..inf&sort=updatedAt`, then the pass's `links.next` until it ends.
        Deletions are not visible to polling: they come by webhook (action `destroyed`)."""
        mapping = self._mapping(object_type)
        state = PollCursor.load(cursor, PAGE_SIZE)
        if state.next:
            url, params = state.next, None
        else:
            url = f"{self.api_url}{mapping.path}"
            params = {
                "filter[updatedAt]": f"{state.since}..inf",
                "sort": "updatedAt",
                "page[size]": state.size,
                "count": "false",
            }
        body, state.size = self._page(url, params, state.size)
        rows = [row for row in body.get("data") or [] if (row.get("attributes") or {}).get("updatedAt")]
        changes = [
            change_from(object_type, row)
            for row in rows
            if state.take(str(row["id"]), row["attributes"]["updatedAt"], row["attributes"])
        ]
        state.next = next_link(body, self.api_url) if rows else None
        if state.next is None:
            state.finish(now=self.server_time or self.clock())
        return ChangePage(changes, state.dump(), has_more=state.next is not None)

    def check(self) -> CheckResult:
        """The configured fields against Outreach's reference (names, read-only, types), then the API itself."""
        problems = field_problems(self.config)
        details: dict[str, Any] = {"rate_limit": dict(self.rate_limit), "fields": problems}
        try:
            self._call("GET", self.api_url)  # the API root: answers for any valid token
            for name, mapping in self.objects.items():
                if mapping.numbered_custom:
                    self._probe_filter(name, mapping)
        except ConnectorError as exc:
            details["rate_limit"] = dict(self.rate_limit)
            return CheckResult(False, "; ".join([f"{exc.code}: {exc.message}", *problems.values()]), details)
        details["rate_limit"] = dict(self.rate_limit)
        if problems:
            return CheckResult(False, "; ".join(problems.values()), details)
        left = self.rate_limit.get("remaining")
        message = "connected" if left is None else f"connected; {left} of {self.rate_limit.get('limit')} calls left"
        return CheckResult(True, message, {"rate_limit": dict(self.rate_limit)})

    def oauth_account(self, access_token: str) -> dict[str, Any]:
        """The API root answers with the token's user (Outreach's accounts are named by their users)."""
        response = self._send("GET", self.api_url, None, None, access_token)
        if response.status_code >= 400:
            raise errors.response_error(response, now=self.clock())
        user = (((json_body(response) or {}).get("meta") or {}).get("user") or {}).get("email") or ""
        return {"account": user, "user": user}

    # --- writes ----------------------------------------------------------------------------

    def _push_one(self, record: OutboundRecord) -> PushResult:
        try:
            mapping = self._mapping(record.object_type)
        except ConnectorError as exc:
            return PushResult(record.record_id, "error", record.external_id, exc)
        if record.external_id and not record.external_id.isdigit():
            return refused(record, f"the record link {record.external_id!r} is not an Outreach id", "BAD_LINK")
        if record.operation == "delete":
            return self._delete(mapping, record)
        attributes = mapping.attributes(record)
        if record.external_id:
            try:
                return self._update(mapping, record, record.external_id, attributes)
            except ConnectorError as exc:
                if exc.http_status != 404:
                    raise
                # The linked record was deleted in Outreach: match again, and create it if nothing matches.
        value = mapping.match_value(record)
        if value is None:
            return refused(
                record,
                f"{mapping.match_key} is empty: Outreach {mapping.resource}s are matched on it",
                "MISSING_MATCH_KEY",
                fields=(mapping.match_key,),
            )
        matches = self._find(mapping, value)
        if len(matches) > 1:
            return refused(
                record,
                f"{len(matches)} Outreach {mapping.resource}s have {mapping.match_key} {value!r} "
                f"(ids {', '.join(matches)}); nothing was written",
                "MULTIPLE_MATCHES",
                fields=(mapping.match_key,),
            )
        if matches:
            return self._update(mapping, record, matches[0], attributes)
        try:
            created = self._call("POST", f"{self.api_url}{mapping.path}", body=document(mapping.resource, attributes))
        except ConnectorError as exc:
            if mapping.resource != "prospect" or not errors.is_email_taken(exc):
                raise
            # The create race: another writer added this email since our lookup. Look again and update.
            matches = self._find(mapping, value)
            if len(matches) != 1:
                raise
            return self._update(mapping, record, matches[0], attributes)
        return PushResult(record.record_id, "created", external_id=str(created["data"]["id"]))

    def _find(self, mapping: ObjectMap, value: str) -> list[str]:
        params = {f"filter[{mapping.match_key}]": value, "page[size]": 2, "count": "false"}
        body = self._call("GET", f"{self.api_url}{mapping.path}", params=params)
        return [str(row["id"]) for row in body.get("data") or []]

    def _update(
        self, mapping: ObjectMap, record: OutboundRecord, external_id: str, attributes: dict[str, Any]
    ) -> PushResult:
        body = document(mapping.resource, attributes, int(external_id))
        self._call("PATCH", f"{self.api_url}{mapping.path}/{external_id}", body=body)
        return PushResult(record.record_id, "updated", external_id=external_id)

    def _delete(self, mapping: ObjectMap, record: OutboundRecord) -> PushResult:
        if not record.external_id:  # never written there, or the link is lost: nothing to delete by
            return PushResult(record.record_id, "unchanged")
        try:
            self._call("DELETE", f"{self.api_url}{mapping.path}/{record.external_id}")
        except ConnectorError as exc:
            if exc.http_status != 404:  # already gone: the goal is met
                raise
        return PushResult(record.record_id, "deleted", external_id=record.external_id)

    # --- reads -----------------------------------------------------------------------------

    def _page(self, url: str, params: dict[str, Any] | None, size: int) -> tuple[Any, int]:
        """GET one page; a 502 on a large page is asked again at half the size (a reported quirk)."""
        while True:
            try:
                return self._call("GET", url, params=params), size
            except ConnectorError as exc:
                if exc.http_status != 502 or size <= MIN_PAGE_SIZE:
                    raise
            size = max(size // 2, MIN_PAGE_SIZE)
            if params is not None:
                params = {**params, "page[size]": size}
            else:
                url = with_query(url, {"page[size]": str(size)})

    def _probe_filter(self, name: str, mapping: ObjectMap) -> None:
        """The reference marks custom1..150 not filterable; ask once, so a refusal shows here, not per record."""
        try:
            self._find(mapping, "recordsync-check")
        except ConnectorError as exc:
            if exc.http_status is None or exc.http_status >= 500 or exc.http_status in errors.CONNECTION_STATUSES:
                raise
            raise ConnectorError(
                f"objects.{name}: Outreach will not filter accounts by {mapping.match_key} ({exc.message}); "
                "match on customId or domain instead",
                code="MATCH_KEY_NOT_FILTERABLE",
                permanent=True,
                http_status=exc.http_status,
            ) from exc

    # --- the HTTP conversation -------------------------------------------------------------

    def _call(self, method: str, url: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        refused: str | None = None
        for attempt in range(2):
            token = self._token(refused=refused)
            response = self._send(method, url, params, body, token["access_token"])
            self.rate_limit.update(errors.parse_rate_limit(response.headers))
            self.server_time = server_time(response) or self.server_time
            if response.status_code == 401 and attempt == 0:
                refused = token["access_token"]  # refresh once (unless another worker already has), then retry
                continue
            if response.status_code >= 400:
                raise errors.response_error(response, now=self.clock())
            return json_body(response)
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, params: Any, body: Any, access_token: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": JSONAPI, "Content-Type": JSONAPI}
        try:
            return self.http.request(method, url, params=params, json=body, headers=headers)
        except TransportError as exc:
            raise ConnectorError(str(exc), code=exc.code) from exc

    def _token(self, *, refused: str | None) -> oauth.Token:
        """A usable access token: Outreach rotates refresh tokens, so refreshing is done once, under the lock."""
        return oauth.current(
            self.store,
            self.http,
            key=TOKEN_KEY,
            token_url=str(self.config.get("token_url") or TOKEN_URL),
            form=self._client_form(),
            first_refresh_token=self.secrets.get("refresh_token", ""),
            now=self.clock(),
            refused=refused,
            unlinked="no refresh token: connect the Outreach account (the connection's Connect button) or paste one",
        )

    def _client_form(self) -> dict[str, str]:
        form = {
            "client_id": str(self.config.get("client_id", "")),
            "client_secret": self.secrets.get("client_secret", ""),
        }
        if self.config.get("redirect_uri"):
            form["redirect_uri"] = str(self.config["redirect_uri"])
        return form

    def _mapping(self, object_type: str) -> ObjectMap:
        try:
            return self.objects[object_type]
        except KeyError:
            raise ConnectorError(
                f"no Outreach resource is configured for {object_type!r} (config objects)",
                code="UNKNOWN_OBJECT",
                permanent=True,
            ) from None

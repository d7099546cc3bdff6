"""Salesforce over its REST API: sObject Collections upserts keyed on an external-id field,
SOQL polling on SystemModstamp, getDeleted for deletions.

We call the REST API through our HTTP seam rather than through simple-salesforce: it has no
sObject Collections wrapper, no retry classification and no rate limiting (CRM-FACTS), so it
would have served only the login, which PyJWT does in a few lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

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
    chunks,
)
from crms.http import TransportError
from crms.salesforce import bulk, errors, outbound
from crms.salesforce.auth import login_request
from crms.salesforce.results import (
    change_from,
    clean,
    delete_result,
    field_problems,
    iso_z,
    parse_time,
    update_result,
    upsert_result,
)
from crms.salesforce.soql import PAGE_LIMIT, select_changed, soql_datetime

# Changes re-read on every poll: the rounding of the cursor and the strict ">" each lose up to a second.
OVERLAP = timedelta(seconds=2)
# getDeleted reaches 15 days back; a first window starts a day short of that so it is never refused.
DELETED_LOOKBACK = timedelta(days=14)
COLLECTION_LIMIT = 200  # records per sObject Collections call (one API call each)
BULK_THRESHOLD_DEFAULT = 2000  # records above which a backfill writes by Bulk API 2.0 jobs (config bulk_threshold)
# Salesforce's own bookkeeping on every record: never synced as data.
SYSTEM_FIELDS = frozenset(
    {
        "Id",
        "attributes",
        "SystemModstamp",
        "LastModifiedById",
        "LastModifiedDate",
        "CreatedDate",
        "CreatedById",
        "IsDeleted",
    }
)
TOKEN_KEY = "oauth"  # noqa: S105 - the state-store key, not a secret
CALL_OPTIONS = "client=recordsync"  # tags our writes so change events can be told apart
# Field types an external id holding System A's id (text) can have.
# Fields Salesforce requires to create a record (the engine checks them before any call).
REQUIRED_ON_CREATE = {"Contact": ["LastName"], "Account": ["Name"], "Lead": ["LastName", "Company"]}
DEFAULT_FIELDS = {
    "Contact": ["Id", "FirstName", "LastName", "Email", "Phone", "AccountId"],
    "Account": ["Id", "Name", "Website", "Phone"],
    "Lead": ["Id", "FirstName", "LastName", "Email", "Company"],
}


class SalesforceConnector(Connector):
    kind = "salesforce"
    mock = "crms.salesforce.mock_entry.MOCK"
    label = "Salesforce"
    secret_fields = ("private_key", "client_secret", "outbound_message_token", "refresh_token")
    # The web-server flow (authorization code), for connected apps that allow it: the admin's Connect button.
    oauth_app = OAuthApp(
        authorize_url="https://login.salesforce.com/services/oauth2/authorize",
        token_url="https://login.salesforce.com/services/oauth2/token",  # noqa: S106 - an endpoint
        scopes=("api", "refresh_token"),
    )
    # Connect's token is kept apart from the login this connector caches (the instance URL, the user).
    oauth_token_key = "oauth-linked"  # noqa: S105 - a state-store key
    capabilities = Capabilities(
        batch_size=COLLECTION_LIMIT,
        directions=("outbound", "inbound"),
        objects={
            name: {
                "match_key": "external id field (config external_id_field)",
                "fields": fields,
                "required": REQUIRED_ON_CREATE.get(name, []),
            }
            for name, fields in DEFAULT_FIELDS.items()
        },
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["login_url", "auth", "client_id", "external_id_field"],
        "properties": {
            "login_url": {"type": "string", "format": "uri", "description": "e.g. https://login.salesforce.com"},
            "instance_url": {"type": "string", "format": "uri", "description": "Set for client credentials."},
            "api_version": {"type": "string", "pattern": r"^\d+\.\d$", "default": "62.0"},
            "auth": {
                "enum": ["jwt", "client_credentials", "web_server"],
                "description": "web_server: a refresh token from the admin's Connect (secrets client_secret, "
                "refresh_token).",
            },
            "client_id": {"type": "string", "minLength": 1},
            "username": {"type": "string", "description": "The integration user (JWT bearer)."},
            "external_id_field": {
                "type": "string",
                "pattern": r"^[A-Za-z][A-Za-z0-9_]*__c$",
                "description": "A custom field marked External ID and Unique that holds System A's id.",
            },
            "bulk_threshold": {
                "type": "integer",
                "minimum": 201,
                "default": BULK_THRESHOLD_DEFAULT,
                "description": "Batches larger than this go through Bulk API 2.0 ingest jobs.",
            },
            "organization_id": {
                "type": "string",
                "pattern": "^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$",
                "description": "The org's id: Outbound Messages from any other org are refused.",
            },
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": 'Fields to read per object, e.g. {"Contact": ["Id", "Email"]}.',
            },
        },
    }

    # --- the interface ---------------------------------------------------------------------

    @classmethod
    def quota_signal(cls, response: requests.Response, now: float) -> QuotaSignal | None:
        return errors.quota_signal(response)

    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        results: dict[int, PushResult] = {}
        upserts = [(i, r) for i, r in enumerate(batch) if r.operation == "upsert"]
        deletes = [(i, r) for i, r in enumerate(batch) if r.operation == "delete"]
        for object_type in sorted({r.object_type for _, r in upserts}):
            group = [(i, r) for i, r in upserts if r.object_type == object_type]
            for part in chunks(group, COLLECTION_LIMIT):
                results.update(self._upsert(object_type, part))
        for part in chunks(deletes, COLLECTION_LIMIT):
            results.update(self._delete(part))
        return [results[i] for i in range(len(batch))]

    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        fields = ",".join(self._fields(object_type))
        for part in chunks(list(ids), COLLECTION_LIMIT):
            body = self._call(
                "GET", f"/composite/sobjects/{object_type}", params={"ids": ",".join(part), "fields": fields}
            )
            for row in body or []:
                if row:  # a missing id answers null in its place
                    found[row["Id"]] = clean(row)
        return found

    @classmethod
    def objects_named(cls, config: Mapping[str, Any]) -> list[str]:
        return [
            *super().objects_named(config),
            *(str(name) for name in config.get("fields") or []),
        ]  # its objects with fields to read

    @classmethod
    def since_cursor(cls, since: datetime) -> str:
        # SOQL reads SystemModstamp > since, in whole seconds: start a second early; the caller drops the rest.
        return json.dumps({"since": soql_datetime(since - timedelta(seconds=1))})

    @classmethod
    def bulk_threshold(cls, config: Mapping[str, Any]) -> int:
        return int(config.get("bulk_threshold") or BULK_THRESHOLD_DEFAULT)

    @classmethod
    def bulk_label(cls) -> str:
        return "Bulk API 2.0"

    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        """SOQL in keyset order on (SystemModstamp, Id), so any number of records sharing one second are
        each read once at any page size: a query that returned its full LIMIT goes on after its last
        row at once (`has_more`). Once a query comes back short, the two seconds before the newest
        stamp are read again on the next poll: a short overlap that catches changes Salesforce commits
        late with an earlier stamp (a re-read change has the same event id and is captured once)."""
        state = json.loads(cursor) if cursor else {"since": "1970-01-01T00:00:00Z"}
        body = self._next_batch(state) if state.get("next") else None
        if body is None:
            fields = self._fields(object_type)
            soql = select_changed(object_type, fields, since=state["since"], after_id=state.get("after_id"))
            body = self._call("GET", "/query", params={"q": soql})
            state = {**state, "next": None, "read": 0, "last": None}
        changes = [change_from(object_type, row) for row in body["records"]]
        read = int(state.get("read") or 0) + len(changes)
        last = [soql_datetime(changes[-1].modified_at), changes[-1].external_id] if changes else state.get("last")
        if not body.get("done", True):
            paging = {**state, "next": body["nextRecordsUrl"], "read": read, "last": last}
            return ChangePage(changes, json.dumps(paging), has_more=True)
        deleted_since = state.get("deleted_since")
        if read >= PAGE_LIMIT and last:  # more rows wait after the last one read: go on from exactly there
            keyset = {"since": last[0], "after_id": last[1], "deleted_since": deleted_since}
            return ChangePage(changes, json.dumps(keyset), has_more=True)
        since = state["since"]
        if last:
            since = max(since, soql_datetime(iso_z(last[0]) - OVERLAP))
        deleted, covered = self._deleted(object_type, deleted_since)
        return ChangePage(changes + deleted, json.dumps({"since": since, "deleted_since": covered}), has_more=False)

    def _next_batch(self, state: dict[str, Any]) -> Any:
        """The query's next batch, or None when Salesforce has let its cursor expire (15 minutes unused):
        the query then runs again from where it started, and what was read already is captured once."""
        try:
            return self._call("GET", state["next"], absolute_path=True)
        except ConnectorError as exc:
            if exc.code != "INVALID_QUERY_LOCATOR":
                raise
            return None

    def webhook_changes(
        self,
        body: bytes,
        headers: Mapping[str, str],
        now: datetime,
        query: Mapping[str, str] | None = None,
        *,
        uri: str = "",
    ) -> list[Change]:
        """Outbound Messages (SOAP), proved by the token in the endpoint URL and the org id (outbound.py)."""
        notifications = outbound.verify(
            secret=self.secrets.get("outbound_message_token"),
            query=query or {},
            organization=self.config.get("organization_id"),
            body=body,
        )
        return outbound.changes(notifications)

    def webhook_answer(self, counts: Mapping[str, int]) -> tuple[str, bytes] | None:
        return "text/xml; charset=utf-8", outbound.ACK

    def modified_at(self, fields: Mapping[str, Any]) -> datetime | None:
        stamp = fields.get("SystemModstamp")
        return parse_time(stamp) if isinstance(stamp, str) else None

    def inbound(self, change: Change) -> Inbound:
        """System A's id is in the external-id field of records it created; the integration user
        as last modifier marks our own write read back (`changeOrigin` exists only in CDC)."""
        key_field = self.config["external_id_field"]
        fields = {k: v for k, v in change.fields.items() if k not in {*SYSTEM_FIELDS, key_field}}
        user = self._integration_user()
        ours = bool(user) and change.fields.get("LastModifiedById") == user
        key = change.fields.get(key_field)
        return Inbound(record_id=str(key) if key else None, fields=fields, written_by_us=ours)

    _user_id: str | None

    def _integration_user(self) -> str:
        """The user our token acts as ("" before any login), read from the store once in a connector's life (one
        task) and kept up to date by its own logins (_token): a page of 2,000 changes read and decrypted the
        token 2,000 times."""
        if self._user_id is None:
            self._user_id = str((self.store.get(TOKEN_KEY) or {}).get("user_id") or "")
        return self._user_id

    def bulk_start(self, object_type: str, records: Sequence[OutboundRecord]) -> str:
        """Start a Bulk API 2.0 upsert for a batch above `bulk_threshold` (backfills); returns the job id."""
        return bulk.bulk_start(self, object_type, records)

    def bulk_poll(self, job_id: str) -> list[PushResult] | None:
        """One look at a bulk job: None while it runs, then one result per record."""
        return bulk.bulk_poll(self, job_id)

    def check(self) -> CheckResult:
        """Log in, then describe every configured object: each configured field must exist, and the
        external-id field must be a text field marked External ID and Unique. Names the wrong ones."""
        problems: list[str] = []
        try:
            for object_type, wanted in self._configured_objects().items():
                described = self._call("GET", f"/sobjects/{object_type}/describe")
                problems += field_problems(object_type, wanted, described, self.config["external_id_field"])
        except ConnectorError as exc:
            return CheckResult(False, f"{exc.code}: {exc.message}")
        if problems:
            return CheckResult(False, "; ".join(problems), {"problems": problems})
        usage = self.api_usage.get("api-usage", {})
        message = "connected; every configured field exists and the external-id field is External ID and Unique"
        return CheckResult(True, message, {"api_usage": usage})

    def probe(self) -> None:
        """`GET /limits`: one call, which an org whose daily allocation is spent refuses with 403."""
        self._call("GET", "/limits")

    # --- writes ----------------------------------------------------------------------------

    def _upsert(self, object_type: str, part: Sequence[tuple[int, OutboundRecord]]) -> dict[int, PushResult]:
        """Records we know the Salesforce id of (linked) are updated by it, and stamped with System A's id
        in the external-id field (a record first created in Salesforce has none yet); the rest are
        upserted on the external-id field, which never creates a record twice."""
        linked = [(i, r) for i, r in part if r.external_id]
        results = self._update(object_type, linked) if linked else {}
        rest = [(i, r) for i, r in part if not r.external_id]
        return {**results, **(self._upsert_by_key(object_type, rest) if rest else {})}

    def _update(self, object_type: str, part: Sequence[tuple[int, OutboundRecord]]) -> dict[int, PushResult]:
        key = self.config["external_id_field"]
        records = [
            {"attributes": {"type": object_type}, "id": r.external_id, **r.fields, key: r.record_id} for _, r in part
        ]
        body = self._call(
            "PATCH",
            "/composite/sobjects",
            json_body={"allOrNone": False, "records": records},
            headers={"Sforce-Call-Options": CALL_OPTIONS},
        )
        return {i: update_result(r, row) for (i, r), row in zip(part, body, strict=True)}

    def _upsert_by_key(self, object_type: str, part: Sequence[tuple[int, OutboundRecord]]) -> dict[int, PushResult]:
        key = self.config["external_id_field"]
        records = [{"attributes": {"type": object_type}, **r.fields, key: r.record_id} for _, r in part]
        body = self._call(
            "PATCH",
            f"/composite/sobjects/{object_type}/{key}",
            json_body={"allOrNone": False, "records": records},
            headers={"Sforce-Call-Options": CALL_OPTIONS},
        )
        return {i: upsert_result(r, row) for (i, r), row in zip(part, body, strict=True)}

    def _delete(self, part: Sequence[tuple[int, OutboundRecord]]) -> dict[int, PushResult]:
        results: dict[int, PushResult] = {}
        linked = [(i, r) for i, r in part if r.external_id]
        for i, r in part:
            if not r.external_id:  # Collections deletes take Salesforce ids: no link, nothing to delete
                results[i] = PushResult(r.record_id, "unchanged")
        if linked:
            ids = ",".join(str(r.external_id) for _, r in linked)
            body = self._call(
                "DELETE",
                "/composite/sobjects",
                params={"ids": ids, "allOrNone": "false"},
                headers={"Sforce-Call-Options": CALL_OPTIONS},
            )
            for (i, r), row in zip(linked, body, strict=True):
                results[i] = delete_result(r, row)
        return results

    def _deleted(self, object_type: str, since: str | None) -> tuple[list[Change], str]:
        """getDeleted over [since, now): Salesforce ignores the seconds of both ends and answers the
        minute it covered up to, which is where the next window starts: windows meet, never overlap."""
        end = self.clock().replace(second=0, microsecond=0)
        start = since or soql_datetime(end - DELETED_LOOKBACK)
        if iso_z(start) >= end:  # this minute is not over yet: nothing to ask
            return [], start
        body = self._call(
            "GET", f"/sobjects/{object_type}/deleted/", params={"start": start, "end": soql_datetime(end)}
        )
        changes = [
            Change(object_type, row["id"], {}, parse_time(row["deletedDate"]), deleted=True)
            for row in body.get("deletedRecords", [])
        ]
        return changes, body.get("latestDateCovered") or soql_datetime(end)

    # --- the HTTP conversation -------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The last Sforce-Limit-Info seen, e.g. {"api-usage": {"used": 18, "total": 5000}}: the throttle reads it.
        self.api_usage: dict[str, dict[str, Any]] = {}
        self.clock: Callable[[], datetime] = lambda: utc_now()  # swappable: tests move time
        self._user_id = None  # the integration user, once read (_integration_user)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A REST call answered with JSON (or nothing)."""
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def _call_text(self, method: str, path: str, *, body: str | None = None, **kwargs: Any) -> str:
        """A Bulk API call that sends or answers CSV."""
        headers = {**kwargs.pop("headers", {}), "Content-Type": "text/csv"} if body is not None else None
        return self._request(method, path, data=body, headers=headers, **kwargs).text

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        data: str | None = None,
        headers: dict[str, str] | None = None,
        absolute_path: bool = False,
    ) -> requests.Response:
        for attempt in range(2):
            token = self._token(force=attempt > 0)
            base = token["instance_url"] if absolute_path else f"{token['instance_url']}{self._api_root()}"
            auth = {**(headers or {}), "Authorization": f"Bearer {token['access_token']}"}
            response = self._send(method, f"{base}{path}", params, json_body, data, auth)
            if errors.is_invalid_session(response) and attempt == 0:
                continue  # refresh the token once, then retry (CRM-FACTS: 401 INVALID_SESSION_ID)
            self.api_usage = errors.parse_limit_info(response.headers.get("Sforce-Limit-Info")) or self.api_usage
            if response.status_code >= 300:
                raise errors.response_error(response)
            return response
        raise AssertionError("unreachable")

    def _send(
        self, method: str, url: str, params: Any, json_body: Any, data: str | None, headers: dict[str, str]
    ) -> requests.Response:
        try:
            return self.http.request(method, url, params=params, json=json_body, data=data, headers=headers)
        except TransportError as exc:
            raise ConnectorError(str(exc), code=exc.code) from exc

    @classmethod
    def oauth_urls(cls, config: Mapping[str, Any]) -> tuple[str, str]:
        login = str(config.get("login_url") or "https://login.salesforce.com").rstrip("/")
        return f"{login}/services/oauth2/authorize", f"{login}/services/oauth2/token"

    @classmethod
    def oauth_linked_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "auth": "web_server"}

    def oauth_account(self, access_token: str) -> dict[str, Any]:
        """A login with the refresh token just stored: it proves the link and names the org and the user."""
        token = self._token(force=True)
        return {"account": token["instance_url"], "user": token["user_id"], "scopes": list(self.oauth_app.scopes)}

    def _api_root(self) -> str:
        return f"/services/data/v{self.config.get('api_version', '62.0')}"

    def _token(self, *, force: bool) -> dict[str, str]:
        token = self._token_read(force=force)
        self._user_id = str(token.get("user_id") or "")
        return token

    def _token_read(self, *, force: bool) -> dict[str, str]:
        cached = self.store.get(TOKEN_KEY)
        if cached and not force:
            return dict(cached)
        with self.store.lock(TOKEN_KEY):
            cached = self.store.get(TOKEN_KEY)
            if cached and not force:
                return dict(cached)
            token = self._login()
            self.store.set(TOKEN_KEY, token)
            return token

    def _login(self) -> dict[str, str]:
        url, form = login_request(self.config, self.secrets)
        try:
            response = self.http.request("POST", url, data=form)
        except TransportError as exc:
            raise ConnectorError(str(exc), code=exc.code) from exc
        if response.status_code != 200:
            failure = errors.response_error(response)
            # A refused login will not fix itself: permanent, with Salesforce's reason.
            raise ConnectorError(
                f"login refused: {failure.message}",
                code=failure.code or "invalid_grant",
                permanent=response.status_code < 500,
                http_status=response.status_code,
            )
        body = response.json()
        # The identity URL ends with the integration user's id: polling tells our own writes by it.
        return {
            "access_token": body["access_token"],
            "instance_url": body["instance_url"],
            "user_id": str(body.get("id") or "").rstrip("/").rsplit("/", 1)[-1],
        }

    def _fields(self, object_type: str) -> list[str]:
        configured: dict[str, list[str]] = self.config.get("fields", {})
        fields = configured.get(object_type) or DEFAULT_FIELDS.get(object_type) or ["Id"]
        extra = ["Id", "SystemModstamp", "LastModifiedById", self.config["external_id_field"]]
        return list(dict.fromkeys([*fields, *extra]))

    def _configured_objects(self) -> dict[str, list[str]]:
        """The objects to check and the fields configured for each (Contact's defaults when none are)."""
        configured: dict[str, list[str]] = self.config.get("fields") or {}
        return {name: list(fields) for name, fields in configured.items()} or {"Contact": DEFAULT_FIELDS["Contact"]}


def utc_now() -> datetime:
    """The connector's clock (looked up at each call, so a test can move every connector's time at once)."""
    return datetime.now(UTC)

"""A fake CRM for benchmarks: Salesforce and Outreach over real HTTP, all in memory, in its own process.

Why it exists: bench/drain.py compares how fast the pipeline drains events into a CRM with the same calls
sent directly by a script. The mock CRMs (crms/*/mock*.py) write every call, token and record to the
database the pipeline itself uses, so against them the drain ratio measures the mock's database writes
as much as our pipeline. This fake keeps its records in dicts under one lock (held for dict operations
only), needs nothing but the standard library (no Django: it starts at once) and adds a fixed latency to
every API call, slept in the handler's own thread so that concurrent calls overlap as they would across
the internet. What is left to measure is the pipeline. It is not for tests of behaviour (the mocks are)
nor for the demo.

Run it:

    .venv/bin/python bench/fakecrm.py --port 8765 --latency 0.3 --limit 100 --window 10

or from Python: `server = start_in_thread(0, latency=0.3)`, then `server.url`, `server.stop()`.
Point the connections at it:

- Salesforce: login_url and instance_url `http://127.0.0.1:8765`, auth client_credentials, any client id
  and secret; the token answer names this server as the instance.
- Outreach: api_url `http://127.0.0.1:8765/api/v2`, token_url `http://127.0.0.1:8765/oauth/token`, any
  client id, secret and refresh token.

What it serves, as the connectors call it (crms/salesforce/connector.py, crms/outreach/connector.py):

    POST   /services/oauth2/token                        Salesforce login: client_credentials (form or HTTP
                                                         Basic), JWT bearer, refresh_token
    PATCH  /services/data/vNN.N/composite/sobjects/{Object}/{ExternalIdField}
                                                         Collections upsert by external id (push)
    PATCH  /services/data/vNN.N/composite/sobjects      Collections update by id (push, linked records)
    DELETE /services/data/vNN.N/composite/sobjects?ids=  Collections delete (push, deletes)
    GET    /services/data/vNN.N/composite/sobjects/{Object}?ids=&fields=   Collections retrieve (read)
    GET    /services/data/vNN.N/sobjects/{Object}/describe                 describe (check)
    GET    /services/data/vNN.N/limits                                     limits (probe, after a 403)
    POST   /oauth/token                                  Outreach refresh_token / authorization_code grant;
                                                         every answer carries a new refresh token
    GET    /api/v2                                       the API root (check)
    GET    /api/v2/{prospects|accounts}?filter[attr]=v   the match lookup before a write; filter[id] (read)
    POST   /api/v2/{prospects|accounts}                  create (201); a taken prospect email is a 422
    PATCH  /api/v2/{prospects|accounts}/{id}             update;  DELETE: delete (204)
    GET    /_fake/log      {"calls": [[arrival_unix_time, vendor, method, path, status, records_in_call], ...]}
                           (token calls included: judge windows with `busiest_window`, which leaves them out)
    GET    /_fake/stats    counts: calls, token_calls, records_upserted, created, updated, deleted, refused_*
    POST   /_fake/reset    empties the log, the records, the windows and the counts (issued tokens stay good)

Salesforce answers carry `Sforce-Limit-Info: api-usage=used/total` (--usage-total, default 10**9); Outreach
answers carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds). Both
want a bearer token this server issued: Salesforce refuses others with 401 `[{"errorCode":
"INVALID_SESSION_ID", ...}]`, Outreach with 401 `unauthorizedOauthToken`.

Rate limit (--limit N --window W; --limit 0, the default, means none): a sliding window over the ARRIVALS
of API calls, per vendor. At most N calls are accepted in any W seconds, stamped when they reach the
limiter (before the latency). Token calls and /_fake/ are never counted, and a refused call takes no place
in the window. The call beyond it gets HTTP 429 with `Retry-After` (whole seconds until the oldest
accepted call leaves the window), from both vendors:

- Outreach refuses so at its own limit (CRM-FACTS: over it, 429, with the X-RateLimit-* headers). With a
  window the headers describe the window (Reset: when its oldest call leaves); without one they describe
  Outreach's hourly allowance, here --usage-total calls, past which a 429 lasts until the top of the hour.
- Salesforce has no short-window limit: CRM-FACTS knows only the rolling 24-hour allocation, refused when
  spent with 403 REQUEST_LIMIT_EXCEEDED ("not a 429"). A short window is this fake's own, so it answers
  as a plain rate limiter does, 429 + Retry-After (body `[{"errorCode": "REQUEST_LIMIT_EXCEEDED", ...}]`),
  which the connector obeys for the Retry-After. Answering 403 instead would make the engine hold the
  connection for SALESFORCE_LIMIT_PAUSE_SECONDS (900 s) and probe: a benchmark would measure that pause.
  The allocation itself is faithful: past --usage-total accepted calls (since start or reset; the fake
  does not age them out over 24 hours) every call is refused with that 403.

What it does not do: no SOQL (/query), getUpdated/getDeleted, Bulk API 2.0, single-record sObject rows
(/sobjects/{Object}/...), Collections create (POST) or Composite; no Outreach paging (every match comes in
one page, no links.next), sorting, range or nested filters (a 400 says so), relationships checks or
webhooks. It checks no credentials (any client logs in), no field names or values (any field is kept),
no token expiry and no refresh-token reuse: it is there to be fast, not strict. The mocks are strict.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

SALESFORCE, OUTREACH = "salesforce", "outreach"
VENDORS = (SALESFORCE, OUTREACH)
DEFAULT_USAGE_TOTAL = 1_000_000_000  # large: a benchmark should not meet the vendors' long allowances
SF_JSON = "application/json;charset=UTF-8"
JSONAPI = "application/vnd.api+json"
TOKEN_PATHS = frozenset({"/services/oauth2/token", "/oauth/token"})
# Statuses by which the fake refuses a call before doing it: such a call takes no place in the window.
REFUSED_STATUSES = frozenset({401, 403, 429})
COLLECTION_LIMIT = 200  # records per sObject Collections call
HOUR = 3600
# What /_fake/stats counts: calls are API calls (refused ones too); token calls apart.
STAT_NAMES = (
    *("calls", "token_calls", "records_upserted", "created", "updated", "deleted"),
    *("refused_429", "refused_403", "refused_401"),
)
OUTREACH_TOKEN_SECONDS = 7200  # Outreach's access tokens last two hours (not enforced here)

# --- Salesforce ids ------------------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
KEY_PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q", "Case": "500"}
CUSTOM_PREFIX = "a00"
# bench/drain.py's external-id field: describe calls it External ID and Unique before any write names it.
KNOWN_KEY_FIELD = "RecordSync_Id__c"
STANDARD_FIELDS = {
    "Contact": ("FirstName", "LastName", "Email", "Phone", "AccountId", "Title"),
    "Account": ("Name", "Website", "Phone"),
    "Lead": ("FirstName", "LastName", "Email", "Company"),
}
SYSTEM_FIELDS = ("Id", "SystemModstamp", "LastModifiedById", "CreatedDate", "CreatedById", "IsDeleted")


def to_18(id15: str) -> str:
    """Salesforce's case-safe 18-character id: each 5-character chunk's capitals as 5 bits, one letter each."""
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(id15[start : start + 5]) if char.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


def salesforce_id(object_type: str, serial: int) -> str:
    """The object's key prefix, a 12-character base-62 serial, the case-safe suffix."""
    digits = ""
    while serial:
        serial, rest = divmod(serial, 62)
        digits = _BASE62[rest] + digits
    return to_18(KEY_PREFIXES.get(object_type, CUSTOM_PREFIX) + digits.rjust(12, "0"))


ORG_ID = to_18("00DFAKEORG00001")
USER_ID = to_18("005FAKEINTEGRAT")  # the integration user: the identity URL ends with it


def sf_time(stamp: float) -> str:
    """Salesforce's own datetime form, `2013-05-20T20:49:32.000+0000`."""
    moment = datetime.fromtimestamp(stamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def outreach_time(stamp: float) -> str:
    """Outreach's form, `2021-11-10T14:17:38.000Z` (whole seconds)."""
    return datetime.fromtimestamp(int(stamp), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --- calls and answers ---------------------------------------------------------------------------


class BadRequest(Exception):
    """A call the fake refuses as a whole (400 and the like), with the vendor's error body."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    authorization: str
    content_type: str
    host: str
    _json: Any = None
    _parsed: bool = False

    def json(self) -> Any:
        """The body as JSON, parsed once (the log's record count and the handler both read it)."""
        if not self._parsed:
            self._json = json.loads(self.body) if self.body else None
            self._parsed = True
        return self._json


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = SF_JSON
    headers: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # created / updated / deleted, for the stats


def json_answer(status: int, value: Any, content_type: str = SF_JSON, **counts: int) -> Answer:
    return Answer(status, json.dumps(value, separators=(",", ":")).encode(), content_type, counts=counts)


def sf_refusal(status: int, code: str, message: str, fields: Sequence[str] = ()) -> Answer:
    """A request-level Salesforce error: a JSON array of {"message", "errorCode", "fields"}."""
    item: dict[str, Any] = {"message": message, "errorCode": code}
    if fields:
        item["fields"] = list(fields)
    return json_answer(status, [item])


def outreach_refusal(status: int, code: str, title: str, detail: str, pointer: str | None = None) -> Answer:
    item: dict[str, Any] = {"id": code, "title": title, "detail": detail}
    if pointer:
        item["source"] = {"pointer": pointer}
    return json_answer(status, {"errors": [item]}, JSONAPI)


def oauth_refusal(error: str, description: str, status: int = 400) -> Answer:
    return json_answer(status, {"error": error, "error_description": description}, "application/json")


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") else ""


# --- the state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    latency: float = 0.0
    limit: int = 0  # calls per window per vendor; 0: no window
    window: float = 1.0
    usage_total: int = DEFAULT_USAGE_TOTAL


@dataclass(slots=True)
class SfRecord:
    object_type: str
    fields: dict[str, Any]
    modified: float


@dataclass(slots=True)
class Resource:
    kind: str
    id: int
    attributes: dict[str, Any]
    relationships: dict[str, Any]
    created: float
    updated: float


class State:
    """Everything that changes, under one lock held for dict and deque operations only: JSON is parsed
    and written, and the latency slept, outside it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.tokens: dict[str, set[str]] = {vendor: set() for vendor in VENDORS}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.last_arrival = 0.0
            self.log: list[list[Any]] = []
            self.windows: dict[str, deque[float]] = {vendor: deque() for vendor in VENDORS}
            self.used: dict[str, int] = dict.fromkeys(VENDORS, 0)  # the long allowance: since reset / this hour
            self.hour = _hour_start(time.time())
            self.counts: dict[str, Counter[str]] = {vendor: Counter() for vendor in VENDORS}
            # Salesforce: records by id; (object, external-id field, value) -> id; deleted ids.
            self.sf_records: dict[str, SfRecord] = {}
            self.sf_keys: dict[tuple[str, str, str], str] = {}
            self.sf_deleted: set[str] = set()
            self.sf_key_fields: dict[str, set[str]] = {}
            self.sf_fields: dict[str, set[str]] = {}
            self.sf_serial = 0
            # Outreach: kind -> id -> resource; kind -> attribute -> lower-cased value -> ids (filters, emails).
            self.resources: dict[str, dict[int, Resource]] = {kind: {} for kind in OUTREACH_KINDS.values()}
            self.index: dict[str, dict[str, dict[str, set[int]]]] = {kind: {} for kind in OUTREACH_KINDS.values()}
            self.serials: dict[str, int] = dict.fromkeys(OUTREACH_KINDS.values(), 0)

    def arrive(self) -> float:
        """Now, never earlier than the last arrival: the window's deque stays in order (call under the lock)."""
        self.last_arrival = max(time.time(), self.last_arrival)
        return self.last_arrival

    def issue(self, vendor: str, token: str) -> None:
        with self.lock:
            self.tokens[vendor].add(token)

    def note(self, arrival: float, vendor: str, call: Call, answer: Answer, records: int) -> None:
        """One line of the log, and the stats (once the answer is known)."""
        token_call = call.path in TOKEN_PATHS
        with self.lock:
            self.log.append([arrival, vendor, call.method, call.path, answer.status, records])
            counts = self.counts[vendor]
            counts["token_calls" if token_call else "calls"] += 1
            if not token_call and answer.status in REFUSED_STATUSES:
                counts[f"refused_{answer.status}"] += 1
            counts.update(answer.counts)
            counts["records_upserted"] += answer.counts.get("created", 0) + answer.counts.get("updated", 0)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            by_vendor = {vendor: {name: self.counts[vendor][name] for name in STAT_NAMES} for vendor in VENDORS}
            settings = self.settings
        totals = {name: sum(counts[name] for counts in by_vendor.values()) for name in STAT_NAMES}
        return {**totals, "by_vendor": by_vendor, "settings": asdict(settings)}


def _hour_start(stamp: float) -> float:
    return stamp - stamp % HOUR


# --- admission: token, window, allowance ------------------------------------------------------


@dataclass
class Admission:
    arrival: float
    refusal: Answer | None
    headers: dict[str, str]


def admit(state: State, vendor: str, call: Call) -> Admission:
    """The checks every API call passes first, in the vendor's order: the session, then the limits. An
    accepted call takes its place in the window and counts against the long allowance."""
    settings = state.settings
    token = bearer(call.authorization)
    with state.lock:
        arrival = state.arrive()
        if vendor == OUTREACH and _hour_start(arrival) != state.hour:  # Outreach's allowance resets on the hour
            state.hour, state.used[OUTREACH] = _hour_start(arrival), 0
        refusal: Answer | None = None
        wait = 0.0
        if token not in state.tokens[vendor]:
            refusal = unauthorised(vendor)
        elif state.used[vendor] >= settings.usage_total:  # before the window: a refused call takes no place there
            wait = state.hour + HOUR - arrival if vendor == OUTREACH else 0.0  # Salesforce never says when
            refusal = allowance_spent(vendor, settings.usage_total, wait)
        elif settings.limit and (wait := window_wait(state.windows[vendor], arrival, settings)) > 0:
            refusal = too_many(vendor, wait)
        else:
            state.used[vendor] += 1
        headers = usage_headers(state, vendor, arrival, wait)
    if refusal is not None:
        refusal.headers.update(headers)
    return Admission(arrival, refusal, headers)


def window_wait(times: deque[float], now: float, settings: Settings) -> float:
    """0 when a call arriving now fits in the window (it then takes its place), else the seconds until the
    oldest accepted call leaves. The window is half-open: a call exactly W after another may pass."""
    while times and now - times[0] >= settings.window:
        times.popleft()
    if len(times) < settings.limit:
        times.append(now)
        return 0.0
    return times[0] + settings.window - now


def usage_headers(state: State, vendor: str, now: float, wait: float) -> dict[str, str]:
    settings = state.settings
    headers: dict[str, str] = {}
    if wait > 0:
        headers["Retry-After"] = str(max(math.ceil(wait), 1))  # delay-seconds is a whole number
    if vendor == SALESFORCE:
        used = min(state.used[SALESFORCE], settings.usage_total)
        headers["Sforce-Limit-Info"] = f"api-usage={used}/{settings.usage_total}"
        return headers
    if settings.limit:
        times = state.windows[OUTREACH]
        while times and now - times[0] >= settings.window:
            times.popleft()
        limit, remaining = settings.limit, settings.limit - len(times)
        reset = (times[0] if times else now) + settings.window
    else:
        limit, remaining = settings.usage_total, settings.usage_total - state.used[OUTREACH]
        reset = state.hour + HOUR
    headers["X-RateLimit-Limit"] = str(limit)
    headers["X-RateLimit-Remaining"] = str(max(remaining, 0))
    headers["X-RateLimit-Reset"] = str(math.ceil(reset))
    return headers


def unauthorised(vendor: str) -> Answer:
    if vendor == SALESFORCE:
        return sf_refusal(401, "INVALID_SESSION_ID", "Session expired or invalid")
    return outreach_refusal(
        401, "unauthorizedOauthToken", "Unauthorized OAuth Token", "The OAuth token provided is invalid or expired."
    )


def too_many(vendor: str, wait: float) -> Answer:
    if vendor == SALESFORCE:
        return sf_refusal(429, "REQUEST_LIMIT_EXCEEDED", f"Too many requests: try again in {math.ceil(wait)} s.")
    return outreach_refusal(
        429, "rateLimitExceeded", "Rate Limit Exceeded", "You have exceeded your permitted rate limit"
    )


def allowance_spent(vendor: str, total: int, wait: float) -> Answer:
    if vendor == SALESFORCE:  # the rolling 24-hour allocation: 403, never a 429 (CRM-FACTS)
        return sf_refusal(403, "REQUEST_LIMIT_EXCEEDED", f"TotalRequests Limit exceeded. ({total} per 24 hours)")
    return too_many(OUTREACH, wait)


# --- Salesforce ---------------------------------------------------------------------------------

SfHandler = Callable[[State, Call, list[str]], Answer]
Row = dict[str, Any]


def sf_token(state: State, call: Call) -> Answer:
    """The OAuth 2.0 token endpoint: the answer Salesforce gives (access_token, instance_url, id, token_type,
    issued_at, signature), whoever asks."""
    if call.method != "POST":
        return oauth_refusal("invalid_request", "must use HTTP POST")
    form = dict(parse_qsl(call.body.decode("utf-8", "replace")))
    grant = form.get("grant_type", "")
    client, secret = form.get("client_id", ""), form.get("client_secret", "")
    if call.authorization.startswith("Basic "):  # client credentials may come as HTTP Basic (simple-salesforce)
        try:
            client, _, secret = base64.b64decode(call.authorization[6:]).decode().partition(":")
        except ValueError:
            return oauth_refusal("invalid_client", "invalid client credentials")
    needs = {
        "client_credentials": client,
        "urn:ietf:params:oauth:grant-type:jwt-bearer": form.get("assertion", ""),
        "refresh_token": form.get("refresh_token", ""),
    }
    if grant not in needs:
        return oauth_refusal("unsupported_grant_type", "grant type not supported")
    if not needs[grant]:
        return oauth_refusal("invalid_grant", "authentication failure")
    token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
    state.issue(SALESFORCE, token)
    instance = f"http://{call.host}"
    identity = f"{instance}/id/{ORG_ID}/{USER_ID}"
    issued_at = str(int(time.time() * 1000))
    # Salesforce signs id + issued_at with the client secret (HMAC-SHA256, base64).
    signature = hmac.new((secret or client).encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
    return json_answer(
        200,
        {
            "access_token": token,
            "instance_url": instance,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": base64.b64encode(signature).decode(),
            "scope": "api",
        },
        "application/json",
    )


def sf_records_in(call: Call) -> int:
    """How many records a Salesforce call carries (the log's last column)."""
    if call.method == "DELETE":
        return len([i for i in call.query.get("ids", "").split(",") if i])
    if call.method in ("PATCH", "POST") and "/composite/sobjects" in call.path:
        try:
            body = call.json()
        except ValueError:
            return 0
        records = body.get("records") if isinstance(body, dict) else None
        return len(records) if isinstance(records, list) else 0
    return 0


def collection_body(call: Call) -> tuple[list[Row], bool]:
    try:
        body = call.json()
    except ValueError as exc:
        raise BadRequest(sf_refusal(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}")) from None
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest(sf_refusal(400, "JSON_PARSER_ERROR", 'Expected {"allOrNone": ..., "records": [...]}'))
    if len(records) > COLLECTION_LIMIT:
        raise BadRequest(too_many_records())
    return records, body.get("allOrNone") in (True, "true")


def too_many_records() -> Answer:
    return sf_refusal(
        400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
    )


def record_error(code: str, message: str, fields: Sequence[str] = (), record_id: str | None = None) -> Row:
    return {
        "id": record_id,
        "success": False,
        "errors": [{"statusCode": code, "message": message, "fields": [*fields]}],
    }


def rolled_back(results: list[Row]) -> list[Row]:
    """allOrNone: nothing was written; the records that were fine say why."""
    message = "Record rolled back because not all records were valid and the request was using AllOrNone header"
    return [r if not r["success"] else record_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", message) for r in results]


def record_fields(row: Row) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("attributes", "Id", "id")}


def type_problem(row: Row, object_type: str | None) -> Row | None:
    attributes = row.get("attributes")
    named = attributes.get("type") if isinstance(attributes, dict) else None
    if not named or (object_type is not None and named != object_type):
        return record_error("INVALID_TYPE", f"sObject type '{named}' does not match '{object_type}'")
    return None


def taken(state: State, object_type: str, fields: dict[str, Any], own: str | None) -> Row | None:
    """DUPLICATE_VALUE when an external-id value in `fields` belongs to another record (call under the lock)."""
    for name in key_fields(state, object_type):
        value = fields.get(name)
        holder = state.sf_keys.get((object_type, name, str(value))) if value not in (None, "") else None
        if holder is not None and holder != own:
            message = f"duplicate value found: {name} duplicates value on record with id: {holder}"
            return record_error("DUPLICATE_VALUE", message, [name])
    return None


def store_record(state: State, object_type: str, record_id: str | None, fields: dict[str, Any], now: float) -> str:
    """Create (no id) or update a record and index its external ids (call under the lock)."""
    if record_id is None:
        state.sf_serial += 1
        record_id = salesforce_id(object_type, state.sf_serial)
        state.sf_records[record_id] = SfRecord(object_type, dict(fields), now)
    else:
        record = state.sf_records[record_id]
        for name in key_fields(state, object_type):  # a changed external id no longer finds this record
            if name in fields and record.fields.get(name) not in (None, "", fields[name]):
                state.sf_keys.pop((object_type, name, str(record.fields[name])), None)
        record.fields.update(fields)
        record.modified = now
    for name in key_fields(state, object_type):
        if fields.get(name) not in (None, ""):
            state.sf_keys[(object_type, name, str(fields[name]))] = record_id
    state.sf_fields.setdefault(object_type, set()).update(fields)
    return record_id


def sf_upsert(state: State, call: Call, parts: list[str]) -> Answer:
    """PATCH /composite/sobjects/{Object}/{ExternalIdField}: one result per record, in order, with `created`."""
    if call.method != "PATCH":
        return method_not_allowed(call, "PATCH")
    object_type, key_field = parts
    rows, all_or_none = collection_body(call)
    prepared: list[Row | tuple[str, dict[str, Any]]] = []
    for row in rows:
        value = row.get(key_field)
        problem = type_problem(row, object_type)
        if problem is None and value in (None, ""):
            problem = record_error("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])
        prepared.append(problem if problem is not None else (str(value), record_fields(row)))
    now = time.time()
    with state.lock:
        key_fields(state, object_type).add(key_field)
        planned = [_upsert_problem(state, object_type, key_field, item) for item in prepared]
        if all_or_none and any(p is not None for p in planned):
            return json_answer(200, rolled_back([p or {"success": True} for p in planned]))
        results: list[Row] = []
        for item, problem in zip(prepared, planned, strict=True):
            if problem is not None or isinstance(item, dict):
                results.append(problem or cast(Row, item))
                continue
            holder = _holder(state, object_type, key_field, item[0])
            record_id = store_record(state, object_type, holder, item[1], now)
            results.append({"id": record_id, "success": True, "errors": [], "created": holder is None})
    created = sum(1 for r in results if r.get("created"))
    updated = sum(1 for r in results if r["success"] and not r.get("created"))
    return json_answer(200, results, created=created, updated=updated)


def _upsert_problem(
    state: State, object_type: str, key_field: str, item: Row | tuple[str, dict[str, Any]]
) -> Row | None:
    """A record's problem found before writing (its own, or a taken external id), or None (under the lock)."""
    if isinstance(item, dict):
        return item
    value, fields = item
    return taken(state, object_type, fields, _holder(state, object_type, key_field, value))


def _holder(state: State, object_type: str, key_field: str, value: str) -> str | None:
    return state.sf_keys.get((object_type, key_field, value))


def key_fields(state: State, object_type: str) -> set[str]:
    """The object's external-id fields: bench/drain.py's, and every one an upsert has named (under the lock)."""
    return state.sf_key_fields.setdefault(object_type, {KNOWN_KEY_FIELD})


def sf_collection(state: State, call: Call, parts: list[str]) -> Answer:
    """PATCH /composite/sobjects updates by id; DELETE /composite/sobjects?ids= deletes."""
    if call.method == "DELETE":
        return sf_delete(state, call)
    if call.method != "PATCH":
        return method_not_allowed(call, "DELETE, PATCH")
    rows, all_or_none = collection_body(call)
    prepared = [(type_problem(row, None), _normal_id(row.get("id") or row.get("Id")), row) for row in rows]
    now = time.time()
    with state.lock:
        planned: list[Row | None] = []
        for problem, record_id, row in prepared:
            object_type = str(row.get("attributes", {}).get("type")) if problem is None else ""
            planned.append(
                problem
                or _missing(state, record_id, object_type)
                or taken(state, object_type, record_fields(row), record_id)
            )
        if all_or_none and any(p is not None for p in planned):
            return json_answer(200, rolled_back([p or {"success": True} for p in planned]))
        results = [
            problem
            or {
                "id": store_record(state, str(row["attributes"]["type"]), record_id, record_fields(row), now),
                "success": True,
                "errors": [],
            }
            for problem, (_, record_id, row) in zip(planned, prepared, strict=True)
        ]
    return json_answer(200, results, updated=sum(1 for r in results if r["success"]))


def _normal_id(value: Any) -> str | None:
    text = str(value or "")
    if re.fullmatch(r"[A-Za-z0-9]{15}", text):
        return to_18(text)
    return text if re.fullmatch(r"[A-Za-z0-9]{18}", text) else None


def _missing(state: State, record_id: str | None, object_type: str) -> Row | None:
    """Why a record cannot be written or deleted by id, or None (call under the lock)."""
    if record_id is None:
        return record_error("MALFORMED_ID", "malformed id")
    if record_id in state.sf_deleted:
        return record_error("ENTITY_IS_DELETED", "entity is deleted", record_id=record_id)
    found = state.sf_records.get(record_id)
    if found is None or (object_type and found.object_type != object_type):
        return record_error("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}")
    return None


def sf_delete(state: State, call: Call) -> Answer:
    ids = [i for i in call.query.get("ids", "").split(",") if i]
    if not ids:
        return sf_refusal(400, "REQUIRED_FIELD_MISSING", "At least 1 Id is required.")
    if len(ids) > COLLECTION_LIMIT:
        return too_many_records()
    all_or_none = call.query.get("allOrNone", "false").lower() == "true"
    normal = [_normal_id(i) for i in ids]
    with state.lock:
        planned = [_missing(state, record_id, "") for record_id in normal]
        if all_or_none and any(p is not None for p in planned):
            return json_answer(200, rolled_back([p or {"success": True} for p in planned]))
        results: list[Row] = []
        for problem, record_id in zip(planned, normal, strict=True):
            if problem is not None or record_id is None:
                results.append(problem or record_error("MALFORMED_ID", "malformed id"))
                continue
            record = state.sf_records.pop(record_id)
            state.sf_deleted.add(record_id)
            for name in key_fields(state, record.object_type):
                state.sf_keys.pop((record.object_type, name, str(record.fields.get(name))), None)
            results.append({"id": record_id, "success": True, "errors": []})
    return json_answer(200, results, deleted=sum(1 for r in results if r["success"]))


def sf_retrieve(state: State, call: Call, parts: list[str]) -> Answer:
    """GET /composite/sobjects/{Object}?ids=&fields=: the rows in order, null for an id not found."""
    if call.method != "GET":
        return method_not_allowed(call, "GET")
    object_type = parts[0]
    ids = [_normal_id(i) for i in call.query.get("ids", "").split(",") if i]
    wanted = [f for f in call.query.get("fields", "").split(",") if f]
    if not wanted:
        return sf_refusal(400, "MISSING_ARGUMENT", "fields is required", ["fields"])
    with state.lock:
        found = [state.sf_records.get(i) if i else None for i in ids]
        copies = [
            (i, SfRecord(r.object_type, dict(r.fields), r.modified)) if r else None
            for i, r in zip(ids, found, strict=True)
        ]
    rows: list[Row | None] = []
    for item in copies:
        if item is None or item[1].object_type != object_type:
            rows.append(None)
            continue
        record_id, record = item
        row: Row = {"attributes": {"type": object_type, "url": f"{_api_root(call)}/sobjects/{object_type}/{record_id}"}}
        system = {"Id": record_id, "SystemModstamp": sf_time(record.modified), "LastModifiedById": USER_ID}
        row.update({name: system[name] if name in system else record.fields.get(name) for name in wanted})
        rows.append(row)
    return json_answer(200, rows)


def _api_root(call: Call) -> str:
    return "/".join(call.path.split("/")[:4])  # /services/data/vNN.N


def sf_describe(state: State, call: Call, parts: list[str]) -> Answer:
    """GET /sobjects/{Object}/describe: the object's standard fields and every field written to it; the
    external-id fields (the one bench/drain.py uses, and any an upsert has named) are External ID, Unique."""
    if call.method != "GET":
        return method_not_allowed(call, "GET")
    object_type = parts[0]
    with state.lock:
        written = set(state.sf_fields.get(object_type, ()))
        keys = set(key_fields(state, object_type))
    names = dict.fromkeys([*SYSTEM_FIELDS, *STANDARD_FIELDS.get(object_type, ()), *sorted(written | keys)])
    return json_answer(
        200,
        {
            "name": object_type,
            "label": object_type,
            "keyPrefix": KEY_PREFIXES.get(object_type, CUSTOM_PREFIX),
            "custom": object_type.endswith("__c"),
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "fields": [_describe_field(name, name in keys) for name in names],
        },
    )


def _describe_field(name: str, key: bool) -> Row:
    kinds = {"Id": "id", "Email": "email", "Phone": "phone", "IsDeleted": "boolean"}
    kind = kinds.get(name) or ("datetime" if name.endswith("Date") or name == "SystemModstamp" else "string")
    system = name in SYSTEM_FIELDS
    return {
        "name": name,
        "label": name,
        "type": "reference" if name.endswith("ById") or name == "AccountId" else kind,
        "length": 255 if kind in ("string", "email", "phone") else 0,
        "externalId": key,
        "unique": key,
        "idLookup": key or name == "Id",
        "nillable": not system,
        "createable": not system,
        "updateable": not system,
        "custom": name.endswith("__c"),
    }


def sf_limits(state: State, call: Call, parts: list[str]) -> Answer:
    if call.method != "GET":
        return method_not_allowed(call, "GET")
    with state.lock:
        used = min(state.used[SALESFORCE], state.settings.usage_total)
    total = state.settings.usage_total
    return json_answer(200, {"DailyApiRequests": {"Max": total, "Remaining": total - used}})


def method_not_allowed(call: Call, allowed: str) -> Answer:
    return sf_refusal(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{call.method}' not allowed. Allowed are {allowed}")


SF_ROUTES: list[tuple[re.Pattern[str], SfHandler]] = [
    (re.compile(r"/composite/sobjects"), sf_collection),
    (re.compile(r"/composite/sobjects/(\w+)"), sf_retrieve),
    (re.compile(r"/composite/sobjects/(\w+)/(\w+)"), sf_upsert),
    (re.compile(r"/sobjects/(\w+)/describe"), sf_describe),
    (re.compile(r"/limits"), sf_limits),
]
SF_API = re.compile(r"/services/data/v\d+\.\d(/.*)?")


def salesforce_api(state: State, call: Call) -> Answer:
    api = SF_API.fullmatch(call.path)
    rest = (api.group(1) or "") if api else "?"
    for pattern, handler in SF_ROUTES:
        matched = pattern.fullmatch(rest.rstrip("/"))
        if matched:
            return handler(state, call, list(matched.groups()))
    return sf_refusal(404, "NOT_FOUND", "The requested resource does not exist")


# --- Outreach -----------------------------------------------------------------------------------

OUTREACH_KINDS = {"prospects": "prospect", "accounts": "account"}
OUTREACH_API = re.compile(r"/api/v2(?:/(\w+)(?:/(\w+))?)?/?")
FILTER = re.compile(r"filter\[(\w+)\]")


def outreach_token(state: State, call: Call) -> Answer:
    """The refresh-token (or authorization-code) grant: a new access token and a new refresh token each time,
    as Outreach rotates them. Spent refresh tokens are not refused: a benchmark must not stall on one."""
    if call.method != "POST":
        return oauth_refusal("invalid_request", "must use HTTP POST")
    form = dict(parse_qsl(call.body.decode("utf-8", "replace")))
    needs = {"refresh_token": form.get("refresh_token", ""), "authorization_code": form.get("code", "")}
    grant = form.get("grant_type", "")
    if grant not in needs:
        return oauth_refusal("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
    if not needs[grant] or not form.get("client_id"):
        return oauth_refusal("invalid_grant", "The provided authorization grant is invalid.")
    access = secrets.token_urlsafe(32)
    state.issue(OUTREACH, access)
    return json_answer(
        200,
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": OUTREACH_TOKEN_SECONDS,
            "refresh_token": secrets.token_urlsafe(32),
            "scope": "prospects.all accounts.all webhooks.all",
            "created_at": int(time.time()),
        },
        "application/json",
    )


def outreach_records_in(call: Call) -> int:
    return 1 if call.method in ("POST", "PATCH", "DELETE") and call.path.count("/") >= 3 else 0


def outreach_api(state: State, call: Call) -> Answer:
    matched = OUTREACH_API.fullmatch(call.path)
    plural, member = matched.groups() if matched else ("", None)
    base = f"http://{call.host}/api/v2"
    if matched and plural is None:
        if call.method != "GET":
            return outreach_refusal(405, "methodNotAllowed", "Method Not Allowed", call.method)
        links = {name: f"{base}/{name}" for name in OUTREACH_KINDS}
        return json_answer(200, {"links": links, "meta": {"user": {"email": "integration@example.com"}}}, JSONAPI)
    kind = OUTREACH_KINDS.get(plural or "")
    if kind is None:
        return outreach_refusal(404, "resourceNotFound", "Resource Not Found", f"Could not find '{plural}'")
    if call.method in ("POST", "PATCH") and not call.content_type.startswith(JSONAPI):
        return json_answer(
            415,
            {
                "errors": [
                    {
                        "id": "unsupportedMediaType",
                        "title": "Unsupported Media Type",
                        "details": "Expected Content-Type header to be 'application/vnd.api+json'.",
                    }
                ]
            },
            JSONAPI,
        )
    if member is None:
        if call.method == "POST":
            return outreach_write(state, call, kind, None, base)
        if call.method == "GET":
            return outreach_list(state, call, kind, base)
        return outreach_refusal(405, "methodNotAllowed", "Method Not Allowed", call.method)
    resource_id = int(member) if member.isdigit() else -1
    if call.method == "PATCH":
        return outreach_write(state, call, kind, resource_id, base)
    if call.method == "DELETE":
        return outreach_delete(state, kind, resource_id)
    if call.method == "GET":
        with state.lock:
            found = state.resources[kind].get(resource_id)
            document = resource_document(found, base) if found else None
        return json_answer(200, {"data": document}, JSONAPI) if document else not_found(kind, member)
    return outreach_refusal(405, "methodNotAllowed", "Method Not Allowed", call.method)


def not_found(kind: str, member: str) -> Answer:
    return outreach_refusal(
        404, "resourceNotFound", "Resource Not Found", f"Could not find '{kind}' with ID '{member}'."
    )


def resource_document(resource: Resource, base: str) -> Row:
    """The JSON:API resource object, as Outreach's reference shapes it (call under the lock: it copies)."""
    attributes = {
        **resource.attributes,
        "createdAt": outreach_time(resource.created),
        "updatedAt": outreach_time(resource.updated),
    }
    return {
        "type": resource.kind,
        "id": resource.id,
        "attributes": attributes,
        "relationships": dict(resource.relationships),
        "links": {"self": f"{base}/{resource.kind}s/{resource.id}"},
    }


def index_values(value: Any) -> list[str]:
    """What a filter on an attribute matches, lower-cased: a scalar, or each item of a list (emails)."""
    items = value if isinstance(value, list) else [value]
    return [str(v).lower() for v in items if isinstance(v, str | int | float) and not isinstance(v, bool)]


def outreach_list(state: State, call: Call, kind: str, base: str) -> Answer:
    """GET with filter[attr]=a,b (any of the values; several filters: all of them), in one page."""
    filters: list[tuple[str, list[str]]] = []
    for name, value in call.query.items():
        if not name.startswith("filter"):
            continue
        matched = FILTER.fullmatch(name)
        if matched is None or ".." in value:
            return outreach_refusal(400, "badFilter", "Bad Filter", f"the fake serves no filter like {name}={value}")
        filters.append((matched.group(1), [v.strip().lower() for v in value.split(",") if v.strip()]))
    with state.lock:
        records = state.resources[kind]
        chosen: set[int] | None = None
        for name, values in filters:
            if name == "id":
                ids = {int(v) for v in values if v.isdigit() and int(v) in records}
            else:
                by_value = state.index[kind].get(name, {})
                ids = set[int]().union(*(by_value.get(v, set()) for v in values))
            chosen = ids if chosen is None else chosen & ids
        rows = sorted(records) if chosen is None else sorted(chosen)
        documents = [resource_document(records[i], base) for i in rows]
    return json_answer(200, {"data": documents, "links": {}}, JSONAPI)


def outreach_write(state: State, call: Call, kind: str, resource_id: int | None, base: str) -> Answer:
    """POST creates, PATCH updates; a prospect email another prospect has is a 422 (the create race)."""
    try:
        body = call.json()
    except ValueError:
        return outreach_refusal(422, "validationError", "Validation Error", "the body is not JSON", "/data")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("attributes", {}), dict):
        return outreach_refusal(422, "validationError", "Validation Error", 'expected {"data": {...}}', "/data")
    if data.get("type") != kind:
        return outreach_refusal(422, "validationError", "Validation Error", f"data.type must be '{kind}'", "/data/type")
    if resource_id is not None and data.get("id") != resource_id:
        detail = "data.id must be the id in the path, as an integer"
        return outreach_refusal(422, "validationError", "Validation Error", detail, "/data/id")
    attributes = {k: v for k, v in dict(data.get("attributes") or {}).items() if k not in ("createdAt", "updatedAt")}
    relationships = data.get("relationships") if isinstance(data.get("relationships"), dict) else {}
    now = time.time()
    with state.lock:
        records = state.resources[kind]
        if resource_id is not None and resource_id not in records:
            return not_found(kind, str(resource_id))
        if kind == "prospect" and _email_taken(state, attributes.get("emails"), resource_id):
            return outreach_refusal(
                422, "validationError", "Validation Error", "Contacts email hash has already been taken.", "/data"
            )
        if resource_id is None:
            state.serials[kind] += 1
            resource = Resource(kind, state.serials[kind], {}, {}, now, now)
            records[resource.id] = resource
        else:
            resource = records[resource_id]
            _unindex(state, resource)
        resource.attributes.update(attributes)
        resource.relationships.update(relationships or {})
        resource.updated = now
        _reindex(state, resource)
        document = resource_document(resource, base)
    if resource_id is None:
        return json_answer(201, {"data": document}, JSONAPI, created=1)
    return json_answer(200, {"data": document}, JSONAPI, updated=1)


def _email_taken(state: State, emails: Any, own: int | None) -> bool:
    holders = state.index["prospect"].get("emails", {})
    return any(holders.get(email, set()) - {own} for email in index_values(emails or []))


def _unindex(state: State, resource: Resource) -> None:
    for name, value in resource.attributes.items():
        by_value = state.index[resource.kind].get(name, {})
        for item in index_values(value):
            by_value.get(item, set()).discard(resource.id)


def _reindex(state: State, resource: Resource) -> None:
    for name, value in resource.attributes.items():
        by_value = state.index[resource.kind].setdefault(name, {})
        for item in index_values(value):
            by_value.setdefault(item, set()).add(resource.id)


def outreach_delete(state: State, kind: str, resource_id: int) -> Answer:
    with state.lock:
        resource = state.resources[kind].pop(resource_id, None)
        if resource is not None:
            _unindex(state, resource)
    if resource is None:
        return not_found(kind, str(resource_id))
    return Answer(204, counts={"deleted": 1})


# --- the fake's own endpoints and the routing -----------------------------------------------------


def fake_endpoint(state: State, call: Call) -> Answer:
    if call.path == "/_fake/log" and call.method == "GET":
        with state.lock:
            calls = sorted(state.log, key=lambda line: float(line[0]))
        return json_answer(200, {"calls": calls}, "application/json")
    if call.path == "/_fake/stats" and call.method == "GET":
        return json_answer(200, state.stats(), "application/json")
    if call.path == "/_fake/reset" and call.method == "POST":
        state.reset()
        return json_answer(200, {"reset": True}, "application/json")
    return json_answer(404, {"error": "not found", "path": call.path}, "application/json")


def answer(state: State, call: Call) -> Answer:
    """Route one call; API calls pass admission, sleep the latency, are done, and are logged."""
    if call.path.startswith("/_fake/"):
        return fake_endpoint(state, call)
    vendor = SALESFORCE if call.path.startswith("/services/") else OUTREACH
    if call.path in TOKEN_PATHS:
        with state.lock:
            arrival = state.arrive()
        done = sf_token(state, call) if vendor == SALESFORCE else outreach_token(state, call)
        state.note(arrival, vendor, call, done, 0)
        return done
    if not (call.path.startswith("/services/data/") or OUTREACH_API.fullmatch(call.path)):
        return json_answer(404, {"error": "not found", "path": call.path}, "application/json")
    try:
        records = sf_records_in(call) if vendor == SALESFORCE else outreach_records_in(call)
    except ValueError:
        records = 0
    admission = admit(state, vendor, call)
    if state.settings.latency > 0:
        time.sleep(state.settings.latency)  # in this handler's thread: concurrent calls overlap
    done = admission.refusal or _perform(state, vendor, call)
    done.headers.update(admission.headers)
    state.note(admission.arrival, vendor, call, done, records)
    return done


def _perform(state: State, vendor: str, call: Call) -> Answer:
    try:
        return salesforce_api(state, call) if vendor == SALESFORCE else outreach_api(state, call)
    except BadRequest as refused:
        return refused.answer


# --- the server ---------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client's session reuses its connection, as with a CRM
    # Headers and body go out in two writes: with Nagle's algorithm the second waits for the client's
    # delayed ACK (up to 40 ms per call), which would make the fake the bottleneck it must not be.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a line on stderr per call would cost more than the call."""

    def _handle(self) -> None:
        fake = cast(FakeCRM, self.server)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""  # read it all, or keep-alive breaks
        parts = urlsplit(self.path)
        call = Call(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            body=body,
            authorization=self.headers.get("Authorization", ""),
            content_type=self.headers.get("Content-Type", ""),
            host=self.headers.get("Host") or urlsplit(fake.url).netloc,
        )
        try:
            done = answer(fake.state, call)
        except Exception as exc:  # a bug here must answer, not drop the connection mid-benchmark
            done = json_answer(500, [{"errorCode": "UNKNOWN_EXCEPTION", "message": repr(exc)}])
        self.send_response(done.status)
        for name, value in done.headers.items():
            self.send_header(name, value)
        if done.status != 204:
            self.send_header("Content-Type", done.content_type)
            self.send_header("Content-Length", str(len(done.body)))
        self.end_headers()
        if done.body and done.status != 204:
            self.wfile.write(done.body)


class FakeCRM(ThreadingHTTPServer):
    daemon_threads = True  # a benchmark's open keep-alive connections must not keep the process alive
    request_queue_size = 1024  # many clients connecting at once are queued, not reset
    allow_reuse_address = True

    def __init__(self, host: str, port: int, settings: Settings) -> None:
        super().__init__((host, port), Handler)
        self.state = State(settings)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection (in its own thread), known to `stop` while it is open."""
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def stop(self) -> None:
        """Stop serving and close the open keep-alive connections too: otherwise their threads would go on
        answering a client's pooled connection from this server's state after a new one took the port."""
        self.shutdown()
        with self.connections_lock:
            open_now = list(self.connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()


def serve(
    port: int,
    latency: float = 0.0,
    limit: int = 0,
    window: float = 1.0,
    *,
    host: str = "127.0.0.1",
    usage_total: int = DEFAULT_USAGE_TOTAL,
) -> FakeCRM:
    """A fake CRM bound to host:port (0: any free port), not yet serving: call `serve_forever()`."""
    if latency < 0 or limit < 0 or window <= 0 or usage_total < 1:
        raise ValueError("latency and limit must be >= 0, window > 0 and usage_total >= 1")
    return FakeCRM(host, port, Settings(latency=latency, limit=limit, window=window, usage_total=usage_total))


def start_in_thread(
    port: int = 0,
    latency: float = 0.0,
    limit: int = 0,
    window: float = 1.0,
    *,
    host: str = "127.0.0.1",
    usage_total: int = DEFAULT_USAGE_TOTAL,
) -> FakeCRM:
    """A fake CRM serving from a daemon thread (for tests): `server.url`, then `server.stop()`."""
    server = serve(port, latency, limit, window, host=host, usage_total=usage_total)
    # A short poll: stop() returns as soon as the loop sees it (tests start and stop many servers).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakecrm", daemon=True).start()
    return server


def busiest_window(calls: Iterable[Sequence[Any]], window: float, vendor: str | None = None) -> int:
    """The most API calls accepted in any `window` seconds of a /_fake/log (token calls and refusals left out)."""
    times = sorted(
        float(line[0])
        for line in calls
        if (vendor is None or line[1] == vendor) and line[3] not in TOKEN_PATHS and line[4] not in REFUSED_STATUSES
    )
    most, start = 0, 0
    for end, stamp in enumerate(times):
        while stamp - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0: any free port (printed)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    parser.add_argument("--limit", type=int, default=0, help="API calls per window per vendor; 0: no limit")
    parser.add_argument("--window", type=float, default=1.0, help="the sliding window, in seconds")
    parser.add_argument(
        "--usage-total",
        type=int,
        default=DEFAULT_USAGE_TOTAL,
        help="Salesforce's allocation (Sforce-Limit-Info total) and Outreach's hourly allowance",
    )
    args = parser.parse_args(argv)
    try:
        server = serve(args.port, args.latency, args.limit, args.window, host=args.host, usage_total=args.usage_total)
    except ValueError as exc:
        parser.error(str(exc))
    limit = f"{args.limit} per {args.window:g} s" if args.limit else "none"
    print(f"fakecrm listening on {server.url} (latency {args.latency:g} s, limit {limit})", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

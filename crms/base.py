"""The one interface every connector implements, and the values that cross it.

Connectors never write sync state: they take records, talk to their system through the
HTTP seam (crms.http) and return one result per record. What they must remember between
calls (rotated OAuth tokens, Bulk job ids) goes through the StateStore they are handed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import requests

from crms.http import HttpClient

Outcome = Literal["created", "updated", "deleted", "unchanged", "error"]


class ConnectorError(Exception):
    """A failed call or record. `permanent` says whether retrying can help.

    `pause_connection` marks errors that concern the whole connection (a daily API limit),
    so the engine stops calling it instead of failing record after record.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        permanent: bool = False,
        retry_after: float | None = None,
        http_status: int | None = None,
        fields: Sequence[str] = (),
        pause_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.permanent = permanent
        self.retry_after = retry_after
        self.http_status = http_status
        self.fields = tuple(fields)
        self.pause_connection = pause_connection

    def __str__(self) -> str:
        return self.message  # as redacted (Connector.redact), not as raised

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "permanent": self.permanent,
            "retry_after": self.retry_after,
            "http_status": self.http_status,
            "fields": list(self.fields),
        }


class NotSent(ConnectorError):
    """Nothing reached the CRM: the call was held back on our side (the throttle, an open circuit breaker).
    The job waits without spending an attempt, the breaker does not count it, and a connector that sends
    records one by one stops its batch there, since its next call would be held back too."""


class WebhookRefused(ConnectorError):
    """A webhook delivery that does not verify (or a connection that takes none): nothing is read from it."""

    def __init__(self, message: str, *, header: str) -> None:
        super().__init__(message, code="bad_signature", permanent=True)
        self.header = header


class RecordRejected(ConnectorError):
    """Only the records at hand are refused (an unknown object, a bad field, a constraint): push
    reports it on each of them and goes on; read and changes raise it like any ConnectorError."""


def unsent(cause: ConnectorError) -> ConnectorError:
    """The error of a record after a connection-wide failure in its batch: never tried, so retryable, whatever
    stopped the batch (connectors that send in several calls stop at such a failure)."""
    return ConnectorError(
        f"not sent: an earlier call failed ({cause.code}: {cause.message})",
        code=cause.code,
        retry_after=cause.retry_after,
        http_status=cause.http_status,
        pause_connection=cause.pause_connection,
    )


@dataclass(frozen=True)
class OutboundRecord:
    """One record to write. `record_id` is the source's id; `external_id` comes from the record link."""

    record_id: str
    object_type: str
    operation: Literal["upsert", "delete"]
    fields: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None


@dataclass(frozen=True)
class PushResult:
    record_id: str
    outcome: Outcome
    external_id: str | None = None
    error: ConnectorError | None = None


@dataclass(frozen=True)
class Change:
    """A record as it is now in the external system (or its deletion)."""

    object_type: str
    external_id: str
    fields: dict[str, Any]
    modified_at: datetime
    deleted: bool = False


@dataclass(frozen=True)
class Inbound:
    """A captured change as it syncs: the System A id the record carries (if any), its fields
    without the target's own bookkeeping (ids, timestamps), and whether we were its last writer."""

    record_id: str | None
    fields: dict[str, Any]
    written_by_us: bool = False


@dataclass(frozen=True)
class ChangePage:
    changes: list[Change]
    cursor: str | None  # save it after handling the page; pass it back for the next one
    has_more: bool


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    batch_size: int
    directions: tuple[str, ...]  # "outbound" (we write to it), "inbound" (we read changes from it)
    objects: dict[str, dict[str, Any]]  # object name -> {"match_key": ..., "required": [...], "fields": [...]}
    calls_per_record: bool = False  # a push costs about one call per record (it writes records one at a time)


class StateStore(Protocol):
    """Per-connection key/value state a connector may keep (tokens, job ids), shared by all processes."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def lock(self, key: str, timeout: float = 30) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class QuotaSignal:
    """What one answer said about the target's own allowance, for the throttle to obey.

    `used`/`cap` count calls in the target's period; `resets_in` is how long until that period
    refills (for a rolling period, its length); `pause_for` is an explicit request to stop
    calling for that long (a 429's Retry-After, Salesforce's REQUEST_LIMIT_EXCEEDED). `probe`: the
    pause has no known end (a daily allocation spent): the owner stays held until one cheap call
    (`Connector.probe`) succeeds, with at most `pause_for` between two probes.
    """

    used: int | None = None
    cap: int | None = None
    resets_in: float | None = None
    pause_for: float | None = None
    probe: bool = False


@dataclass(frozen=True)
class OAuthApp:
    """How a kind links an account by the OAuth 2.0 authorization-code flow: the admin's Connect button
    (crms/connect.py). A connection's config may override both URLs (`authorize_url`, `token_url`)."""

    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]


# Settings every connection takes, whatever its kind: how two-way sync treats it.
COMMON_CONFIG: dict[str, Any] = {
    "poll_objects": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Objects polled for changes (default: every object the connector knows).",
    },
    "conflict": {
        "enum": ["last_writer_wins", "system_a_wins", "crm_wins", "field_merge", "hold"],
        "description": "How a conflict with System A is decided when the rule does not say.",
    },
    "merge_fallback": {
        "enum": ["last_writer_wins", "system_a_wins", "crm_wins", "hold"],
        "description": "field_merge: for a field changed on both sides.",
    },
}


@runtime_checkable
class BulkWriter(Protocol):
    """A connector that can also write a large batch as one asynchronous job (Salesforce's Bulk API 2.0).
    Backfills bigger than the connection's threshold send their upserts this way (sync/inbound/backfill.py)."""

    @classmethod
    def bulk_threshold(cls, config: Mapping[str, Any]) -> int:
        """Records above which a backfill uses bulk jobs, from the connection's config."""
        ...

    @classmethod
    def bulk_label(cls) -> str:
        """What the vendor calls these jobs, for people reading a plan (e.g. "Bulk API 2.0")."""
        ...

    def bulk_start(self, object_type: str, records: Sequence[OutboundRecord]) -> str:
        """Start a job that upserts `records` (one object, one set of fields); its id."""
        ...

    def bulk_poll(self, job_id: str) -> list[PushResult] | None:
        """The job's results, one per record in the order sent, or None while it runs."""
        ...


class Connector(ABC):
    kind: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    config_schema: ClassVar[dict[str, Any]]  # JSON Schema of the non-secret config
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # The dotted path of the package's local mock (a crms.mocks.declare.Mock), or "" for none.
    mock: ClassVar[str] = ""
    # Kinds that link an account with OAuth's authorization-code flow (the admin's Connect button) say how.
    oauth_app: ClassVar[OAuthApp | None] = None
    oauth_token_key: ClassVar[str] = "oauth"  # noqa: S105 - the state-store key of the connector's OAuth token

    def __init__(self, *, config: dict[str, Any], secrets: dict[str, str], http: HttpClient, store: StateStore) -> None:
        self.config = config
        self.secrets = secrets
        self.http = http
        self.store = store

    def redact(self, text: str) -> str:
        """`text` without any credential a call sent or any of the connection's secrets: error texts are kept
        (last_error, attempts, breaker reasons, poll and run errors) and shown to API tokens, and a CRM's error body
        may echo what it was sent."""
        return self.http.redact(text, [value for value in self.secrets.values() if isinstance(value, str)])

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {
            "kind": cls.kind,
            "label": cls.label,
            "config": cls.full_config_schema(),
            "secrets": list(cls.secret_fields),
            "batch_size": cls.capabilities.batch_size,
            "directions": list(cls.capabilities.directions),
            "objects": cls.capabilities.objects,
        }

    @classmethod
    def full_config_schema(cls) -> dict[str, Any]:
        """The connector's own settings and the ones every connection takes (COMMON_CONFIG)."""
        schema = dict(cls.config_schema)
        schema["properties"] = {**COMMON_CONFIG, **schema.get("properties", {})}
        return schema

    @classmethod
    def config_refusals(cls, config: dict[str, Any]) -> dict[str, str]:
        """What the schema cannot say is wrong with a config, by path (e.g. {"config.url": "..."}): checked
        when a connection is saved and again when the connector opens it."""
        return {}

    @classmethod
    def objects_named(cls, config: Mapping[str, Any]) -> list[str]:
        """The objects a connection's config names beyond the connector's own list (`capabilities.objects`): the
        tables, resources or field lists a connection is set up with, and `poll_objects`."""
        return [str(name) for name in config.get("poll_objects") or []]

    @classmethod
    def since_cursor(cls, since: datetime) -> str:
        """A first cursor for `changes` that starts at `since`, in this connector's own format (backfill's
        --since). "": from the beginning; the caller drops what is older."""
        return ""

    @classmethod
    def quota_signal(cls, response: requests.Response, now: float) -> QuotaSignal | None:
        """Read the target's rate-limit headers from any answer; None when it says nothing."""
        return None

    @abstractmethod
    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        """Write a batch; one result per record, in order. Raises ConnectorError only for call-level failures."""

    @abstractmethod
    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The current fields of each record found, by external id."""

    @abstractmethod
    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        """One page of records changed after `cursor` (None: from the beginning)."""

    @abstractmethod
    def check(self) -> CheckResult:
        """Credentials and reachability."""

    @classmethod
    def oauth_urls(cls, config: Mapping[str, Any]) -> tuple[str, str]:
        """Where Connect sends the user to consent, and where it exchanges the code: the config's, else the app's."""
        app = cls.oauth_app
        if app is None:
            raise ConnectorError(f"{cls.label} connections link no account by OAuth", code="NO_OAUTH", permanent=True)
        return str(config.get("authorize_url") or app.authorize_url), str(config.get("token_url") or app.token_url)

    @classmethod
    def oauth_linked_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The config once an account is linked by Connect (e.g. switched to OAuth auth); unchanged by default."""
        return config

    def oauth_account(self, access_token: str) -> dict[str, Any]:
        """What a freshly linked account is, for the connection page: {"account", "user", "scopes", ...}."""
        return {"account": "", "scopes": list(self.oauth_app.scopes if self.oauth_app else ())}

    def probe(self) -> None:
        """One cheap call that says whether the target takes calls again (after a daily limit was spent);
        raises ConnectorError when it does not. Connectors with a cheaper call than `check` override it."""
        result = self.check()
        if not result.ok:
            raise ConnectorError(result.message, code="PROBE_FAILED")

    def webhook_changes(
        self,
        body: bytes,
        headers: Mapping[str, str],
        now: datetime,
        query: Mapping[str, str] | None = None,
        *,
        uri: str = "",
    ) -> list[Change]:
        """Verify one webhook delivery and read its changes; raise WebhookRefused when it does not verify.
        `uri`: the absolute URL the delivery arrived at (HubSpot signs it)."""
        raise WebhookRefused(f"{self.label} connections take no webhooks; their changes are polled", header="")

    def webhook_answer(self, counts: Mapping[str, int]) -> tuple[str, bytes] | None:
        """The answer the sender expects, as (content type, body); None: our JSON counts."""
        return None

    def modified_at(self, fields: Mapping[str, Any]) -> datetime | None:
        """When the record `read` returned was last changed, if the system says (None: unknown)."""
        return None

    def inbound(self, change: Change) -> Inbound:
        """How a change read from this system enters the pipeline (connectors that read override it)."""
        return Inbound(record_id=None, fields=dict(change.fields))


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

"""Input and output serializers for /v1/sync. Validation only: the writes live in sync.ingest.services."""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.functional import cached_property
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from sync.models import BreakerState, ConflictState, JobState, Operation

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
OBJECT_TYPE = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
# Clocks drift; more than this ahead of ours is a bad timestamp, and it would outrank every later change.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class StrictFieldsMixin:
    """Refuse keys the API does not know, so a typo ("dta") is an error rather than silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        known: dict[str, Any] = self.fields  # type: ignore[attr-defined]
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(known))
            if unknown:
                allowed = ", ".join(known)
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Allowed fields: {allowed}."] for key in unknown}
                )
        return super().to_internal_value(data)  # type: ignore[misc]


class ReusedFieldsSerializer(serializers.Serializer[dict[str, Any]]):
    """Bind the declared fields once per thread instead of deep-copying them for every serializer.

    DRF gives each serializer a deep copy of its declared fields, so that one instance may change its fields
    without touching the others; the copy re-runs every field's __init__ (regex compiles included) and took
    0.7 ms of a 5 ms single-event request, five times the validation itself (docs/BENCHMARKS.md). These fields
    are never changed and keep no state between calls, so each thread makes its copy once and points it at the
    serializer in use. A thread runs one request at a time, and a list's items share one child serializer.
    """

    _reused = threading.local()

    @cached_property
    def fields(self) -> BindingDict:
        kept: dict[type, dict[str, serializers.Field[Any, Any, Any, Any]]] = self._reused.__dict__.setdefault(
            "fields", {}
        )
        bound = BindingDict(self)
        declared = kept.get(type(self))
        if declared is None:
            declared = kept[type(self)] = copy.deepcopy(self._declared_fields)
            for name, field in declared.items():
                bound[name] = field  # binds each once: DRF refuses to bind a field twice
        else:
            for name, field in declared.items():
                field.parent = self  # what bind() would change; name, label and source stay as first bound
                bound.fields[name] = field
        return bound


class EventInSerializer(StrictFieldsMixin, ReusedFieldsSerializer):
    """A change to one record in its source system. Unknown fields are refused."""

    operation = serializers.ChoiceField(
        choices=Operation.choices,
        error_messages={"invalid_choice": "'{input}' is not an operation: use create, read, update or delete."},
    )
    record_id = serializers.CharField(max_length=255, help_text="The record's id in the source system.")
    object_type = serializers.RegexField(
        OBJECT_TYPE,
        max_length=64,
        help_text="e.g. contact, account",
        error_messages={"invalid": "Use a letter then up to 63 letters, digits, '_', '.' or '-' (e.g. contact)."},
    )
    source = serializers.RegexField(  # type: ignore[assignment]  # API field name; DRF pops declared fields
        SLUG,
        default="system_a",
        help_text="Where the change happened: system_a (default) or a connection name.",
        error_messages={"invalid": "Use a connection name: lower-case letters, digits, '_' or '-'."},
    )
    targets = serializers.ListField(
        child=serializers.RegexField(SLUG, error_messages={"invalid": "Use a connection name."}),
        required=False,
        allow_empty=False,
        max_length=50,
        help_text="Connection names to sync to. Leave out to let routing decide.",
    )
    data = serializers.DictField(  # type: ignore[assignment]  # API field name; DRF pops declared fields
        required=False,
        allow_null=True,
        allow_empty=False,
        help_text="The record's fields. Required for create and update.",
    )
    occurred_at = serializers.DateTimeField(
        required=False,
        help_text="When the change happened in the source, ISO-8601 with an offset. Defaults to receipt time.",
    )
    event_id = serializers.CharField(
        required=False,
        max_length=settings.IDEMPOTENCY_KEY_MAX_LENGTH,
        help_text="Your id for this event; a repeat with the same id and body is answered, not stored twice.",
    )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("occurred_at"), str):
            self._check_offset(data["occurred_at"])
        return super().to_internal_value(data)

    @staticmethod
    def _check_offset(raw: str) -> None:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return  # the field itself reports the format error
        if parsed.tzinfo is None:
            raise serializers.ValidationError(
                {"occurred_at": ["Add a UTC offset, e.g. 2026-01-31T09:30:00Z or 2026-01-31T10:30:00+01:00."]}
            )

    def validate_occurred_at(self, value: datetime) -> datetime:
        if value > timezone.now() + MAX_CLOCK_SKEW:
            raise serializers.ValidationError("Is more than 5 minutes in the future; send the source's real time.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["operation"] in (Operation.CREATE, Operation.UPDATE) and not attrs.get("data"):
            raise serializers.ValidationError(
                {"data": [f"Required for {attrs['operation']}: send the record's fields as a JSON object."]}
            )
        return attrs


class EventBatchInSerializer(serializers.ListSerializer[dict[str, Any]]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("child", EventInSerializer())
        kwargs.setdefault("allow_empty", False)
        kwargs.setdefault("max_length", settings.INGEST_MAX_BATCH)
        kwargs["error_messages"] = {
            "max_length": f"At most {settings.INGEST_MAX_BATCH} events per request; split the list.",
            "empty": "Send at least one event.",
            "not_a_list": "Send an event object or a list of event objects.",
        }
        super().__init__(*args, **kwargs)


class JobBriefSerializer(serializers.Serializer[dict[str, Any]]):
    target = serializers.CharField()
    state = serializers.CharField()


class EventAcceptedSerializer(serializers.Serializer[dict[str, Any]]):
    event_id = serializers.UUIDField()
    record_id = serializers.CharField()
    object_type = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # API field name; DRF pops declared fields
    operation = serializers.CharField()
    jobs = JobBriefSerializer(many=True)
    routing = serializers.DictField(help_text="Why the event went where it went.")
    status_url = serializers.CharField()


class BatchAcceptedSerializer(serializers.Serializer[dict[str, Any]]):
    results = EventAcceptedSerializer(many=True)


class StatusQuerySerializer(serializers.Serializer[dict[str, Any]]):
    object_type = serializers.RegexField(OBJECT_TYPE, required=False)
    source = serializers.RegexField(SLUG, required=False)  # type: ignore[assignment]  # API field name; DRF pops declared fields


class LastErrorSerializer(serializers.Serializer[dict[str, Any]]):
    code = serializers.CharField()
    message = serializers.CharField()
    permanent = serializers.BooleanField(allow_null=True)


class TargetStatusSerializer(serializers.Serializer[dict[str, Any]]):
    target = serializers.CharField()
    object_type = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # API field name; DRF pops declared fields
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    version = serializers.IntegerField()
    last_error = LastErrorSerializer(allow_null=True)
    external_id = serializers.CharField(allow_null=True)
    breaker = serializers.ChoiceField(choices=BreakerState.choices, help_text="The target's circuit breaker")
    last_event_id = serializers.UUIDField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    synced_at = serializers.DateTimeField(allow_null=True)


class EventSummarySerializer(serializers.Serializer[dict[str, Any]]):
    event_id = serializers.UUIDField()
    operation = serializers.CharField()
    object_type = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # API field name; DRF pops declared fields
    occurred_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    request_id = serializers.CharField()
    routing = serializers.DictField()
    superseded = serializers.BooleanField(
        help_text="Older than a change of the record that had already arrived: recorded, never applied"
    )


class AttemptSerializer(serializers.Serializer[dict[str, Any]]):
    target = serializers.CharField()
    version = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField()
    http_status = serializers.IntegerField(allow_null=True)
    error_code = serializers.CharField()
    error_message = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)


class LinkSerializer(serializers.Serializer[dict[str, Any]]):
    system = serializers.CharField()
    external_object = serializers.CharField()
    external_id = serializers.CharField()
    last_values = serializers.DictField(help_text="What both sides last agreed on, in that system's field names")
    synced_at = serializers.DateTimeField(allow_null=True)


class ConflictSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    connection = serializers.CharField()
    state = serializers.ChoiceField(choices=ConflictState.choices)
    policy = serializers.CharField()
    fields = serializers.ListField(child=serializers.CharField(), help_text="Changed on both sides, differently")  # type: ignore[assignment]  # API field name
    base = serializers.DictField()
    system_a_values = serializers.DictField(help_text="System A's change, in the CRM's field names")
    crm_values = serializers.DictField()
    resolution = serializers.DictField(allow_null=True)
    resolved_by = serializers.CharField()
    note = serializers.CharField()
    detected_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class ReadSerializer(serializers.Serializer[dict[str, Any]]):
    event_id = serializers.UUIDField()
    system = serializers.CharField()
    external_object = serializers.CharField()
    external_id = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["waiting", "captured", "echo", "already_captured", "not_found", "error"])
    read_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField()


class RecordStatusSerializer(serializers.Serializer[dict[str, Any]]):
    record_id = serializers.CharField()
    targets = TargetStatusSerializer(many=True)
    links = LinkSerializer(many=True, help_text="The record in each system it is linked to")
    events = EventSummarySerializer(many=True, help_text="The last 20 events, newest first.")
    attempts = AttemptSerializer(many=True, help_text="The last 20 attempts, newest first.")
    conflicts = ConflictSerializer(many=True, help_text="The last 20 conflicts, newest first.")
    reads = ReadSerializer(many=True, help_text="What read events read, newest first.")


class RetryInSerializer(StrictFieldsMixin, serializers.Serializer[dict[str, Any]]):
    target = serializers.RegexField(SLUG, required=False, help_text="Only this connection's job")
    object_type = serializers.RegexField(OBJECT_TYPE, required=False)
    source = serializers.RegexField(SLUG, required=False)  # type: ignore[assignment]  # API field name; DRF pops declared fields


class RetriedSerializer(serializers.Serializer[dict[str, Any]]):
    record_id = serializers.CharField()
    jobs = JobBriefSerializer(many=True, help_text="The jobs sent back to pending")


class ResumedSerializer(serializers.Serializer[dict[str, Any]]):
    connection = serializers.CharField(help_text="The connection named in the request")
    quota_key = serializers.CharField(help_text="Its quota owner: the hold and the allowance are shared")
    connections = serializers.ListField(
        child=serializers.CharField(), help_text="Every connection sharing the allowance, all resumed"
    )
    hold_lifted = serializers.BooleanField(help_text="A hold was in force (the target's own, or awaiting a probe)")
    breakers_closed = serializers.ListField(child=serializers.CharField(), help_text="Breakers that were not closed")
    jobs_due = serializers.IntegerField(help_text="Waiting (retrying) jobs made due now")
    polls_due = serializers.IntegerField(help_text="Polls backing off after failures made due now")


class ConfigOverrideInSerializer(StrictFieldsMixin, serializers.Serializer[dict[str, Any]]):
    connection = serializers.RegexField(SLUG, required=False, help_text="Only this connection; leave out for all")
    batch_size = serializers.IntegerField(required=False, allow_null=True, help_text="1-10000; null drops it")
    flush_interval = serializers.IntegerField(required=False, allow_null=True, help_text="seconds, 0-3600")
    max_attempts = serializers.IntegerField(required=False, allow_null=True, help_text="1-100")
    rate_limit_calls = serializers.IntegerField(
        required=False, allow_null=True, help_text="calls per window per quota owner; 0: no limit"
    )
    rate_limit_window = serializers.IntegerField(required=False, allow_null=True, help_text="seconds, 1-86400")
    breaker_failures = serializers.IntegerField(required=False, allow_null=True, help_text="1-1000")
    breaker_cooldown = serializers.IntegerField(required=False, allow_null=True, help_text="seconds, 1-86400")
    quota_slow_down_percent = serializers.IntegerField(
        required=False, allow_null=True, help_text="1-100: past this share of the target's own quota, calls slow down"
    )
    poll_interval = serializers.IntegerField(
        required=False, allow_null=True, help_text="seconds between polls for changes, 0-86400; 0: not polled"
    )
    alert_lag_seconds = serializers.IntegerField(
        required=False, allow_null=True, help_text="alert when the oldest due job is older, 0-604800 s; 0: off"
    )
    alert_failure_percent = serializers.IntegerField(
        required=False, allow_null=True, help_text="alert when this share of attempts in the window failed; 0: off"
    )
    alert_failure_window = serializers.IntegerField(
        required=False, allow_null=True, help_text="seconds of attempts the failure share is taken over, 60-86400"
    )
    alert_breaker_open_seconds = serializers.IntegerField(
        required=False, allow_null=True, help_text="alert when the breaker stays open longer, 0-604800 s; 0: off"
    )
    lane_live_reserve_percent = serializers.IntegerField(
        required=False, allow_null=True, help_text="0-90: share of the quota owner's window only live changes fill"
    )
    lane_read_reserve_percent = serializers.IntegerField(
        required=False, allow_null=True, help_text="0-90: the next share, for live changes, reads and polls only"
    )
    backfill_floor_percent = serializers.IntegerField(
        required=False, allow_null=True, help_text="0-100: backfills stop while less of the target's allowance is left"
    )
    alert_allowance_hours = serializers.IntegerField(
        required=False, allow_null=True, help_text="alert when the allowance runs out within this, 0-168 h; 0: off"
    )


class EngineConfigSerializer(serializers.Serializer[dict[str, Any]]):
    batch_size = serializers.IntegerField()
    flush_interval = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    rate_limit_calls = serializers.IntegerField()
    rate_limit_window = serializers.IntegerField()
    breaker_failures = serializers.IntegerField()
    breaker_cooldown = serializers.IntegerField()
    quota_slow_down_percent = serializers.IntegerField()
    poll_interval = serializers.IntegerField()
    alert_lag_seconds = serializers.IntegerField()
    alert_failure_percent = serializers.IntegerField()
    alert_failure_window = serializers.IntegerField()
    alert_breaker_open_seconds = serializers.IntegerField()
    lane_live_reserve_percent = serializers.IntegerField()
    lane_read_reserve_percent = serializers.IntegerField()
    backfill_floor_percent = serializers.IntegerField()
    alert_allowance_hours = serializers.IntegerField()


class OverrideRowSerializer(serializers.Serializer[dict[str, Any]]):
    values = serializers.DictField(child=serializers.IntegerField())
    updated_by = serializers.CharField()
    updated_at = serializers.DateTimeField()


class ConfigInForceSerializer(serializers.Serializer[dict[str, Any]]):
    defaults = EngineConfigSerializer(help_text="From the environment (SYNC_*)")
    overrides = serializers.DictField(child=OverrideRowSerializer(), help_text='"global" and "connection:<name>"')
    effective = serializers.DictField(child=EngineConfigSerializer(), help_text="What each connection uses now")


class WebhookAnswerSerializer(serializers.Serializer[dict[str, Any]]):
    captured = serializers.IntegerField(default=0, help_text="Changes turned into events")
    echo = serializers.IntegerField(default=0, help_text="Our own writes coming back: recorded, sent nowhere")
    already_captured = serializers.IntegerField(default=0, help_text="Changes captured before (by a poll or a repeat)")


class JobQuerySerializer(StrictFieldsMixin, serializers.Serializer[dict[str, Any]]):
    """Filters of GET /v1/sync/jobs; every one optional, all of them ANDed."""

    state = serializers.MultipleChoiceField(
        choices=JobState.choices, required=False, help_text="One or more (repeat the parameter): failed, held, ..."
    )
    target = serializers.RegexField(SLUG, required=False, help_text="A connection name")
    source = serializers.RegexField(SLUG, required=False)  # type: ignore[assignment]  # API field name
    object_type = serializers.RegexField(OBJECT_TYPE, required=False)
    record_id = serializers.CharField(required=False, max_length=255)
    error_code = serializers.CharField(required=False, max_length=64, help_text="e.g. REQUIRED_FIELD_MISSING")
    updated_after = serializers.DateTimeField(required=False, help_text="ISO-8601 with a zone")
    updated_before = serializers.DateTimeField(required=False)
    order = serializers.ChoiceField(
        choices=["newest", "oldest"],
        required=False,
        default="newest",
        help_text="By last change: newest first (default) or oldest first",
    )
    cursor = serializers.CharField(required=False, help_text="From `next` or `previous` of the page before")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, help_text="1-500, default 100")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        after, before = attrs.get("updated_after"), attrs.get("updated_before")
        if after and before and after >= before:
            raise serializers.ValidationError({"updated_before": ["Must be later than updated_after."]})
        return attrs


class JobSerializer(TargetStatusSerializer):
    id = serializers.IntegerField()
    record_id = serializers.CharField()


class JobPageSerializer(serializers.Serializer[dict[str, Any]]):
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last one")
    previous = serializers.URLField(allow_null=True)
    results = JobSerializer(many=True)


class EventDetailSerializer(EventSummarySerializer):
    record_id = serializers.CharField()
    payload = serializers.JSONField(allow_null=True)
    jobs = JobSerializer(many=True, help_text="The record's jobs this event was routed to, as they stand now")
    answer = serializers.DictField(help_text="The answer first given to the event's request")


class JobCountsSerializer(serializers.Serializer[dict[str, Any]]):
    total = serializers.IntegerField()
    by_state = serializers.DictField(child=serializers.IntegerField(), help_text="Every state, zeros included")
    by_target = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()), help_text="connection -> state -> count"
    )
    finished_counted_at = serializers.DateTimeField(
        allow_null=True,
        help_text="synced, skipped and superseded are counted once a minute: as of then; null: counted now",
    )


class BucketSerializer(serializers.Serializer[dict[str, Any]]):
    start = serializers.DateTimeField()
    synced = serializers.IntegerField(help_text="Attempts that succeeded")
    failed = serializers.IntegerField(help_text="Attempts that ended in an error")


class ThroughputSerializer(serializers.Serializer[dict[str, Any]]):
    per_minute = BucketSerializer(many=True, help_text="The last 60 minutes, oldest first")
    per_hour = BucketSerializer(many=True, help_text="The last 24 hours, oldest first")


class LagSerializer(serializers.Serializer[dict[str, Any]]):
    connection = serializers.CharField()
    enabled = serializers.BooleanField()
    due = serializers.IntegerField(help_text="Jobs due now")
    lag_seconds = serializers.FloatField(help_text="How long the oldest due job has waited")
    oldest_due_since = serializers.DateTimeField(allow_null=True)


class CapSerializer(serializers.Serializer[dict[str, Any]]):
    calls = serializers.IntegerField()
    per_seconds = serializers.FloatField()
    until = serializers.DateTimeField(allow_null=True)


class ThrottleUseSerializer(serializers.Serializer[dict[str, Any]]):
    connection = serializers.CharField()
    key = serializers.CharField(help_text="The quota owner's window")
    shared_with = serializers.ListField(child=serializers.CharField())
    limit = serializers.IntegerField(help_text="Our calls per window; 0: no limit of ours")
    window_seconds = serializers.FloatField()
    used = serializers.IntegerField(allow_null=True, help_text="Calls in the window now; null: unknown")
    percent = serializers.FloatField(allow_null=True)
    measured = serializers.ChoiceField(choices=["database", "redis", "unknown"])
    note = serializers.CharField()
    hold_until = serializers.DateTimeField(allow_null=True, help_text="The target asked for no calls until then")
    cap = CapSerializer(allow_null=True, help_text="The target's own allowance, spread thin")


class BreakerSerializer(serializers.Serializer[dict[str, Any]]):
    connection = serializers.CharField()
    state = serializers.ChoiceField(choices=BreakerState.choices)
    failures = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True)
    opened_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()


class AllowanceSerializer(serializers.Serializer[dict[str, Any]]):
    key = serializers.CharField(help_text="The quota owner")
    connection = serializers.CharField(help_text="The connection whose answer said it")
    observed_at = serializers.DateTimeField()
    used = serializers.IntegerField(help_text="Calls used, every integration's, as the target counts them")
    cap = serializers.IntegerField()
    percent_left = serializers.FloatField()
    refills_in_seconds = serializers.FloatField(help_text="Until it refills (a rolling allowance: its length)")
    rate_per_hour = serializers.FloatField(allow_null=True, help_text="Over the last hour; null: too few samples")
    runs_out_at = serializers.DateTimeField(
        allow_null=True, help_text="At that rate, before it refills; null: it does not"
    )


class StatsSerializer(serializers.Serializer[dict[str, Any]]):
    generated_at = serializers.DateTimeField()
    jobs = JobCountsSerializer()
    throughput = ThroughputSerializer()
    lag = LagSerializer(many=True)
    throttle = ThrottleUseSerializer(many=True)
    breakers = BreakerSerializer(many=True)
    allowance = AllowanceSerializer(many=True, help_text="Each quota owner's own allowance, as its target says")

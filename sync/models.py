"""The pipeline's tables: events are an append-only log, jobs are the outbox.

See docs/architecture.md for the job state machine.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from uuid_utils.compat import uuid7

from crms.models import Connection


class Operation(models.TextChoices):
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"


class JobState(models.TextChoices):
    PENDING = "pending"  # claimed by a dispatcher or not: a claim is a JobClaim, not a state
    IN_FLIGHT = "in_flight"
    SYNCED = "synced"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"
    HELD = "held"
    SUPERSEDED = "superseded"


class Lane(models.IntegerChoices):
    """Whose turn it is at a quota owner's window (issue 18): live changes first, then reads and polls,
    then backfill and reconcile. A job's lane is that of the change it waits to send."""

    LIVE = 0, "live changes"
    READ = 1, "reads and polls"
    BULK = 2, "backfill and reconcile"


class SyncEvent(models.Model):
    """One accepted change, as received. Never updated after it is written."""

    # Time-ordered (UUIDv7, RFC 9562): a new event's id, and a job's last_event_id that points at it, go in at
    # one end of their B-trees; random ids (v4) went each to a random page of a million-entry index (the
    # claim of a batch: 1.3 ms of its 7.5 spent in the last_event_id index alone).
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    idempotency_key = models.CharField(max_length=255, unique=True)
    request_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the event as sent, to tell a replay from a reuse."
    )
    source = models.CharField(max_length=64)
    operation = models.CharField(max_length=8, choices=Operation.choices)
    object_type = models.CharField(max_length=64)
    record_id = models.CharField(max_length=255)
    payload = models.JSONField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=64, blank=True)
    routing = models.JSONField(default=dict)
    response = models.JSONField(default=dict, help_text="The first answer, returned again to a replay.")

    class Meta:
        indexes = [
            models.Index(fields=["record_id", "object_type", "source", "-received_at"], name="event_record_idx"),
            models.Index(fields=["received_at"], name="event_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.object_type}/{self.record_id} from {self.source}"


class SyncJob(models.Model):
    """The outbox row for one (record, target): the latest state that target still has to receive."""

    source = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    record_id = models.CharField(max_length=255)
    # No index of its own: job_target_changed_idx begins with it. Every index here is written again by each
    # change of state, and a claim changes 200 at once (docs/BENCHMARKS.md).
    target = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.PENDING)
    lane = models.PositiveSmallIntegerField(
        choices=Lane.choices,
        default=Lane.LIVE,
        help_text="Live changes are claimed and sent before backfill and reconcile work (docs/operations.md).",
    )
    attempts = models.PositiveIntegerField(default=0)
    version = models.PositiveBigIntegerField(
        default=1, help_text="Bumped by every event; a worker finishes only the version it claimed."
    )
    last_event = models.ForeignKey(SyncEvent, on_delete=models.SET_NULL, null=True, related_name="+")
    last_occurred_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(
        max_length=100, blank=True, help_text="The process holding the lease: pid-claim@host (leases.lease_owner)."
    )
    # Not sent before this time: a worker stopped mid-call handed the job back while that call could still
    # land. Kept through newer events (next_attempt_at is not), so no newer state overtakes the old call.
    fence_until = models.DateTimeField(null=True, blank=True)
    last_error_code = models.CharField(max_length=64, blank=True)
    last_error_message = models.TextField(blank=True)
    last_error_permanent = models.BooleanField(null=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Record id first: the status API looks jobs up by it.
            models.UniqueConstraint(
                fields=["record_id", "object_type", "source", "target"], name="job_per_record_target"
            ),
        ]
        indexes = [
            # GET /v1/sync/jobs pages by last change: without these, each page sorted every matching job
            # (150-620 ms at 1.2 million; 0.25 ms with them, docs/BENCHMARKS.md). Built CONCURRENTLY (0024).
            models.Index(fields=["-updated_at", "-id"], name="job_changed_idx"),
            models.Index(fields=["state", "-updated_at", "-id"], name="job_state_changed_idx"),
            models.Index(fields=["target", "-updated_at", "-id"], name="job_target_changed_idx"),
            # ?error_code= pages: the few jobs with an error, newest first (a scan of a million jobs without it).
            models.Index(
                fields=["last_error_code", "-updated_at", "-id"],
                name="job_error_changed_idx",
                condition=~models.Q(last_error_code=""),
            ),
            # The dashboard's counts of open jobs per target and state, read from this index alone: the open are
            # few, the finished a million (those are counted once a minute: JobCount). Also how leases are found
            # (in flight: the lease owner, an expired lease), among the few jobs that hold one.
            models.Index(
                fields=["state", "target"],
                name="job_open_idx",
                condition=models.Q(state__in=["pending", "in_flight", "retrying", "failed", "held"]),
            ),
            # The dispatcher's claim: due jobs of a target, lane by lane, oldest first, read in index order.
            models.Index(
                fields=["target", "lane", "updated_at", "id"],
                name="job_due_lane_idx",
                condition=models.Q(state__in=["pending", "retrying"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.object_type}/{self.record_id} → {self.target.name} ({self.state})"


class JobClaim(models.Model):
    """A dispatcher's claim on a due job, from the claim until a worker starts the batch (sync.transitions).

    A claimed job keeps its state (pending or retrying): the claim is a row of its own, so claiming a batch
    inserts 200 narrow rows where it changed 200 job rows. A change of state is never a HOT update: each
    rewrote the job's row and every index on it (5.3 ms a batch against 1.0-1.9 ms; docs/BENCHMARKS.md).
    The job's id is the key, so one job has one claim: a claim is only taken over once it has expired.
    """

    # No foreign keys: the insert is the dispatcher's hot path, and a claim outliving its job (pruned
    # meanwhile) is harmless: the worker's start finds no job to move, and the claim expires.
    job = models.OneToOneField(
        SyncJob, primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="claim"
    )
    target = models.ForeignKey(
        Connection, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    lane = models.PositiveSmallIntegerField(choices=Lane.choices)
    owner = models.CharField(
        max_length=100, help_text="The dispatcher that claimed it (pid-claim@host), then the worker that took its task."
    )
    claimed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"job {self.job_id} claimed by {self.owner} until {self.expires_at:%H:%M:%S}"


class RecordLink(models.Model):
    """The same record in two systems, with the values last synced (the base of a field-level merge)."""

    object_type = models.CharField(max_length=64)
    record_id = models.CharField(max_length=255, help_text="The record's id in System A.")
    system = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="links")
    external_object = models.CharField(max_length=64)
    external_id = models.CharField(max_length=255)
    last_values = models.JSONField(default=dict)
    last_hash = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["record_id", "object_type", "system"], name="link_per_record_system"),
            models.UniqueConstraint(fields=["system", "external_object", "external_id"], name="link_external_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.object_type}/{self.record_id} ↔ {self.system.name}:{self.external_id}"


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success"
    ERROR = "error"
    SKIPPED = "skipped"
    # Held back on our side, no call made (the throttle, an open breaker): a wait, not a failure (issue 18).
    HELD = "held", "held back (no call made)"


class SyncAttempt(models.Model):
    """One try of one job: the record of what was sent and what came back."""

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="attempt_rows")
    version = models.PositiveBigIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    permanent = models.BooleanField(null=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["job", "-started_at"], name="attempt_job_idx"),
            # The stats' throughput buckets and the alerts' failure window read attempts by time.
            models.Index(fields=["finished_at"], name="attempt_finished_idx"),
            models.Index(fields=["started_at"], name="attempt_started_idx"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.pk} of job {self.job_id}: {self.outcome or 'running'}"


class ConfigOverride(models.Model):
    """Live engine settings: one global row and at most one per connection (`scope` keeps it so)."""

    scope = models.CharField(max_length=80, unique=True, help_text='"global" or "connection:<name>"')
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, null=True, blank=True, related_name="config_overrides"
    )
    values = models.JSONField(default=dict, help_text='e.g. {"batch_size": 100, "flush_interval": 1}')
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    def __str__(self) -> str:
        return f"overrides for {self.scope}"


class ThrottleCall(models.Model):
    """One API call inside a throttle window (the database backend; Redis keeps its own)."""

    key = models.CharField(max_length=128)
    # When the target counted it: while the call is in flight, the latest it can arrive; once answered, then.
    at = models.DateTimeField()
    ticket = models.CharField(max_length=32, blank=True, default="")  # the caller's, to settle it when answered

    class Meta:
        indexes = [models.Index(fields=["key", "at"], name="throttle_key_at_idx")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.at}"


class InboundCursor(models.Model):
    """Where polling of one object in one connection has got to: saved after every page."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="inbound_cursors")
    object_type = models.CharField(max_length=64, help_text="The object as the connection names it")
    cursor = models.TextField(blank=True, help_text="The connector's own cursor; empty: from the beginning")
    polled_at = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveBigIntegerField(default=0)
    captured = models.PositiveBigIntegerField(default=0, help_text="Changes turned into events")
    last_error = models.TextField(blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Polls in a row that failed or could not run")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="After failures: not polled again before then")
    lease_owner = models.CharField(max_length=64, blank=True, help_text="The poller holding it")
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "object_type"], name="inbound_cursor_unique")]

    def __str__(self) -> str:
        return f"{self.connection.name}:{self.object_type}"


class ThrottleLimit(models.Model):
    """What the target itself asked of one quota owner (the database backend; Redis keeps its own):
    a pause until `hold_until`, or at most `cap_calls` per `cap_seconds` until `cap_until`."""

    key = models.CharField(max_length=128, unique=True)
    hold_until = models.DateTimeField(null=True, blank=True)
    cap_calls = models.PositiveIntegerField(null=True, blank=True)
    cap_seconds = models.FloatField(null=True, blank=True)
    cap_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key}: hold until {self.hold_until}, cap {self.cap_calls}/{self.cap_seconds}s"


class AttemptMinute(models.Model):
    """Attempts sent in one minute, synced and failed, counted by the cluster once a minute
    (sync.tasks.attempt_minutes_refresh) for the dashboard's throughput charts: counting a day of attempts on
    every page read them all, and grew with the load. The current minute is always counted live."""

    minute = models.DateTimeField(unique=True)
    synced = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M}: {self.synced} synced, {self.failed} failed"


class JobCount(models.Model):
    """How many finished jobs (synced, skipped, superseded) each target has, counted once a minute by the
    cluster (sync.tasks.job_counts_refresh): counting a million of them took 60-200 ms, too slow for every
    dashboard page. Open jobs are always counted live (sync.ops.stats.job_counts)."""

    target = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=JobState.choices)
    count = models.PositiveBigIntegerField()
    counted_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["target", "state"], name="job_count_per_target_state")]

    def __str__(self) -> str:
        return f"{self.target_id}/{self.state}: {self.count} at {self.counted_at:%H:%M:%S}"


class QuotaSample(models.Model):
    """What a target said of its own allowance for one quota owner (`Sforce-Limit-Info`, `X-RateLimit-*`),
    every integration's calls included: at most one row a minute per owner (sync.delivery.allowance), kept
    two days by retention. The forecast, the dashboard and the backfill floor read them."""

    key = models.CharField(max_length=128, help_text="The quota owner (sync.delivery.throttle.quota_key)")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    used = models.PositiveBigIntegerField()
    cap = models.PositiveBigIntegerField()
    period_seconds = models.FloatField(help_text="How long until the allowance refills (for a rolling one, its length)")

    class Meta:
        indexes = [models.Index(fields=["key", "-at"], name="quota_sample_key_idx")]

    def __str__(self) -> str:
        return f"{self.key}: {self.used}/{self.cap} at {self.at:%Y-%m-%d %H:%M:%S}"


class QuotaHold(models.Model):
    """A quota owner held with no known end (a daily allocation spent): one cheap probe at a growing
    interval lifts it as soon as the target takes calls again, or staff do (sync.delivery.holds)."""

    key = models.CharField(max_length=128, unique=True, help_text="The quota owner (sync.delivery.throttle.quota_key)")
    connection = models.ForeignKey(
        Connection,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="The connection that heard it; probes go through it",
    )
    reason = models.TextField(blank=True)
    held_at = models.DateTimeField(default=timezone.now)
    probe_at = models.DateTimeField(help_text="When the next probe is due")
    probe_interval = models.FloatField(help_text="Seconds until the next probe; doubled by each failed one")
    probe_max = models.FloatField(help_text="The interval's ceiling, in seconds")
    probes = models.PositiveIntegerField(default=0, help_text="Probes made, all failed")
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_probe_error = models.TextField(blank=True)
    probe_owner = models.CharField(max_length=64, blank=True, help_text="The probe task holding the claim")
    probe_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key} held since {self.held_at:%Y-%m-%d %H:%M:%S}"


class BreakerState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker(models.Model):
    """Per connection, shared by every worker: opened by consecutive connection-level failures."""

    connection = models.OneToOneField(Connection, on_delete=models.CASCADE, related_name="breaker")
    state = models.CharField(max_length=16, choices=BreakerState.choices, default=BreakerState.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive connection-level failures")
    opened_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.connection} breaker: {self.state}"


class BreakerTransition(models.Model):
    """The breaker's history: every change of state, with the reason."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="breaker_transitions")
    at = models.DateTimeField(default=timezone.now)
    from_state = models.CharField(max_length=16)
    to_state = models.CharField(max_length=16)
    reason = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["connection", "-at"], name="breaker_history_idx")]

    def __str__(self) -> str:
        return f"{self.connection_id}: {self.from_state} -> {self.to_state}"


class ConflictState(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"


class SyncConflict(models.Model):
    """Both System A and a CRM changed one record since its last sync.

    Every value is kept in the CRM's field names (the names the record link's last-synced values
    use): `base` is what both sides last agreed on, `system_a_values` is System A's change as it
    would be written to the CRM, `crm_values` is the CRM's change as captured. `resolution` is
    the state chosen, by the policy or by a person in the admin.
    """

    record_id = models.CharField(max_length=255)
    object_type = models.CharField(max_length=64, help_text="System A's object type")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="conflicts")
    external_object = models.CharField(max_length=64)
    external_id = models.CharField(max_length=255)
    policy = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=ConflictState.choices, default=ConflictState.OPEN)
    base = models.JSONField(default=dict)
    system_a_values = models.JSONField(default=dict)
    crm_values = models.JSONField(default=dict)
    fields = models.JSONField(default=list, help_text="Fields changed on both sides to different values")
    system_a_event = models.ForeignKey(SyncEvent, on_delete=models.SET_NULL, null=True, related_name="+")
    crm_event = models.ForeignKey(SyncEvent, on_delete=models.SET_NULL, null=True, related_name="+")
    system_a_occurred_at = models.DateTimeField(null=True)
    crm_occurred_at = models.DateTimeField(null=True)
    resolution = models.JSONField(null=True, blank=True, help_text="The values chosen, in the CRM's field names")
    resolved_by = models.CharField(max_length=150, blank=True, help_text='"policy:<name>" or the staff user')
    note = models.TextField(blank=True)
    detected_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["record_id", "connection"],
                condition=models.Q(state="open"),
                name="conflict_one_open_per_record",
            )
        ]
        indexes = [models.Index(fields=["state", "-detected_at"], name="conflict_state_idx")]

    def __str__(self) -> str:
        return f"conflict {self.pk}: {self.object_type}/{self.record_id} ↔ {self.connection_id} ({self.state})"


class RunState(models.TextChoices):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BackfillRun(models.Model):
    """One `sync_backfill`: its checkpoint, so a run stopped by Ctrl-C or a crash resumes where it was."""

    source = models.CharField(max_length=64)
    target = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    since = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.RUNNING)
    cursor = models.TextField(blank=True, help_text="Where to resume: the connector's cursor or the last key done")
    processed = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(null=True, blank=True, help_text="Estimated at the start")
    counts = models.JSONField(default=dict)
    api_calls = models.PositiveBigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    owner = models.CharField(max_length=64, blank=True, help_text="The process running it")
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["source", "target", "object_type", "state"], name="backfill_lookup_idx")]

    def __str__(self) -> str:
        return f"backfill {self.source} → {self.target} {self.object_type} ({self.state})"


class ReconcileRun(models.Model):
    """One reconcile of one connection's object: what differed from the record links and what was queued."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="reconcile_runs")
    object_type = models.CharField(max_length=64)
    dry_run = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.RUNNING)
    counts = models.JSONField(default=dict, help_text="creates, updates, deletes, unchanged, ...")
    report = models.JSONField(default=dict, help_text="Sample ids per action")
    last_error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["connection", "object_type", "-started_at"], name="reconcile_recent_idx")]

    def __str__(self) -> str:
        return f"reconcile {self.connection_id}:{self.object_type} ({self.state})"


class RecordRead(models.Model):
    """What a read event (`"operation": "read"`) read from one linked system, and what became of it."""

    event = models.ForeignKey(SyncEvent, on_delete=models.CASCADE, related_name="reads")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    external_object = models.CharField(max_length=64)
    external_id = models.CharField(max_length=255)
    read_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=32, blank=True, help_text="captured, echo, already_captured, not_found or error; blank: waiting"
    )
    error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "connection"], name="read_per_event_system")]

    def __str__(self) -> str:
        return f"read of {self.external_object} {self.external_id} in {self.connection_id}: {self.outcome or 'waiting'}"


class AlertKind(models.TextChoices):
    LAG = "lag"
    FAILURES = "failures"
    BREAKER_OPEN = "breaker_open"
    ALLOWANCE = "allowance"  # the target's own allowance runs out soon at the current rate (issue 18)


class AlertState(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"


class Alert(models.Model):
    """One incident: a connection crossed a threshold. Open until the measure is back under it;
    announced once when it opens and once when it clears."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    state = models.CharField(max_length=16, choices=AlertState.choices, default=AlertState.OPEN)
    value = models.FloatField(help_text="The measure when last checked (seconds, or percent)")
    threshold = models.FloatField()
    message = models.TextField()
    opened_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    opened_sent_at = models.DateTimeField(null=True, blank=True, help_text="When the webhook took the opening")
    resolved_sent_at = models.DateTimeField(null=True, blank=True, help_text="When the webhook took the resolve")
    last_send_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "kind"], condition=models.Q(state="open"), name="alert_one_open_per_kind"
            ),
        ]
        indexes = [models.Index(fields=["state", "-opened_at"], name="alert_state_idx")]

    def __str__(self) -> str:
        return f"{self.kind} alert on {self.connection_id} ({self.state})"


class ProcessBeat(models.Model):
    """A worker's or dispatcher's heartbeat: liveness checks, /metrics, the dashboard and slot counts read it."""

    key = models.CharField(max_length=96, unique=True, help_text="host:pid")
    role = models.CharField(max_length=16)  # worker, dispatcher
    host = models.CharField(max_length=64)
    pid = models.PositiveIntegerField()
    group = models.PositiveIntegerField(null=True, blank=True, help_text="A worker's sentinel (its cluster).")
    state = models.CharField(max_length=8, default="idle")  # idle, busy
    beat_at = models.DateTimeField()
    task_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["role", "beat_at"], name="beat_role_idx")]

    def __str__(self) -> str:
        return f"{self.role} {self.key} {self.state}"


class TokenScope(models.TextChoices):
    """What an API token may do (issue 15). Staff tokens may do everything; staff-only endpoints stay staff-only."""

    EVENTS_WRITE = "events:write", "post events (for the token's sources)"
    EVENTS_TARGETS = "events:targets", "name explicit targets (still mapped by the rules)"
    STATUS_READ = "status:read", "read status, jobs and events with their payloads"
    RETRY = "retry", "retry records"
    STATS_READ = "stats:read", "read stats"


# A new token's, unless it is given others: all but naming targets, posting as System A only.
DEFAULT_SCOPES = [TokenScope.EVENTS_WRITE, TokenScope.STATUS_READ, TokenScope.RETRY, TokenScope.STATS_READ]
DEFAULT_SOURCES = ["system_a"]


class TokenGrant(models.Model):
    """What one knox token may do. A token without a grant (made outside create_api_token) may do nothing
    but what staff may do when its user is staff."""

    token = models.OneToOneField("knox.AuthToken", primary_key=True, on_delete=models.CASCADE, related_name="grant")
    scopes = models.JSONField(default=list, help_text="Any of: " + ", ".join(TokenScope.values))
    sources = models.JSONField(default=list, help_text='The "source" values its events may carry, e.g. ["system_a"].')

    def __str__(self) -> str:
        return f"{', '.join(self.scopes)} as {', '.join(self.sources) or 'no source'}"

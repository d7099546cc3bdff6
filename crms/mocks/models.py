"""The local mock CRMs' own storage: what a real CRM would hold, kept apart from sync state."""

from __future__ import annotations

from django.db import models
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone


class MockRecord(models.Model):
    system = models.CharField(max_length=32)
    object = models.CharField(max_length=64)
    record_id = models.CharField(max_length=64)
    fields = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    modified_at = models.DateTimeField(default=timezone.now)
    modified_by = models.CharField(max_length=64, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["system", "object", "record_id"], name="mock_record_unique")]
        indexes = [
            models.Index(fields=["system", "object", "modified_at"], name="mock_record_changed_idx"),
            # Salesforce indexes External ID fields; without this, every upsert scanned the table and
            # the mock, not the code under test, set the pace of the drain benchmark.
            models.Index(
                Cast(KeyTextTransform("RecordSync_Id__c", "fields"), output_field=models.TextField()),
                name="mock_record_sf_extid_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system}:{self.object}/{self.record_id}"


class MockCall(models.Model):
    """Every call a mock received: the demo log, the api-usage count and the throttle proofs."""

    system = models.CharField(max_length=32)
    at = models.DateTimeField(default=timezone.now)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=512)
    status = models.PositiveSmallIntegerField(default=0)
    counted = models.BooleanField(default=True, help_text="Counts against the API allowance (token calls do not).")

    class Meta:
        indexes = [models.Index(fields=["system", "at"], name="mock_call_at_idx")]

    def __str__(self) -> str:
        return f"{self.system} {self.method} {self.path} {self.status}"


class MockFault(models.Model):
    """Misbehaviour to inject: a status, a latency or a per-record error, for N calls or until a time."""

    system = models.CharField(max_length=32)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    code = models.CharField(max_length=64, blank=True)
    message = models.CharField(max_length=255, blank=True)
    retry_after = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    record_error = models.CharField(
        max_length=64, blank=True, help_text="A per-record error code, e.g. UNABLE_TO_LOCK_ROW"
    )
    calls_left = models.PositiveIntegerField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.system} fault {self.status or self.record_error or f'{self.latency_ms} ms'}"


class MockToken(models.Model):
    system = models.CharField(max_length=32)
    token = models.CharField(max_length=128, unique=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.system} token"


class MockBulkJob(models.Model):
    """A Bulk API 2.0 ingest job in the mock org: uploaded CSV in, result CSVs out."""

    system = models.CharField(max_length=32)
    job_id = models.CharField(max_length=32, unique=True)
    object = models.CharField(max_length=64)
    external_id_field = models.CharField(max_length=64)
    operation = models.CharField(max_length=16)
    state = models.CharField(max_length=16, default="Open")
    uploaded = models.TextField(blank=True)
    results = models.JSONField(default=dict)  # {"successful": csv, "failed": csv, "unprocessed": csv}
    created_at = models.DateTimeField(default=timezone.now)
    polls = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.system} bulk job {self.job_id} ({self.state})"


class MockQueryLocator(models.Model):
    """A query's server-side cursor: the ids it matched, fixed when it ran, read a batch at a time."""

    system = models.CharField(max_length=32)
    locator = models.CharField(max_length=32, unique=True)
    object = models.CharField(max_length=64)
    fields = models.JSONField(default=list)
    record_pks = models.JSONField(default=list)
    include_deleted = models.BooleanField(default=False)
    batch_size = models.PositiveIntegerField(default=2000)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.system} query {self.locator}"

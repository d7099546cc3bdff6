"""Connections (the systems records sync with) and the small state their connectors keep."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

NAME_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,63}$",
    "Use 1-64 lower-case letters, digits, '_' or '-', starting with a letter or digit.",
)


class Connection(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[NAME_VALIDATOR])
    kind = models.CharField(max_length=64, help_text="The connector kind, e.g. salesforce, outreach, system_a.")
    enabled = models.BooleanField(default=True)
    config = models.JSONField(default=dict, blank=True, help_text="Validated against the kind's JSON Schema.")
    secrets_encrypted = models.TextField(blank=True, editable=False, help_text="Fernet token; see crms.secrets.")
    quota_owner = models.CharField(
        max_length=128, blank=True, help_text="Connections sharing an API allowance (one Salesforce org) share this."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ConnectorState(models.Model):
    """What a connector keeps between calls (rotated tokens, Bulk job ids): never sync state."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="state")
    key = models.CharField(max_length=128)
    value = models.JSONField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "key"], name="state_per_connection_key")]

    def __str__(self) -> str:
        return f"{self.connection_id}:{self.key}"


# The mock CRMs' tables live in this app (crms/mocks/models.py).
from crms.mocks.models import MockBulkJob, MockCall, MockFault, MockRecord, MockToken  # noqa: E402

__all__ = ["Connection", "ConnectorState", "MockBulkJob", "MockCall", "MockFault", "MockRecord", "MockToken"]

"""Rule rows staff edit in the admin, and the rule-set version every process watches."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from simple_history.models import HistoricalRecords

from crms.models import NAME_VALIDATOR


class Action(models.TextChoices):
    SYNC = "sync", "Sync to the targets"
    SKIP = "skip", "Skip (with a reason)"
    STOP = "stop", "Stop evaluating later rules"


class Rule(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[NAME_VALIDATOR])
    enabled = models.BooleanField(default=True)
    order = models.IntegerField(default=100, help_text="Rules run in this order, lowest first.")
    description = models.TextField(blank=True)
    match_source = models.CharField(max_length=64, blank=True, help_text="Only events from this system (blank: any).")
    match_object_type = models.CharField(
        max_length=64,
        blank=True,
        validators=[RegexValidator(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")],
        help_text="Only this object type (blank: any).",
    )
    match_operations = models.JSONField(default=list, blank=True, help_text='e.g. ["create", "update"]; empty: any.')
    condition = models.TextField(blank=True, help_text="An expression over the event (docs/rules.md); blank: always.")
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.SYNC)
    reason = models.CharField(max_length=255, blank=True, help_text="Why events are skipped (action skip).")
    targets = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"target": "salesforce", "object": "Contact", "mapping": {"Email": "data.email"}, '
        '"conflict": "last_writer_wins", "on_delete": "propagate"}]',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class RuleSetVersion(models.Model):
    """One row: bumped by every change to the rules, so processes know to recompile."""

    version = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    def __str__(self) -> str:
        return f"rule set v{self.version}"

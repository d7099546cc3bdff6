"""Connections: the systems records sync with. Config and secrets arrive with the connector registry."""

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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

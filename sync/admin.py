"""Read-mostly admin views of the pipeline; nothing here rewrites history."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from knox.models import AuthToken

from recordsync.auth import verified_tokens_forget
from sync.config_services import config_override_set, override_errors
from sync.models import (
    BreakerTransition,
    CircuitBreaker,
    ConfigOverride,
    RecordLink,
    SyncAttempt,
    SyncEvent,
    SyncJob,
)
from sync.retry import jobs_retry


class NoEditAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(NoEditAdmin):
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SyncEvent)
class SyncEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "operation", "object_type", "record_id", "source", "request_id"]
    list_filter = ["operation", "source", "object_type"]
    search_fields = ["record_id", "=id", "=request_id", "idempotency_key"]
    date_hierarchy = "received_at"
    ordering = ["-received_at"]


class AttemptInline(admin.TabularInline[SyncAttempt, SyncJob]):
    model = SyncAttempt
    extra = 0
    can_delete = False
    fields = ("started_at", "version", "outcome", "http_status", "error_code", "error_message", "duration_ms")
    readonly_fields = fields
    ordering = ["-started_at"]


@admin.register(SyncJob)
class SyncJobAdmin(ReadOnlyAdmin):
    list_display = ["record_id", "object_type", "source", "target", "state", "attempts", "version", "updated_at"]
    list_filter = ["state", "target", "object_type", "last_error_code"]
    search_fields = ["record_id"]
    list_select_related = ["target"]
    ordering = ["-updated_at"]
    inlines = [AttemptInline]
    actions = ["retry_jobs"]

    @admin.action(description="Retry the selected failed or retrying jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[SyncJob]) -> None:
        retried = jobs_retry(jobs=queryset, actor=request.user.get_username())
        skipped = queryset.count() - len(retried)
        note = f"; {skipped} were not failed or retrying and were left alone" if skipped else ""
        self.message_user(request, f"{len(retried)} job(s) sent back to pending{note}.", messages.SUCCESS)


@admin.register(RecordLink)
class RecordLinkAdmin(ReadOnlyAdmin):
    list_display = ["object_type", "record_id", "system", "external_object", "external_id", "synced_at"]
    list_filter = ["system", "object_type"]
    search_fields = ["record_id", "external_id"]


@admin.register(SyncAttempt)
class SyncAttemptAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "job", "outcome", "http_status", "error_code", "duration_ms"]
    list_filter = ["outcome", "error_code"]
    ordering = ["-started_at"]


# Tokens are created by `manage.py create_api_token` (the only moment the token is shown);
# the admin lists and revokes them. knox (earlier in INSTALLED_APPS) registered its own view.
admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class AuthTokenAdmin(NoEditAdmin):
    list_display = ["token_key", "user", "created", "expiry"]
    list_filter = ["user__is_staff"]
    search_fields = ["user__username", "token_key"]
    fields = ("token_key", "user", "created", "expiry")
    readonly_fields = fields
    list_select_related = ["user"]

    def delete_model(self, request: HttpRequest, obj: AuthToken) -> None:
        super().delete_model(request, obj)
        verified_tokens_forget()

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        super().delete_queryset(request, queryset)
        verified_tokens_forget()


class ConfigOverrideForm(forms.ModelForm[ConfigOverride]):
    class Meta:
        model = ConfigOverride
        fields = ["connection", "values"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        values = data.get("values") or {}
        if not isinstance(values, dict):
            self.add_error("values", 'Give an object, e.g. {"batch_size": 100}')
            return data
        for key, message in override_errors(values).items():
            self.add_error("values", f"{key}: {message}")
        return data


@admin.register(ConfigOverride)
class ConfigOverrideAdmin(admin.ModelAdmin[ConfigOverride]):
    form = ConfigOverrideForm
    list_display = ["scope", "values", "updated_by", "updated_at"]
    readonly_fields = ["scope", "updated_by", "updated_at"]

    def save_model(self, request: HttpRequest, obj: ConfigOverride, form: Any, change: bool) -> None:
        connection = form.cleaned_data.get("connection")
        if change and obj.scope != (f"connection:{connection.name}" if connection else "global"):
            ConfigOverride.objects.filter(pk=obj.pk).delete()  # moved to another scope
        replaced = dict.fromkeys(form.initial.get("values") or {})
        saved = config_override_set(values={**replaced, **form.cleaned_data["values"]},
                                    connection=connection.name if connection else None,
                                    actor=request.user.get_username())  # fmt: skip
        obj.pk = saved.pk


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(NoEditAdmin):
    list_display = ["connection", "state", "failures", "opened_at", "updated_at"]
    list_filter = ["state"]
    readonly_fields = ["connection", "state", "failures", "opened_at", "last_error", "updated_at", "history"]

    @admin.display(description="History (newest first)")
    def history(self, obj: CircuitBreaker) -> str:
        rows = BreakerTransition.objects.filter(connection=obj.connection).order_by("-at")[:50]
        return "\n".join(f"{r.at:%Y-%m-%d %H:%M:%S} {r.from_state} → {r.to_state}: {r.reason}" for r in rows) or "—"

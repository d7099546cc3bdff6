"""Read-mostly admin views of the pipeline; nothing here rewrites history."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from knox.models import AuthToken

from recordsync.auth import verified_tokens_forget
from sync.delivery.holds import connection_resume
from sync.delivery.retry import jobs_retry
from sync.ingest.services import conflict_resolve
from sync.models import (
    Alert,
    BackfillRun,
    BreakerTransition,
    CircuitBreaker,
    ConfigOverride,
    ConflictState,
    InboundCursor,
    QuotaHold,
    ReconcileRun,
    RecordLink,
    SyncAttempt,
    SyncConflict,
    SyncEvent,
    SyncJob,
    TokenGrant,
    TokenScope,
)
from sync.ops.config_services import config_override_set, override_errors


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


class TokenGrantForm(forms.ModelForm[TokenGrant]):
    scopes = forms.MultipleChoiceField(choices=TokenScope.choices, widget=forms.CheckboxSelectMultiple, required=False)
    sources = forms.CharField(
        help_text='Comma-separated "source" values its events may carry (system_a, or a connection name); * for any.'
    )

    class Meta:
        model = TokenGrant
        fields = ["scopes", "sources"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["sources"] = ", ".join(self.instance.sources)

    def clean_sources(self) -> list[str]:
        return [s.strip() for s in self.cleaned_data["sources"].split(",") if s.strip()]


@admin.register(TokenGrant)
class TokenGrantAdmin(admin.ModelAdmin[TokenGrant]):
    """What each token may do; tokens themselves are made by create_api_token and revoked under Tokens."""

    form = TokenGrantForm
    list_display = ["token", "user", "scopes", "sources"]
    search_fields = ["token__user__username", "token__token_key"]
    list_select_related = ["token__user"]

    @admin.display(description="user")
    def user(self, obj: TokenGrant) -> str:
        return str(obj.token.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a grant comes with its token

    def save_model(self, request: HttpRequest, obj: TokenGrant, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        verified_tokens_forget()  # in force at once here, within seconds in the other processes


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
        saved = config_override_set(
            values={**replaced, **form.cleaned_data["values"]},
            connection=connection.name if connection else None,
            actor=request.user.get_username(),
        )
        obj.pk = saved.pk


def _resume(admin_view: admin.ModelAdmin[Any], request: HttpRequest, names: list[str]) -> None:
    """The same service as POST /v1/sync/connections/{name}/resume, once per quota owner selected."""
    done: set[str] = set()
    for name in names:
        resumed = connection_resume(name=name, actor=request.user.get_username())
        if resumed.key in done:
            continue
        done.add(resumed.key)
        closed = ", ".join(resumed.breakers_closed) or "none"
        admin_view.message_user(
            request,
            f"Resumed {', '.join(resumed.connections)}: hold "
            f"{'lifted' if resumed.hold_lifted else 'not in force'}; breakers closed: {closed}; "
            f"{resumed.jobs_due} waiting job(s) and {resumed.polls_due} poll(s) due now.",
            messages.SUCCESS,
        )


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(NoEditAdmin):
    list_display = ["connection", "state", "failures", "opened_at", "updated_at"]
    list_filter = ["state"]
    readonly_fields = ["connection", "state", "failures", "opened_at", "last_error", "updated_at", "history"]
    actions = ["resume_connections"]

    @admin.action(description="Resume now: lift the hold and the breaker, make waiting jobs due")
    def resume_connections(self, request: HttpRequest, queryset: QuerySet[CircuitBreaker]) -> None:
        _resume(self, request, [row.connection.name for row in queryset.select_related("connection")])

    @admin.display(description="History (newest first)")
    def history(self, obj: CircuitBreaker) -> str:
        rows = BreakerTransition.objects.filter(connection=obj.connection).order_by("-at")[:50]
        return "\n".join(f"{r.at:%Y-%m-%d %H:%M:%S} {r.from_state} → {r.to_state}: {r.reason}" for r in rows) or "—"


@admin.register(InboundCursor)
class InboundCursorAdmin(ReadOnlyAdmin):
    """Where polling of each (connection, object) has got to; a poll that failed backs off until `retry_at`."""

    list_display = ["connection", "object_type", "polled_at", "pages", "captured", "failures", "retry_at", "last_error"]
    list_filter = ["connection"]
    list_select_related = ["connection"]
    ordering = ["connection__name", "object_type"]


@admin.register(QuotaHold)
class QuotaHoldAdmin(NoEditAdmin):
    """Quota owners held until a probe finds the target taking calls again (a daily limit spent)."""

    list_display = ["key", "connection", "held_at", "probe_at", "probe_interval", "probes", "last_probe_error"]
    list_select_related = ["connection"]
    actions = ["resume_connections"]

    @admin.action(description="Resume now: lift the hold and the breaker, make waiting jobs due")
    def resume_connections(self, request: HttpRequest, queryset: QuerySet[QuotaHold]) -> None:
        _resume(self, request, [row.connection.name for row in queryset.select_related("connection")])


class ConflictChoiceForm(forms.Form):
    """One radio per field System A writes: which side's value the record keeps."""

    def __init__(self, *args: Any, conflict: SyncConflict, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        crm = conflict.connection.name
        for name in conflict.system_a_values:
            ours, theirs = conflict.system_a_values.get(name), conflict.crm_values.get(name)
            self.fields[name] = forms.ChoiceField(
                label=name,
                widget=forms.RadioSelect,
                initial="crm" if name not in conflict.fields else None,
                choices=[("system_a", f"System A: {ours!r}"), ("crm", f"{crm}: {theirs!r}")],
            )


@admin.register(SyncConflict)
class SyncConflictAdmin(ReadOnlyAdmin):
    """The review queue: held conflicts wait here; every conflict, held or decided by policy, stays on record."""

    list_display = ["detected_at", "record_id", "connection", "state", "policy", "contested", "resolved_by"]
    list_filter = ["state", "connection", "policy"]
    search_fields = ["record_id", "external_id"]
    ordering = ["state", "-detected_at"]
    list_select_related = ["connection"]
    actions = ["keep_system_a", "keep_crm"]
    readonly_fields = [
        "record_id",
        "object_type",
        "connection",
        "external_object",
        "external_id",
        "policy",
        "state",
        "fields",
        "base",
        "system_a_values",
        "crm_values",
        "resolution",
        "resolved_by",
        "note",
        "detected_at",
        "resolved_at",
        "system_a_occurred_at",
        "crm_occurred_at",
    ]

    @admin.display(description="Fields changed on both sides")
    def contested(self, obj: SyncConflict) -> str:
        return ", ".join(obj.fields) or "(different fields)"

    def get_urls(self) -> list[URLPattern]:
        resolve = path(
            "<int:pk>/resolve/", self.admin_site.admin_view(self.resolve_view), name="sync_syncconflict_resolve"
        )
        return [resolve, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:sync_syncconflict_resolve", args=[object_id]))

    def resolve_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Both versions field by field; pick a side for the whole record or per field."""
        conflict = get_object_or_404(SyncConflict.objects.select_related("connection"), pk=pk)
        is_open = conflict.state == ConflictState.OPEN
        form = ConflictChoiceForm(request.POST or None, conflict=conflict)
        if request.method == "POST" and is_open and request.user.has_perm("sync.change_syncconflict"):
            side = request.POST.get("side")
            if side in ("system_a", "crm"):
                choices = dict.fromkeys(conflict.system_a_values, side)
            elif form.is_valid():
                choices = dict(form.cleaned_data)
            else:
                choices = {}
            if choices:
                self._resolve(request, conflict, choices)
                return HttpResponseRedirect(reverse("admin:sync_syncconflict_resolve", args=[pk]))
        rows = [
            {
                "name": name,
                "base": conflict.base.get(name),
                "system_a": conflict.system_a_values.get(name),
                "crm": conflict.crm_values.get(name),
                "contested": name in conflict.fields,
                "chosen": (conflict.resolution or {}).get(name),
                "field": form[name],
            }
            for name in conflict.system_a_values
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Conflict {conflict.pk}: {conflict.record_id}",
            "conflict": conflict,
            "rows": rows,
            "form": form,
            "is_open": is_open,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/sync/syncconflict/resolve.html", context)

    def _resolve(self, request: HttpRequest, conflict: SyncConflict, choices: dict[str, Any]) -> None:
        with transaction.atomic():
            locked = SyncConflict.objects.select_for_update().get(pk=conflict.pk)
            if locked.state != ConflictState.OPEN:
                self.message_user(request, f"Conflict {conflict.pk} was already resolved.", messages.WARNING)
                return
            done = conflict_resolve(locked, choices, by=request.user.get_username())
        self.message_user(request, f"Conflict {conflict.pk} resolved: {done.note}.", messages.SUCCESS)

    def _resolve_all(self, request: HttpRequest, queryset: QuerySet[SyncConflict], side: str) -> None:
        for conflict in queryset.filter(state=ConflictState.OPEN).select_related("connection"):
            self._resolve(request, conflict, dict.fromkeys(conflict.system_a_values, side))

    @admin.action(description="Resolve: keep System A's version")
    def keep_system_a(self, request: HttpRequest, queryset: QuerySet[SyncConflict]) -> None:
        self._resolve_all(request, queryset, "system_a")

    @admin.action(description="Resolve: keep the CRM's version")
    def keep_crm(self, request: HttpRequest, queryset: QuerySet[SyncConflict]) -> None:
        self._resolve_all(request, queryset, "crm")


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = [
        "opened_at",
        "connection",
        "kind",
        "state",
        "value",
        "threshold",
        "resolved_at",
        "opened_sent_at",
        "resolved_sent_at",
    ]
    list_filter = ["state", "kind", "connection"]
    ordering = ["state", "-opened_at"]


@admin.register(BackfillRun)
class BackfillRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "source", "target", "object_type", "state", "processed", "total", "finished_at"]
    list_filter = ["state", "source", "target"]


@admin.register(ReconcileRun)
class ReconcileRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "connection", "object_type", "dry_run", "state", "counts", "finished_at"]
    list_filter = ["state", "connection", "dry_run"]

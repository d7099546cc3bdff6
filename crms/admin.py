"""Connections in the admin: config checked against the kind's schema, secrets write-only, and for the kinds that
link an account by OAuth the Connect / Reconnect / Disconnect buttons (crms/connect.py)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from rest_framework.exceptions import ValidationError

from crms import secrets as secret_box
from crms.build import connector_for
from crms.connect import ConnectRefused, connect_finish, connect_start, disconnect, link_of
from crms.models import Connection
from crms.registry import kinds
from crms.services import connection_save, connection_validate


class ConnectionForm(forms.ModelForm[Connection]):
    kind = forms.ChoiceField(choices=[])
    new_secrets = forms.CharField(
        required=False,
        label="Set secrets",
        help_text='Write-only. e.g. {"client_secret": {"env": "CRM_SF_CLIENT_SECRET"}} or {"client_secret": "…"}; '
        '"" removes one. Leave empty to keep the stored secrets.',
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
    )

    class Meta:
        model = Connection
        fields = ["name", "kind", "enabled", "quota_owner", "config"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(k, k) for k in kinds()]  # type: ignore[attr-defined]

    def clean_new_secrets(self) -> dict[str, Any] | None:
        raw = (self.cleaned_data.get("new_secrets") or "").strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError('Give an object, e.g. {"client_secret": {"env": "CRM_SF_CLIENT_SECRET"}}')
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            connection_validate(
                name=data.get("name", ""),
                kind=data.get("kind", ""),
                config=data.get("config") or {},
                secrets=data.get("new_secrets") or None,
            )
        except ValidationError as exc:
            for key, message in dict(exc.detail).items():  # type: ignore[arg-type]
                field = key.split(".")[0] if key.split(".")[0] in self.fields else None
                self.add_error("new_secrets" if key.startswith("secrets") else field, f"{key}: {message}")
        return data


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin[Connection]):
    form = ConnectionForm
    list_display = ["name", "kind", "enabled", "quota_owner", "updated_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    readonly_fields = ["stored_secrets"]
    actions = ["check_connection"]
    change_form_template = "admin/crms/connection/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        own = [
            path("oauth/callback/", self.admin_site.admin_view(self.oauth_callback), name="crms_connection_callback"),
            path("<int:pk>/connect/", self.admin_site.admin_view(self.connect), name="crms_connection_connect"),
            path("<int:pk>/disconnect/", self.admin_site.admin_view(self.unlink), name="crms_connection_disconnect"),
        ]
        return own + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        connection = self.get_object(request, object_id)
        extra = {**(extra_context or {}), "oauth_link": link_of(connection) if connection else None}
        return super().change_view(request, object_id, form_url, extra)

    def connect(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Connect / Reconnect: off to the provider's consent page, with state and PKCE kept in the session."""
        connection = self._changeable(request, pk)
        callback = request.build_absolute_uri(reverse("admin:crms_connection_callback"))
        try:
            started = connect_start(connection, redirect_uri=callback, session=request.session)
        except ConnectRefused as exc:
            self.message_user(request, f"{connection.name}: {exc}", messages.ERROR)
            return HttpResponseRedirect(self._page(connection))
        return HttpResponseRedirect(started.authorize_url)

    def oauth_callback(self, request: HttpRequest) -> HttpResponse:
        """Where the provider sends the user back (the redirect URL to register with the app): the code becomes
        tokens, stored encrypted; a refused, tampered or stale answer stores nothing and says why."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        try:
            connection = connect_finish(
                query=request.GET.dict(), session=request.session, actor=request.user.get_username()
            )
        except ConnectRefused as exc:
            return TemplateResponse(
                request,
                "admin/crms/connection/connect_refused.html",
                {**self.admin_site.each_context(request), "title": "Connect refused", "reason": str(exc)},
                status=400,
            )
        account = (link_of(connection) or {}).get("account") or "the account"
        self.message_user(request, f"{connection.name}: connected to {account}.", messages.SUCCESS)
        return HttpResponseRedirect(self._page(connection))

    def unlink(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        connection = self._changeable(request, pk)
        disconnect(connection, actor=request.user.get_username())
        self.message_user(request, f"{connection.name}: disconnected; it calls nothing until connected again.")
        return HttpResponseRedirect(self._page(connection))

    def _changeable(self, request: HttpRequest, pk: int) -> Connection:
        if not self.has_change_permission(request):
            raise PermissionDenied
        return get_object_or_404(Connection, pk=pk)

    @staticmethod
    def _page(connection: Connection) -> str:
        return reverse("admin:crms_connection_change", args=[connection.pk])

    @admin.display(description="Stored secrets")
    def stored_secrets(self, obj: Connection) -> str:
        stored = secret_box.decrypt(obj.secrets_encrypted)
        return ", ".join(f"{k} (env {v['env']})" if isinstance(v, dict) else f"{k} (set)" for k, v in stored.items())

    def save_model(self, request: HttpRequest, obj: Connection, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = connection_save(
            name=data["name"],
            kind=data["kind"],
            config=data.get("config") or {},
            secrets=data.get("new_secrets") or None,
            enabled=data["enabled"],
            quota_owner=data.get("quota_owner", ""),
        )
        obj.pk = saved.pk

    @admin.action(description="Check connection (credentials and reachability)")
    def check_connection(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            try:
                result = connector_for(connection).check()
            except Exception as exc:  # a missing secret or unknown kind: show it, do not crash the page
                self.message_user(request, f"{connection.name}: {exc}", messages.ERROR)
                continue
            level = messages.SUCCESS if result.ok else messages.ERROR
            detail = f" {json.dumps(result.details)}" if result.details else ""
            self.message_user(request, f"{connection.name}: {result.message}{detail}", level)

"""Rules in the admin: validated as part of the whole set, history with revert, and a dry run."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from simple_history.admin import SimpleHistoryAdmin

from rules import dry_run, services
from rules.models import Rule
from rules.validation import rule_set_errors


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a rule's targets and mappings can be read and edited."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


MONOSPACE = "font-family: monospace"


class RuleForm(forms.ModelForm[Rule]):
    targets = PrettyJSONField(
        required=False,
        help_text=Rule._meta.get_field("targets").help_text,
        widget=forms.Textarea(attrs={"rows": 18, "cols": 110, "style": MONOSPACE}),
    )

    class Meta:
        model = Rule
        fields = list(services.FIELDS)
        widgets = {
            "condition": forms.Textarea(attrs={"rows": 2, "cols": 110, "style": MONOSPACE}),
            "match_operations": forms.TextInput(attrs={"size": 40, "style": MONOSPACE}),
            "description": forms.Textarea(attrs={"rows": 2, "cols": 110}),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in ("targets", "match_operations"):  # an emptied box means an empty list, not null
            if name in data and data[name] is None:
                data[name] = []
        spec = {name: data.get(name) for name in services.FIELDS if name in data}
        others = [services.rule_as_spec(r) for r in Rule.objects.exclude(pk=self.instance.pk)]
        prefix = f"rules[{len(others)}]."
        for key, message in rule_set_errors([*others, spec]).items():
            if not key.startswith(prefix):
                continue
            field = key[len(prefix) :].split(".")[0].split("[")[0]
            self.add_error(field if field in self.fields else None, f"{key[len(prefix) :]}: {message}")
        return data


@admin.register(Rule)
class RuleAdmin(SimpleHistoryAdmin):  # type: ignore[misc]  # simple-history ships no types
    form = RuleForm
    list_display = ["order", "name", "enabled", "action", "match_source", "match_object_type", "updated_at"]
    list_display_links = ["name"]
    list_filter = ["enabled", "action", "match_source", "match_object_type"]
    search_fields = ["name", "description", "condition"]
    ordering = ["order", "name"]
    change_list_template = "admin/rules/rule/change_list.html"

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        spec = {name: getattr(obj, name) for name in services.FIELDS}
        if change and "name" in form.changed_data:
            services.rule_delete(name=form.initial["name"], actor=request.user.get_username())
        services.rule_upsert(spec=spec, actor=request.user.get_username())
        obj.pk = Rule.objects.get(name=obj.name).pk

    def delete_model(self, request: HttpRequest, obj: Rule) -> None:
        services.rule_delete(name=obj.name, actor=request.user.get_username())

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        for rule in queryset:
            services.rule_delete(name=rule.name, actor=request.user.get_username())

    def get_urls(self) -> list[URLPattern]:
        test = path("test/", self.admin_site.admin_view(self.test_view), name="rules_rule_test")
        return [test, *super().get_urls()]

    def test_view(self, request: HttpRequest) -> HttpResponse:
        """Run the rule set (as saved, or with a pasted draft) against a pasted event or the last N events."""
        form = dry_run.DryRunForm(request.POST or None)
        results = dry_run.run(form) if request.method == "POST" and form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Test the rules (dry run: nothing is written)",
            "form": form,
            "results": results,
            "opts": self.model._meta,
            "results_json": json.dumps(results, indent=2, default=str) if results else "",
        }
        return TemplateResponse(request, "admin/rules/rule/test.html", context)

from django.urls import path

from rules.views import RuleSetViewSet
from sync.api.views import (
    ConfigOverrideViewSet,
    ConnectionResumeViewSet,
    SyncEventDetailViewSet,
    SyncEventViewSet,
    SyncJobViewSet,
    SyncRetryViewSet,
    SyncStatsViewSet,
    SyncStatusViewSet,
)

urlpatterns = [
    path("", SyncEventViewSet.as_view({"post": "create"}), name="sync-ingest"),
    path("rules", RuleSetViewSet.as_view({"get": "rule_set", "post": "rule_set_update"}), name="sync-rules"),
    path(
        "config-override",
        ConfigOverrideViewSet.as_view({"get": "in_force", "post": "override"}),
        name="sync-config-override",
    ),
    path("retry/<str:record_id>", SyncRetryViewSet.as_view({"post": "retry"}), name="sync-retry"),
    path(
        "connections/<str:name>/resume",
        ConnectionResumeViewSet.as_view({"post": "resume"}),
        name="sync-connection-resume",
    ),
    path("status/<str:record_id>", SyncStatusViewSet.as_view({"get": "retrieve"}), name="sync-status"),
    path("jobs", SyncJobViewSet.as_view({"get": "jobs"}), name="sync-jobs"),
    path("stats", SyncStatsViewSet.as_view({"get": "stats"}), name="sync-stats"),
    path("events/<str:event_id>", SyncEventDetailViewSet.as_view({"get": "retrieve"}), name="sync-event"),
]

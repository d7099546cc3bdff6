from django.urls import path

from sync.views import SyncEventViewSet, SyncStatusViewSet

urlpatterns = [
    path("", SyncEventViewSet.as_view({"post": "create"}), name="sync-ingest"),
    path("status/<str:record_id>", SyncStatusViewSet.as_view({"get": "retrieve"}), name="sync-status"),
]

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from recordsync import health
from recordsync.scrape import metrics_view
from sync.api.views import WebhookViewSet

admin.site.site_header = admin.site.site_title = "Record Sync Service"
admin.site.site_url = "/docs"  # "View site" opens the API docs: there is no public site

urlpatterns = [
    path("", RedirectView.as_view(url="/docs", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("sync.api.dashboard_urls")),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs",
        login_required(SpectacularSwaggerView.as_view(url_name="schema"), login_url="admin:login"),
        name="docs",
    ),
    path("v1/sync/", include("sync.api.urls")),
    path("v1/crms/", include("crms.urls")),
    path("v1/webhooks/<str:connection>", WebhookViewSet.as_view({"post": "receive"}), name="webhook-receive"),
    # The local mock CRMs, one per package that declares one; every view answers 404 unless MOCK_CRMS_ENABLED.
    path("mock/", include("crms.mocks.urls")),
]

handler400 = "recordsync.errors.handler400"
handler403 = "recordsync.errors.handler403"
handler404 = "recordsync.errors.handler404"
handler500 = "recordsync.errors.handler500"

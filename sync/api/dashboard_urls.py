"""The staff dashboard, mounted at /dashboard/ (recordsync/urls.py)."""

from django.urls import path

from sync.api import dashboard

app_name = "dashboard"
urlpatterns = [
    path("", dashboard.overview, name="overview"),
    path("issues/", dashboard.issues, name="issues"),
    path("issues/retry", dashboard.retry, name="retry"),
]

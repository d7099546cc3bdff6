"""/mock/<kind>/…: each local mock CRM, as its package declares it. Every view answers 404 unless MOCK_CRMS_ENABLED."""

from django.urls import include, path

from crms.registry import mocks

urlpatterns = [path(f"{kind}/", include(mock.urls)) for kind, mock in mocks().items()]

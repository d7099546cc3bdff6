from django.urls import path

from crms.outreach import mock

urlpatterns = [
    path("oauth/authorize", mock.authorize),
    path("oauth/token", mock.token),
    path("api/v2", mock.root),
    path("api/v2/", mock.root),
    path("api/v2/<str:plural>", mock.collection),
    path("api/v2/<str:plural>/<str:record_id>", mock.member),
]

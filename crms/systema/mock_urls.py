from django.urls import path

from crms.systema import mock

urlpatterns = [
    path("health", mock.health),
    path("records/<str:object_type>", mock.records),
    path("records/<str:object_type>/<str:record_id>", mock.record),
]

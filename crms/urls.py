from django.urls import path

from crms.mocks.views import MockCrmViewSet
from crms.views import CrmViewSet

urlpatterns = [
    path("mock/<str:crm>/push", MockCrmViewSet.as_view({"post": "push"}), name="mock-push"),
    path("mock/<str:crm>/records", MockCrmViewSet.as_view({"get": "records"}), name="mock-records"),
    path("mock/<str:crm>/requests", MockCrmViewSet.as_view({"get": "requests"}), name="mock-requests"),
    path(
        "mock/<str:crm>/faults",
        MockCrmViewSet.as_view({"post": "faults_add", "delete": "faults_clear"}),
        name="mock-faults",
    ),
    path("available", CrmViewSet.as_view({"get": "available"}), name="crms-available"),
    path("<str:crm>/schema", CrmViewSet.as_view({"get": "kind_schema"}), name="crms-schema"),
]

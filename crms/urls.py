from django.urls import path

from crms.views import CrmViewSet

urlpatterns = [
    path("available", CrmViewSet.as_view({"get": "available"}), name="crms-available"),
    path("<str:crm>/schema", CrmViewSet.as_view({"get": "kind_schema"}), name="crms-schema"),
]

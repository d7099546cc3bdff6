from django.urls import path

from crms.hubspot import mock, mock_api

urlpatterns = [
    path("oauth/authorize", mock.authorize),
    path("oauth/v1/token", mock.token),
    path("oauth/v1/access-tokens/<str:access_token>", mock.access_token_info),
    path("crm/v3/objects/<str:obj>", mock_api.objects),
    path("crm/v3/objects/<str:obj>/search", mock_api.search),
    path("crm/v3/objects/<str:obj>/batch/<str:action>", mock_api.batch),
    path("crm/v3/objects/<str:obj>/<str:record_id>", mock_api.member),
    path("crm/v3/properties/<str:obj>", mock_api.properties),
    path("crm/v3/properties/<str:obj>/<str:name>", mock_api.property_member),
]

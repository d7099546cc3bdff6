from django.urls import path, re_path

from crms.salesforce import mock, mock_bulk

V = r"services/data/v(?P<version>\d+\.\d)"

urlpatterns = [
    path("services/oauth2/token", mock.token),
    re_path(rf"^{V}/limits/?$", mock.limits),
    re_path(rf"^{V}/composite/sobjects/?$", mock.collection),
    re_path(rf"^{V}/composite/sobjects/(?P<object_type>\w+)/?$", mock.collection_read),
    re_path(rf"^{V}/composite/sobjects/(?P<object_type>\w+)/(?P<key_field>\w+)/?$", mock.collection_upsert),
    re_path(rf"^{V}/sobjects/(?P<object_type>\w+)/describe/?$", mock.describe),
    re_path(rf"^{V}/sobjects/(?P<object_type>\w+)/deleted/?$", mock.deleted),
    re_path(rf"^{V}/sobjects/(?P<object_type>\w+)/(?P<key_field>\w+)/(?P<value>[^/]+)/?$", mock.upsert_by_external_id),
    re_path(rf"^{V}/jobs/ingest/?$", mock_bulk.jobs),
    re_path(rf"^{V}/jobs/ingest/(?P<job_id>\w+)/?$", mock_bulk.job),
    re_path(rf"^{V}/jobs/ingest/(?P<job_id>\w+)/batches/?$", mock_bulk.batches),
    re_path(
        rf"^{V}/jobs/ingest/(?P<job_id>\w+)/(?P<kind>successfulResults|failedResults|unprocessedrecords)/?$",
        mock_bulk.results,
    ),
    re_path(rf"^{V}/query/?$", mock.query),
    re_path(rf"^{V}/query/01gMOCK(?P<locator>[\w=-]+)/?$", mock.query),
]

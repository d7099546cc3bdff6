from django.urls import path, re_path

from crms.salesforce import mock, mock_bulk, mock_sobjects

V = r"services/data/v(?P<version>\d+\.\d)"
OBJ = r"(?P<object_type>\w+)"
JOB = r"(?P<job_id>\w+)"
RECORD_ID = r"(?P<record_id>[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?)"

urlpatterns = [
    path("services/oauth2/authorize", mock.authorize),
    path("services/oauth2/token", mock.token),
    re_path(r"^services/data/?$", mock.versions),
    re_path(rf"^{V}/?$", mock.resources),
    re_path(rf"^{V}/limits/?$", mock.limits),
    re_path(rf"^{V}/(?:query|queryAll)/?$", mock.query),
    re_path(rf"^{V}/(?:query|queryAll)/(?P<locator>01g\w+)-(?P<offset>\d+)/?$", mock.query),
    re_path(rf"^{V}/composite/sobjects/?$", mock_sobjects.collection),
    re_path(rf"^{V}/composite/sobjects/{OBJ}/?$", mock_sobjects.collection_object),
    re_path(rf"^{V}/composite/sobjects/{OBJ}/(?P<key_field>\w+)/?$", mock_sobjects.collection_upsert),
    re_path(rf"^{V}/sobjects/?$", mock_sobjects.global_describe),
    re_path(rf"^{V}/sobjects/{OBJ}/?$", mock_sobjects.sobject_root),
    re_path(rf"^{V}/sobjects/{OBJ}/describe/?$", mock_sobjects.describe),
    re_path(rf"^{V}/sobjects/{OBJ}/(?P<kind>updated|deleted)/?$", mock.replication),
    re_path(rf"^{V}/sobjects/{OBJ}/{RECORD_ID}/?$", mock_sobjects.record),
    re_path(rf"^{V}/sobjects/{OBJ}/(?P<key_field>\w+)/(?P<value>[^/]+)/?$", mock_sobjects.by_external_id),
    re_path(rf"^{V}/jobs/ingest/?$", mock_bulk.ingest_jobs),
    re_path(rf"^{V}/jobs/ingest/{JOB}/?$", mock_bulk.ingest_job),
    re_path(rf"^{V}/jobs/ingest/{JOB}/batches/?$", mock_bulk.ingest_batches),
    re_path(
        rf"^{V}/jobs/ingest/{JOB}/(?P<kind>successfulResults|failedResults|unprocessedrecords|unprocessedRecords)/?$",
        mock_bulk.ingest_results,
    ),
    re_path(rf"^{V}/jobs/query/?$", mock_bulk.query_jobs),
    re_path(rf"^{V}/jobs/query/{JOB}/?$", mock_bulk.query_job),
    re_path(rf"^{V}/jobs/query/{JOB}/results/?$", mock_bulk.query_results),
]

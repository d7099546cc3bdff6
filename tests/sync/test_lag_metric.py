"""The dispatcher's queue-lag line, in CloudWatch's embedded metric format (what deploy/aws scales on)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from sync.management.commands.sync_dispatch import lag_metric_log
from sync.models import SyncJob


@pytest.mark.django_db
def test_the_lag_line_names_the_oldest_due_jobs_wait_and_declares_the_metrics(api, connections, event, caplog):
    assert api.post("/v1/sync/", data=json.dumps(event), content_type="application/json").status_code == 202
    SyncJob.objects.update(updated_at=timezone.now() - timedelta(seconds=42))

    with caplog.at_level(logging.INFO, logger="recordsync.metrics"):
        fields = lag_metric_log()

    assert fields["DueJobs"] == 2 and 42 <= fields["QueueLagSeconds"] < 50
    (declared,) = fields["_aws"]["CloudWatchMetrics"]
    assert declared["Namespace"] == "RecordSync" and declared["Dimensions"] == [["Service"]]
    assert {m["Name"] for m in declared["Metrics"]} == {"QueueLagSeconds", "DueJobs"}
    (record,) = [r for r in caplog.records if r.name == "recordsync.metrics"]
    assert record.QueueLagSeconds == fields["QueueLagSeconds"]

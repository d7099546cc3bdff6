"""The batch baseline: psycopg executemany of the same event rows, one transaction per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from bench.loadgen import Client
from bench.rows import INSERT_EVENT_SQL, INSERT_JOB_SQL, event_row, job_rows, sample_event


@dataclass(frozen=True)
class InsertPlan:
    dsn: str
    tag: str
    batch_size: int
    job_targets: tuple[int, ...] = ()  # connection ids: also insert the app's job rows (for context)

    def connect(self, client_no: int) -> Client:
        return _InsertClient(self, client_no)


class _InsertClient:
    def __init__(self, plan: InsertPlan, client_no: int) -> None:
        self.plan = plan
        self.prefix = f"{plan.tag}-{client_no}"
        self.conn = psycopg.connect(plan.dsn)

    def send(self, n: int) -> tuple[int, bool]:
        # Rows are built inside the timed loop: the app builds its rows per request too.
        events = [event_row(sample_event(f"{self.prefix}-{n}-{i}"), "") for i in range(self.plan.batch_size)]
        jobs: list[tuple[Any, ...]] = [job for e in events for job in job_rows(e, list(self.plan.job_targets))]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(INSERT_EVENT_SQL, events)
            if jobs:
                cursor.executemany(INSERT_JOB_SQL, jobs)
        return len(events), True

    def close(self) -> None:
        self.conn.close()

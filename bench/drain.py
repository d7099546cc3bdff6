"""Drain benchmark: 20,000 events through the whole pipeline to the mock Salesforce, against the
same sObject Collections calls sent directly by a script with no queue or database, in one run.

Rerun: `make bench-drain` (about 2 minutes). Needs PostgreSQL and Redis like `make bench`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the bench package importable
    sys.path.insert(0, str(ROOT))

from bench import ingest  # noqa: E402

EVENTS = 20_000
LIST = 500  # events per POST /v1/sync/
COLLECTION = 200  # records per Collections call
KEY = "RecordSync_Id__c"
WORKERS = 2  # django-q2 workers, and the direct script's concurrent senders


def env_for(cfg: ingest.Config) -> dict[str, str]:
    env = ingest.server_env(cfg)
    env.update(
        MOCK_CRMS_ENABLED="1",
        MOCK_CRMS_FORCE="1",
        EGRESS_ALLOWED_NETWORKS="127.0.0.0/8",
        MOCK_SALESFORCE_DAILY_LIMIT="100000000",
        SYNC_FLUSH_INTERVAL="0",
        SYNC_BATCH_SIZE=str(COLLECTION),
        Q_WORKERS=str(WORKERS),
        ALLOWED_HOSTS="127.0.0.1",
    )
    return env


def connect_salesforce(env: dict[str, str], port: int) -> None:
    org = f"http://127.0.0.1:{port}/mock/salesforce"
    code = (
        "from crms.salesforce import mock as s; from crms.services import connection_save; "
        "from rules.services import rule_set_replace; rule_set_replace(specs=[], actor='bench'); "
        "from crms.models import Connection; Connection.objects.exclude(name='salesforce').delete(); "
        "connection_save(name='salesforce', kind='salesforce', "
        f"config={{'login_url': '{org}', 'instance_url': '{org}', 'auth': 'client_credentials', "
        "'client_id': s.app_client_id(), 'external_id_field': 'RecordSync_Id__c'}, "
        "secrets={'client_secret': s.app_client_secret()})"
    )
    ingest.manage(env, "shell", "-c", code)


def records(count: int, prefix: str) -> list[dict[str, Any]]:
    return [{"LastName": f"L{i}", "Email": f"{prefix}{i}@example.com", KEY: f"{prefix}{i}"} for i in range(count)]


def direct(port: int, env: dict[str, str]) -> float:
    """The baseline: log in once, then the Collections upserts, WORKERS at a time; events/s."""
    base = f"http://127.0.0.1:{port}/mock/salesforce"
    form = {
        "grant_type": "client_credentials",
        "client_id": env.get("MOCK_SALESFORCE_CLIENT_ID", "recordsync-mock"),
        "client_secret": env.get("MOCK_SALESFORCE_CLIENT_SECRET", "mock-only-secret"),
    }
    login = requests.post(f"{base}/services/oauth2/token", timeout=10, data=form)
    token = login.json()["access_token"]
    rows = records(EVENTS, "direct-")
    chunks = [rows[i : i + COLLECTION] for i in range(0, len(rows), COLLECTION)]
    session = requests.Session()

    def send(chunk: list[dict[str, Any]]) -> None:
        answer = session.patch(
            f"{base}/services/data/v62.0/composite/sobjects/Contact/{KEY}",
            timeout=60,
            json={"allOrNone": False, "records": chunk},
            headers={"Authorization": f"Bearer {token}"},
        )
        answer.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(send, chunks))
    return EVENTS / (time.perf_counter() - started)


@contextmanager
def process(env: dict[str, str], *args: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ingest.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def pipeline(cfg: ingest.Config, env: dict[str, str], port: int, token: str) -> tuple[float, int]:
    """POST the events in lists, with the worker and dispatcher running; events/s until all synced."""
    url = f"http://127.0.0.1:{port}/v1/sync/"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    events = [
        {
            "operation": "create",
            "record_id": f"p-{i}",
            "object_type": "Contact",
            "data": {"LastName": f"L{i}", "Email": f"p-{i}@example.com"},
        }
        for i in range(EVENTS)
    ]
    with process(env, "sync_cluster"), process(env, "sync_dispatch"):
        started = time.perf_counter()
        for i in range(0, EVENTS, LIST):
            requests.post(url, data=json.dumps(events[i : i + LIST]), headers=headers, timeout=120).raise_for_status()
        synced = 0
        deadline = time.monotonic() + 600
        while synced < EVENTS and time.monotonic() < deadline:
            time.sleep(0.25)
            with psycopg.connect(cfg.db_url) as conn:
                row = conn.execute("SELECT count(*) FROM sync_syncjob WHERE state = 'synced'").fetchone()
                synced = int(row[0]) if row else 0
        return EVENTS / (time.perf_counter() - started), synced


def throttle_acquire(env: dict[str, str]) -> dict[str, float]:
    """p50/p99 of one acquire against local Redis (a window that never fills)."""
    code = (
        "import time, statistics, json\nfrom sync.delivery.throttle import RedisThrottle\n"
        "t = RedisThrottle(); xs = []\n"
        "for i in range(5000):\n    s = time.perf_counter(); t.acquire('bench-drain', 10**9, 60); "
        "xs.append((time.perf_counter() - s) * 1e6)\nxs.sort(); "
        "print(json.dumps({'p50_us': xs[len(xs)//2], 'p99_us': xs[int(len(xs)*0.99)]}))"
    )
    return dict(json.loads(ingest.manage(env, "shell", "-c", code).strip().splitlines()[-1]))


def count_mock(cfg: ingest.Config, prefix: str) -> int:
    with psycopg.connect(cfg.db_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT fields->>%s) FROM crms_mockrecord WHERE fields->>%s LIKE %s",
            [KEY, KEY, f"{prefix}%"],
        ).fetchone()
        return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    ingest.add_arguments(parser)
    parser.set_defaults(db="recordsync_bench_drain")
    cfg = ingest.config_from(parser, parser.parse_args(argv))
    env = env_for(cfg)
    ingest.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    ingest.recreate_database(cfg)
    ingest.manage(env, "migrate", "--noinput")
    token = ingest.manage(env, "create_api_token", "bench", "--staff").strip().splitlines()[-1]
    with ingest.gunicorn(cfg, ingest.APP_WSGI, env, "drain") as port:
        connect_salesforce(env, port)
        baseline = statistics.median(direct(port, env) for _ in range(1))
        app, synced = pipeline(cfg, env, port, token)
    acquire = throttle_acquire(env)
    unique = count_mock(cfg, "p-")
    ratio = app / baseline
    lines = [
        "| Path | Events | Events/s |",
        "| --- | ---: | ---: |",
        f"| Direct Collections calls, {WORKERS} at a time (baseline) | {EVENTS:,} | {baseline:,.0f} |",
        f"| Pipeline: POST /v1/sync/ lists of {LIST}, dispatcher, {WORKERS} workers, connector "
        f"| {EVENTS:,} | {app:,.0f} |",
        "",
        f"Pipeline / baseline: **{ratio:.0%}** (aim ≥ 50%: {'met' if ratio >= 0.5 else 'not met'}). "
        f"Jobs synced: {synced:,} of {EVENTS:,}; distinct records in the mock: {unique:,} (none created twice).",
        "",
        f"Throttle acquire against local Redis: p50 {acquire['p50_us']:.0f} µs, p99 {acquire['p99_us']:.0f} µs.",
    ]
    print("\n".join(lines))
    (ingest.RESULTS_DIR / f"drain-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text("\n".join(lines) + "\n")
    return 0 if synced == EVENTS and unique == EVENTS else 1


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark (issue 18): flat cost from an empty database to a million records, throughput against the
number of workers, the rate limit used but never exceeded, and live changes on time behind a backfill.

    make bench-scale                      # everything, about 25 minutes on the 2-core machine
    .venv/bin/python bench/scale.py --only flat,workers --rows 200000    # a part, smaller

Needs PostgreSQL and Redis (the bench database is recreated; Redis keys are this run's own). The CRM is
bench/fakecrm.py in its own process, in memory, so what is measured is our pipeline, not a mock's writes.
Every figure is measured in this run, beside its baseline; the report goes to bench/results/scale-*.md and
the plots to docs/bench/*.png (committed with docs/BENCHMARKS.md).

Parts (--only):
  baselines  single events against the bare Django view and lists of 500 against psycopg executemany, in
             interleaved rounds, as bench/ingest.py measures them (aim: singles at 50 % of the bare view)
  flat       empty tables, then 1,000,000 finished records loaded server-side (bench/scale_load.py): single and
             list ingest, dispatch (the engine's claim), drain of 20,000 events, claim and status times, every
             GET /v1/sync/jobs filter and the dashboard's pages at p99 with EXPLAIN ANALYZE; ratios history/empty
  workers    drain events/s with 1, 2, 4 and 8 workers (and 2 clusters x 4 with 2 dispatchers) against the fake
             at 300 ms a call and no limit
  ratelimit  a backlog against the fake limited to N calls per W: the fake's log must show no window over N and
             at least 90 % of the allowance used
  lanes      50,000 records backfilled by sync_backfill at the limit; live changes posted meanwhile: each one's
             delay from accepted to synced (aim: the flush interval plus two seconds)
  memory     RSS of the web and worker processes through a long drain, sampled every second
  retention  a steady load replayed day by day on a moved clock, pruned each day: table sizes per day
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the bench package importable
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402

from bench import ingest, loadgen  # noqa: E402
from bench.scale_load import load_history  # noqa: E402

PLOTS = ROOT / "docs" / "bench"
KEY = "RecordSync_Id__c"
PARTS = ("baselines", "flat", "workers", "ratelimit", "lanes", "memory", "retention")


@dataclass
class Run:
    cfg: ingest.Config
    rows: int
    events: int
    seconds: int
    backfill: int = 50_000
    results: dict[str, Any] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        # One environment for the whole run: server_env draws a new secrets key each call, and a process
        # with another key could not read the connection's secrets.
        self.base = self.base or ingest.server_env(self.cfg)
        env = dict(self.base)
        defaults = {"EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8", "SYNC_FLUSH_INTERVAL": "0", "SYNC_BATCH_SIZE": "200"}
        env.update({**defaults, "Q_WORKERS": "2", **extra})
        return env


def log(message: str) -> None:
    ingest.log(message)


# --- processes ---------------------------------------------------------------------------------------


@contextmanager
def process(args: list[str], env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session (stopped with its children), its output in bench/results/<name>.log."""
    with (ingest.RESULTS_DIR / f"scale-{name}.log").open("ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def fake_crm(*, latency: float = 0.0, limit: int = 0, window: float = 10.0) -> Iterator[str]:
    port = ingest.free_port()
    args = [sys.executable, "bench/fakecrm.py", "--port", str(port), "--latency", str(latency)]
    args += ["--limit", str(limit), "--window", str(window)]
    with process(args, dict(os.environ), "fakecrm"):
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"{url}/_fake/stats", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url


@contextmanager
def cluster(run: Run, env: dict[str, str], *, clusters: int = 1, dispatchers: int = 1) -> Iterator[list[int]]:
    """`clusters` django-q2 clusters and `dispatchers` dispatchers on one queue, as separate machines would run
    them; yields their pids."""
    with ExitStack() as stack:
        pids = []
        for n in range(clusters):
            proc = stack.enter_context(process([sys.executable, "manage.py", "sync_cluster"], env, f"cluster{n}"))
            pids.append(proc.pid)
        for n in range(dispatchers):
            args = [sys.executable, "manage.py", "sync_dispatch", "--interval", "0.25"]
            pids.append(stack.enter_context(process(args, env, f"dispatch{n}")).pid)
        yield pids


def connect(run: Run, env: dict[str, str], url: str, **config: Any) -> None:
    """The bench's one target, `salesforce`, pointed at the fake; no rules (default routing)."""
    extra = {"login_url": url, "instance_url": url, "auth": "client_credentials", "client_id": "bench"}
    extra.update({"external_id_field": KEY, **config})
    code = (
        "from crms.services import connection_save; from rules.services import rule_set_replace; "
        "from crms.models import Connection; rule_set_replace(specs=[], actor='bench'); "
        "Connection.objects.exclude(name='salesforce').delete(); "
        f"connection_save(name='salesforce', kind='salesforce', config={extra!r}, "
        "secrets={'client_secret': 'bench'}, quota_owner='org-bench')"
    )
    ingest.manage(env, "shell", "-c", code)


def override(env: dict[str, str], **values: int) -> None:
    code = (
        "from sync.ops.config_services import config_override_set; "
        f"config_override_set(values={values!r}, connection='salesforce', actor='bench')"
    )
    ingest.manage(env, "shell", "-c", code)


def sql(run: Run, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(run.cfg.db_url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []


def count(run: Run, where: str) -> int:
    return int(sql(run, f"SELECT count(*) FROM sync_syncjob WHERE {where}")[0][0])  # noqa: S608 - ours


def fresh_database(run: Run, env: dict[str, str]) -> str:
    ingest.recreate_database(run.cfg)
    ingest.manage(env, "migrate", "--noinput")
    ingest.manage(env, "collectstatic", "--noinput")  # the dashboard's pages, with DEBUG off, need the manifest
    ingest.clean_redis(run.cfg)
    return ingest.manage(env, "create_api_token", "bench", "--staff").strip().splitlines()[-1]


def forget_new(run: Run, *, truncate: bool = False) -> None:
    """Drop what a phase added (everything but the loaded history), so the next starts alike.

    `truncate` (a database without history): the tables are truncated, the state of a fresh install, as before
    the first round. Emptied by DELETE and VACUUM ANALYZE they were recorded as holding no rows, and PostgreSQL
    planned the next round's foreign-key checks for a near-empty table and kept those plans as the round filled
    it (auto_explain: `Seq Scan on sync_syncevent` for each job's check, 100 ms each): lists on the empty
    database ran at a third of their first round's rate, and every ratio against it was flattered."""
    if truncate:
        sql(run, "TRUNCATE sync_syncattempt, sync_recordlink, sync_syncjob, sync_syncevent CASCADE")
        ingest.clean_redis(run.cfg)
        return
    sql(
        run,
        "DELETE FROM sync_syncattempt WHERE job_id IN (SELECT id FROM sync_syncjob WHERE record_id NOT LIKE 'hist-%%')",
    )
    sql(run, "DELETE FROM sync_recordlink WHERE record_id NOT LIKE 'hist-%%'")
    sql(run, "DELETE FROM sync_syncjob WHERE record_id NOT LIKE 'hist-%%'")
    sql(run, "DELETE FROM sync_syncevent WHERE record_id NOT LIKE 'hist-%%'")
    sql(run, "VACUUM ANALYZE sync_syncevent, sync_syncjob, sync_syncattempt, sync_recordlink")
    ingest.clean_redis(run.cfg)


def events(prefix: str, count_: int) -> list[dict[str, Any]]:
    return [
        {
            "operation": "create",
            "record_id": f"{prefix}{n}",
            "object_type": "Contact",
            "data": {"LastName": f"L{n}", "Email": f"{prefix}{n}@example.com"},
        }
        for n in range(count_)
    ]


def post_all(port: int, token: str, items: list[dict[str, Any]], clients: int = 2) -> None:
    url = f"http://127.0.0.1:{port}/v1/sync/"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    chunks = [items[i : i + 500] for i in range(0, len(items), 500)]

    def send(chunk: list[dict[str, Any]]) -> None:
        requests.post(url, data=json.dumps(chunk), headers=headers, timeout=120).raise_for_status()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, chunks))


# The states job_open_idx holds: the few jobs still to be sent.
OPEN = "state IN ('pending', 'in_flight', 'retrying', 'failed', 'held')"


def wait_synced(run: Run, where: str, total: int, seconds: float = 900) -> float:
    """Seconds until `total` jobs matching `where` are synced.

    Polled ten times a second, so the poll must cost the same whatever the history: it counts the jobs still
    open (read from job_open_idx, which holds only those) and counts the synced ones only once none is open.
    Counting `state = 'synced'` at each poll scanned the million finished jobs of the history (a parallel scan,
    60-90 ms, both cores), and the benchmark's own poll took 2.4 s of PostgreSQL's time in a drain of 9.7 s
    that it was measuring (pg_stat_statements), a handicap the empty tables did not have."""
    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    while count(run, f"{OPEN} AND {where}") or count(run, f"state = 'synced' AND {where}") < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {total} jobs ({where}) synced within {seconds:.0f} s")
        time.sleep(0.1)
    return time.perf_counter() - started


def probe(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "bench/scale_probe.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- baselines ---------------------------------------------------------------------------------------


def part_baselines(run: Run) -> None:
    """bench/ingest.py's phases on this run's database: the app beside a bare Django view and executemany."""
    env = run.env()
    token = ingest.prepare_database(run.cfg, env)
    try:
        phases = ingest.run_phases(run.cfg, env, token)
    finally:
        ingest.clean_redis(run.cfg)
    by_key = {phase.key: phase for phase in phases}
    found: dict[str, Any] = {"rounds": run.cfg.rounds, "seconds": run.cfg.seconds, "clients": run.cfg.clients}
    for key, metric in (("single_app", "requests_per_s"), ("single_bare", "requests_per_s")):
        found[key] = round(by_key[key].median(metric), 1)
    for key in ("batch_app", "batch_insert"):
        found[key] = round(by_key[key].median("events_per_s"), 1)
    found["single_ratio"] = round(found["single_app"] / found["single_bare"], 3)
    found["list_ratio"] = round(found["batch_app"] / found["batch_insert"], 3)
    found["single_per_round"] = [round(r.load.requests_per_s, 1) for r in by_key["single_app"].rounds]
    found["bare_per_round"] = [round(r.load.requests_per_s, 1) for r in by_key["single_bare"].rounds]
    log(f"baselines: singles {found['single_ratio']:.0%} of the bare view, lists {found['list_ratio']:.0%}")
    run.results["baselines"] = found


# --- flat cost ---------------------------------------------------------------------------------------


def direct_baseline(url: str, count_: int, workers: int, size: int) -> float:
    """The same Collections upserts sent straight to the fake, `workers` at a time: events/s."""
    login = requests.post(
        f"{url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "bench", "client_secret": "bench"},
        timeout=10,
    )
    token = login.json()["access_token"]
    rows = [{"LastName": f"L{i}", "Email": f"d{i}@example.com", KEY: f"direct-{i}"} for i in range(count_)]
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    session = requests.Session()

    def send(chunk: list[dict[str, Any]]) -> None:
        answer = session.patch(
            f"{url}/services/data/v62.0/composite/sobjects/Contact/{KEY}",
            json={"allOrNone": False, "records": [{"attributes": {"type": "Contact"}, **r} for r in chunk]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        answer.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, chunks))
    return count_ / (time.perf_counter() - started)


FLAT_ROUNDS = 5  # interleaved rounds of the rates, empty and history side by side


@dataclass
class State:
    """One database state of the flat part, served for the whole part: its run, gunicorn port and token."""

    label: str
    run: Run
    env: dict[str, str]
    token: str
    port: int = 0
    history: int = 0
    loaded: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0


def flat_prepare(run: Run, label: str, history: int, url: str) -> State:
    """A fresh database pointed at the fake, with `history` finished records loaded server-side."""
    env = run.env()
    state = State(label, run, env, fresh_database(run, env), history=history)
    connect(run, env, url)
    if history:
        started = time.perf_counter()
        target = int(sql(run, "SELECT id FROM crms_connection WHERE name = 'salesforce'")[0][0])
        state.loaded = load_history(run.cfg.db_url, rows=history, target_id=target)
        state.load_seconds = round(time.perf_counter() - started, 1)
        log(f"{label}: loaded {state.loaded} in {state.load_seconds} s")
    return state


def flat_rates(state: State, *, keep: bool = False) -> dict[str, Any]:
    """One round of the rates on one state: singles, lists, the claim of 20,000 jobs and a drain of as many.
    What the round added is dropped after it (`keep`: not the drained records, for the status request)."""
    run, env, token, label = state.run, state.env, state.token, state.label
    app = loadgen.Endpoint("127.0.0.1", state.port, ingest.INGEST_PATH, token)
    single = loadgen.run_single(app, run.cfg.clients, run.seconds, f"{label}-single", run.cfg.use_wrk)
    lists = loadgen.run_closed_loop(loadgen.HttpPlan(app, f"{label}-list", 500), 2, run.seconds)
    found: dict[str, Any] = {
        "single_events_per_s": round(single.requests_per_s, 1),
        "single_p99_ms": round(single.p99_ms, 2),
        "list_events_per_s": round(lists.events_per_s, 1),
    }
    forget_new(run, truncate=not state.history)
    post_all(state.port, token, events("d-", run.events))
    found["dispatch"] = probe(env, "dispatch", "salesforce")
    forget_new(run, truncate=not state.history)
    with cluster(run, env):
        time.sleep(3)  # the workers start
        started = time.perf_counter()
        post_all(state.port, token, events("p-", run.events))
        wait_synced(run, "record_id LIKE 'p-%%'", run.events)
        found["drain_events_per_s"] = round(run.events / (time.perf_counter() - started), 1)
    if not keep:
        forget_new(run, truncate=not state.history)
    log(
        f"{label}: singles {found['single_events_per_s']:.0f}/s, lists {found['list_events_per_s']:.0f} events/s, "
        f"claim {found['dispatch']['jobs_per_s']:.0f} jobs/s, drain {found['drain_events_per_s']}/s"
    )
    return found


RATES = ("single_events_per_s", "list_events_per_s", "drain_events_per_s")


def flat_summary(state: State, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of a state's rounds under the keys the report reads; the claim's details from its median
    round; the status request, the pages and the direct calls measured once."""
    found: dict[str, Any] = {"history": state.history, "events": state.run.events, "rounds": rounds}
    found.update({key: statistics.median(r[key] for r in rounds) for key in (*RATES, "single_p99_ms")})
    claims = sorted(rounds, key=lambda r: r["dispatch"]["jobs_per_s"])
    found["dispatch"] = claims[len(claims) // 2]["dispatch"]
    if state.history:
        found.update(loaded=state.loaded, load_seconds=state.load_seconds)
    return found


def part_flat(run: Run) -> None:
    """Empty tables and a million finished records, served side by side and measured in interleaved rounds
    (the order alternating), so that the machine's own swings in speed fall on both states alike: one state
    measured minutes after the other gave ratios from 71 % to 176 % for the same code."""
    cfg = run.cfg
    other = replace(cfg, db=f"{cfg.db}_empty", redis_url=cfg.redis_url.rsplit("/", 1)[0] + "/14")
    empty_run = Run(cfg=other, rows=0, events=run.events, seconds=run.seconds)
    with fake_crm() as url, ExitStack() as servers:
        states = [flat_prepare(empty_run, "empty", 0, url), flat_prepare(run, "history", run.rows, url)]
        for state in states:
            state.port = servers.enter_context(
                ingest.gunicorn(state.run.cfg, ingest.APP_WSGI, state.env, f"scale-{state.label}")
            )
        pages = {state.label: probe(state.env, "pages", "30", state.token) for state in states}
        rounds: dict[str, list[dict[str, Any]]] = {state.label: [] for state in states}
        for n in range(FLAT_ROUNDS):
            last = n == FLAT_ROUNDS - 1
            for state in states if n % 2 == 0 else states[::-1]:
                rounds[state.label].append(flat_rates(state, keep=last))
        found = {state.label: flat_summary(state, rounds[state.label]) for state in states}
        for state in states:
            # Records that exist: the history's, or (empty) the ones the last drain wrote.
            prefix, records = ("hist-", state.history) if state.history else ("p-", run.events)
            found[state.label]["status"] = probe(state.env, "status", "200", state.token, prefix, str(records))
            found[state.label]["pages"] = pages[state.label]
            found[state.label]["direct_events_per_s"] = round(direct_baseline(url, run.events, 2, 200), 1)
    empty, full = found["empty"], found["history"]
    # Each ratio is the median of the rounds' ratios: a round's two states were measured a minute apart.
    paired = list(zip(empty["rounds"], full["rounds"], strict=True))
    ratios = {key: round(statistics.median(h[key] / e[key] for e, h in paired), 3) for key in RATES}
    ratios["dispatch_jobs_per_s"] = round(
        statistics.median(h["dispatch"]["jobs_per_s"] / e["dispatch"]["jobs_per_s"] for e, h in paired), 3
    )
    run.results["flat"] = {"empty": empty, "history": full, "ratios": ratios, "rounds": FLAT_ROUNDS}


# --- workers ----------------------------------------------------------------------------------------


def drain_with(run: Run, url: str, token: str, count_: int, *, workers: int, clusters: int = 1) -> float:
    env = run.env(Q_WORKERS=str(workers), SYNC_BATCH_SIZE="50")
    forget_new(run)
    sql(run, "TRUNCATE sync_syncattempt, sync_recordlink, sync_syncjob, sync_syncevent CASCADE")
    requests.post(f"{url}/_fake/reset", timeout=5)
    with ingest.gunicorn(run.cfg, ingest.APP_WSGI, env, "scale-workers") as port:
        post_all(port, token, events(f"w{workers}x{clusters}-", count_))
    with cluster(run, env, clusters=clusters, dispatchers=clusters):
        seconds = wait_synced(run, "TRUE", count_)
    calls = requests.get(f"{url}/_fake/log", timeout=10).json()["calls"]
    writes = sorted(c[0] for c in calls if c[2] == "PATCH")
    # From the first write to the last: the cluster's start-up is not the drain's rate.
    span = (writes[-1] - writes[0]) if len(writes) > 1 else seconds
    return count_ / max(span, 1e-6)


def part_workers(run: Run) -> None:
    env = run.env()
    token = fresh_database(run, env)
    found: dict[str, Any] = {"latency_s": 0.3, "batch": 50, "events": run.events // 4}
    with fake_crm(latency=0.3) as url:
        connect(run, env, url)
        for workers in (1, 2, 4, 8):
            found[f"{workers}"] = round(drain_with(run, url, token, found["events"], workers=workers), 1)
            log(f"workers {workers}: {found[str(workers)]} events/s")
        found["2x4"] = round(drain_with(run, url, token, found["events"], workers=4, clusters=2), 1)
        log(f"2 clusters x 4 workers, 2 dispatchers: {found['2x4']} events/s")
        # The same Collections calls sent straight to the fake, 2 at a time: the drain's baseline as bench/drain.py
        # measures it, here with a target's latency instead of a mock's database writes.
        found["direct_2"] = round(direct_baseline(url, found["events"], 2, found["batch"]), 1)
        log(f"direct calls, 2 at a time: {found['direct_2']} events/s")
    run.results["workers"] = found


# --- the rate limit ---------------------------------------------------------------------------------


def windows(times: list[float], window: float, limit: int) -> tuple[int, float]:
    """The busiest window's calls, and the mean share of the allowance used by windows inside the backlog."""
    from bisect import bisect_left

    busiest = max(bisect_left(times, start + window) - i for i, start in enumerate(times))
    starts = [times[0] + step / 100 for step in range(int((times[-1] - window - times[0]) * 100) + 1)]
    used = sum(bisect_left(times, s + window) - bisect_left(times, s) for s in starts) / (len(starts) * limit)
    return busiest, used


def part_ratelimit(run: Run) -> None:
    limit, window = 20, 5
    env = run.env(SYNC_BATCH_SIZE="10", Q_WORKERS="4")
    token = fresh_database(run, env)
    count_ = 1500  # 150 calls: 37 s at 20 per 5 s
    with fake_crm(latency=0.05, limit=limit, window=window) as url:
        connect(run, env, url)
        override(env, rate_limit_calls=limit, rate_limit_window=window)
        with ingest.gunicorn(run.cfg, ingest.APP_WSGI, env, "scale-ratelimit") as port:
            post_all(port, token, events("r-", count_))
        with cluster(run, env):
            wait_synced(run, "TRUE", count_)
        calls = requests.get(f"{url}/_fake/log", timeout=10).json()["calls"]
    writes = sorted(c[0] for c in calls if c[2] == "PATCH")
    refused = sum(1 for c in calls if c[4] == 429)
    busiest, used = windows(writes, window, limit)
    run.results["ratelimit"] = {
        "limit": limit,
        "window": window,
        "calls": len(writes),
        "refused_429": refused,
        "busiest_window": busiest,
        "used_share": round(used, 3),
        "times": writes,
    }
    log(f"rate limit {limit}/{window}s: busiest {busiest}, used {used:.1%}, 429s {refused}")


# --- lanes ------------------------------------------------------------------------------------------


def part_lanes(run: Run) -> None:
    limit, window, flush = 10, 2, 1
    backfill = run.backfill
    env = run.env(SYNC_BATCH_SIZE="5", Q_WORKERS="2")
    token = fresh_database(run, env)
    found: dict[str, Any] = {"limit": limit, "window": window, "flush_interval": flush, "backfill": backfill}
    with fake_crm(latency=0.1, limit=limit, window=window) as url:
        connect(run, env, url, bulk_threshold=backfill * 2)
        sql(run, "UPDATE crms_connection SET enabled = false WHERE name = 'salesforce'")
        with ingest.gunicorn(run.cfg, ingest.APP_WSGI, env, "scale-lanes") as port:
            post_all(port, token, events("bf-", backfill))  # System A's history, routed nowhere yet
            sql(run, "UPDATE crms_connection SET enabled = true WHERE name = 'salesforce'")
            override(env, rate_limit_calls=limit, rate_limit_window=window, flush_interval=flush, batch_size=5)
            started = time.perf_counter()
            ingest.manage(env, "sync_backfill", "--from", "system_a", "--to", "salesforce", "--object", "Contact")
            found["backfill_queued_s"] = round(time.perf_counter() - started, 1)
            with cluster(run, env):
                time.sleep(10)  # the backfill sending at the limit
                delays = []
                for n in range(10):
                    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
                    body = json.dumps(events(f"live-{n}-", 1)[0])
                    requests.post(f"http://127.0.0.1:{port}/v1/sync/", data=body, headers=headers, timeout=10)
                    record = f"live-{n}-0"
                    wait_synced(run, f"record_id = '{record}'", 1, seconds=60)
                    row = sql(
                        run,
                        "SELECT extract(epoch FROM j.synced_at - e.received_at) FROM sync_syncjob j "
                        "JOIN sync_syncevent e ON e.id = j.last_event_id WHERE j.record_id = %s",
                        [record],
                    )
                    delays.append(round(float(row[0][0]), 2))
                    time.sleep(1.3)
                found["backfill_synced_meanwhile"] = count(run, "state = 'synced' AND record_id LIKE 'bf-%%'")
        calls = requests.get(f"{url}/_fake/log", timeout=10).json()["calls"]
    writes = sorted(c[0] for c in calls if c[2] == "PATCH")
    found["busiest_window"], _ = windows(writes, window, limit)
    found["refused_429"] = sum(1 for c in calls if c[4] == 429)
    found["delays_s"] = delays
    found["max_delay_s"] = max(delays)
    run.results["lanes"] = found
    log(f"lanes: delays {delays} (aim <= {flush + 2} s), busiest window {found['busiest_window']}/{limit}")


# --- memory -----------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [root], {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found


def part_memory(run: Run) -> None:
    total = run.events * 5
    env = run.env(Q_WORKERS="2")
    token = fresh_database(run, env)
    samples: list[tuple[float, int, int]] = []
    with fake_crm() as url:
        connect(run, env, url)
        with ingest.gunicorn(run.cfg, ingest.APP_WSGI, env, "scale-memory") as port, cluster(run, env) as pids:
            web = [p for p in tree(os.getpid()) if "gunicorn" in _cmdline(p)]
            started = time.perf_counter()
            with ThreadPoolExecutor(1) as pool:
                posting = pool.submit(post_all, port, token, events("m-", total), 1)
                while not (posting.done() and count(run, "state = 'synced'") >= total):
                    at = time.perf_counter() - started
                    samples.append(
                        (round(at, 1), sum(rss_kib(p) for p in web), sum(rss_kib(p) for r in pids for p in tree(r)))
                    )
                    if at > 1800:
                        raise RuntimeError("the long drain did not finish in 30 minutes")
                    time.sleep(1)
                posting.result()
    run.results["memory"] = {"events": total, "samples": samples}
    first, last = samples[0], samples[-1]
    log(f"memory: web {first[1] // 1024} -> {last[1] // 1024} MiB, workers {first[2] // 1024} -> {last[2] // 1024} MiB")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# --- retention --------------------------------------------------------------------------------------


def part_retention(run: Run) -> None:
    env = run.env(SYNC_RETENTION_DAYS="3", SYNC_IDEMPOTENCY_WINDOW_DAYS="1")
    fresh_database(run, env)
    found = probe(env, "retention", "12", str(run.events), "3")
    run.results["retention"] = found
    log(f"retention: events per day {[d['events'] for d in found['days']]}")


# --- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_arguments(parser)
    parser.set_defaults(db="recordsync_bench_scale")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished records loaded for the flat part")
    parser.add_argument("--events", type=int, default=20_000, help="new events per drain")
    parser.add_argument("--backfill", type=int, default=50_000, help="records backfilled in the lanes part")
    args = parser.parse_args(argv)
    cfg = ingest.config_from(parser, args)
    run = Run(cfg=cfg, rows=args.rows, events=args.events, seconds=cfg.seconds, backfill=args.backfill)
    ingest.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    todo: dict[str, Callable[[Run], None]] = {
        "baselines": part_baselines,
        "flat": part_flat,
        "workers": part_workers,
        "ratelimit": part_ratelimit,
        "lanes": part_lanes,
        "memory": part_memory,
        "retention": part_retention,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in args.only.split(","):
        log(f"part {name}")
        started = time.monotonic()
        todo[name](run)
        run.results.setdefault("seconds", {})[name] = round(time.monotonic() - started)
        (ingest.RESULTS_DIR / f"scale-{stamp}.json").write_text(json.dumps(run.results, indent=1, default=str))
    from bench import scale_report

    text = scale_report.markdown(run.results, ingest.machine_info(cfg, ingest._git_revision()))
    scale_report.plots(run.results, PLOTS)
    (ingest.RESULTS_DIR / f"scale-{stamp}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

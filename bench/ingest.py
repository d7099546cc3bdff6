"""Ingest benchmark: POST /v1/sync/ under gunicorn on PostgreSQL, against baselines from the same run.

    make bench            # or: .venv/bin/python bench/ingest.py --help

1. Recreates the bench database (default recordsync_bench), migrates it, loads the demo
   connections and makes an API token.
2. Starts two gunicorns with the same config: the real app (recordsync.wsgi) and a bare Django
   view that inserts the same event row (bench.bare_wsgi).
3. Measures, in interleaved rounds: single events to the app and to the bare view (requests/s,
   p50, p99; wrk if installed, else Python clients), lists of 500 to the app (events/s), and
   psycopg executemany of the same rows, 500 per transaction (events/s).
4. Stops both servers (also on errors and Ctrl-C), prints the tables and writes them, with raw
   JSON, to bench/results/ (gitignored).

See docs/BENCHMARKS.md for what the figures mean and the last recorded run.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import importlib.metadata
import json
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the bench package importable
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402
from psycopg import sql  # noqa: E402

from bench import loadgen, report  # noqa: E402
from bench.plain_insert import InsertPlan  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
APP_WSGI = "recordsync.wsgi:application"
BARE_WSGI = "bench.bare_wsgi:application"
INGEST_PATH = "/v1/sync/"
BATCH_SIZE = 500  # the API's maximum list length
Q_CLUSTER_NAME = "recordsync_bench"  # names this run's Redis keys so they can be removed after
# wrk stops with requests still queued in gunicorn's backlog; let them land before counting rows.
_DRAIN_S = 0.5


@dataclass(frozen=True)
class Config:
    db: str
    pg_url: str  # server URL without a database name
    redis_url: str
    workers: int
    worker_class: str
    threads: int
    clients: int
    batch_clients: int
    seconds: int
    rounds: int
    warmup: int
    use_wrk: bool

    @property
    def db_url(self) -> str:
        return f"{self.pg_url}/{self.db}"

    @property
    def server(self) -> str:
        threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"gunicorn {self.workers} {self.worker_class} workers{threads}"


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return config_from(parser, parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Config; bench/rules.py adds them to its own parser too."""
    parser.add_argument("--db", default=os.environ.get("BENCH_DB", "recordsync_bench"), help="dropped and recreated")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    # 2 cores shared by gunicorn, PostgreSQL and the load generator: three sync workers keep both
    # cores busy while one worker waits on the database, without thrashing.
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=2, help="per worker, gthread only")
    # Twice the workers for single events: gunicorn's sync worker closes the connection after
    # each answer, so a client spends part of each cycle reconnecting; the spare ones keep every
    # worker busy. Batches: one client per worker, so the app and executemany get the same
    # number of concurrent database sessions.
    parser.add_argument("--clients", type=int, help="concurrent single-event connections (default 2 x workers)")
    parser.add_argument(
        "--batch-clients", type=int, help="concurrent batch clients / insert sessions (default workers)"
    )
    parser.add_argument("--seconds", type=int, default=4, help="measured time per target per round")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the tables show medians")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured time per target before round 1")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python clients even if wrk is installed")


def config_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.db) or "bench" not in args.db:
        parser.error("--db must be a plain lower-case name containing 'bench': it is dropped and recreated")
    return Config(
        db=args.db,
        pg_url=args.pg_url.rstrip("/"),
        redis_url=args.redis_url,
        workers=args.workers,
        worker_class=args.worker_class,
        threads=args.threads,
        clients=args.clients or 2 * args.workers,
        batch_clients=args.batch_clients or args.workers,
        seconds=args.seconds,
        rounds=args.rounds,
        warmup=args.warmup,
        use_wrk=not args.no_wrk,
    )


def server_env(cfg: Config) -> dict[str, str]:
    """The environment of manage.py and both gunicorns: production-like, quiet logs."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DEBUG="0",
        SECRET_KEY="bench-only-dummy-secret-key-not-for-production",  # noqa: S106 - throwaway server
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=cfg.db_url,
        REDIS_URL=cfg.redis_url,
        LOG_LEVEL="WARNING",  # one JSON line per event at INFO would measure the logger
        Q_CLUSTER_NAME=Q_CLUSTER_NAME,
        # A developer's .env must not change what is measured.
        RECORDSYNC_DOTENV="0",
        # Throwaway Fernet key for connection secrets at rest; the bench stores none.
        RECORDSYNC_SECRETS_KEYS=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        # The per-token request limit would cap what is measured (one client posting as fast as it can).
        API_REQUESTS_PER_MINUTE="0",
    )
    return env


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- database ---------------------------------------------------------------------------------


def recreate_database(cfg: Config) -> None:
    with psycopg.connect(f"{cfg.pg_url}/postgres", autocommit=True) as conn:
        # FORCE ends sessions a crashed earlier run may have left on the bench database.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg.db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg.db)))


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_database(cfg: Config, env: dict[str, str]) -> str:
    """A fresh, migrated database with the demo connections and no rules; returns a staff API token."""
    log(f"recreating database {cfg.db}")
    recreate_database(cfg)
    manage(env, "migrate", "--noinput")
    manage(env, "load_demo")
    # The foundation's ingest is measured with default routing: load_demo also loads demo rules,
    # whose cost bench/rules.py measures on its own.
    manage(env, "shell", "-c", "from rules.services import rule_set_replace; rule_set_replace(specs=[], actor='bench')")
    return manage(env, "create_api_token", "bench", "--staff").strip().splitlines()[-1]


def reset_tables(cfg: Config) -> None:
    """Empty the event and job tables and flush dirty pages, so every round starts alike."""
    for _ in range(20):
        try:
            with psycopg.connect(cfg.db_url, autocommit=True) as conn:
                # A request still in flight locks these tables in the other order: give way to it
                # (and retry) rather than let the deadlock detector pick a victim, maybe the request.
                conn.execute("SET lock_timeout = '200ms'")
                conn.execute("TRUNCATE sync_syncevent, sync_syncjob CASCADE")
                conn.execute("CHECKPOINT")
            return
        except psycopg.errors.LockNotAvailable:
            time.sleep(_DRAIN_S)
    raise RuntimeError("could not empty the bench tables: requests are still running")


def count_rows(cfg: Config) -> tuple[int, int]:
    with psycopg.connect(cfg.db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM sync_syncevent), (SELECT count(*) FROM sync_syncjob)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def job_target_ids(cfg: Config) -> tuple[int, ...]:
    """The connections the app routes a system_a event to: every enabled one but system_a."""
    with psycopg.connect(cfg.db_url) as conn:
        rows = conn.execute("SELECT id FROM crms_connection WHERE enabled AND name <> 'system_a' ORDER BY name")
        return tuple(int(r[0]) for r in rows)


def clean_redis(cfg: Config) -> None:
    """Drop the dispatch tasks this run queued (no cluster runs to take them)."""
    client = redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"*{Q_CLUSTER_NAME}*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError as exc:
        log(f"could not clean Redis: {exc}")
    finally:
        client.close()


# --- gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def gunicorn(cfg: Config, wsgi: str, env: dict[str, str], name: str) -> Iterator[int]:
    """Serve `wsgi` on a free loopback port; always stop it, even on an error or Ctrl-C."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", wsgi, "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(cfg.workers), "--worker-class", cfg.worker_class, "--threads", str(cfg.threads)]
    command += ["--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"]
    log_path = RESULTS_DIR / f"gunicorn-{name}.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({wsgi}) did not start; see {log_path}")
            time.sleep(0.2)
        log(f"{cfg.server} serving {wsgi} on 127.0.0.1:{port} (pid {proc.pid})")
        yield port
    finally:
        proc.terminate()  # the master stops its own workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- phases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One thing to measure: `run(seconds, tag)` drives it once and returns what it saw."""

    key: str
    label: str
    run: Callable[[int, str], loadgen.LoadResult]
    db: Config | None = None  # whose database it writes to, if not the run's (bench/rules.py)


def targets(cfg: Config, app: loadgen.Endpoint, bare: loadgen.Endpoint) -> list[Target]:
    def single(endpoint: loadgen.Endpoint) -> Callable[[int, str], loadgen.LoadResult]:
        return lambda seconds, tag: loadgen.run_single(endpoint, cfg.clients, seconds, tag, cfg.use_wrk)

    def batches(make_plan: Callable[[str], loadgen.Plan]) -> Callable[[int, str], loadgen.LoadResult]:
        return lambda seconds, tag: loadgen.run_closed_loop(make_plan(tag), cfg.batch_clients, seconds)

    job_targets = job_target_ids(cfg)
    return [
        Target("single_app", "Single event → app", single(app)),
        Target("single_bare", "Single event → bare Django view (baseline)", single(bare)),
        Target(
            "batch_app",
            f"List of {BATCH_SIZE} → app",
            batches(lambda tag: loadgen.HttpPlan(app, tag, BATCH_SIZE)),
        ),
        Target(
            "batch_insert",
            f"executemany of {BATCH_SIZE} event rows (baseline)",
            batches(lambda tag: InsertPlan(cfg.db_url, tag, BATCH_SIZE)),
        ),
        Target(
            "batch_insert_jobs",
            f"executemany of {BATCH_SIZE} event rows + {len(job_targets)} job rows each (context only)",
            batches(lambda tag: InsertPlan(cfg.db_url, tag, BATCH_SIZE, job_targets)),
        ),
    ]


def measure(cfg: Config, todo: list[Target]) -> list[report.Phase]:
    """Warm every target up, then measure them in turn, round after round.

    Interleaving puts the app and its baseline side by side in time, so a slow spell of a
    shared 2-core machine hits both instead of skewing the ratio; the tables show medians.
    """
    for target in todo:
        target.run(cfg.warmup, f"{target.key}-warm")
    time.sleep(_DRAIN_S)
    rounds: dict[str, list[report.Round]] = {t.key: [] for t in todo}
    for n in range(1, cfg.rounds + 1):
        for target in todo:
            db = target.db or cfg
            reset_tables(db)  # every round starts from empty tables and a fresh checkpoint
            load = target.run(cfg.seconds, f"{target.key}-r{n}")
            time.sleep(_DRAIN_S)
            events, jobs = count_rows(db)
            rounds[target.key].append(report.Round(load, events, jobs))
            log(
                f"round {n}/{cfg.rounds} {target.label}: {load.requests_per_s:,.1f} req/s, "
                f"{load.events_per_s:,.0f} events/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
                f"{load.errors} errors"
            )
    return [report.Phase(t.key, t.label, rounds[t.key]) for t in todo]


def run_phases(cfg: Config, env: dict[str, str], token: str) -> list[report.Phase]:
    # Both servers run for the whole measurement; the idle one only sleeps in accept().
    with gunicorn(cfg, APP_WSGI, env, "app") as app_port, gunicorn(cfg, BARE_WSGI, env, "bare") as bare_port:
        app = loadgen.Endpoint("127.0.0.1", app_port, INGEST_PATH, token)
        bare = loadgen.Endpoint("127.0.0.1", bare_port, INGEST_PATH, None)
        return measure(cfg, targets(cfg, app, bare))


# --- machine ----------------------------------------------------------------------------------


def _show(conn: psycopg.Connection[tuple[object, ...]], name: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
    return str(row[0]) if row else "?"


def _git_revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else commit


def machine_info(cfg: Config, code: str) -> dict[str, str]:
    with psycopg.connect(cfg.db_url) as conn:
        settings = {
            name: _show(conn, name)
            for name in ("server_version", "synchronous_commit", "shared_buffers", "max_wal_size")
        }
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown",
    )
    wrk = loadgen.wrk_path() if cfg.use_wrk else None
    return {
        "Code": code,
        "CPU": f"{os.cpu_count()} x {cpu}",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "Django / gunicorn / psycopg": " / ".join(
            importlib.metadata.version(p) for p in ("django", "gunicorn", "psycopg")
        ),
        "PostgreSQL": f"{settings.pop('server_version')} on 127.0.0.1 ("
        + ", ".join(f"{name}={value}" for name, value in settings.items())
        + ")",
        "Server (app and baseline alike)": f"{cfg.server}, DEBUG=0, LOG_LEVEL=WARNING, Redis {cfg.redis_url}",
        "Measurement": f"{cfg.warmup} s warm-up per target, then {cfg.rounds} interleaved rounds of "
        f"{cfg.seconds} s per target; medians of the rounds",
        "Single-event load": f"{loadgen.wrk_version(wrk) if wrk else 'Python http.client processes'}, "
        f"{cfg.clients} concurrent connections",
        "Batch load": f"Python http.client / psycopg processes, {cfg.batch_clients} concurrent",
    }


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop gunicorn


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    env = server_env(cfg)
    started = time.monotonic()
    code = _git_revision()  # before the run: what is measured is what was checked out then
    try:
        token = prepare_database(cfg, env)
        phases = run_phases(cfg, env, token)
        machine = machine_info(cfg, code)
    finally:
        clean_redis(cfg)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = report.markdown(phases, machine, when)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"ingest-{stamp}.md").write_text(text)
    raw = json.dumps(report.as_json(phases, machine, when), indent=2, default=str)
    (RESULTS_DIR / f"ingest-{stamp}.json").write_text(raw + "\n")
    log(f"done in {time.monotonic() - started:.0f} s; results in {RESULTS_DIR.relative_to(ROOT)}/ingest-{stamp}.*")
    errors = sum(r.load.errors for p in phases for r in p.rounds)
    if errors:
        log(f"{errors} requests failed: the figures are not trustworthy, see bench/results/gunicorn-*.log")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)

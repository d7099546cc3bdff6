"""Rules benchmark: what evaluating the rule set costs per event, alone and inside ingest.

    make bench-rules      # or: .venv/bin/python bench/rules.py --help

1. In process: builds rule sets of 1, 10 and 100 rules shaped like real configurations (a few
   rules match a contact and map 3-6 fields per target; most are for other object types,
   sources or operations; some have no object type and run their condition), and calls
   event_context() + decide() on one event in a loop on one core, in interleaved rounds, with
   an empty rule set as the fixed-cost baseline. Reports µs per event and events/s per core.
2. End to end: the single-event phase of bench/ingest.py (same gunicorn, PostgreSQL, wrk and
   interleaved rounds) against two app servers, each on its own bench database: one whose
   rule set is emptied through the API (the foundation's default routing), one with the
   100-rule set posted through the API. Each server gets the ingest bench's load and, in the
   same rounds, one connection sending one event at a time. Reports requests/s, p50, p99, the
   app workers' CPU time per request and how much the rules add to the time to ingest one
   event, against the aim (≤ 20%).
3. Prints the tables and writes them, with raw JSON, to bench/results/rules-<time>.* (gitignored).

See docs/BENCHMARKS.md ("Rules: evaluation cost") for what the figures mean and the last run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import http.client
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the bench package importable
    sys.path.insert(0, str(ROOT))

from bench import ingest, loadgen, report  # noqa: E402
from bench.rows import sample_event  # noqa: E402

if TYPE_CHECKING:
    from crms.models import Connection
    from rules.engine import RuleSet

RULES_PATH = "/v1/sync/rules"
SIZES = (1, 10, 100)
E2E_SIZE = 100
AIM_ADDED = 0.20  # 100 rules may add at most this much to single-event ingest time
CONNECTIONS = (("outreach", "outreach"), ("salesforce", "salesforce"), ("system_a", "system_a"))
# The app checks the rule-set version at most once a second per process (rules.selectors).
_RULES_LIVE_S = 1.5

# --- the rule sets ----------------------------------------------------------------------------

# What a contact export from System A looks like; the in-process loop decides on this event.
RICH_DATA: dict[str, Any] = {
    "email": "Ada.Lovelace@Example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone": "+44 20 7946 0958",
    "title": "Head of Engineering",
    "company": "Analytical Engines Ltd",
    "city": "London",
    "country": "GB",
    "lifecycle_stage": "lead",
    "lead_score": 72,
    "tags": ["newsletter", "webinar-2026"],
    "updated_at": "2026-11-25T10:00:00Z",
}

# Rules that match a contact created in System A with an email. Only the first rule naming a
# target has its mapping run (decide() keeps the first), so 2 mappings run per event: 11 fields.
MATCHING: list[dict[str, Any]] = [
    {
        "name": "contacts-with-email",
        "match_source": "system_a",
        "match_object_type": "contact",
        "match_operations": ["create", "update", "delete"],
        "condition": 'operation == "delete" or data.email != null',
        "targets": [
            {
                "target": "salesforce",
                "object": "Contact",
                "mapping": {
                    "Email": "$lower(data.email)",
                    "FirstName": "data.first_name",
                    "LastName": '$coalesce(data.last_name, "Unknown")',
                    "Phone": "data.phone",
                    "Title": "data.title",
                    "Description": '$join(" ", [data.first_name, data.last_name])',
                },
            },
            {
                "target": "outreach",
                "object": "prospect",
                "mapping": {
                    "emails": "[$lower(data.email)]",
                    "firstName": "data.first_name",
                    "lastName": "data.last_name",
                    "title": "data.title",
                    "company": "data.company",
                },
            },
        ],
    },
    {
        "name": "open-leads-to-salesforce",
        "condition": 'object_type in ["contact", "lead"] and data.email != null and data.lifecycle_stage != "customer"',
        "targets": [
            {
                "target": "salesforce",
                "object": "Lead",
                "mapping": {
                    "Email": "$lower(data.email)",
                    "LastName": '$coalesce(data.last_name, "Unknown")',
                    "Company": '$coalesce(data.company, "Unknown")',
                    "LeadSource": '"System A"',
                },
            }
        ],
    },
    {
        "name": "contacts-to-outreach-sequences",
        "match_object_type": "contact",
        "match_operations": ["create", "update"],
        "condition": 'data.email =~~ "@"',
        "targets": [
            {
                "target": "outreach",
                "object": "prospect",
                "mapping": {"emails": "[$lower(data.email)]", "tags": '["system-a"]', "source": '"System A"'},
            }
        ],
    },
    {
        "name": "opted-in-contacts",
        "condition": "data.email != null and data.email_opt_out != true",
        "targets": [
            {
                "target": "outreach",
                "object": "prospect",
                "mapping": {
                    "emails": "[$lower(data.email)]",
                    "firstName": "data.first_name",
                    "lastName": "data.last_name",
                    "emailOptedOut": "false",
                },
            }
        ],
    },
]

# Conditions with no object type to short-circuit them: they run on every event, and are false
# for a contact. Formatted with the rule's number, so no two rules have the same expression.
_CONDITIONS = (
    ('record_id =~ "^test{i}-"', "skip"),
    ('source == "outreach" and object_type == "prospect" and data.stage{i} != null', "sync"),
    ('object_type in ["invoice", "payment", "refund"] and data.amount != null and data.amount > {i}000', "sync"),
    ('data.email != null and $lower(data.email) =~ "@(competitor{i}|rival)\\\\.(com|io)$"', "skip"),
    ('data.country in ["DE", "AT", "CH", "X{i}"] and data.gdpr_consent != true', "skip"),
    ("data.do_not_sync == true or data.sync_group == {i}", "skip"),
    ('operation == "delete" and object_type =~ "^(lead|opportunity{i})$"', "sync"),
    ('data.lifecycle_stage == "customer{i}" and data.owner_email != null', "sync"),
    ('occurred_at < d"20{i:02d}-01-01"', "skip"),
    ('data.lead_score != null and data.lead_score > {i} and object_type == "lead"', "sync"),
    ('source == "salesforce" and data.IsDeleted == true and record_id != "{i}"', "sync"),
    ('data.email =~~ "^(noreply|no-reply|bounce{i})@"', "skip"),
)
_OBJECT_TYPES = (
    ("account", "Account"),
    ("company", "Account"),
    ("lead", "Lead"),
    ("opportunity", "Opportunity"),
    ("deal", "Opportunity"),
    ("case", "Case"),
    ("ticket", "Case"),
    ("invoice", "Invoice__c"),
    ("order", "Order"),
    ("quote", "Quote"),
    ("product", "Product2"),
    ("subscription", "Subscription__c"),
    ("campaign", "Campaign"),
    ("task", "Task"),
    ("meeting", "Event"),
    ("call", "Task"),
    ("note", "Note"),
    ("user", "User"),
    ("partner", "Partner__c"),
    ("contract", "Contract"),
    ("payment", "Payment__c"),
    ("shipment", "Shipment__c"),
    ("asset", "Asset"),
    ("project", "Project__c"),
)
_SF_FIELDS = ("Name", "External_Id__c", "Status__c", "Amount", "OwnerEmail__c", "Description")
_OUTREACH_ACCOUNT = {
    "name": "data.name",
    "domain": "data.domain",
    "industry": "data.industry",
    "numberOfEmployees": "data.employees",
    "websiteUrl": "data.website",
}


def _evaluated(i: int) -> dict[str, Any]:
    """A rule with no object type whose condition runs on every event and is false for a contact."""
    text, action = _CONDITIONS[i % len(_CONDITIONS)]
    rule: dict[str, Any] = {"name": f"condition-{i:02d}", "condition": text.format(i=i), "action": action}
    if action == "skip":
        rule["reason"] = f"excluded by policy {i}"
    else:
        fields = {"External_Id__c": "record_id", "Name": "$coalesce(data.name, record_id)", "Status__c": "operation"}
        rule["targets"] = [{"target": "salesforce", "object": "Task", "mapping": fields}]
    return rule


def _elsewhere(i: int) -> dict[str, Any]:
    """A rule an object type, source or operation keeps away from a contact create."""
    kind, sf_object = _OBJECT_TYPES[i % len(_OBJECT_TYPES)]
    variant = i // len(_OBJECT_TYPES)
    if variant == 1:  # deletes of test records of that type are skipped
        return {
            "name": f"skip-test-{kind}-deletes",
            "match_object_type": kind,
            "match_operations": ["delete"],
            "condition": 'record_id =~ "^test-"',
            "action": "skip",
            "reason": "test records stay",
        }
    size = 3 + i % 4  # 3-6 mapped fields
    mapping = {name: f"data.{name.lower().removesuffix('__c')}" for name in _SF_FIELDS[:size]}
    targets: list[dict[str, Any]] = [{"target": "salesforce", "object": sf_object, "mapping": mapping}]
    if kind in ("account", "company"):
        targets.append({"target": "outreach", "object": "account", "mapping": _OUTREACH_ACCOUNT})
    if variant == 2:  # the same type coming back from Salesforce (another source)
        return {
            "name": f"{kind}-from-salesforce",
            "match_source": "salesforce",
            "match_object_type": sf_object,
            "targets": [{"target": "system_a", "object": kind, "mapping": {"name": "data.Name"}}],
        }
    rule: dict[str, Any] = {"name": f"{kind}-to-crms", "match_object_type": kind, "targets": targets}
    if i % 2:
        rule["match_operations"] = ["create", "update"]
        rule["condition"] = f"data.name != null and data.name != {json.dumps(kind)}"
    return rule


def rule_specs(size: int) -> list[dict[str, Any]]:
    """`size` rules: a few matching, about a quarter running their condition, the rest elsewhere."""
    matching = 1 if size == 1 else max(2, size // 25)
    evaluated = (size - matching) // 4
    rest = [*(_evaluated(i) for i in range(evaluated)), *(_elsewhere(i) for i in range(size - matching - evaluated))]
    rest.sort(key=lambda r: r["name"])  # interleaves the two kinds, deterministically
    specs = list(rest)
    for k, rule in enumerate(MATCHING[:matching]):  # spread out, in their own order
        specs.insert((2 * k + 1) * len(rest) // (2 * matching) + k, dict(rule))
    for order, spec in enumerate(specs):
        spec["order"] = 10 * (order + 1)
    return specs


# --- in process -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecideCase:
    key: str
    label: str
    specs: list[dict[str, Any]]
    data: dict[str, Any]


@dataclass(frozen=True)
class DecideResult:
    case: DecideCase
    us_per_event: list[float]  # CPU µs per event, one per round
    compile_ms: float
    conditions_run: int
    matched: list[str]
    targets: list[str]
    fields_mapped: int

    @property
    def median_us(self) -> float:
        return float(statistics.median(self.us_per_event))


def setup_django(cfg: ingest.Config) -> None:
    """Load the app in this process (no database is touched: connections are unsaved objects)."""
    os.environ.update(ingest.server_env(cfg))
    os.environ["DJANGO_SETTINGS_MODULE"] = "recordsync.settings"
    import django

    django.setup()


def _connections() -> dict[str, Connection]:
    from crms.models import Connection

    return {name: Connection(pk=pk, name=name, kind=kind, enabled=True) for pk, (name, kind) in enumerate(CONNECTIONS)}


def _one_event(rule_set: RuleSet, data: dict[str, Any], connections: dict[str, Connection]) -> dict[str, Any]:
    return _event_call(rule_set, data, connections)()


def _event_call(
    rule_set: RuleSet, data: dict[str, Any], connections: dict[str, Connection]
) -> Callable[[], dict[str, Any]]:
    """What the app does per event when there are rules (sync.ingest.services._route_all), as a call."""
    from rules.engine import decide, event_context

    def call() -> dict[str, Any]:
        context = event_context(
            operation="create",
            source="system_a",
            object_type="contact",
            record_id="c-000123",
            data=data,
            occurred_at=datetime.now(UTC),
            changed=sorted(data),
        )
        return dict(decide(rule_set, context, connections, None).routing)

    return call


def _conditions_run(rule_set: RuleSet, data: dict[str, Any]) -> int:
    event = {"operation": "create", "source": "system_a", "object_type": "contact", "raw_data": data}
    return sum(1 for r in rule_set.rules if r.condition is not None and r.applies(event))


def decide_cases() -> list[DecideCase]:
    cases = [DecideCase("rules_0", "0 (empty rule set: fixed cost)", [], RICH_DATA)]
    cases += [DecideCase(f"rules_{n}", str(n), rule_specs(n), RICH_DATA) for n in SIZES]
    email_only = sample_event("c-000123")["data"]
    cases.append(
        DecideCase("rules_100_email_only", "100, on the end-to-end event (email only)", rule_specs(100), email_only)
    )
    return cases


def measure_decide(cases: list[DecideCase], seconds: float, rounds: int) -> list[DecideResult]:
    """Each case for `seconds` of CPU per round, the cases interleaved round after round."""
    from rules.engine import compile_rules

    connections = _connections()
    compiled: dict[str, tuple[RuleSet, float]] = {}
    for case in cases:
        started = time.perf_counter()
        for _ in range(5):
            rule_set = compile_rules(1, case.specs)
        compiled[case.key] = (rule_set, (time.perf_counter() - started) / 5 * 1000)
        routing = _one_event(rule_set, case.data, connections)
        if routing.get("errors") or (case.specs and routing["targets"] != ["salesforce", "outreach"]):
            raise RuntimeError(f"{case.label} rules: unexpected decision {json.dumps(routing, default=str)}")
        _run_for(_event_call(rule_set, case.data, connections), 0.3)  # warm-up
    samples: dict[str, list[float]] = {case.key: [] for case in cases}
    for n in range(1, rounds + 1):
        for case in cases:
            us = _run_for(_event_call(compiled[case.key][0], case.data, connections), seconds)
            samples[case.key].append(us)
            ingest.log(f"decide round {n}/{rounds}, {case.label} rules: {us:,.1f} µs per event")
    results = []
    for case in cases:
        rule_set, compile_ms = compiled[case.key]
        routing = _one_event(rule_set, case.data, connections)
        mapped = sum(len(p["fields"]) for p in routing["payloads"].values()) if case.specs else 0
        results.append(
            DecideResult(
                case,
                samples[case.key],
                compile_ms,
                _conditions_run(rule_set, case.data),
                list(routing["matched"]),
                list(routing["targets"]),
                mapped,
            )
        )
    return results


def _run_for(call: Callable[[], object], seconds: float) -> float:
    """Call back to back for `seconds` of this process's CPU time; return CPU µs per call."""
    calls = 0
    gc.collect()
    started = time.process_time()
    end = started + seconds
    while (now := time.process_time()) < end:
        for _ in range(50):
            call()
        calls += 50
    return (now - started) / calls * 1e6


# --- end to end -------------------------------------------------------------------------------


def put_rules(port: int, token: str, specs: list[dict[str, Any]]) -> int:
    """Replace the rule set through the API, as staff do; returns the new version."""
    status, answer = _post(port, token, RULES_PATH, {"rules": specs})
    if status != 200:
        raise RuntimeError(f"POST {RULES_PATH} answered {status}: {str(answer)[:2000]}")
    return int(answer["version"])


def check_routing(port: int, token: str, tag: str) -> dict[str, Any]:
    """Send one event like the load does and return the routing the app decided for it."""
    status, answer = _post(port, token, ingest.INGEST_PATH, sample_event(f"{tag}-check"))
    if status != 202:
        raise RuntimeError(f"the check event was answered {status}: {answer}")
    routing: dict[str, Any] = answer["routing"]
    return routing


def _post(port: int, token: str, path: str, body: object) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _proc_stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., utime at [11], stime at [12]


def _children(ppid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_proc_stat(int(entry.name))[1]) == ppid:
                    found.add(int(entry.name))
            except (OSError, IndexError):
                continue  # gone meanwhile
    return found


def cpu_by_process(master: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of a gunicorn master and each of its workers."""
    seconds = {}
    for pid in {master, *_children(master)}:
        try:
            fields = _proc_stat(pid)
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


@dataclass(frozen=True)
class CpuUse:
    seconds: float  # the master's and its workers' CPU time during one run
    busy_workers: int  # workers that used more than a tenth of a core meanwhile


@contextmanager
def app_server(cfg: ingest.Config, env: dict[str, str], name: str) -> Iterator[tuple[int, int]]:
    """ingest.gunicorn serving the app; yields (port, master pid) so its CPU time can be read."""
    before = _children(os.getpid())
    with ingest.gunicorn(cfg, ingest.APP_WSGI, env, name) as port:
        masters = _children(os.getpid()) - before
        if len(masters) != 1:
            raise RuntimeError(f"cannot tell which process is the gunicorn master: {masters}")
        yield port, masters.pop()


@dataclass(frozen=True)
class Server:
    key: str  # "no_rules" or "rules_100"
    label: str
    db: ingest.Config
    specs: list[dict[str, Any]]


def servers(cfg: ingest.Config) -> list[Server]:
    none = Server("no_rules", "no rules (default routing)", _db(cfg, "none"), [])
    rules = Server(f"rules_{E2E_SIZE}", f"{E2E_SIZE} rules", _db(cfg, str(E2E_SIZE)), rule_specs(E2E_SIZE))
    return [none, rules]


def _db(cfg: ingest.Config, suffix: str) -> ingest.Config:
    name = f"{cfg.db}_{suffix}"
    if len(name) > 63:
        raise SystemExit(f"--db {cfg.db!r} is too long for the suffix _{suffix}")
    return dataclasses.replace(cfg, db=name)


def run_e2e(cfg: ingest.Config, cpu: dict[str, CpuUse]) -> tuple[list[report.Phase], list[dict[str, Any]]]:
    """Both app servers up at once, the rules posted through the API, then ingest.measure().

    Two loads per server, interleaved round after round: the ingest bench's single-event load
    (2 x workers connections), and one connection sending one event at a time, whose latency is
    the time to ingest one event, free of how gunicorn happens to spread connections.
    """
    with ExitStack() as stack:
        under_load, one_at_a_time, seen = [], [], []
        for server in servers(cfg):
            env = ingest.server_env(server.db)
            token = ingest.prepare_database(server.db, env)
            port, master = stack.enter_context(app_server(server.db, env, server.key))
            version = put_rules(port, token, server.specs)  # [] empties whatever load_demo put there
            ingest.log(f"{server.label}: rule set v{version} with {len(server.specs)} rules")
            endpoint = loadgen.Endpoint("127.0.0.1", port, ingest.INGEST_PATH, token)
            under_load.append(
                ingest.Target(
                    f"single_{server.key}",
                    f"Single event → app, {server.label}",
                    _cpu_counted(cfg, endpoint, master, cfg.clients, cpu),
                    server.db,
                )
            )
            one_at_a_time.append(
                ingest.Target(
                    f"one_{server.key}",
                    f"One event at a time → app, {server.label}",
                    _cpu_counted(cfg, endpoint, master, 1, cpu),
                    server.db,
                )
            )
            seen.append((server, port, token))
        time.sleep(_RULES_LIVE_S)  # every worker sees the new rule-set version by now
        checked = [_checked(server, port, token) for server, port, token in seen]
        return ingest.measure(cfg, [*under_load, *one_at_a_time]), checked


def _checked(server: Server, port: int, token: str) -> dict[str, Any]:
    routing = check_routing(port, token, server.key)
    expected_mode = "rules" if server.specs else "default"
    if routing.get("mode") != expected_mode or routing.get("errors") or len(routing.get("targets", [])) != 2:
        raise RuntimeError(f"{server.label}: unexpected routing {routing}")
    ingest.log(f"{server.label}: routing {json.dumps(routing)[:300]}")
    return {"server": server.key, "routing": routing}


def _cpu_counted(
    cfg: ingest.Config, endpoint: loadgen.Endpoint, master: int, clients: int, cpu: dict[str, CpuUse]
) -> Callable[[int, str], loadgen.LoadResult]:
    def run(seconds: int, tag: str) -> loadgen.LoadResult:
        before = cpu_by_process(master)
        load = loadgen.run_single(endpoint, clients, seconds, tag, cfg.use_wrk)
        used = {pid: s - before.get(pid, 0.0) for pid, s in cpu_by_process(master).items()}
        busy = sum(1 for pid, s in used.items() if pid != master and s > 0.1 * load.seconds)
        cpu[tag] = CpuUse(sum(used.values()), busy)
        return load

    return run


# --- report -----------------------------------------------------------------------------------


def _cpu_ms(phase: report.Phase, cpu: dict[str, CpuUse]) -> list[float]:
    """The app's CPU ms per request, per round (ingest.measure tags round n as <key>-r<n>)."""
    return [cpu[f"{phase.key}-r{n}"].seconds / r.load.requests * 1000 for n, r in enumerate(phase.rounds, 1)]


def _busy(phase: report.Phase, cpu: dict[str, CpuUse]) -> str:
    return " / ".join(str(cpu[f"{phase.key}-r{n}"].busy_workers) for n in range(1, len(phase.rounds) + 1))


# (key, what it is, phase key prefix, how it is read off the phase); the first one is the aim's.
MEASURES = (
    ("one_p50_ms", "Single-event ingest time: p50, one event at a time", "one", "p50_ms"),
    ("one_p99_ms", "p99, one event at a time", "one", "p99_ms"),
    ("one_cpu_ms", "App CPU per event, one event at a time", "one", "cpu"),
    ("load_ms_per_request", "Time per request under load (cores ÷ requests/s)", "single", "per_request"),
    ("load_p50_ms", "p50 under load", "single", "p50_ms"),
    ("load_p99_ms", "p99 under load", "single", "p99_ms"),
    ("load_cpu_ms", "App CPU per request under load", "single", "cpu"),
)


def e2e_summary(phases: list[report.Phase], cpu: dict[str, CpuUse]) -> dict[str, Any]:
    by_key = {p.key: p for p in phases}

    def value(prefix: str, server: str, how: str) -> float:
        phase = by_key[f"{prefix}_{server}"]
        if how == "cpu":
            return float(statistics.median(_cpu_ms(phase, cpu)))
        if how == "per_request":
            return (os.cpu_count() or 1) / phase.median("requests_per_s") * 1000
        return phase.median(how)

    rows: list[dict[str, Any]] = []
    for key, name, prefix, how in MEASURES:
        before, after = value(prefix, "no_rules", how), value(prefix, f"rules_{E2E_SIZE}", how)
        rows.append({"key": key, "name": name, "no_rules": before, "rules": after, "added": after / before - 1})
    return {"measures": rows, "aim": AIM_ADDED, "met": float(rows[0]["added"]) <= AIM_ADDED}


def markdown(
    decided: list[DecideResult],
    phases: list[report.Phase] | None,
    cpu: dict[str, CpuUse],
    machine: dict[str, str],
    when: str,
) -> str:
    summary = e2e_summary(phases, cpu) if phases else None
    lines = [f"Run of {when}. Medians of the rounds; the per-round columns show the spread.", ""]
    if decided:
        lines += _decide_lines(decided, summary)
    if phases and summary:
        lines += _e2e_lines(phases, cpu, summary)
    lines += ["Machine and set-up:", ""]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    return "\n".join(lines) + "\n"


def _decide_lines(decided: list[DecideResult], summary: dict[str, Any] | None) -> list[str]:
    lines = ["In process: event_context() + decide() on one contact create, one core.", ""]
    head = "| Rules | Conditions run | Matched | Fields mapped | µs per event | Events/s per core | Per round (µs) "
    head += "| Compile ms"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    if summary:
        head += " | Share of ingest time | Share of time per event under load | Share of app CPU"
        rule += " ---: | ---: | ---: |"
    lines += [head + " |", rule]
    base = {m["key"]: m["no_rules"] for m in summary["measures"]} if summary else {}
    for d in decided:
        cells = [
            d.case.label,
            str(d.conditions_run),
            str(len(d.matched)),
            str(d.fields_mapped),
            f"{d.median_us:,.1f}",
            f"{1e6 / d.median_us:,.0f}",
            " / ".join(f"{us:,.1f}" for us in d.us_per_event),
            f"{d.compile_ms:,.1f}",
        ]
        if summary:
            ms = d.median_us / 1000
            cells += [f"{ms / base[k]:.1%}" for k in ("one_p50_ms", "load_ms_per_request", "one_cpu_ms")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if summary:
        lines += [
            "Shares: µs per event over what one event costs the no-rules server in this run: "
            f"{base['one_p50_ms']:.2f} ms to ingest when sent one at a time (p50 latency); "
            f"{base['load_ms_per_request']:.2f} ms of the machine under the ingest bench's load "
            f"({os.cpu_count()} cores ÷ requests/s, the foundation benchmark's measure); "
            f"{base['one_cpu_ms']:.2f} ms of its workers' CPU.",
            "",
        ]
    return lines


def _e2e_lines(phases: list[report.Phase], cpu: dict[str, CpuUse], summary: dict[str, Any]) -> list[str]:
    lines = [
        "End to end: the single-event phase of `make bench`, and one event at a time, with and without rules.",
        "",
        "| Phase | Load, clients | Requests | Errors | Requests/s | p50 ms | p99 ms | App CPU ms per request "
        "| Per round (req/s) | Workers busy per round | Rows stored (events / jobs) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for p in phases:
        first = p.rounds[0].load
        cells = [
            p.label,
            f"{first.generator}, {first.clients}",
            f"{sum(r.load.requests for r in p.rounds):,}",
            str(sum(r.load.errors for r in p.rounds)),
            f"{p.median('requests_per_s'):,.1f}",
            f"{p.median('p50_ms'):.1f}",
            f"{p.median('p99_ms'):.1f}",
            f"{statistics.median(_cpu_ms(p, cpu)):.2f}",
            p.per_round("requests_per_s", ",.0f"),
            _busy(p, cpu),
            f"{sum(r.stored_events for r in p.rounds):,} / {sum(r.stored_jobs for r in p.rounds):,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"| {E2E_SIZE} rules vs none | No rules | {E2E_SIZE} rules | Added | Aim | Met |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for n, m in enumerate(summary["measures"]):
        aim = f"≤ {AIM_ADDED:.0%}" if n == 0 else ""
        met = ("yes" if summary["met"] else "**no**") if n == 0 else ""
        name = f"**{m['name']}**" if n == 0 else m["name"]
        lines.append(f"| {name} | {m['no_rules']:.2f} ms | {m['rules']:.2f} ms | {m['added']:+.1%} | {aim} | {met} |")
    return [*lines, ""]


def as_json(
    decided: list[DecideResult],
    phases: list[report.Phase] | None,
    cpu: dict[str, CpuUse],
    seen: list[dict[str, Any]],
    machine: dict[str, str],
    when: str,
) -> dict[str, Any]:
    return {
        "when": when,
        "machine": machine,
        "decide": [
            {
                "key": d.case.key,
                "label": d.case.label,
                "rules": len(d.case.specs),
                "median_us_per_event": d.median_us,
                "events_per_s_per_core": 1e6 / d.median_us,
                "us_per_event_rounds": d.us_per_event,
                "compile_ms": d.compile_ms,
                "conditions_run": d.conditions_run,
                "matched": d.matched,
                "targets": d.targets,
                "fields_mapped": d.fields_mapped,
            }
            for d in decided
        ],
        "e2e": None
        if not phases
        else {
            "phases": _phases_json(phases, cpu),
            "summary": e2e_summary(phases, cpu),
            "check_routing": seen,
            "rules": rule_specs(E2E_SIZE),
        },
    }


def _phases_json(phases: list[report.Phase], cpu: dict[str, CpuUse]) -> list[dict[str, Any]]:
    return [
        {
            "key": p.key,
            "label": p.label,
            "median": {m: p.median(m) for m in report.METRICS},
            "cpu_ms_per_request_rounds": _cpu_ms(p, cpu),
            "rounds": [
                {
                    **dataclasses.asdict(r),
                    "requests_per_s": r.load.requests_per_s,
                    "cpu": dataclasses.asdict(cpu[f"{p.key}-r{n}"]),
                }
                for n, r in enumerate(p.rounds, 1)
            ],
        }
        for p in phases
    ]


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[ingest.Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_arguments(parser)
    # Two databases, <db>_none and <db>_100, apart from the ingest bench's. Six rounds: the
    # difference sought is a fifth of a noisy figure.
    parser.set_defaults(db=os.environ.get("BENCH_RULES_DB", "recordsync_bench_rules"), rounds=6)
    parser.add_argument("--decide-seconds", type=float, default=1.0, help="CPU seconds per rule set per round")
    parser.add_argument("--decide-rounds", type=int, default=3, help="interleaved in-process rounds")
    parser.add_argument("--only", choices=["decide", "e2e"], help="run only the in-process or end-to-end part")
    args = parser.parse_args(argv)
    return ingest.config_from(parser, args), args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    signal.signal(signal.SIGTERM, ingest._on_sigterm)
    ingest.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    code = ingest._git_revision()  # before the run: what is measured is what was checked out then
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())  # anything else busy skews it all
    setup_django(cfg)
    decided: list[DecideResult] = []
    if args.only != "e2e":
        decided = measure_decide(decide_cases(), args.decide_seconds, args.decide_rounds)
    phases: list[report.Phase] | None = None
    cpu: dict[str, CpuUse] = {}
    seen: list[dict[str, Any]] = []
    machine = {"Code": code}
    if args.only != "decide":
        try:
            phases, seen = run_e2e(cfg, cpu)
            machine = ingest.machine_info(servers(cfg)[0].db, code)
        finally:
            ingest.clean_redis(cfg)
        machine.pop("Batch load", None)
        server = machine.pop("Server (app and baseline alike)", None)
        if server:
            machine["Server (both app servers)"] = server
        machine["Databases"] = ", ".join(s.db.db for s in servers(cfg))
    machine["Load average (1/5/15 min) at the start"] = load_before
    if decided:
        machine["In process"] = (
            f"{args.decide_rounds} interleaved rounds of {args.decide_seconds:g} CPU s per rule set, "
            f"after a 0.3 s warm-up; Python {sys.version.split()[0]}, gc on"
        )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = markdown(decided, phases, cpu, machine, when)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (ingest.RESULTS_DIR / f"rules-{stamp}.md").write_text(text)
    raw = json.dumps(as_json(decided, phases, cpu, seen, machine, when), indent=2, default=str)
    (ingest.RESULTS_DIR / f"rules-{stamp}.json").write_text(raw + "\n")
    ingest.log(f"done in {time.monotonic() - started:.0f} s; results in bench/results/rules-{stamp}.*")
    errors = sum(r.load.errors for p in phases or [] for r in p.rounds)
    if errors:
        ingest.log(f"{errors} requests failed: the figures are not trustworthy, see bench/results/gunicorn-*.log")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        ingest.log("interrupted; servers stopped")
        sys.exit(130)

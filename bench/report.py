"""The benchmark's results: a Markdown table of phases, one of aims, the machine, and raw JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from bench.loadgen import LoadResult

METRICS = ("requests_per_s", "events_per_s", "p50_ms", "p99_ms")


@dataclass(frozen=True)
class Round:
    load: LoadResult
    stored_events: int  # rows found in the tables afterwards: proof the work was done
    stored_jobs: int


@dataclass(frozen=True)
class Phase:
    key: str  # e.g. "single_app"; the aims refer to phases by key
    label: str
    rounds: list[Round]

    def median(self, metric: str) -> float:
        """Median over the rounds of a LoadResult attribute or property, e.g. "p99_ms"."""
        return float(statistics.median(getattr(r.load, metric) for r in self.rounds))

    def per_round(self, metric: str, fmt: str) -> str:
        return " / ".join(format(getattr(r.load, metric), fmt) for r in self.rounds)


@dataclass(frozen=True)
class Aim:
    name: str
    app_key: str
    baseline_key: str
    metric: str  # "requests_per_s" or "events_per_s"
    target: float  # the app's share of the baseline it must reach


AIMS = [
    # Issue 18 raised it from the first ingest issue's 40 %.
    Aim("Single event: requests/s vs bare Django view", "single_app", "single_bare", "requests_per_s", 0.50),
    Aim("Batches of 500: events/s vs psycopg executemany", "batch_app", "batch_insert", "events_per_s", 0.25),
]


def aim_rows(phases: list[Phase]) -> list[dict[str, Any]]:
    by_key = {p.key: p for p in phases}
    rows = []
    for aim in AIMS:
        app = by_key[aim.app_key].median(aim.metric)
        base = by_key[aim.baseline_key].median(aim.metric)
        ratio = app / base if base else 0.0
        rows.append({**asdict(aim), "app": app, "baseline": base, "ratio": ratio, "met": ratio >= aim.target})
    return rows


def _phase_line(p: Phase) -> str:
    first = p.rounds[0].load
    headline = "events_per_s" if p.key.startswith("batch") else "requests_per_s"
    cells = [
        p.label,
        f"{first.generator}, {first.clients}",
        f"{sum(r.load.requests for r in p.rounds):,}",
        str(sum(r.load.errors for r in p.rounds)),
        f"{p.median('requests_per_s'):,.1f}",
        f"{p.median('events_per_s'):,.0f}",
        f"{p.median('p50_ms'):.1f}",
        f"{p.median('p99_ms'):.1f}",
        p.per_round(headline, ",.0f"),
        f"{sum(r.stored_events for r in p.rounds):,} / {sum(r.stored_jobs for r in p.rounds):,}",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(phases: list[Phase], machine: dict[str, str], when: str) -> str:
    lines = [
        f"Run of {when}. Figures are medians of the rounds; the per-round column shows the spread.",
        "",
        "| Phase | Load, clients | Requests | Errors | Requests/s | Events/s | p50 ms | p99 ms "
        "| Per round (req/s, or events/s for lists) | Rows stored (events / jobs) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        *(_phase_line(p) for p in phases),
        "",
        "| Aim | App | Baseline | App / baseline | Target | Met |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in aim_rows(phases):
        unit = "req/s" if row["metric"] == "requests_per_s" else "events/s"
        lines.append(
            f"| {row['name']} | {row['app']:,.0f} {unit} | {row['baseline']:,.0f} {unit} | {row['ratio']:.0%} "
            f"| ≥ {row['target']:.0%} | {'yes' if row['met'] else '**no**'} |"
        )
    lines += ["", "Machine and set-up:", ""]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    return "\n".join(lines) + "\n"


def as_json(phases: list[Phase], machine: dict[str, str], when: str) -> dict[str, Any]:
    return {
        "when": when,
        "machine": machine,
        "phases": [
            {
                "key": p.key,
                "label": p.label,
                "median": {m: p.median(m) for m in METRICS},
                "rounds": [
                    {**asdict(r), "requests_per_s": r.load.requests_per_s, "events_per_s": r.load.events_per_s}
                    for r in p.rounds
                ],
            }
            for p in phases
        ],
        "aims": aim_rows(phases),
    }

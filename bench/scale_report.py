"""bench/scale.py's report: Markdown tables of every figure with its ratio and aim, and the PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _aim(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _baselines(results: dict[str, Any]) -> list[str]:
    """Point 5's ratios, each beside its baseline from the same run."""
    rows = []
    if "baselines" in results:
        found = results["baselines"]
        rows += [
            f"| Single events: app against the bare Django view, requests/s | {found['single_app']:,.0f} | "
            f"{found['single_bare']:,.0f} | **{found['single_ratio']:.0%}** | ≥ 50% "
            f"{_aim(found['single_ratio'] >= 0.5)} |",
            f"| Lists of 500: app against psycopg executemany, events/s | {found['batch_app']:,.0f} | "
            f"{found['batch_insert']:,.0f} | {found['list_ratio']:.0%} | |",
        ]
    if "workers" in results:
        found = results["workers"]
        ratio = found["2"] / found["direct_2"]
        rows.append(
            f"| Drain, 2 workers, against the same Collections calls sent directly, 2 at a time (fake at "
            f"{found['latency_s'] * 1000:.0f} ms a call), events/s | {found['2']:,.0f} | {found['direct_2']:,.0f} | "
            f"**{ratio:.0%}** | ≥ 60% {_aim(ratio >= 0.6)} |"
        )
    if "flat" in results:
        empty = results["flat"]["empty"]
        ratio = empty["drain_events_per_s"] / empty["direct_events_per_s"]
        rows.append(
            f"| Drain of {empty.get('events', 20_000):,} events with no latency at the fake, against the same calls "
            f"sent directly (context: the baseline is a write to a dict) | {empty['drain_events_per_s']:,.0f} | "
            f"{empty['direct_events_per_s']:,.0f} | {ratio:.0%} | |"
        )
    if not rows:
        return []
    found = results.get("baselines", {})
    note = (
        f"Singles and lists: {found['rounds']} interleaved rounds of {found['seconds']} s, medians; singles per "
        f"round, app {found['single_per_round']}, bare view {found['bare_per_round']}."
        if found
        else ""
    )
    return [
        "## Against baselines measured in the same run",
        "",
        "| Figure | app | baseline | ratio | aim |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        *([note, ""] if note else []),
    ]


def markdown(results: dict[str, Any], machine: dict[str, str]) -> str:
    lines = ["# Scale benchmark (bench/scale.py)", ""]
    lines += [f"- {name}: {value}" for name, value in machine.items() if name in ("Code", "CPU", "PostgreSQL")]
    lines += [f"- parts took: {results.get('seconds', {})} s", ""]
    lines += _baselines(results)
    if "flat" in results:
        lines += _flat(results["flat"])
    if "workers" in results:
        lines += _workers(results["workers"])
    if "ratelimit" in results:
        found = results["ratelimit"]
        lines += [
            "## The rate limit, used and never exceeded",
            "",
            f"{found['calls']} writes against the fake limited to {found['limit']} calls per {found['window']} s: "
            f"busiest window **{found['busiest_window']}** (aim ≤ {found['limit']}: "
            f"{_aim(found['busiest_window'] <= found['limit'])}), allowance used while the backlog lasted "
            f"**{found['used_share']:.1%}** (aim ≥ 90%: {_aim(found['used_share'] >= 0.9)}), "
            f"429s from the fake: {found['refused_429']}.",
            "",
        ]
    if "lanes" in results:
        found = results["lanes"]
        bound = found["flush_interval"] + 2
        lines += [
            "## Lanes: live changes behind a backfill at the limit",
            "",
            f"{found['backfill']:,} records queued by `sync_backfill` ({found['backfill_queued_s']} s), sent at "
            f"{found['limit']} calls per {found['window']} s; 10 live changes posted meanwhile. Delay from accepted "
            f"to synced: {found['delays_s']} s, max **{found['max_delay_s']} s** (aim ≤ flush interval + 2 = "
            f"{bound} s: {_aim(found['max_delay_s'] <= bound)}). Busiest window {found['busiest_window']} of "
            f"{found['limit']}; backfill records synced meanwhile: {found['backfill_synced_meanwhile']:,}; "
            f"429s: {found['refused_429']}.",
            "",
        ]
    if "memory" in results:
        samples = results["memory"]["samples"]
        web = [s[1] for s in samples]
        workers = [s[2] for s in samples]
        quarter = max(1, len(samples) // 4)
        lines += [
            "## Memory through a long drain",
            "",
            f"{results['memory']['events']:,} events posted and drained, {len(samples)} samples a second apart.",
            "",
            "| Processes | first | peak | mean, first quarter | mean, last quarter |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| web (gunicorn) | {web[0] / 1024:.0f} MiB | {max(web) / 1024:.0f} MiB | "
            f"{sum(web[:quarter]) / quarter / 1024:.0f} MiB | {sum(web[-quarter:]) / quarter / 1024:.0f} MiB |",
            f"| workers and dispatcher | {workers[0] / 1024:.0f} MiB | {max(workers) / 1024:.0f} MiB | "
            f"{sum(workers[:quarter]) / quarter / 1024:.0f} MiB | {sum(workers[-quarter:]) / quarter / 1024:.0f} MiB |",
            "",
        ]
    if "retention" in results:
        found = results["retention"]
        lines += [
            "## Retention under a steady load",
            "",
            f"{found['pool']:,} records changed once a day, pruned daily keeping {found['keep_days']} days:",
            "",
            "| Day | events | attempts | jobs | events MB | attempts MB | events pruned |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {d['day']} | {d['events']:,} | {d['attempts']:,} | {d['jobs']:,} | {d['event_mb']} | "
            f"{d['attempt_mb']} | {d['pruned_events']:,} |"
            for d in found["days"]
        ]
        lines.append("")
    return "\n".join(lines)


def _flat_rounds(found: dict[str, Any]) -> list[str]:
    """How the rates were measured, and each round's pair: the ratio is the median of the rounds' ratios."""
    empty, full = found["empty"], found["history"]
    if "rounds" not in found:  # a report of a run before the rounds were interleaved
        return []
    lines = [
        f"Both states served side by side and measured in {found['rounds']} interleaved rounds (the order "
        "alternating); the rates are the medians of the rounds, each ratio the median of the rounds' ratios "
        "(history / empty):",
        "",
        "| Round | singles | lists | drain | claim |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, (e, h) in enumerate(zip(empty["rounds"], full["rounds"], strict=True), start=1):
        cells = [
            f"{h[key]:,.0f} / {e[key]:,.0f}"
            for key in ("single_events_per_s", "list_events_per_s", "drain_events_per_s")
        ]
        cells.append(f"{h['dispatch']['jobs_per_s']:,.0f} / {e['dispatch']['jobs_per_s']:,.0f}")
        lines.append(f"| {n} | {' | '.join(cells)} |")
    return [*lines, ""]


def _flat(found: dict[str, Any]) -> list[str]:
    empty, full, ratios = found["empty"], found["history"], found["ratios"]
    rows = [
        ("Single events /s", "single_events_per_s"),
        ("Lists of 500, events/s", "list_events_per_s"),
        ("Drain of new events /s", "drain_events_per_s"),
    ]
    lines = [
        f"## Flat cost: empty tables against {full['history']:,} finished records",
        "",
        f"History loaded server-side in {full.get('load_seconds', '?')} s: {full.get('loaded', {})}.",
        "",
        *_flat_rounds(found),
        "| Figure | empty | with history | ratio (aim ≥ 90%) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {empty[key]:,.0f} | {full[key]:,.0f} | {ratios[key]:.0%} {_aim(ratios[key] >= 0.9)} |"
        )
    dispatch = ratios["dispatch_jobs_per_s"]
    lines += [
        f"| Dispatch (claim), jobs/s | {empty['dispatch']['jobs_per_s']:,.0f} | {full['dispatch']['jobs_per_s']:,.0f} "
        f"| {dispatch:.0%} {_aim(dispatch >= 0.9)} |",
        f"| Claim, ms per batch p50 / p99 | {empty['dispatch']['p50_ms']} / {empty['dispatch']['p99_ms']} | "
        f"{full['dispatch']['p50_ms']} / {full['dispatch']['p99_ms']} | |",
        f"| Claim of one batch: the database's time (EXPLAIN ANALYZE, {full['dispatch']['claim_statements']} "
        f"statements), ms | {empty['dispatch']['claim_sql_ms']} | {full['dispatch']['claim_sql_ms']} | |",
        f"| of which the claim's own statement (finds, locks and writes the batch), ms | "
        f"{empty['dispatch']['claim_write_ms']} | {full['dispatch']['claim_write_ms']} | |",
        f"| The same with 8 batches claimed ahead, unstarted (a drain with 8 workers; "
        f"{full['dispatch']['claim_statements_8_ahead']} statements), ms | "
        f"{empty['dispatch']['claim_sql_ms_8_ahead']} | {full['dispatch']['claim_sql_ms_8_ahead']} | |",
        f"| of which the claim's own statement, ms | "
        f"{empty['dispatch']['claim_write_ms_8_ahead']} | {full['dispatch']['claim_write_ms_8_ahead']} | |",
        f"| Status request, ms p50 / p99 | {empty['status']['p50_ms']} / {empty['status']['p99_ms']} | "
        f"{full['status']['p50_ms']} / {full['status']['p99_ms']} | |",
        f"| Status: the database's time ({full['status']['statements']} statements), ms | "
        f"{empty['status']['sql_ms']} | {full['status']['sql_ms']} | |",
        f"| Counting the finished jobs (the once-a-minute schedule), ms | "
        f"{empty['pages']['job_counts_refresh_ms']} | {full['pages']['job_counts_refresh_ms']} | |",
        f"| Counting the attempts per minute (the once-a-minute schedule; its first run counts 24 hours), ms | "
        f"{empty['pages']['attempt_minutes_refresh_ms']} | "
        f"{full['pages']['attempt_minutes_refresh_ms']} | |",
        "",
        "Drain against the same Collections calls sent directly to the fake, 2 at a time: "
        f"empty {empty['drain_events_per_s'] / empty['direct_events_per_s']:.0%}, with history "
        f"{full['drain_events_per_s'] / full['direct_events_per_s']:.0%} "
        f"(direct {full['direct_events_per_s']:,.0f}/s).",
        "",
        "### Every list page, with the history (ms; aim p99 < 100)",
        "",
        "| Page | p50 | p99 | max | empty p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    before = {p["url"]: p for p in empty["pages"]["jobs"] + empty["pages"]["dashboard"]}
    for page in full["pages"]["jobs"] + full["pages"]["dashboard"]:
        mark = "" if page["p99_ms"] < 100 else " **over**"
        lines.append(
            f"| `{page['url']}` | {page['p50_ms']} | {page['p99_ms']}{mark} | {page['max_ms']} | "
            f"{before.get(page['url'], {}).get('p99_ms', '')} |"
        )
    lines += ["", "<details><summary>EXPLAIN ANALYZE of each jobs page, with the history</summary>", ""]
    for url, plan in full["pages"]["plans"].items():
        lines += [f"`{url}`", "", "```", plan, "```", ""]
    lines += ["</details>", ""]
    return lines


def _workers(found: dict[str, Any]) -> list[str]:
    one = found["1"]
    lines = [
        "## Throughput against workers (fake CRM at 300 ms a call, no limit)",
        "",
        f"{found['events']:,} events, batches of {found['batch']}; rate from the first write to the last.",
        "",
        "| Workers | events/s | x one worker |",
        "| --- | ---: | ---: |",
    ]
    for key in ("1", "2", "4", "8"):
        lines.append(f"| {key} | {found[key]:,.0f} | {found[key] / one:.2f} |")
    lines += [f"| 2 clusters x 4, 2 dispatchers | {found['2x4']:,.0f} | {found['2x4'] / one:.2f} |", ""]
    if "direct_2" in found:
        ratio = found["2"] / found["direct_2"]
        lines += [
            f"Drain with 2 workers against the same Collections calls sent directly, 2 at a time, to the same fake: "
            f"{found['2']:,.0f} / {found['direct_2']:,.0f} events/s = **{ratio:.0%}** "
            f"(aim ≥ 60%: {_aim(ratio >= 0.6)}).",
            "",
        ]
    return lines


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """PNG plots of what this run measured, into `folder` (docs/bench): drawn by the bench, committed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    if "flat" in results:
        flat = results["flat"]
        names = ["single", "lists", "drain", "dispatch"]
        empty = [
            flat["empty"]["single_events_per_s"],
            flat["empty"]["list_events_per_s"],
            flat["empty"]["drain_events_per_s"],
            flat["empty"]["dispatch"]["jobs_per_s"],
        ]
        full = [
            flat["history"]["single_events_per_s"],
            flat["history"]["list_events_per_s"],
            flat["history"]["drain_events_per_s"],
            flat["history"]["dispatch"]["jobs_per_s"],
        ]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [1.0] * len(names), 0.4, label="empty tables")
        ax.bar([x + 0.2 for x in xs], [f / e for f, e in zip(full, empty, strict=True)], 0.4, label="with history")
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=1, label="aim: 90%")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("rate, share of the empty-table rate")
        ax.set_title(f"Flat cost: empty vs {flat['history']['history']:,} finished records")
        ax.legend(loc="lower right")
        save(fig, "scale-flat.png")
    if "workers" in results:
        found = results["workers"]
        counts = [1, 2, 4, 8]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(counts, [found[str(c)] for c in counts], marker="o", label="one cluster")
        ax.plot(counts, [found["1"] * c for c in counts], linestyle=":", color="grey", label="linear")
        ax.scatter([8], [found["2x4"]], color="tab:red", zorder=3, label="2 clusters x 4, 2 dispatchers")
        ax.set_xlabel("workers")
        ax.set_ylabel("events/s")
        ax.set_title("Drain against workers (300 ms a call)")
        ax.legend()
        save(fig, "scale-workers.png")
    if "ratelimit" in results:
        found = results["ratelimit"]
        times = found["times"]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        start = times[0]
        from bisect import bisect_left

        steps = [start + i / 10 for i in range(int((times[-1] - start) * 10))]
        in_window = [bisect_left(times, s + found["window"]) - bisect_left(times, s) for s in steps]
        ax.plot([s - start for s in steps], in_window, linewidth=1)
        ax.axhline(found["limit"], color="tab:red", linestyle="--", linewidth=1, label=f"limit {found['limit']}")
        ax.set_xlabel("seconds")
        ax.set_ylabel(f"calls in the next {found['window']} s")
        ax.set_title("Calls per window at the fake, all workers together")
        ax.legend()
        save(fig, "scale-ratelimit.png")
    if "memory" in results:
        samples = results["memory"]["samples"]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot([s[0] for s in samples], [s[1] / 1024 for s in samples], label="web (gunicorn)")
        ax.plot([s[0] for s in samples], [s[2] / 1024 for s in samples], label="workers and dispatcher")
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS, MiB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Memory through a drain of {results['memory']['events']:,} events")
        ax.legend()
        save(fig, "scale-memory.png")
    if "retention" in results:
        days = results["retention"]["days"]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot([d["day"] for d in days], [d["events"] for d in days], marker="o", label="events")
        ax.plot([d["day"] for d in days], [d["attempts"] for d in days], marker="o", label="attempts")
        ax.set_xlabel("day")
        ax.set_ylabel("rows")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Retention keeping {results['retention']['keep_days']} days, a steady load")
        ax.legend()
        save(fig, "scale-retention.png")
    if "lanes" in results:
        found = results["lanes"]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(range(1, len(found["delays_s"]) + 1), found["delays_s"])
        ax.axhline(found["flush_interval"] + 2, color="tab:red", linestyle="--", linewidth=1, label="aim")
        ax.set_xlabel("live change")
        ax.set_ylabel("accepted → synced, s")
        ax.set_title(f"Live changes behind a {found['backfill']:,}-record backfill at the limit")
        ax.legend()
        save(fig, "scale-lanes.png")
    return made

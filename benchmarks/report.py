"""The Markdown report: machine, calling-thread table, end-to-end table, collector, targets."""

from __future__ import annotations

from typing import Any, Optional

from analysis import BurstRow, CallRow, Target

__all__ = ["render"]

# A 1-minute load average above this before the suite starts means the machine was shared.
_BUSY_LOAD = 0.7


def _met(met: Optional[bool]) -> str:
    return {True: "✅ met", False: "❌ not met", None: "n/a"}[met]


def _num(value: Optional[float], fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _machine(raw: dict[str, Any]) -> list[str]:
    m = raw["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    plan = raw["plan"]
    return [
        f"# Benchmarks: the calling thread and the logging path ({raw['mode']} run)",
        "",
        f"- Command: `{raw.get('command', 'python benchmarks/run.py')}`",
        f"- Python {m['python']} ({m['implementation']}, {m['python_build']}) on {m['platform']}",
        f"- CPU: {m['cpu']}; {m['cores']} cores ({m['usable_cores']} usable); "
        f"{m['memory_gib']} GiB RAM; load average at start {m['load_average_start']}, "
        f"at end {raw.get('load_average_end')}",
        f"- Versions: {versions}; commit {m['commit']}; started {m['started_utc']} UTC; "
        f"suite took {raw['elapsed_s']:.0f} s",
        f"- Per-call figures: median of {plan['repeats']} timed blocks of {plan['calls']:,} "
        f"calls (min-max shown), after a warm-up; end-to-end: median of "
        f"{plan['burst_repeats']} burst(s) of {plan['burst']:,} events, each sender in its "
        "own process; the collector is a separate process on 127.0.0.1.",
        *_load_warning(m["load_average_start"]),
        "",
    ]


def _load_warning(start: Optional[list[float]]) -> list[str]:
    """A note when other work was running before the suite: on 2 cores it skews every figure
    (the end figure includes the suite's own load, so only the start one is judged)."""
    busy = start[0] if start else 0.0
    if busy < _BUSY_LOAD:
        return []
    return [
        f"- **Note:** the 1-minute load average was {busy:.2f} at start on this 2-core machine: "
        "other processes were competing for the CPU, so figures are noisier and slower than "
        "on an idle machine. Ratios within one run are still like for like."
    ]


def _live_note(raw: dict[str, Any]) -> list[str]:
    """What the transport did during the timed blocks of (a): the proof that they overlapped
    real sending (see percall.LiveLoad)."""
    document = raw["percall"].get("stdlib") or {}
    transport = document.get("transport") or {}
    live = transport.get("a.handler")
    if not live:
        return []
    sent, backlog = live["sent_during_block"], live["backlog_at_end"]
    busy = "so it had work all along" if backlog["min"] > 0 else "and it ran out of work in some"
    missed = (
        f" In {live['missed_start']} block(s) no batch was delivered before the block started."
        if live.get("missed_start")
        else ""
    )
    fresh = transport.get("a.handler_from_empty")
    also = (
        f" Blocks starting from an empty queue (the previous method): a median "
        f"{fresh['sent_during_block']['median']:,.0f} events delivered during a block."
        if fresh
        else ""
    )
    return [
        "",
        f"(a) transport sending: before each block {live['preload']:,} events were logged "
        "(untimed) and a batch of them was delivered; during a block the transport delivered "
        f"a median {sent['median']:,.0f} events to the collector process (min {sent['min']:,}), "
        f"and at its end a backlog of at least {backlog['min']:,} events was still queued, "
        f"{busy}.{missed}{also}",
    ]


def _calls_table(rows: list[CallRow], raw: dict[str, Any]) -> list[str]:
    lines = [
        "## Calling-thread cost (µs per call)",
        "",
        "| # | what is timed | µs/call | min-max | compared with | its µs/call | ratio | target |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        ratio = r.ratio
        target = "" if r.target is None else f"≤ {r.target}x {_met(r.met)}"
        lines.append(
            f"| {r.figure} | {r.what} | {r.us:.2f} | {r.us_min:.2f}-{r.us_max:.2f} | "
            f"{r.floor or '—'} | {_num(r.floor_us, '.2f')} | "
            f"{'—' if ratio is None else f'{ratio:.2f}x'} | {target} |"
        )
    lines += _live_note(raw)
    structlog = [r for r in rows if r.figure == "d" and r.floor_us is not None]
    if structlog:
        added = ", ".join(f"{r.what}: {r.us - (r.floor_us or 0.0):+.2f} µs" for r in structlog)
        lines += ["", f"(d) added cost of `HtEventsProcessor`: {added}."]
    return [*lines, ""]


def _bursts_table(rows: list[BurstRow], floor_kib: Optional[int]) -> list[str]:
    lines = [
        "## End-to-end burst (delivered events/s, CPU per delivered event, peak RSS)",
        "",
        "| sender | settings | delivered | % | first call → all acked (s) | events/s | "
        "calling thread (s) | CPU µs/event | of which off the calling thread | "
        "CPU vs lowest peer | peak RSS (MiB) | collector CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.cpu_vs_lowest_peer
        lines.append(
            f"| {r.label} | {r.settings} | {r.delivered:,}/{r.events:,} | {r.fraction:.1%} | "
            f"{r.ack_s:.2f} | {r.events_per_s:,.0f} | {r.calls_s:.2f} | "
            f"{_num(r.cpu_us, '.1f')} | {_num(r.background_cpu_us, '.1f')} | "
            f"{'—' if ratio is None else f'{ratio:.2f}x'} | {r.rss_mib:.1f} | "
            f"{r.collector_share:.0%} |"
        )
    lines += [
        "",
        "CPU µs/event: the sender process's user + system CPU (every thread) from just before "
        "the first call until its flush returned, divided by the events the collector counted; "
        "compared with the lowest of the peers' rows.",
    ]
    if floor_kib:
        lines += [
            "",
            f"RSS floor: an interpreter that only imported `requests` peaks at "
            f"{floor_kib / 1024:.1f} MiB.",
        ]
    return [*lines, ""]


def _collector(raw: dict[str, Any], bursts: list[BurstRow]) -> list[str]:
    cap = raw.get("capacity", {})
    lines = ["## Is the collector the bottleneck?", ""]
    for name, label in (("fast", "benchmark collector"), ("package", "`htevents-logging collect`")):
        for probe in (cap.get(name) or {}).values():
            if "error" in probe:
                lines.append(f"- {label}: probe failed: {probe['error']}")
                continue
            lines.append(
                f"- {label}, batches of {probe['batch']}: {probe['capacity_events_per_s']:,.0f} "
                f"events per collector-CPU-second (one probe client reached "
                f"{probe['probe_events_per_s']:,.0f} events/s)"
            )
    if bursts:
        busiest = max(bursts, key=lambda r: r.collector_share)
        fastest = max(bursts, key=lambda r: r.events_per_s)
        lines.append(
            f"- During the bursts the collector used at most {busiest.collector_share:.0%} of a "
            f"core ({busiest.label}, {busiest.settings}); the fastest sender delivered "
            f"{fastest.events_per_s:,.0f} events/s."
        )
    return [*lines, ""]


def _target_table(targets: list[Target]) -> list[str]:
    lines = ["| target | figure | goal | verdict |", "|---|---|---|---|"]
    return lines + [f"| {t.name} | {t.figure} | {t.goal} | {_met(t.met)} |" for t in targets]


def _targets(targets: list[Target], bursts: list[BurstRow]) -> list[str]:
    judged = [t for t in targets if t.judged]
    met = sum(1 for t in judged if t.met)
    lines = [
        "## Targets",
        "",
        f"{met} of {len(judged)} met, each judged on ratios of this run.",
        "",
    ]
    lines += _target_table(judged)
    reference = [t for t in targets if not t.judged]
    if reference:
        lines += [
            "",
            "### The same goals for our other ways in (for reference, not targets)",
            "",
            *_target_table(reference),
        ]
    ours = next((r for r in bursts if r.key == "htevents-logging-handler.defaults"), None)
    peer_defaults = [r for r in bursts if not r.ours and r.shipped_defaults]
    if ours is not None and peer_defaults:
        lightest = min(peer_defaults, key=lambda r: r.rss_mib)
        lines += [
            "",
            f"Peak RSS against the peers' shipped-defaults runs (which may drop part of the "
            f"burst and then hold less): {ours.label} {ours.rss_mib:.1f} MiB, lightest peer "
            f"{lightest.sdk} {lightest.rss_mib:.1f} MiB having delivered {lightest.fraction:.1%}.",
        ]
    return [*lines, ""]


def render(raw: dict[str, Any], analysis: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    lines = _machine(raw)
    lines += _calls_table(analysis["calls"], raw)
    lines += _bursts_table(analysis["bursts"], raw.get("rss_floor_kib"))
    lines += _collector(raw, analysis["bursts"])
    lines += _targets(analysis["targets"], analysis["bursts"])
    errors = raw.get("errors") or []
    if errors:
        lines += ["## Errors and notes", "", *[f"- {error}" for error in errors], ""]
    return "\n".join(lines)

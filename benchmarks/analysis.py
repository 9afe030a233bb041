"""From raw measurements to figures, ratios against the floors, and the targets' verdicts.

Nothing here asserts: a target that is not met is reported as such, with its figures.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Optional

from sdks import LABELS, is_ours

__all__ = ["BurstRow", "CallRow", "Target", "analyze"]

PEER_CALL = {"events-sdk-python": "track", "segment": "track", "posthog": "capture"}
# Our three senders (see sdks.OURS).
TRACK = "htevents-logging"
HANDLER = "htevents-logging-handler"
STRUCTLOG = "htevents-logging-structlog"


@dataclass
class CallRow:
    """One calling-thread figure and its comparison; ``goal`` names the target it is judged
    on (``ratio <= target``), when it is one."""

    figure: str
    what: str
    us: float
    us_min: float
    us_max: float
    floor: str = ""
    floor_us: Optional[float] = None
    target: Optional[float] = None  # the ratio must be <= target
    goal: str = ""

    @property
    def ratio(self) -> Optional[float]:
        return None if not self.floor_us else self.us / self.floor_us

    @property
    def met(self) -> Optional[bool]:
        ratio = self.ratio
        return None if self.target is None or ratio is None else ratio <= self.target


@dataclass
class BurstRow:
    """One end-to-end configuration, medians over its repeats."""

    key: str
    sdk: str
    settings: str
    events: int
    delivered: int
    ack_s: float
    events_per_s: float
    calls_s: float
    rss_mib: float
    collector_share: float
    repeats: int
    cpu_us: Optional[float] = None  # process CPU (all threads) per delivered event
    calling_cpu_us: Optional[float] = None  # the calling thread's part of it
    cpu_vs_lowest_peer: Optional[float] = None

    @property
    def fraction(self) -> float:
        return self.delivered / self.events if self.events else 0.0

    @property
    def ours(self) -> bool:
        return is_ours(self.sdk)

    @property
    def shipped_defaults(self) -> bool:
        return self.key.endswith(".defaults")

    @property
    def label(self) -> str:
        return LABELS.get(self.sdk, self.sdk)

    @property
    def background_cpu_us(self) -> Optional[float]:
        """CPU per delivered event off the calling thread (the SDK's background threads)."""
        if self.cpu_us is None or self.calling_cpu_us is None:
            return None
        return self.cpu_us - self.calling_cpu_us


@dataclass
class Target:
    """A target, its figure, and whether it is met (None: not measurable). ``judged`` is
    False for a figure shown against the same goal for reference only."""

    name: str
    figure: str
    goal: str
    met: Optional[bool]
    judged: bool = True


def _case(raw: dict[str, Any], group: str, case: str) -> Optional[dict[str, Any]]:
    document = raw["percall"].get(group) or {}
    found: Optional[dict[str, Any]] = document.get("cases", {}).get(case)
    return found


def _row(raw: dict[str, Any], figure: str, what: str, group: str, case: str) -> Optional[CallRow]:
    found = _case(raw, group, case)
    if found is None:
        return None
    return CallRow(figure, what, found["median"], found["min"], found["max"])


def _against(
    row: Optional[CallRow],
    floor: Optional[CallRow],
    name: str,
    target: Optional[float] = None,
    goal: str = "",
) -> Any:
    if row is None:
        return None
    compared = CallRow(**{**asdict(row), "floor": name, "target": target, "goal": goal})
    compared.floor_us = floor.us if floor is not None else None
    return compared


def call_rows(raw: dict[str, Any]) -> list[CallRow]:
    """(a)-(d), each against its floor, then the peers' own figures."""
    handler = _row(
        raw, "a", "HtEventsHandler, event record, transport sending", "stdlib", "a.handler"
    )
    fresh = _row(
        raw,
        "a",
        "same, each block starting with an empty queue",
        "stdlib",
        "a.handler_from_empty",
    )
    queue_floor = _row(raw, "a", "QueueHandler→QueueListener", "stdlib", "a.queue_floor")
    null_floor = _row(raw, "a", "NullHandler", "stdlib", "a.null_floor")
    plain = _row(raw, "b", "HtEventsHandler, record without payload", "stdlib", "b.handler_plain")
    null_plain = _row(raw, "b", "NullHandler", "stdlib", "b.null_plain")
    track = _row(raw, "c", "HtEvents.track()", "track", "c.htevents-logging")
    with_p = _row(raw, "d", "structlog chain + HtEventsProcessor", "structlog", "d.with_processor")
    without = _row(raw, "d", "structlog chain", "structlog", "d.without_processor")
    plain_with = _row(raw, "d", "same, call without payload", "structlog", "d.plain_with_processor")
    plain_without = _row(raw, "d", "structlog chain", "structlog", "d.plain_without_processor")
    peers = {
        peer: _row(raw, "c", f"{peer} {call}()", "track", f"c.{peer}")
        for peer, call in PEER_CALL.items()
    }
    rows = [
        _against(
            handler,
            queue_floor,
            "QueueHandler→QueueListener floor",
            0.6,
            "(a) HtEventsHandler event record, transport sending, vs the QueueHandler floor",
        ),
        _against(
            handler,
            null_floor,
            "NullHandler floor (same extra)",
            1.6,
            "(a) HtEventsHandler event record, transport sending, vs NullHandler (same extra)",
        ),
        _against(fresh, null_floor, "NullHandler floor (same extra)"),
        _against(
            plain,
            null_plain,
            "NullHandler floor (same call)",
            1.1,
            "(b) record without payload through our handler vs NullHandler",
        ),
        _against(
            track,
            peers["events-sdk-python"],
            "events-sdk-python track()",
            0.5,
            "(c) HtEvents.track() vs events-sdk-python track()",
        ),
        _against(track, peers["segment"], "segment track()"),
        _against(track, peers["posthog"], "posthog capture()"),
        _against(with_p, without, "same chain without the processor"),
        _against(plain_with, plain_without, "same chain without the processor"),
        *peers.values(),
    ]
    return [row for row in rows if row is not None]


def _median(runs: list[dict[str, Any]], field: str) -> Optional[float]:
    values = [run[field] for run in runs if run.get(field) is not None]
    return float(statistics.median(values)) if values else None


def burst_rows(raw: dict[str, Any]) -> list[BurstRow]:
    """Medians of each end-to-end configuration's repeats, with CPU per delivered event
    compared with the lowest peer's (over every peer row)."""
    rows = []
    for key, entry in raw["bursts"].items():
        runs = [run for run in entry["runs"] if "error" not in run]
        if not runs:
            continue

        def median(field: str, runs: list[dict[str, Any]] = runs) -> float:
            return _median(runs, field) or 0.0

        rows.append(
            BurstRow(
                key=key,
                sdk=entry["sdk"],
                settings=entry["settings"],
                events=entry["events"],
                delivered=int(median("delivered")),
                ack_s=median("ack_s"),
                events_per_s=median("events_per_s"),
                calls_s=median("calls_s"),
                rss_mib=median("maxrss_kib") / 1024,
                collector_share=median("collector_share"),
                repeats=len(runs),
                cpu_us=_median(runs, "cpu_us_per_event"),
                calling_cpu_us=_median(runs, "calling_cpu_us_per_event"),
            )
        )
    lowest = _lowest_peer_cpu(rows)
    for row in rows:
        if lowest is not None and lowest.cpu_us and row.cpu_us is not None:
            row.cpu_vs_lowest_peer = row.cpu_us / lowest.cpu_us
    return rows


def _lowest_peer_cpu(rows: list[BurstRow]) -> Optional[BurstRow]:
    peers = [row for row in rows if not row.ours and row.cpu_us]
    return min(peers, key=lambda row: row.cpu_us or 0.0, default=None)


def _verdict(value: Optional[float], limit: float, *, at_least: bool = False) -> Optional[bool]:
    if value is None:
        return None
    return value >= limit if at_least else value <= limit


@dataclass(frozen=True)
class _Goals:
    """The end-to-end goals of one of our senders; ``judged``: the goals it is held to."""

    b100_speedup: float
    judged: frozenset[str]


#: Issue 14 holds the handler to every goal; track() keeps the last round's targets (2x at
#: batch 100, everything delivered, RSS); the structlog rows are shown against the handler's.
_ALL = frozenset({"cpu", "b100", "defaults", "delivered", "rss"})
GOALS = {
    HANDLER: _Goals(2.5, _ALL),
    STRUCTLOG: _Goals(2.5, frozenset()),
    TRACK: _Goals(2.0, frozenset({"b100", "delivered", "rss"})),
}


def _burst_targets(sender: str, bursts: list[BurstRow]) -> list[Target]:
    """CPU per event, events/s at batch 100 and at shipped defaults, delivery and RSS."""
    goals = GOALS[sender]
    name = LABELS[sender]
    by_key = {row.key: row for row in bursts}
    ours_100, ours_default = by_key.get(f"{sender}.b100"), by_key.get(f"{sender}.defaults")
    peers = [row for row in bursts if not row.ours]
    peers_100 = [row for row in peers if not row.shipped_defaults]
    peers_default = [row for row in peers if row.shipped_defaults]
    whole = [row for row in peers if row.delivered == row.events]
    out = []

    def add(what: str, figure: str, goal: str, met: Optional[bool], kind: str) -> None:
        out.append(Target(f"{name}: {what}", figure, goal, met, kind in goals.judged))

    lowest = _lowest_peer_cpu(bursts)
    for row, settings in ((ours_100, "batch 100"), (ours_default, "shipped defaults")):
        what = f"CPU per delivered event, {settings}, vs the lowest peer's"
        if row is None or row.cpu_vs_lowest_peer is None or lowest is None:
            add(what, "n/a (not measured)", "≤ 0.5x", None, "cpu")
            continue
        add(
            what,
            f"{row.cpu_us:.1f} vs {lowest.sdk} ({lowest.settings}) {lowest.cpu_us:.1f} µs "
            f"= {row.cpu_vs_lowest_peer:.2f}x",
            "≤ 0.5x",
            row.cpu_vs_lowest_peer <= 0.5,
            "cpu",
        )
    for row, group, goal, kind in (
        (ours_100, peers_100, goals.b100_speedup, "b100"),
        (ours_default, peers_default, 1.5, "defaults"),
    ):
        settings = "batch 100" if kind == "b100" else "shipped defaults"
        what = f"delivered events/s at {settings} vs the best peer's {settings}"
        best = max(group, key=lambda r: r.events_per_s, default=None)
        if row is None or best is None or not best.events_per_s:
            add(what, "n/a (not measured)", f"≥ {goal}x", None, kind)
            continue
        ratio = row.events_per_s / best.events_per_s
        figure = (
            f"{row.events_per_s:,.0f} vs {best.sdk} {best.events_per_s:,.0f} events/s "
            f"= {ratio:.2f}x"
        )
        add(what, figure, f"≥ {goal}x", _verdict(ratio, goal, at_least=True), kind)
    if ours_default is not None:
        add(
            "shipped defaults deliver the whole burst",
            f"{ours_default.delivered:,}/{ours_default.events:,} = {ours_default.fraction:.1%}",
            "100 %",
            ours_default.delivered == ours_default.events,
            "delivered",
        )
        lightest = min(whole, key=lambda r: r.rss_mib, default=None)
        what = "peak RSS at shipped defaults vs every peer that delivers the whole burst"
        if lightest is None:
            add(what, "n/a (no peer delivered the whole burst)", "below every one", None, "rss")
        else:
            add(
                what,
                f"{ours_default.rss_mib:.1f} MiB vs {lightest.sdk} ({lightest.settings}) "
                f"{lightest.rss_mib:.1f} MiB",
                "below every one",
                ours_default.rss_mib < lightest.rss_mib,
                "rss",
            )
    return out


def targets(calls: list[CallRow], bursts: list[BurstRow]) -> list[Target]:
    """The targets, each with the figure it is judged on (and reference rows, not judged)."""
    out = []
    for row in calls:
        if row.target is None:
            continue
        ratio = row.ratio
        shown = (
            "n/a (not measured)"
            if ratio is None
            else f"{row.us:.2f} vs {row.floor_us:.2f} µs = {ratio:.2f}x"
        )
        out.append(Target(row.goal, shown, f"≤ {row.target}x", row.met))
    for sender in (HANDLER, TRACK, STRUCTLOG):
        out += _burst_targets(sender, bursts)
    return out


def analyze(raw: dict[str, Any]) -> dict[str, Any]:
    """Rows and targets, as plain data (for the JSON file) and as objects (for the report)."""
    calls = call_rows(raw)
    bursts = burst_rows(raw)
    verdicts = targets(calls, bursts)
    return {
        "calls": calls,
        "bursts": bursts,
        "targets": verdicts,
        "as_json": {
            "calls": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in calls],
            "bursts": [
                {**asdict(r), "fraction": r.fraction, "background_cpu_us": r.background_cpu_us}
                for r in bursts
            ],
            "targets": [asdict(t) for t in verdicts],
        },
    }

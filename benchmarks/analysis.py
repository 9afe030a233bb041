"""From raw measurements to figures, ratios against the floors, and the targets' verdicts.

Nothing here asserts: a target that is not met is reported as such, with its figures.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Optional

__all__ = ["BurstRow", "CallRow", "Target", "analyze"]

#: (figure, what is compared, goal) of the calling-thread targets; the limits are in call_rows.
CALL_TARGETS = (
    ("a", "HtEventsHandler event record vs QueueHandler→QueueListener floor", "≤ 0.6x"),
    ("b", "record without payload through our handler vs NullHandler", "≤ 1.1x"),
    ("c", "HtEvents.track() vs events-sdk-python track()", "≤ 0.5x"),
)
PEER_CALL = {"events-sdk-python": "track", "segment": "track", "posthog": "capture"}


@dataclass
class CallRow:
    """One calling-thread figure and its comparison."""

    figure: str
    what: str
    us: float
    us_min: float
    us_max: float
    floor: str = ""
    floor_us: Optional[float] = None
    target: Optional[float] = None  # the ratio must be <= target

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

    @property
    def fraction(self) -> float:
        return self.delivered / self.events if self.events else 0.0


@dataclass
class Target:
    """A target from the issue, its figure, and whether it is met (None: not measurable)."""

    name: str
    figure: str
    goal: str
    met: Optional[bool]


def _case(raw: dict[str, Any], group: str, case: str) -> Optional[dict[str, Any]]:
    document = raw["percall"].get(group) or {}
    found: Optional[dict[str, Any]] = document.get("cases", {}).get(case)
    return found


def _row(raw: dict[str, Any], figure: str, what: str, group: str, case: str) -> Optional[CallRow]:
    found = _case(raw, group, case)
    if found is None:
        return None
    return CallRow(figure, what, found["median"], found["min"], found["max"])


def _against(row: Optional[CallRow], floor: Optional[CallRow], name: str, target: Any) -> Any:
    if row is None:
        return None
    compared = CallRow(**{**asdict(row), "floor": name, "target": target})
    compared.floor_us = floor.us if floor is not None else None
    return compared


def call_rows(raw: dict[str, Any]) -> list[CallRow]:
    """(a)-(d), each against its floor, then the peers' own figures."""
    handler = _row(raw, "a", "HtEventsHandler, event record", "stdlib", "a.handler")
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
        _against(handler, queue_floor, "QueueHandler→QueueListener floor", 0.6),
        _against(handler, null_floor, "NullHandler floor", None),
        _against(plain, null_plain, "NullHandler floor (same call)", 1.1),
        _against(track, peers["events-sdk-python"], "events-sdk-python track()", 0.5),
        _against(track, peers["segment"], "segment track()", None),
        _against(track, peers["posthog"], "posthog capture()", None),
        _against(with_p, without, "same chain without the processor", None),
        _against(plain_with, plain_without, "same chain without the processor", None),
        *peers.values(),
    ]
    return [row for row in rows if row is not None]


def burst_rows(raw: dict[str, Any]) -> list[BurstRow]:
    """Medians of each end-to-end configuration's repeats."""
    rows = []
    for key, entry in raw["bursts"].items():
        runs = [run for run in entry["runs"] if "error" not in run]
        if not runs:
            continue

        def median(field: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(run[field] for run in runs))

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
            )
        )
    return rows


def _verdict(value: Optional[float], limit: float, *, at_least: bool = False) -> Optional[bool]:
    if value is None:
        return None
    return value >= limit if at_least else value <= limit


def targets(calls: list[CallRow], bursts: list[BurstRow]) -> list[Target]:
    """The issue's targets, each with the figure it is judged on."""
    out = []
    judged = {row.figure: row for row in calls if row.target is not None}
    for figure, name, goal in CALL_TARGETS:
        row = judged.get(figure)
        ratio = row.ratio if row is not None else None
        shown = "n/a (not measured)" if ratio is None else f"{ratio:.2f}x"
        out.append(Target(f"({figure}) {name}", shown, goal, row.met if row else None))
    by_key = {row.key: row for row in bursts}
    ours_100 = by_key.get("htevents-logging.b100")
    peers_100 = [
        row for row in bursts if row.sdk != "htevents-logging" and row.key.endswith("b100")
    ]
    best = max(peers_100, key=lambda row: row.events_per_s, default=None)
    if ours_100 is not None and best is not None:
        ratio = ours_100.events_per_s / best.events_per_s
        figure = (
            f"{ours_100.events_per_s:,.0f} vs {best.sdk} {best.events_per_s:,.0f} events/s "
            f"= {ratio:.2f}x"
        )
        out.append(
            Target(
                "(e) delivered events/s at batch 100 vs best peer",
                figure,
                "≥ 2x",
                _verdict(ratio, 2.0, at_least=True),
            )
        )
    else:
        out.append(Target("(e) delivered events/s at batch 100 vs best peer", "n/a", "≥ 2x", None))
    ours_default = by_key.get("htevents-logging.defaults")
    if ours_default is not None:
        out.append(
            Target(
                "(e) burst with shipped defaults delivers everything",
                f"{ours_default.delivered:,}/{ours_default.events:,} = {ours_default.fraction:.1%}",
                "100 %",
                ours_default.delivered == ours_default.events,
            )
        )
        lightest = min(peers_100, key=lambda row: row.rss_mib, default=None)
        if lightest is not None:
            out.append(
                Target(
                    "(e) peak RSS, our shipped defaults vs each peer delivering the same burst",
                    f"{ours_default.rss_mib:.1f} MiB vs {lightest.sdk} {lightest.rss_mib:.1f} MiB",
                    "≤ every peer",
                    ours_default.rss_mib <= lightest.rss_mib,
                )
            )
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
            "bursts": [{**asdict(r), "fraction": r.fraction} for r in bursts],
            "targets": [asdict(t) for t in verdicts],
        },
    }

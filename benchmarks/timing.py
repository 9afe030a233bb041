"""Interleaved per-call timing: µs per call = (time of ``n`` calls) / ``n``, median of repeats.

Each case is a ``loop(n)`` that makes the call ``n`` times (the call written out literally in
the loop, so every case pays the same loop overhead) and a ``settle()`` that waits until the
case's background work is finished. Repeats interleave the cases (the order rotates each
round) so a slow patch of the machine hits every case alike; each timed block starts with no
backlog left by the previous one, while background work caused by the block itself runs during
it and competes for the GIL, as it would in an application. A case may also set ``before()``,
run untimed just before each of its blocks: to give its background thread work that overlaps
the block (see ``percall.LiveLoad``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Case", "measure", "summarize"]


@dataclass
class Case:
    """One thing to time: ``loop(n)`` makes the call ``n`` times; ``settle()`` drains;
    ``before()`` runs untimed just before each block."""

    loop: Callable[[int], None]
    settle: Callable[[], object] = lambda: None
    before: Callable[[], object] = lambda: None


def _timed(loop: Callable[[int], None], n: int) -> float:
    start = time.perf_counter_ns()
    loop(n)
    return (time.perf_counter_ns() - start) / n / 1000.0


def measure(cases: dict[str, Case], calls: int, repeats: int) -> dict[str, list[float]]:
    """µs per call of each case, one figure per repeat, after one untimed warm-up round."""
    names = list(cases)
    for name in names:  # warm-up: imports, caches, connections, the transport thread
        cases[name].before()
        cases[name].loop(max(1, calls // 4))
        cases[name].settle()
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            case = cases[name]
            case.before()
            results[name].append(_timed(case.loop, calls))
            case.settle()
    return results


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and the samples themselves."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 4) for s in samples],
    }

"""(a) split into the calling thread's own CPU and the time it waits for the GIL.

``python benchmarks/calling_cpu.py [--repeats 15] [--calls 5000]``

``percall.py`` times (a) by the wall clock, as an application sees it. This script reads the
calling thread's CPU clock (``time.thread_time_ns``) over the same blocks as well, so the two
parts of that figure can be told apart:

* **live**: the cases of ``percall.py``'s ``stdlib`` group (our handler while its transport
  really sends to a collector process, the ``QueueHandler``→``QueueListener`` floor and
  ``NullHandler``), each block timed by both clocks. Wall minus CPU is the time the calling
  thread waited while a background thread (our transport, the floor's listener) held the GIL.
* **stubbed**: our handler with the worker's queue replaced by a ``deque`` (nothing is sent
  and no background thread runs), against ``NullHandler``, minimum over the blocks: what the
  calling thread's own code costs, undisturbed.

It starts the benchmark collector itself, on 127.0.0.1, and stops it at the end.
"""

from __future__ import annotations

import argparse
import collections
import logging
import statistics
import sys
import time
from typing import Any, Callable

import netguard
import percall
from procs import benchmark_collector
from sdks import WRITE_KEY, dedicated_logger, event_loop
from timing import Case, measure

Loop = Callable[[int], None]


def _cpu(loop: Loop, calls: int) -> float:
    """CPU µs per call of this thread over ``loop(calls)``."""
    start = time.thread_time_ns()
    loop(calls)
    return (time.thread_time_ns() - start) / calls / 1000


def live(url: str, calls: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU µs per call of (a) and its floors, timed as ``percall.py`` times
    them (``timing.measure``), with each block's CPU time read as well."""
    cases, finish = percall.stdlib_group(url, calls)
    cpu: dict[str, list[float]] = {}

    def on_both_clocks(name: str, loop: Loop) -> Loop:
        def timed(n: int) -> None:
            cpu.setdefault(name, []).append(_cpu(loop, n))

        return timed

    names = ["a.handler", "a.queue_floor", "a.null_floor"]
    wall = measure(
        {
            name: Case(on_both_clocks(name, case.loop), case.settle, case.before)
            for name, case in cases.items()
            if name in names
        },
        calls,
        repeats,
    )
    finish()
    return {  # (each case's first CPU figure is its warm-up block)
        name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name][1:])}
        for name in names
    }


def stubbed(calls: int, repeats: int) -> dict[str, float]:
    """Minimum CPU µs per call of our handler (queue stubbed) and of ``NullHandler``."""
    from htevents_logging import HtEventsHandler

    handler = HtEventsHandler(write_key=WRITE_KEY, host="http://127.0.0.1:9/")
    transport: Any = handler.client._transport
    taken: collections.deque[object] = collections.deque()
    transport._started = True  # the queue below stands in for the worker's: no thread runs
    transport._worker.put = lambda item, wait=0.0: taken.append(item) or True
    loops = {
        "ours": event_loop(dedicated_logger("calling_cpu.ours", handler)),
        "null": event_loop(dedicated_logger("calling_cpu.null", logging.NullHandler())),
    }
    best = {name: float("inf") for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            best[name] = min(best[name], _cpu(loop, calls))
            taken.clear()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per case")
    args = parser.parse_args(argv)
    netguard.install()
    collector = benchmark_collector()
    with collector:
        figures = live(collector.url, args.calls, args.repeats)
    labels = {
        "a.handler": "HtEventsHandler, event record, transport sending",
        "a.queue_floor": "QueueHandler→QueueListener floor",
        "a.null_floor": "NullHandler floor (same extra)",
    }
    print(f"## (a) live, median of {args.repeats} blocks of {args.calls:,} calls\n")
    print("| case | wall µs/call | CPU µs/call | waiting for the GIL |")
    print("|---|---:|---:|---:|")
    for name, label in labels.items():
        wall, cpu = figures[name]["wall"], figures[name]["cpu"]
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {wall - cpu:.2f} |")
    ours, floor = figures["a.handler"]["wall"], figures["a.queue_floor"]["wall"]
    print(f"\n(a) against the QueueHandler floor, wall: {ours / floor:.3f}x")
    best = stubbed(args.calls, max(args.repeats, 30))
    print("\n## The calling thread alone (queue stubbed), minimum CPU µs/call\n")
    print(f"- HtEventsHandler event record: {best['ours']:.2f}")
    print(f"- NullHandler, same extra: {best['null']:.2f}")
    print(f"- ours over NullHandler: {best['ours'] - best['null']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

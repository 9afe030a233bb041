"""Profile the calling thread of (a) and (c): where does a logged event's time go?

``python benchmarks/profile_hot_path.py [--calls 20000] [--only a|c] [--sort tottime]``

Starts the benchmark collector in its own process on 127.0.0.1 (so the transport does real
HTTP work, off this thread's profile but competing for the GIL as in production), then runs,
under ``cProfile`` (enabled on the calling thread only):

* (a) ``logger.info("Order completed", extra={"htevent": {...}})`` through ``HtEventsHandler``;
* (c) ``HtEvents.track(user_id=..., event=..., properties=...)``;

and prints the top functions by ``tottime`` (time spent in the function itself). With
``--pyinstrument`` (when installed) it prints pyinstrument's call tree instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from typing import Callable, Optional

import netguard
from procs import benchmark_collector
from sdks import WRITE_KEY, dedicated_logger, event_loop


def _case_a(url: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    from htevents_logging._frontends.handler import HtEventsHandler

    handler = HtEventsHandler(write_key=WRITE_KEY, host=url)
    return event_loop(dedicated_logger("profile", handler)), handler.close


def _case_c(url: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    from htevents_logging import HtEvents

    client = HtEvents(write_key=WRITE_KEY, host=url)

    def loop(n: int) -> None:
        track = client.track
        for _ in range(n):
            track(user_id="123", event="Order completed", properties={"total": 29.99})

    return loop, lambda: client.close(10.0)


CASES = {
    "a": ("(a) logger.info(..., extra={'htevent': ...}) through HtEventsHandler", _case_a),
    "c": ("(c) HtEvents.track(user_id=..., event=..., properties=...)", _case_c),
}


def _cprofile(loop: Callable[[int], None], calls: int, sort: str, limit: int) -> str:
    profiler = cProfile.Profile()
    start = time.perf_counter_ns()
    profiler.enable()
    loop(calls)
    profiler.disable()
    elapsed_us = (time.perf_counter_ns() - start) / calls / 1000
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(sort).print_stats(limit)
    return f"{elapsed_us:.1f} µs/call under the profiler\n{out.getvalue()}"


def _pyinstrument(loop: Callable[[int], None], calls: int) -> str:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001)
    profiler.start()
    loop(calls)
    profiler.stop()
    text: str = profiler.output_text(unicode=True, color=False)
    return text


def profile(url: str, which: str, calls: int, sort: str, limit: int, tree: bool) -> None:
    title, make = CASES[which]
    loop, close = make(url)
    loop(max(1, calls // 10))  # warm-up: imports, caches, the connection, the thread
    try:
        print(f"\n=== {title}: {calls:,} calls ===")
        print(_pyinstrument(loop, calls) if tree else _cprofile(loop, calls, sort, limit))
    finally:
        close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--only", choices=sorted(CASES), help="profile just (a) or (c)")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (default: tottime)")
    parser.add_argument("--limit", type=int, default=25, help="functions to show (default: 25)")
    parser.add_argument("--pyinstrument", action="store_true", help="pyinstrument call tree")
    args = parser.parse_args(argv)
    netguard.install()
    collector = benchmark_collector()
    with collector:
        for which in [args.only] if args.only else sorted(CASES):
            profile(collector.url, which, args.calls, args.sort, args.limit, args.pyinstrument)
    return 0


if __name__ == "__main__":
    sys.exit(main())

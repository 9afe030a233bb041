"""What ``capture_trace_context`` adds to a call (issue 12: under 0.5 µs without OpenTelemetry).

``python benchmarks/trace_context.py`` times ``track()`` on the calling thread with the setting
off, on in a process that does not trace (OpenTelemetry not imported), and on inside an active
span (OpenTelemetry SDK imported and tracing), interleaved, median of repeats; it prints µs per
call and the difference from the setting off, the floor measured in the same run.

The clients are disabled: each call builds, checks and encodes its message on the calling
thread, as every call does, and nothing is sent, so the figure is the calling thread's work.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from timing import Case, measure, summarize

from htevents_logging import HtEvents


def _loop(client: HtEvents) -> Callable[[int], None]:
    def loop(n: int) -> None:
        track = client.track
        for _ in range(n):
            track(user_id="123", event="Order completed", properties={"total": 29.99})

    return loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--with-span", action="store_true", help="also time inside a span")
    args = parser.parse_args(argv)
    off = HtEvents(disable=True)
    on = HtEvents(disable=True, capture_trace_context=True)
    cases = {"off": Case(_loop(off)), "on, not tracing": Case(_loop(on))}
    assert "opentelemetry.trace" not in sys.modules
    results = {
        name: summarize(samples)
        for name, samples in measure(cases, args.calls, args.repeats).items()
    }
    if args.with_span:
        from opentelemetry.sdk.trace import TracerProvider

        tracer = TracerProvider().get_tracer("bench")
        with tracer.start_as_current_span("bench"):
            spans = measure(
                {"off": Case(_loop(off)), "on, in a span": Case(_loop(on))},
                args.calls,
                args.repeats,
            )
        results["off (span run)"] = summarize(spans["off"])
        results["on, in a span"] = summarize(spans["on, in a span"])
    floor = results["off"]["median"]
    print(f"{'case':<20} {'µs/call':>8} {'added µs':>9}")
    for name, figures in results.items():
        base = results["off (span run)"]["median"] if "span" in name else floor
        print(f"{name:<20} {figures['median']:>8.3f} {figures['median'] - base:>+9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

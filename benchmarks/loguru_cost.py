"""The calling-thread cost of an event through loguru's ``HtEventsSink``, beside structlog's
``HtEventsProcessor`` (issue 12: the sink may cost no more than the processor).

``python benchmarks/loguru_cost.py`` times, interleaved in one process (median of repeats):

* loguru: ``logger.info("Order completed", htevent={...})`` to a sink that does nothing, and the
  same call with ``HtEventsSink`` added beside it; the difference is the sink's added cost;
* structlog: the chain ``merge_contextvars`` -> ``JSONRenderer`` to ``os.devnull``, without and
  with ``HtEventsProcessor``; the difference is the processor's added cost.

The loguru sinks are added with ``format="{message}"``; the same sink with loguru's default
format is timed too (loguru formats each record for each sink before calling it, time and all).
It prints µs per call and the ratio of the two added costs. Both front-ends send through one
client pointed at a collector process on 127.0.0.1, so the transport thread really sends.

Then it times each front-end's own call directly (``sink.write(message)`` with a message loguru
made, and ``processor(logger, "info", event_dict)`` with the event dict structlog would pass),
less a floor that passes the same arguments to a function doing nothing, with the transport
idle: the work the front-end itself does on the calling thread. In the whole-call figures above
the transport thread's work competes for the GIL; how much of it lands inside a loguru call
and how much inside a structlog call depends on the interpreter's scheduling (it moves with
``sys.setswitchinterval``), not on the front-end's code.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

import netguard
from procs import benchmark_collector
from timing import Case, measure

EVENT = {"userId": "123", "properties": {"total": 29.99}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    netguard.install()
    import structlog
    from loguru import logger

    from htevents_logging import HtEvents, HtEventsProcessor
    from htevents_logging.loguru import HtEventsSink

    collector = benchmark_collector().start()
    try:
        client = HtEvents(write_key="bench", host=collector.url)
        logger.remove()

        def route(name: str) -> Callable[[Any], bool]:
            return lambda record: record["extra"].get("route") == name

        # Each case logs to exactly one sink (every filter runs for every record, alike).
        class StreamDoingNothing:
            """A sink loguru treats as a stream (it has write), as it treats HtEventsSink."""

            def write(self, message: Any) -> None:
                pass

        sink_ids = [
            logger.add(lambda message: None, format="{message}", filter=route("floor")),
            logger.add(StreamDoingNothing(), format="{message}", filter=route("stream floor")),
            logger.add(HtEventsSink(client=client), format="{message}", filter=route("sink")),
            logger.add(HtEventsSink(client=client), filter=route("sink, default format")),
        ]
        floor, sink, sink_default = (
            logger.bind(route=name) for name in ("floor", "sink", "sink, default format")
        )
        stream_floor = logger.bind(route="stream floor")
        devnull = open(os.devnull, "w")  # noqa: SIM115 (closed below)

        def chain(extra: list[Any]) -> Any:
            return structlog.wrap_logger(
                structlog.WriteLogger(devnull),
                processors=[
                    structlog.contextvars.merge_contextvars,
                    *extra,
                    structlog.processors.JSONRenderer(),
                ],
                cache_logger_on_first_use=True,
            )

        without, with_processor = chain([]), chain([HtEventsProcessor(client=client)])

        def loop(call: Callable[..., None]) -> Callable[[int], None]:
            def run(n: int) -> None:
                for _ in range(n):
                    call("Order completed", htevent=EVENT)

            return run

        def settle() -> None:
            client.flush(60.0)

        cases = {
            "loguru, a sink doing nothing": Case(loop(floor.info)),
            "loguru, a stream sink doing nothing": Case(loop(stream_floor.info)),
            "loguru + HtEventsSink": Case(loop(sink.info), settle),
            "loguru + HtEventsSink, default format": Case(loop(sink_default.info), settle),
            "structlog chain": Case(loop(without.info)),
            "structlog chain + HtEventsProcessor": Case(loop(with_processor.info), settle),
        }
        medians = {
            name: sorted(samples)[len(samples) // 2]
            for name, samples in measure(cases, args.calls, args.repeats).items()
        }
        for sink_id in sink_ids:
            logger.remove(sink_id)
        client.close(10.0)
        devnull.close()
    finally:
        collector.stop()
    for name, median in medians.items():
        print(f"{name:<40} {median:8.2f} µs/call")
    sink_added = medians["loguru + HtEventsSink"] - medians["loguru, a sink doing nothing"]
    processor_added = medians["structlog chain + HtEventsProcessor"] - medians["structlog chain"]
    own = medians["loguru + HtEventsSink"] - medians["loguru, a stream sink doing nothing"]
    print(f"{'added by HtEventsSink':<40} {sink_added:8.2f} µs")
    print(f"{'  of which beyond a stream sink':<40} {own:8.2f} µs")
    print(f"{'added by HtEventsProcessor':<40} {processor_added:8.2f} µs")
    print(f"whole call, sink / processor: {sink_added / processor_added:.2f}x")
    print(f"whole call beyond a stream sink, sink / processor: {own / processor_added:.2f}x")
    direct(args.calls, args.repeats)
    return 0


def direct(calls: int, repeats: int) -> None:
    """Each front-end's own call, timed directly, less a floor (see the module docstring)."""
    from loguru import logger

    from htevents_logging import HtEvents, HtEventsProcessor
    from htevents_logging.loguru import HtEventsSink

    client = HtEvents(write_key="bench", host="http://127.0.0.1:9")
    client.enqueue = lambda item: None  # type: ignore[method-assign]  # the transport idle
    sink, processor = HtEventsSink(client=client), HtEventsProcessor(client=client)
    made: list[Any] = []
    logger.remove()
    sink_id = logger.add(made.append, format="{message}")
    logger.info("Order completed", htevent=EVENT)
    logger.remove(sink_id)
    message = made[0]

    def nothing(*args: Any) -> None:
        pass

    def sink_loop(write: Callable[[Any], None]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                write(message)

        return run

    def processor_loop(call: Callable[..., Any]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                call(None, "info", {"event": "Order completed", "htevent": EVENT})

        return run

    cases = {
        "sink floor": Case(sink_loop(nothing)),
        "HtEventsSink.write": Case(sink_loop(sink.write)),
        "processor floor": Case(processor_loop(nothing)),
        "HtEventsProcessor()": Case(processor_loop(processor)),
    }
    medians = {
        name: sorted(samples)[len(samples) // 2]
        for name, samples in measure(cases, calls, repeats).items()
    }
    sink_own = medians["HtEventsSink.write"] - medians["sink floor"]
    processor_own = medians["HtEventsProcessor()"] - medians["processor floor"]
    print(f"{'HtEventsSink, its own call':<40} {sink_own:8.2f} µs")
    print(f"{'HtEventsProcessor, its own call':<40} {processor_own:8.2f} µs")
    print(f"own call, sink / processor: {sink_own / processor_own:.2f}x (target: at most 1.0x)")


if __name__ == "__main__":
    raise SystemExit(main())

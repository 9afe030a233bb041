"""Calling-thread cost per call, one group of cases per process (run by ``run.py``).

``python benchmarks/percall.py GROUP --url http://127.0.0.1:PORT --calls N --repeats R``
prints one JSON document: µs per call for each case of the group (see ``timing.py``). Groups:

* ``stdlib``: (a) an event record through ``HtEventsHandler`` and the same call through the
  ``QueueHandler``→``QueueListener`` and ``NullHandler`` floors; (b) a record without payload
  through our handler and through ``NullHandler``.
* ``structlog``: (d) the same chain with and without ``HtEventsProcessor``.
* ``track``: (c) each SDK's own ``track``/``capture`` call (``--sdks``: ``htevents-logging``,
  ``events-sdk-python``, ``segment``, ``posthog``), all in one process, interleaved.

The transport of every SDK points at the collector process given by ``--url``, so the
background thread does real HTTP work while the calling thread is timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import queue
import sys
from typing import Any, Callable

import netguard
from sdks import SDKS, WRITE_KEY, make_sdk
from timing import Case, measure, summarize

Group = tuple[dict[str, Case], Callable[[], dict[str, Any]]]


class _Discard(logging.Handler):
    """The QueueListener's trivial handler: the floor measures the queue hop, not output."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"bench.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _event_loop(logger: logging.Logger) -> Callable[[int], None]:
    def loop(n: int) -> None:
        info = logger.info
        for _ in range(n):
            info(
                "Order completed",
                extra={"htevent": {"userId": "123", "properties": {"total": 29.99}}},
            )

    return loop


def _plain_loop(logger: logging.Logger) -> Callable[[int], None]:
    def loop(n: int) -> None:
        info = logger.info
        for _ in range(n):
            info("no payload %s", 1)

    return loop


def stdlib_group(url: str) -> Group:
    from htevents_logging._frontends.handler import HtEventsHandler

    handler = HtEventsHandler(write_key=WRITE_KEY, host=url)
    ours = _logger("ours", handler)
    null = _logger("null", logging.NullHandler())
    records: queue.Queue[Any] = queue.Queue()
    listener = logging.handlers.QueueListener(records, _Discard())
    listener.start()
    queued = _logger("queue", logging.handlers.QueueHandler(records))

    def settle_ours() -> None:
        handler.client.flush(60.0)

    cases = {
        "a.handler": Case(_event_loop(ours), settle_ours),
        "a.queue_floor": Case(_event_loop(queued), records.join),
        "a.null_floor": Case(_event_loop(null)),
        "b.handler_plain": Case(_plain_loop(ours), settle_ours),
        "b.null_plain": Case(_plain_loop(null)),
    }

    def finish() -> dict[str, Any]:
        stats = handler.client.stats()
        listener.stop()
        handler.close()
        return {"stats": stats}

    return cases, finish


def structlog_group(url: str) -> Group:
    import structlog

    from htevents_logging import HtEvents
    from htevents_logging._frontends.processor import HtEventsProcessor

    client = HtEvents(write_key=WRITE_KEY, host=url)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed in finish)

    def make(extra: list[Any]) -> Any:
        return structlog.wrap_logger(
            structlog.WriteLogger(devnull),
            processors=[
                structlog.contextvars.merge_contextvars,
                *extra,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        )

    def event_loop(log: Any) -> Callable[[int], None]:
        def loop(n: int) -> None:
            info = log.info
            for _ in range(n):
                info("Order completed", htevent={"userId": "123", "properties": {"total": 29.99}})

        return loop

    def plain_loop(log: Any) -> Callable[[int], None]:
        def loop(n: int) -> None:
            info = log.info
            for _ in range(n):
                info("no payload", n=1)

        return loop

    with_processor = make([HtEventsProcessor(client=client)])
    without = make([])

    def settle() -> None:
        client.flush(60.0)

    cases = {
        "d.with_processor": Case(event_loop(with_processor), settle),
        "d.without_processor": Case(event_loop(without)),
        "d.plain_with_processor": Case(plain_loop(with_processor)),
        "d.plain_without_processor": Case(plain_loop(without)),
    }

    def finish() -> dict[str, Any]:
        stats = client.stats()
        client.close(10.0)
        devnull.close()
        return {"stats": stats}

    return cases, finish


def track_group(url: str, names: list[str]) -> Group:
    """Every SDK in one process, interleaved, so their ratios see the same machine."""
    sdks = {name: make_sdk(name, url) for name in names}

    def finish() -> dict[str, Any]:
        stats = {name: sdk.stats() for name, sdk in sdks.items()}
        for sdk in sdks.values():
            sdk.close()
        return {"stats": stats}

    return {f"c.{name}": Case(sdk.loop, sdk.flush) for name, sdk in sdks.items()}, finish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("group", choices=["stdlib", "structlog", "track"])
    parser.add_argument("--url", required=True, help="the collector's base URL (loopback)")
    parser.add_argument("--calls", type=int, default=5000, help="calls per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per case")
    parser.add_argument(
        "--sdks", default=",".join(SDKS), help="track group: comma-separated SDK names"
    )
    args = parser.parse_args(argv)
    netguard.install()
    if args.group == "stdlib":
        cases, finish = stdlib_group(args.url)
    elif args.group == "structlog":
        cases, finish = structlog_group(args.url)
    else:
        cases, finish = track_group(args.url, [name for name in args.sdks.split(",") if name])
    results = measure(cases, args.calls, args.repeats)
    extra = finish()
    document = {
        "group": args.group,
        "calls": args.calls,
        "repeats": args.repeats,
        "cases": {name: summarize(samples) for name, samples in results.items()},
        **extra,
    }
    json.dump(document, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

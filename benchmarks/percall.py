"""Calling-thread cost per call, one group of cases per process (run by ``run.py``).

``python benchmarks/percall.py GROUP --url http://127.0.0.1:PORT --calls N --repeats R``
prints one JSON document: µs per call for each case of the group (see ``timing.py``). Groups:

* ``stdlib``: (a) an event record through ``HtEventsHandler`` while its transport really sends
  (see :class:`LiveLoad`), the same record with each block starting from an empty queue
  (``a.handler_from_empty``, the method of the previous round), and the same call through the
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
import statistics
import sys
import threading
import time
from typing import Any, Callable

import netguard
from sdks import (
    SDKS,
    WRITE_KEY,
    dedicated_logger,
    event_loop,
    make_sdk,
    structlog_chain,
    structlog_event_loop,
)
from timing import Case, measure, summarize

Group = tuple[dict[str, Case], Callable[[], dict[str, Any]]]


class _Discard(logging.Handler):
    """The QueueListener's trivial handler: the floor measures the queue hop, not output."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def _plain_loop(logger: logging.Logger) -> Callable[[int], None]:
    def loop(n: int) -> None:
        info = logger.info
        for _ in range(n):
            info("no payload %s", 1)

    return loop


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` (GIL-free pauses of 1 ms) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set
    while not condition():
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.001)
    return True


class LiveLoad:
    """Makes a timed block of the handler case overlap real sending, and proves it did.

    Left alone, a block that starts from an empty queue may be timed while the transport
    waits: it lets the first events of a burst gather (GIL-free) before it starts on them, and
    how much of its work then falls inside the block, rather than in the untimed ``settle``,
    depends on timing. So ``before()`` first logs ``preload`` events through the same logger
    (untimed), then waits (bounded) until the transport has delivered a batch of them: it has
    stopped gathering and works through a backlog, building, encoding and posting to the
    collector process. The block is timed right away, while it does: the calling thread
    competes with it for the GIL, as in a service that logs events without pause. ``preload``
    is the block's size, more than the transport gets through while the block runs, so it has
    work all along.

    ``settle()`` notes, at the end of each block, the events delivered while it ran and the
    backlog left in the queue (above zero: the transport was never idle for want of work), then
    flushes, so the next block (of any case) starts with nothing in flight. With ``preload=0``
    it only takes those notes: each block then starts from an empty queue, and the transport
    lets its first events gather before it starts on them.
    """

    def __init__(self, client: Any, loop: Callable[[int], None], preload: int) -> None:
        self.client = client
        self.loop = loop
        self.preload = preload
        self.sent_during: list[int] = []
        self.backlog_after: list[int] = []
        self.missed_start = 0  # blocks timed although no batch was delivered first
        self._sent_at_start = 0

    def _sent(self) -> int:
        return int(self.client.stats()["sent"])

    def before(self) -> None:
        if self.preload:
            sent = self._sent()
            self.loop(self.preload)
            if not _wait_for(lambda: self._sent() > sent, 30.0):
                self.missed_start += 1
        self._sent_at_start = self._sent()

    def settle(self) -> None:
        stats = self.client.stats()
        self.sent_during.append(int(stats["sent"]) - self._sent_at_start)
        self.backlog_after.append(int(stats["queue_depth"]))
        self.client.flush(60.0)

    def evidence(self) -> dict[str, Any]:
        """What the transport did during the blocks (the warm-up block is the first entry)."""
        sent, backlog = self.sent_during[1:] or [0], self.backlog_after[1:] or [0]
        return {
            "preload": self.preload,
            "sent_during_block": {"median": statistics.median(sent), "min": min(sent)},
            "backlog_at_end": {"median": statistics.median(backlog), "min": min(backlog)},
            "missed_start": self.missed_start,
        }


def stdlib_group(url: str, calls: int) -> Group:
    from htevents_logging import HtEventsHandler

    handler = HtEventsHandler(write_key=WRITE_KEY, host=url)
    ours = dedicated_logger("ours", handler)
    null = dedicated_logger("null", logging.NullHandler())
    records: queue.Queue[Any] = queue.Queue()
    listener = logging.handlers.QueueListener(records, _Discard())
    listener.start()
    queued = dedicated_logger("queue", logging.handlers.QueueHandler(records))
    live = LiveLoad(handler.client, event_loop(ours), preload=calls)
    from_empty = LiveLoad(handler.client, event_loop(ours), preload=0)

    def settle_ours() -> None:
        handler.client.flush(60.0)

    cases = {
        "a.handler": Case(event_loop(ours), live.settle, live.before),
        "a.handler_from_empty": Case(event_loop(ours), from_empty.settle, from_empty.before),
        "a.queue_floor": Case(event_loop(queued), records.join),
        "a.null_floor": Case(event_loop(null)),
        "b.handler_plain": Case(_plain_loop(ours), settle_ours),
        "b.null_plain": Case(_plain_loop(null)),
    }

    def finish() -> dict[str, Any]:
        stats = handler.client.stats()
        listener.stop()
        handler.close()
        return {
            "stats": stats,
            "transport": {
                "a.handler": live.evidence(),
                "a.handler_from_empty": from_empty.evidence(),
            },
        }

    return cases, finish


def structlog_group(url: str) -> Group:
    from htevents_logging import HtEvents, HtEventsProcessor

    client = HtEvents(write_key=WRITE_KEY, host=url)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed in finish)

    def plain_loop(log: Any) -> Callable[[int], None]:
        def loop(n: int) -> None:
            info = log.info
            for _ in range(n):
                info("no payload", n=1)

        return loop

    with_processor = structlog_chain(devnull, [HtEventsProcessor(client=client)])
    without = structlog_chain(devnull, [])

    def settle() -> None:
        client.flush(60.0)

    cases = {
        "d.with_processor": Case(structlog_event_loop(with_processor), settle),
        "d.without_processor": Case(structlog_event_loop(without)),
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
        cases, finish = stdlib_group(args.url, args.calls)
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

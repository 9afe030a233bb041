"""Chaos: deliver events through a loopback server that fails on a schedule, and count.

The schedule mixes 503s, 429s with ``Retry-After``, dropped connections, answers cut off
mid-body, answers that hang past the client's timeout, and an outage during which nothing
listens at all. The figures say how many events were sent, how many distinct messageIds
arrived, how many were lost, and how many arrived more than once (the server dedupes on
messageId, so duplicates are harmless, but they are counted).

    python benchmarks/chaos.py                 # the large run: 20,000 events, 10 s outage
    python benchmarks/chaos.py --events 2000 --outage 5

tests/test_chaos.py runs the same chaos, smaller, as part of the suite.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from htevents_logging import HtEventsHandler
from htevents_logging.collector import Action, Collector, Cut, Drop, Hang, Reply

WRITE_KEY = "chaos-write-key"


@dataclass(frozen=True)
class Figures:
    """What one chaos run measured."""

    sent: int
    delivered: int
    lost: int
    duplicated: int
    requests: int
    elapsed: float
    flushed: bool
    stats: dict[str, Any]

    def line(self) -> str:
        return (
            f"chaos: sent={self.sent} delivered={self.delivered} lost={self.lost} "
            f"duplicated={self.duplicated} requests={self.requests} elapsed={self.elapsed:.1f}s "
            f"flushed={self.flushed} "
            f"failed={self.stats['failed_by_reason']} dropped={self.stats['dropped_by_reason']} "
            f"rejected={self.stats['rejected_by_reason']} sent_by_client={self.stats['sent']}"
        )


def schedule(seed: int, length: int) -> list[Action]:
    """A repeatable mix of failures, with successes between them."""
    rng = random.Random(seed)
    failures: list[Action] = [
        Reply(503),
        Reply(500),
        Reply(429, headers={"Retry-After": "0.2"}),
        Reply(503, headers={"Retry-After": "0"}),
        Drop(),
        Cut(503),
        Hang(1.0),
    ]
    return [rng.choice(failures) if rng.random() < 0.5 else Reply(200) for _ in range(length)]


def run_chaos(
    *, events: int, threads: int = 4, seed: int = 7, outage: float = 5.0, timeout: float = 120.0
) -> Figures:
    """Log ``events`` through the handler from ``threads`` threads while the server misbehaves.

    Halfway through, the server goes away for ``outage`` seconds (connections refused) and
    comes back on the same port. Retries are sized to ride out the outage.
    """
    first = Collector(write_key=WRITE_KEY).start()
    port = first.port
    first.script(*schedule(seed, 60))
    collectors = [first]
    handler = HtEventsHandler(
        write_key=WRITE_KEY,
        host=first.url,
        max_events_in_batch=50,
        flush_interval=0.05,
        http_request_timeout=0.5,
        max_retries=40,
        retry_backoff=0.05,
        retry_backoff_max=0.5,
        shutdown_timeout=timeout,
    )
    logger = logging.getLogger("chaos")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logging.getLogger("htevents_logging").setLevel(logging.CRITICAL)  # retries are expected
    start = time.monotonic()
    per_thread = events // threads
    half = threading.Barrier(threads + 1)

    def produce(n: int) -> None:
        for i in range(per_thread):
            if i == per_thread // 2:
                half.wait()
            logger.info("Chaos", extra={"htevent": {"userId": f"t{n}", "properties": {"i": i}}})

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for producer in producers:
        producer.start()
    half.wait()
    first.stop()  # the outage: nothing listens...
    with socket.socket() as placeholder:
        # ...but the port stays ours: bound, not listening (connections are refused), so no
        # other program's ephemeral port can take it and swallow a retry meanwhile.
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.bind(("127.0.0.1", port))
        threading.Event().wait(outage)
    second = Collector(write_key=WRITE_KEY, port=port).start()
    second.script(*schedule(seed + 1, 60))
    collectors.append(second)
    for producer in producers:
        producer.join()
    flushed = handler.client.flush(timeout)
    elapsed = time.monotonic() - start
    stats = handler.client.stats()
    logger.removeHandler(handler)
    handler.close()
    logging.getLogger("htevents_logging").setLevel(logging.NOTSET)
    second.stop()
    ids = [event["messageId"] for c in collectors for event in c.events]
    counts = collections.Counter(ids)
    sent = per_thread * threads
    return Figures(
        sent=sent,
        delivered=len(counts),
        lost=sent - len(counts),
        duplicated=sum(n - 1 for n in counts.values()),
        requests=sum(len(c.requests) for c in collectors),
        elapsed=elapsed,
        flushed=flushed,
        stats=stats,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    figures = run_chaos(
        events=args.events, threads=args.threads, seed=args.seed, outage=args.outage
    )
    print(figures.line())
    return 0 if figures.lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

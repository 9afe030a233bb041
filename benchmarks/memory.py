"""Memory against a down server: the queue is bounded, so memory stays flat and drops are counted.

Logs events through ``HtEventsHandler`` (shipped defaults, so a 100,000-message queue) at a
loopback port where nothing listens, and reads the process's resident memory after the queue
has filled and again at the end.

    python benchmarks/memory.py                  # 1,000,000 events
    python benchmarks/memory.py --events 300000
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
from dataclasses import asdict, dataclass

from htevents_logging import HtEventsHandler


def rss_mb() -> float:
    """Resident memory now (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 1e6


@dataclass(frozen=True)
class MemoryFigures:
    events: int
    queue_size: int
    rss_before_mb: float
    rss_queue_full_mb: float
    rss_end_mb: float
    bytes_per_queued_event: float
    dropped: int
    enqueued: int

    def line(self) -> str:
        return (
            f"memory: events={self.events} rss_before={self.rss_before_mb:.1f}MB "
            f"rss_queue_full={self.rss_queue_full_mb:.1f}MB rss_end={self.rss_end_mb:.1f}MB "
            f"per_queued_event={self.bytes_per_queued_event:.0f}B dropped={self.dropped} "
            f"enqueued={self.enqueued}"
        )


def run_memory(events: int) -> MemoryFigures:
    with socket.socket() as sock:  # a port where nothing listens: the server is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = HtEventsHandler(write_key="memory-write-key", host=f"http://127.0.0.1:{port}")
    queue_size = handler.client.settings.max_queue_size
    logger = logging.getLogger("memory")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logging.getLogger("htevents_logging").setLevel(logging.CRITICAL)
    payload = {"userId": "123", "properties": {"total": 29.99, "sku": "A-1"}}
    before = rss_mb()
    full_at = min(events, queue_size * 2)
    for _ in range(full_at):
        logger.info("Order completed", extra={"htevent": payload})
    queue_full = rss_mb()
    for _ in range(events - full_at):
        logger.info("Order completed", extra={"htevent": payload})
    end = rss_mb()
    stats = handler.client.stats()
    figures = MemoryFigures(
        events=events,
        queue_size=queue_size,
        rss_before_mb=before,
        rss_queue_full_mb=queue_full,
        rss_end_mb=end,
        bytes_per_queued_event=(queue_full - before) * 1e6 / max(1, stats["queue_depth"]),
        dropped=stats["dropped"],
        enqueued=stats["enqueued"],
    )
    handler.client.close(0)  # what is left is reported, not waited for
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run_memory(args.events)
    print(json.dumps(asdict(figures)) if args.json else figures.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

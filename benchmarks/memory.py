"""Memory against a down server: the queue is bounded, so memory stays flat and drops are counted.

Logs events through ``HtEventsHandler`` (shipped defaults, so a 100,000-message queue) at a
loopback port where nothing listens, and reads the process's resident memory after the queue
has filled and again at the end.

    python benchmarks/memory.py                  # 1,000,000 events
    python benchmarks/memory.py --events 300000
    python benchmarks/memory.py --spool          # 150,000 events kept in a spool, on_error or not
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

from htevents_logging import HtEvents, HtEventsHandler


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


@dataclass(frozen=True)
class SpoolFigures:
    events: int
    on_error: bool
    kept: int
    rss_before_mb: float
    rss_end_mb: float
    spool_file_mb: float

    def line(self) -> str:
        return (
            f"spool: events={self.events} on_error={self.on_error} kept={self.kept} "
            f"rss_before={self.rss_before_mb:.1f}MB rss_end={self.rss_end_mb:.1f}MB "
            f"(+{self.rss_end_mb - self.rss_before_mb:.1f}MB) "
            f"spool_file={self.spool_file_mb:.1f}MB"
        )


def run_spooled(events: int, on_error: bool) -> SpoolFigures:
    """``events`` tracked during an outage with a spool: every one is kept in the file, and
    the memory that costs is read before and after (with or without an ``on_error``)."""
    with socket.socket() as sock, tempfile.TemporaryDirectory() as directory:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: the server is down
        path = os.path.join(directory, "spool.db")
        client = HtEvents(
            "memory-write-key",
            host=f"http://127.0.0.1:{sock.getsockname()[1]}",
            spool_path=path,
            max_retries=0,
            flush_interval=600,
            on_error=(lambda error, messages: None) if on_error else None,
        )
        logging.getLogger("htevents_logging").setLevel(logging.CRITICAL)
        client.track(user_id="u", event="warm-up")
        client.flush(10)
        before = rss_mb()
        for start in range(0, events, 10_000):
            for i in range(start, min(events, start + 10_000)):
                client.track(user_id=f"user-{i}", event="Order completed", properties={"n": i})
            client.flush(60)  # into the spool: the queue never fills
        end = rss_mb()
        kept = client.stats()["enqueued"] - client.stats()["sent"] - client.stats()["failed"]
        size = sum(
            os.path.getsize(path + suffix)
            for suffix in ("", "-wal")
            if os.path.exists(path + suffix)
        )
        client.close(0)
    return SpoolFigures(events, on_error, kept, before, end, size / 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--spool", action="store_true", help="events kept in a spool")
    parser.add_argument("--on-error", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.spool and not args.child:
        # One fresh process per case, so one's memory does not hide in the other's.
        for flag in ([], ["--on-error"]):
            command = [sys.executable, __file__, "--spool", "--child", *flag]
            if args.events:
                command += ["--events", str(args.events)]
            if args.json:
                command.append("--json")
            subprocess.run(command, check=True)
        return 0
    if args.spool:
        spooled = run_spooled(args.events or 150_000, args.on_error)
        print(json.dumps(asdict(spooled)) if args.json else spooled.line())
        return 0
    figures = run_memory(args.events or 1_000_000)
    print(json.dumps(asdict(figures)) if args.json else figures.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

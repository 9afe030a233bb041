"""Is the collector the bottleneck? Measure what it costs per event.

:func:`probe` sends pre-encoded batches (realistic messages, like the SDKs send) over one
keep-alive connection for a bounded number of requests and time, and reads the collector
process's CPU time before and after (from ``/proc/PID/stat``). ``events / collector CPU
seconds`` is the rate the collector could absorb with a core to itself: its capacity. A sender
that delivers well below it, while the collector's CPU share stays well below one core, is not
limited by the collector.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

__all__ = ["cpu_seconds", "probe"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _message() -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "userId": "123",
        "event": "Order completed",
        "properties": {"total": 29.99},
        "context": {"library": {"name": "htevents-logging", "version": "0"}},
        "integrations": {},
    }


def _bodies(batch: int, count: int) -> list[bytes]:
    return [
        json.dumps(
            {"batch": [_message() for _ in range(batch)], "sentAt": "2026-01-01T00:00:00.000Z"},
            separators=(",", ":"),
        ).encode()
        for _ in range(count)
    ]


def probe(url: str, path: str, pid: int, batch: int, requests: int, seconds: float) -> Any:
    """Send up to ``requests`` batches of ``batch`` events (stopping after ``seconds``).

    Returns the events acknowledged, the wall time, the collector's CPU time, its capacity
    estimate (events per collector-CPU-second) and the rate this one client achieved.
    """
    parts = urlsplit(url)
    bodies = _bodies(batch, 20)
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(b"bench-write-key:").decode("ascii"),
    }
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    sent = 0
    cpu_before = cpu_seconds(pid)
    start = time.perf_counter()
    try:
        for i in range(requests):
            connection.request("POST", path, body=bodies[i % len(bodies)], headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"collector answered HTTP {response.status} to the probe")
            sent += batch
            if time.perf_counter() - start > seconds:
                break
    finally:
        connection.close()
    wall = time.perf_counter() - start
    cpu = max(cpu_seconds(pid) - cpu_before, 1e-9)
    return {
        "batch": batch,
        "events": sent,
        "wall_s": wall,
        "collector_cpu_s": cpu,
        "capacity_events_per_s": sent / cpu,
        "probe_events_per_s": sent / wall,
    }

"""A small, fast batch collector for the benchmarks, run as its own process.

``python benchmarks/fast_collector.py --port 0`` listens on 127.0.0.1 and prints
``collecting on http://127.0.0.1:PORT/`` once it is ready. It accepts a POST to ANY path with
any auth (``/v1/batch`` for htevents-logging, events-sdk-python and Segment, ``/batch/`` for
PostHog), gunzips ``Content-Encoding: gzip`` bodies, parses the JSON and counts the items of
its ``batch`` list, then answers ``200 {}`` on a keep-alive connection.

Two control paths, which no SDK uses:

* ``GET /__stats``: ``{"events", "requests", "bad_requests", "first_at", "last_at", "cpu_s"}``
  where the times are ``time.monotonic()`` (system-wide on Linux, so comparable with the
  sender's clock) and ``cpu_s`` is this process's CPU time: how busy the collector was.
* ``POST /__reset``: zero the counts.

It is an asyncio ``Protocol`` with a hand-written HTTP/1.1 parser (Content-Length and chunked
bodies), so it does far less per request than ``http.server``: the point is that it is never
the bottleneck of an end-to-end measurement, which ``run.py`` checks (its capacity probe and
the collector's CPU share during each burst).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import sys
import time
from typing import Any, Optional

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_BAD = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\n{}"
)
_MAX_HEAD = 64 * 1024


class Counts:
    """What the collector has received since start (or the last reset)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.requests = 0
        self.bad_requests = 0
        self.first_at: Optional[float] = None
        self.last_at: Optional[float] = None

    def record(self, body: bytes, encoding: str) -> bool:
        """Count the ``batch`` items of one request body; False when it is not a batch."""
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            document = json.loads(body)
            batch = document["batch"]
            if not isinstance(batch, list):
                raise TypeError("batch is not a list")
        except (ValueError, KeyError, TypeError, OSError, EOFError):
            self.bad_requests += 1
            return False
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.requests += 1
        self.events += len(batch)
        return True

    def as_json(self) -> bytes:
        cpu = time.process_time()
        return json.dumps({**vars(self), "cpu_s": cpu, "now": time.monotonic()}).encode()


def _dechunk(buf: bytearray, start: int) -> Optional[tuple[bytes, int]]:
    """Decode a chunked body starting at ``start``: (body, end offset), or None if incomplete."""
    parts: list[bytes] = []
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Connection(asyncio.Protocol):
    def __init__(self, counts: Counts) -> None:
        self._counts = counts
        self._buf = bytearray()
        self._transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None and self._next_request():
            pass

    def _next_request(self) -> bool:
        """Handle one complete request from the buffer; False when more bytes are needed."""
        buf = self._buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) > _MAX_HEAD:
                self._answer(_BAD, close=True)
            return False
        lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.rpartition(" ")[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body_start = head_end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            decoded = _dechunk(buf, body_start)
            if decoded is None:
                return False
            body, end = decoded
        else:
            end = body_start + int(headers.get("content-length", "0") or 0)
            if len(buf) < end:
                return False
            body = bytes(buf[body_start:end])
        del buf[:end]
        close = headers.get("connection", "").lower() == "close"
        self._route(method, path, headers, body, close)
        return True

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, close: bool
    ) -> None:
        counts = self._counts
        if path == "/__stats":
            payload = counts.as_json()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            )
            self._answer(head.encode() + payload, close)
        elif path == "/__reset":
            counts.reset()
            self._answer(_OK, close)
        elif method == "POST" and counts.record(body, headers.get("content-encoding", "")):
            self._answer(_OK, close)
        else:
            self._answer(_BAD, close=True)

    def _answer(self, response: bytes, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(response)
        if close:
            transport.close()
            self._transport = None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._transport = None


async def serve(port: int) -> None:
    """Serve until SIGTERM/SIGINT; print the banner line once listening."""
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counts), "127.0.0.1", port, backlog=128)
    bound = server.sockets[0].getsockname()[1]
    print(f"collecting on http://127.0.0.1:{bound}/ (any path; GET /__stats)", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))
    return 0


def stats(url: str) -> dict[str, Any]:
    """The collector's counts (``GET /__stats``), from another process."""
    return _control(url, "GET", "/__stats")


def reset(url: str) -> None:
    """Zero the collector's counts (``POST /__reset``)."""
    _control(url, "POST", "/__reset")


def _control(url: str, method: str, path: str) -> dict[str, Any]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    result: dict[str, Any] = json.loads(data) if data else {}
    return result


if __name__ == "__main__":
    sys.exit(main())

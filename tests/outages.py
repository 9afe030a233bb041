"""A server that is down, then comes back at the same URL: what a spool is for.

A spooled row belongs to one destination (write key, host and path), so the client that sends
it after an outage must use the same URL as the one that kept it: tests cannot keep events
against one port and deliver them to a collector on another.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Optional

from htevents_logging.collector import Collector


class Outage:
    """A loopback port where nothing listens (connections are refused at once) until
    :meth:`end` starts a collector on it.

    The port stays bound, without listening, until then, so no other program takes it; it is
    free only between closing that socket and the collector binding it, a moment.
    """

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.collectors: list[Collector] = []

    def end(self, write_key: Optional[str]) -> Collector:
        """The server is back: a started collector on the same port, requiring ``write_key``."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        collector = Collector(port=self.port, write_key=write_key).start()
        self.collectors.append(collector)
        return collector

    def close(self) -> None:
        """Stop whatever :meth:`end` started, and free the port."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for collector in self.collectors:
            collector.stop()


@contextlib.contextmanager
def outages(n: int) -> Iterator[list[Outage]]:
    """``n`` servers down at once (one port each), all stopped when the block ends."""
    made = [Outage() for _ in range(n)]
    try:
        yield made
    finally:
        for outage in made:
            outage.close()

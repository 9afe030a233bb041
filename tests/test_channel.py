"""The direct channel (``http.client`` on kept-alive connections) against a server that does
what real ones do between batches: close an idle connection, or cut an answer short.

The server here is a few lines over a socket on 127.0.0.1, so each test says exactly what the
server does with each connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from helpers import assert_flushed

from htevents_logging import HtEvents
from htevents_logging._settings import Settings
from htevents_logging._transport.channel import DirectChannel, PooledChannel, open_channel

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class OneAnswerPerConnection:
    """Answers one request per connection with a keep-alive 200, then closes it while the
    client believes it idle: what a server with a short keep-alive timeout does."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.connections = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(body) < length:
                    body += connection.recv(65536)
                self.requests += 1
                connection.sendall(OK)  # then closes: the client's kept-alive one is stale

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing_server() -> Iterator[OneAnswerPerConnection]:
    server = OneAnswerPerConnection()
    yield server
    server.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_not_retried(closing_server, closing):
    client = closing(HtEvents("k", host=closing_server.url, max_events_in_batch=1))
    for n in range(3):
        client.track(user_id="1", event=f"E{n}")
        assert_flushed(client)  # one batch at a time: each finds the last connection closed
    stats = client.stats()
    assert (stats["sent"], stats["retries"], stats["failed"]) == (3, 0, 0)
    assert closing_server.requests == 3
    assert closing_server.connections == 3


def test_the_direct_channel_is_used_unless_a_proxy_applies(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    plain = Settings.create(write_key="k", host="https://127.0.0.1:9")
    assert isinstance(open_channel(plain.url, {}, plain), DirectChannel)
    proxied = Settings.create(
        write_key="k", host="https://127.0.0.1:9", proxies={"https": "http://127.0.0.1:8"}
    )
    assert isinstance(open_channel(proxied.url, {}, proxied), PooledChannel)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:8")
    assert isinstance(open_channel(plain.url, {}, plain), PooledChannel)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(open_channel(plain.url, {}, plain), DirectChannel)

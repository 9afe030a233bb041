"""The direct channel (our HTTP/1.1 exchange on kept-alive connections) against a server that
does what real ones do: close an idle connection, cut an answer short, frame a body by chunks
or by closing, send an interim answer, or something that is not HTTP at all.

The server here is a few lines over a socket on 127.0.0.1, so each test says exactly what the
server does with each connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import pytest
from helpers import assert_flushed, run_python, wait_until

from htevents_logging import HtEvents
from htevents_logging._settings import Settings
from htevents_logging._transport.channel import DirectChannel, open_channel
from htevents_logging._transport.session_channels import PooledChannel

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
        self.closed = 0  # connections this server has closed
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
            self.closed += 1

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
        # (closed by now: the server thread may still be between its answer and its close,
        # and a request racing a server's close is a failed attempt, as for any client)
        assert wait_until(lambda closed=n + 1: closing_server.closed == closed)
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


def test_which_proxy_variables_make_requests_decide(monkeypatch):
    """Without a proxy setting or variable (NO_PROXY alone is none), the direct channel is
    chosen without asking requests, and verify takes REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE,
    as requests merges them; any *_proxy variable, in any case, leaves it to requests."""
    from htevents_logging._transport.channel import _direct_without_requests

    for name in [name for name in os.environ if name.lower().endswith(("_proxy", "_ca_bundle"))]:
        monkeypatch.delenv(name)
    settings = Settings.create(write_key="k", host="https://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "example.com")
    assert _direct_without_requests(settings) == (True, None)
    monkeypatch.setenv("CURL_CA_BUNDLE", "/curl.pem")
    assert _direct_without_requests(settings) == ("/curl.pem", None)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/requests.pem")
    assert _direct_without_requests(settings) == ("/requests.pem", None)
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:8")
    assert _direct_without_requests(settings) is None
    ignoring = Settings.create(write_key="k", host="https://127.0.0.1:9", trust_env=False)
    assert _direct_without_requests(ignoring) == (True, None)  # the environment is not read


def test_the_direct_channel_verifies_with_requests_own_ca_bundle():
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    from htevents_logging._transport.channel import _ca_bundle

    assert _ca_bundle() == DEFAULT_CA_BUNDLE_PATH


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere requests decides")
def test_a_process_that_sends_directly_never_imports_requests(write_key):
    """requests is about 9 MiB of memory and a third of the import time: a process whose
    events go straight to the endpoint (no proxy, no session of its own) never loads it."""
    server = OneAnswerPerConnection()
    code = textwrap.dedent(
        """
        import sys
        from htevents_logging import HtEvents

        client = HtEvents(sys.argv[1], host=sys.argv[2])
        client.track(user_id="u", event="Direct")
        assert client.flush(10) and client.stats()["sent"] == 1, client.stats()
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "requests")
        assert not loaded, loaded
        """
    )
    environment = {
        name: ""
        for name in os.environ
        if name.lower().endswith("_proxy") and name.lower() != "no_proxy"
    }
    done = run_python("-c", code, write_key, server.url, env=environment)
    assert done.returncode == 0, done.stderr
    assert server.requests == 1


def _read_request(connection: socket.socket, pending: bytes) -> tuple[bytes, bytes]:
    """One request off ``connection`` (head and body); what follows it is returned too."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += connection.recv(65536)
    return head, rest[length:]


class ScriptedServer:
    """Answers the n-th request with ``answers[n]`` (raw bytes, the last one repeated), and
    closes the connection after an answer when ``close_after`` says so."""

    def __init__(self, answers: Sequence[bytes], close_after: Sequence[bool] = ()) -> None:
        self.answers = list(answers)
        self.close_after = list(close_after)
        self.heads: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        threading.Thread(target=self._serve, daemon=True).start()

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
            with connection, contextlib.suppress(OSError):  # the client may cut it off
                pending = b""
                while True:
                    head, pending = _read_request(connection, pending)
                    if not head:
                        break
                    n = len(self.heads)
                    self.heads.append(head)
                    connection.sendall(self.answers[min(n, len(self.answers) - 1)])
                    if n < len(self.close_after) and self.close_after[n]:
                        break

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answers: Sequence[bytes], close_after: Sequence[bool] = ()) -> ScriptedServer:
        servers.append(ScriptedServer(answers, close_after))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _exchange(channel: DirectChannel, amount: int = 8193) -> tuple[int, bytes, Any]:
    answer = channel.send(b'{"batch":[]}', 5.0)
    try:
        return answer.status_code, answer.raw.read(amount), answer.headers
    finally:
        answer.close()


def test_the_request_is_one_post_with_its_length_and_fixed_headers(scripted):
    server = scripted([OK])
    channel = DirectChannel(server.url + "/v1/batch", {"X-Fixed": "1"}, True, None)
    assert _exchange(channel)[:2] == (200, b"{}")
    lines = server.heads[0].split(b"\r\n")
    assert lines[0] == b"POST /v1/batch HTTP/1.1"
    port = server.url.rsplit(":", 1)[1]
    assert set(lines[1:]) == {
        f"Host: 127.0.0.1:{port}".encode(),
        b"Accept-Encoding: identity",
        b"X-Fixed: 1",
        b"Content-Length: 12",
    }
    channel.close()


def test_a_chunked_answer_is_read_to_its_end_and_the_connection_kept(scripted):
    chunked = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = scripted([chunked, OK])
    channel = DirectChannel(server.url, {}, True, None)
    assert _exchange(channel)[:2] == (500, b"hello world")
    assert _exchange(channel)[:2] == (200, b"{}")
    assert server.connections == 1  # read to its end: the same connection carried both
    channel.close()


def test_an_answer_framed_by_closing_is_read_and_its_connection_not_reused(scripted):
    server = scripted([b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\n\r\nbusy", OK], [True])
    channel = DirectChannel(server.url, {}, True, None)
    status, body, headers = _exchange(channel)
    assert (status, body, headers.get("retry-after")) == (503, b"busy", "3")
    assert _exchange(channel)[:2] == (200, b"{}")
    assert server.connections == 2
    channel.close()


def test_connection_close_and_http_1_0_answers_are_not_reused(scripted):
    server = scripted(
        [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            OK,
        ],
        [True, True],
    )
    channel = DirectChannel(server.url, {}, True, None)
    for _ in range(3):
        assert _exchange(channel)[:2] == (200, b"{}")
    assert server.connections == 3
    channel.close()


def test_an_interim_answer_is_passed_over_and_repeated_headers_are_joined(scripted):
    server = scripted(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nVia: a\r\nvia: b\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        ]
    )
    channel = DirectChannel(server.url, {}, True, None)
    status, body, headers = _exchange(channel)
    assert (status, body, headers["VIA"]) == (200, b"{}", "a, b")
    channel.close()


def test_a_long_answer_is_cut_off_and_its_connection_closed(scripted):
    long = b"HTTP/1.1 400 Bad\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000
    server = scripted([long, OK])
    channel = DirectChannel(server.url, {}, True, None)
    status, body, _ = _exchange(channel, 10)
    assert (status, body) == (400, b"x" * 10)
    assert _exchange(channel)[:2] == (200, b"{}")
    assert server.connections == 2  # 99,990 bytes unread: that connection could not go on
    channel.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",  # not HTTP at all
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",  # headers without end
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"",  # closed without a word
    ],
    ids=["not-http", "too-many-headers", "bad-length", "closed"],
)
def test_an_answer_that_is_not_http_is_one_failed_attempt(scripted, closing, answer):
    server = scripted([answer, OK], [True])
    client = closing(HtEvents("k", host=server.url, max_retries=3, retry_backoff=0.01))
    client.track(user_id="1", event="E")
    assert_flushed(client)
    stats = client.stats()
    assert (stats["sent"], stats["retries"], stats["failed"]) == (1, 1, 0)


def test_a_chunked_answer_cut_short_leaves_its_body_out_of_the_error(scripted, closing):
    server = scripted(
        [b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort"], [True]
    )
    errors: list[BaseException] = []
    client = closing(HtEvents("k", host=server.url, on_error=lambda e, m: errors.append(e)))
    client.track(user_id="1", event="E")
    client.flush(5.0)
    assert wait_until(lambda: errors)
    assert "HTTP 400" in str(errors[0]) and "short" not in str(errors[0])

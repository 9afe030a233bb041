"""The collector against hostile clients: it is a network server, even on loopback."""

from __future__ import annotations

import io
import socket
import sys
import time

import pytest
from helpers import wait_until

from htevents_logging import HtEvents
from htevents_logging.collector import Collector


def connect(collector: Collector) -> socket.socket:
    return socket.create_connection(("127.0.0.1", collector.port), timeout=10)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (or answers and closes) within ``within`` s."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        return False
    except OSError:
        return True
    return True


def test_a_negative_chunk_size_is_refused_at_once():
    # Regression: chunk size -1 read to the end of the stream (336 MB for 300 MB sent), and
    # the answer came only at EOF.
    with Collector() as collector, connect(collector) as sock:
        sock.sendall(
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n"
            + b"x" * 1000
        )
        sock.settimeout(5)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400")


def test_a_silent_connection_is_closed_after_the_read_timeout():
    # Regression: a half-sent request (slowloris) held its connection and thread forever.
    with Collector(read_timeout=0.3) as collector, connect(collector) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nContent-Length: 15000000\r\n\r\n0123456789")
        started = time.monotonic()
        assert closed_by_server(sock, within=5)
        assert time.monotonic() - started < 3


def test_connections_beyond_the_cap_are_closed_and_valid_clients_still_get_in():
    # Regression: 257 idle half-requests exhausted the descriptors; the accept loop then spun
    # and no valid client got in.
    with Collector(max_connections=4, read_timeout=30) as collector:
        idle = [connect(collector) for _ in range(4)]
        for sock in idle:
            sock.sendall(b"POST /v1/batch HTTP/1.1\r\n")  # and nothing more
        assert wait_until(lambda: collector.open_connections == 4)
        extra = connect(collector)
        assert closed_by_server(extra, within=5)
        for sock in idle:
            sock.close()
        client = HtEvents("k", host=collector.url, flush_interval=0.05)
        try:
            client.track(user_id="u", event="let in")
            assert client.flush(5)
        finally:
            client.close()
        assert len(collector.events) == 1


def test_printed_lines_show_control_characters_as_escapes():
    # Regression: ESC, C1 controls and U+202E in ids, names and properties reached the
    # terminal raw.
    echo = io.StringIO()
    with Collector(echo=echo) as collector:
        client = HtEvents("k", host=collector.url, flush_interval=0.05)
        try:
            client.track(user_id="\x1b[2Jevil", event="red\u202eder", properties={"c1": "\x85"})
            assert client.flush(5)
        finally:
            client.close()
    printed = echo.getvalue()
    assert "\x1b" not in printed and "\u202e" not in printed and "\x85" not in printed
    assert "\\u001b[2Jevil" in printed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/full is Linux's")
def test_an_out_file_that_cannot_be_written_gets_a_500_not_a_dropped_connection():
    # Regression: each request printed a traceback and lost its connection with no answer.
    with Collector(out="/dev/full") as collector:
        client = HtEvents("k", host=collector.url, flush_interval=0.05, max_retries=0)
        try:
            client.track(user_id="u", event="x")
            client.flush(5)
            stats = client.stats()
        finally:
            client.close()
        [request] = collector.requests
    assert request.status == 500 and "cannot write its --out file" in (request.error or "")
    assert stats["failed_by_reason"] == {"retries_exhausted": 1}  # a 500, not a lost batch

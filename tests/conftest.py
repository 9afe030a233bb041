"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

import pytest

from htevents_logging.collector import Collector

Closeable = TypeVar("Closeable")

#: The write key every test collector requires (the same one the wire captures were made with).
TEST_WRITE_KEY = "test-write-key"


@pytest.fixture
def write_key() -> str:
    """The write key the test collector requires; never to be printed in full (checked)."""
    return TEST_WRITE_KEY


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is America/New_York (UTC-5 in January) for the test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def down_url() -> Iterator[str]:
    """A loopback URL where nothing listens: connections are refused at once.

    The port stays bound (not listening) for the whole test, so no other program can take it.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A started local /v1/batch endpoint requiring ``TEST_WRITE_KEY``; stopped after the test.

    Point a client at ``collector.url``, script failures with ``collector.script(...)``, and wait
    for deliveries with ``collector.wait_for_events(n, timeout)``.
    """
    with Collector(write_key=TEST_WRITE_KEY) as running:
        yield running


@pytest.fixture
def closing() -> Iterator[Callable[[Closeable], Closeable]]:
    """Register what a test makes (clients, handlers, processors) to be closed after it.

    Transports are shared process-wide by settings, so anything left open would keep its
    thread, and its queue, into the next test.
    """
    made: list[Any] = []

    def register(thing: Closeable) -> Closeable:
        made.append(thing)
        return thing

    yield register
    for thing in reversed(made):
        thing.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail any test whose captured output or log shows the write key in full.

    The key must never be printed (logs, reprs, errors): this checks everything every test
    captured, passing tests included, not only what the secret-specific tests look at.
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    leaked = [title for title, text in report.sections if TEST_WRITE_KEY in text]
    if leaked and report.passed:
        report.outcome = "failed"
        report.longrepr = f"the write key {TEST_WRITE_KEY!r} was printed in full in: {leaked}"

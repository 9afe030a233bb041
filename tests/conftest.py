"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from htevents_logging.collector import Collector

#: The write key every test collector requires (the same one the wire captures were made with).
TEST_WRITE_KEY = "test-write-key"


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A started local /v1/batch endpoint requiring ``TEST_WRITE_KEY``; stopped after the test.

    Point a client at ``collector.url``, script failures with ``collector.script(...)``, and wait
    for deliveries with ``collector.wait_for_events(n, timeout)``.
    """
    with Collector(write_key=TEST_WRITE_KEY) as running:
        yield running

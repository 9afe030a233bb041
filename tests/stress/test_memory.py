"""1,000,000 events against a down server: memory stays flat, and every drop is counted.

It takes a while (~10-30 s), so it runs where ``HTEVENTS_SLOW_TESTS=1`` (tox sets it for one
interpreter) and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import run_python

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("HTEVENTS_SLOW_TESTS") != "1" or not sys.platform.startswith("linux"),
        reason="slow: set HTEVENTS_SLOW_TESTS=1 (Linux only: reads /proc)",
    ),
]


def test_a_million_events_to_a_down_server_hold_memory_flat_and_count_the_drops():
    result = run_python(str(BENCHMARKS / "memory.py"), "--events", "1000000", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    print(figures)
    # Once the 100,000-message queue is full, the next 800,000 events cost no memory...
    assert figures["rss_end_mb"] - figures["rss_queue_full_mb"] < 5
    # ...because they are dropped, and counted: nothing vanishes unaccounted.
    assert figures["enqueued"] + figures["dropped"] == 1_000_000
    assert figures["dropped"] >= 1_000_000 - figures["queue_size"] - 1_000
    # The stated bound: a full default queue of small events stays under 100 MB.
    assert figures["bytes_per_queued_event"] * figures["queue_size"] < 100e6

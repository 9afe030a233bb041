"""Interpreter exit, in real subprocesses: queued events are delivered, bounded by a deadline."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from htevents_logging.collector import Hang


def run_python(code: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``code`` in a fresh interpreter; return the result and seconds from 'ready' to exit."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    assert ready.strip() == "ready", ready
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=timeout)
    elapsed = time.monotonic() - started
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), elapsed


def test_queued_events_are_delivered_at_exit_without_a_flush(collector, write_key):
    result, _ = run_python(
        f"""
        from htevents_logging import HtEvents
        htevents = HtEvents({write_key!r}, host={collector.url!r}, flush_interval=60)
        for i in range(250):
            htevents.track(user_id="u", event=f"e{{i}}")
        print("ready", flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert collector.wait_for_events(250, timeout=5)
    assert "not delivered" not in result.stderr


def test_exit_against_a_server_that_never_answers_takes_shutdown_timeout_and_says_so(
    collector,
    write_key,
):
    collector.script(Hang(60))
    result, elapsed = run_python(
        f"""
        from htevents_logging import HtEvents
        htevents = HtEvents(
            {write_key!r}, host={collector.url!r}, flush_interval=0.01,
            shutdown_timeout=1.0, http_request_timeout=30,
        )
        htevents.track(user_id="u", event="stuck")
        print("ready", flush=True)
        """
    )
    assert result.returncode == 0
    assert elapsed < 5  # shutdown_timeout is 1 s; the request would wait 30 s
    assert "1 message(s) were not delivered before exit" in result.stderr
    assert write_key not in result.stderr

"""Interpreter exit, in real subprocesses: queued events are delivered, bounded by a deadline."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

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


SIGTERMED = """
import logging, signal, sys, threading
from htevents_logging import HtEventsHandler

key, url, n, own_handler = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "own"
if own_handler:  # the application's own handler: never replaced
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
logger = logging.getLogger("app")
logger.setLevel(logging.INFO)
logger.addHandler(HtEventsHandler(write_key=key, host=url, flush_interval=60))
for i in range(n):
    logger.info("Order completed", extra={"htevent": {"userId": str(i)}})
print("ready", flush=True)
threading.Event().wait(60)  # a server waiting for work, until SIGTERM
"""


def sigtermed(collector, write_key, n: int, handler: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERMED, write_key, collector.url, str(n), handler],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    return process


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("n", [1, 20, 200])
def test_sigterm_delivers_what_is_queued_and_the_process_still_dies_by_sigterm(
    collector, write_key, n
):
    # Regression: with SIGTERM's default action the process died at once, atexit never ran,
    # and the last partial batch (waiting out flush_interval) was lost, silently.
    process = sigtermed(collector, write_key, n, "default")
    assert process.returncode == -signal.SIGTERM
    assert collector.wait_for_events(n, 5)
    assert len(collector.events) == n


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sigterm_handler_the_application_installed_is_never_replaced(collector, write_key):
    process = sigtermed(collector, write_key, 5, "own")
    assert process.returncode == 7  # the application's handler ran: sys.exit(7) ...
    assert collector.wait_for_events(5, 5)  # ... and exit delivered the queue, as always

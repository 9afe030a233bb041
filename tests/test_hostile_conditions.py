"""Hostile conditions: what a bad value, a strange server or a poisoned message cannot break."""

from __future__ import annotations

import itertools
import json
import math
import signal
import sys
import threading
from collections.abc import Mapping

import pytest
from helpers import Outcomes, assert_flushed, run_python

from htevents_logging import HtEvents, HtEventsHandler, MessageTooLargeError
from htevents_logging._transport.sender import parse_retry_after
from htevents_logging.collector import Reply


@pytest.fixture
def make_client(collector, closing, write_key):
    def make(**settings):
        settings.setdefault("flush_interval", 0.05)
        return closing(HtEvents(write_key, host=collector.url, **settings))

    return make


@pytest.mark.parametrize(
    "setting",
    [
        "flush_interval",
        "http_request_timeout",
        "shutdown_timeout",
        "retry_backoff",
        "retry_backoff_max",
        "retry_after_max",
        "block_on_full",
    ],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_time_is_refused_naming_the_setting(setting, value):
    # Regression: flush_interval=inf killed the thread, http_request_timeout=inf delivered
    # nothing until close, shutdown_timeout=inf crashed the exit hook.
    with pytest.raises(ValueError, match=f"^{setting} must be a finite number of seconds"):
        HtEvents("k", **{setting: value})


def test_one_bad_character_never_fails_its_batch_mates(collector, make_client):
    client = make_client(max_events_in_batch=15)
    for i in range(14):
        client.track(user_id="u", event=f"fine {i}")
    client.track(user_id="u", event="broken", properties={"name": "ab\ud800cd"})
    assert_flushed(client)
    assert len(collector.events) == 15
    assert collector.events[-1]["properties"] == {"name": "ab\ufffdcd"}


def test_a_retry_after_that_cannot_be_read_counts_as_absent(collector, make_client):
    # Regression: a date out of range raised OverflowError, failing the batch as internal_error.
    huge = "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"
    assert parse_retry_after(huge) is None
    collector.script(Reply(503, headers={"Retry-After": huge}))
    client = make_client(retry_backoff=0.01)
    client.track(user_id="u", event="x")
    assert_flushed(client)
    assert len(collector.events) == 1
    assert client.stats()["failed"] == 0


def test_an_echoed_authorization_header_never_shows_the_key(collector, make_client, write_key):
    import base64

    token = base64.b64encode(f"{write_key}:".encode()).decode()
    collector.script(Reply(401, body=f'{{"error": "bad credentials: Basic {token}"}}'))
    outcomes = Outcomes()
    client = make_client()
    client.track(user_id="u", event="x", callback=outcomes)
    client.flush(5)
    assert outcomes.wait(1)
    [error] = outcomes.errors
    assert token not in str(error) and write_key not in str(error)
    assert "<credentials>" in str(error)


def test_an_answer_without_end_is_read_only_a_few_kilobytes(collector, make_client):
    # Regression: the whole body was read, so a 200 whose body never ended grew the process
    # until it ran out of memory. Only the status decides; a few KB are read, for errors.
    import tracemalloc

    collector.script(Reply(200, body=b"x" * 30_000_000), Reply(500, body=b"y" * 30_000_000))
    client = make_client(retry_backoff=0.01)
    tracemalloc.start()
    try:
        client.track(user_id="u", event="x")
        assert_flushed(client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # it was over 30 MB
    assert client.stats()["sent"] == 1  # the 200 decided
    client.track(user_id="u", event="y")
    assert_flushed(client)  # the 500 is retried (its body cut off), then delivered
    assert client.stats()["retries"] == 1


RECONFIGURE = """
import json, logging, logging.config, os, sys, threading, time
from htevents_logging.collector import Collector

def fds():
    return len(os.listdir("/proc/self/fd"))

def transport_threads():
    return [t for t in threading.enumerate() if t.name == "htevents-transport"]

with Collector(write_key="k") as collector:
    def configure(round):
        handler = {"class": "htevents_logging.HtEventsHandler", "write_key": "k",
                   "host": collector.url, "flush_interval": 0.05}
        if SPOOL:
            handler["spool_path"] = os.path.join(sys.argv[1], "spool.db")
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
            "handlers": {"htevents": handler},
            "loggers": {"app": {"handlers": ["htevents"], "level": "INFO"}}})
        logging.getLogger("app").info("Round", extra={"htevent": {"userId": str(round)}})
        collector.wait_for_events(round + 1, 5)  # delivered: its connection is open

    def settle():
        deadline = time.monotonic() + 10
        while transport_threads() and time.monotonic() < deadline:
            time.sleep(0.01)

    configure(0)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    settle()
    before = (fds(), threading.active_count())
    for round in range(1, 51):
        configure(round)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    settle()
    after = (fds(), threading.active_count())
    print(json.dumps({"before": before, "after": after, "events": len(collector.events)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("spool", [False, True], ids=["direct", "spool"])
def test_reconfiguring_50_times_gives_back_every_thread_and_descriptor(tmp_path, spool):
    # Regression: each dictConfig left its finished transport referenced, with its kept-alive
    # socket (and its SQLite descriptors): 7 -> 422 descriptors after 200 rounds.
    code = f"SPOOL = {spool}\n" + RECONFIGURE
    result = run_python("-c", code, str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    (fds_before, threads_before), (fds_after, threads_after) = figures["before"], figures["after"]
    assert threads_after == threads_before
    assert fds_after <= fds_before + 2, figures
    assert figures["events"] == 51


REENTRY = """
import logging, signal, sys, time
from htevents_logging import HtEvents, HtEventsHandler

mode = sys.argv[1]
client = HtEvents("k", host="http://127.0.0.1:9", max_queue_size=1, flush_interval=60,
                  max_retries=0, http_request_timeout=0.5)
logger = logging.getLogger("app")
logger.addHandler(HtEventsHandler(client=client))
logger.propagate = False
hits = 0

def on_signal(signum, frame):
    global hits
    hits += 1
    if mode == "track":
        client.track(user_id="u", event="from the signal handler")
    elif mode == "log":
        logger.warning("from the signal handler", extra={"htevent": {"userId": "u"}})
    else:
        client.flush(0.001)

signal.signal(signal.SIGALRM, on_signal)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
deadline = time.monotonic() + 1.5
calls = 0
while time.monotonic() < deadline:
    if mode == "flush":
        client.flush(0.001)
    else:
        client.track(user_id="u", event="main")
    calls += 1
signal.setitimer(signal.ITIMER_REAL, 0)
signal.signal(signal.SIGALRM, signal.SIG_IGN)
print("ok", hits, calls, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs a 1 ms interval timer")
@pytest.mark.parametrize("mode", ["track", "log", "flush"])
def test_a_signal_handler_that_logs_or_flushes_never_deadlocks(mode):
    # Regression: a 1 ms timer signal whose handler logged an event (or called flush) while the
    # main thread was in the same code deadlocked on the counters' and warnings' locks: every
    # lock a calling thread takes is re-entrant now, as the stdlib logging's are. The server is
    # down and the queue holds 1 message, so the drop path (counters, warnings) runs hot.
    result = run_python("-c", REENTRY, mode, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    ok, hits, calls = result.stdout.split()
    assert ok == "ok" and int(hits) > 100 and int(calls) > 100


EXIT_WITH_A_FULL_QUEUE = """
import logging, time
from htevents_logging import HtEventsHandler
from htevents_logging.collector import Collector, Hang

collector = Collector().start()
collector.script(*[Hang(30)] * 5)
handler = HtEventsHandler(write_key="k", host=collector.url, shutdown_timeout=1,
                          http_request_timeout=30, max_events_in_batch=100)
logger = logging.getLogger("app")
logger.addHandler(handler)
logger.propagate = False
for i in range(50_000):
    logger.warning("Order completed", extra={"htevent": {"userId": "u"}})
collector.wait_for_requests(1, 5)
print(time.time(), flush=True)
"""


def test_exit_with_50k_logged_events_queued_and_a_hanging_server_keeps_its_deadline():
    # Regression: at the deadline every queued logged event was built and encoded on the
    # closing thread, and logging.shutdown's flush() then waited shutdown_timeout again:
    # exit took 5.4-6.3 s with shutdown_timeout=2 and 100k events (now 2.1 s).
    import time

    result = run_python("-c", EXIT_WITH_A_FULL_QUEUE, timeout=60)
    exited = time.time()
    assert result.returncode == 0, result.stderr[-2000:]
    took = exited - float(result.stdout.split()[0])
    assert took < 1.0 + 1.0, f"exit took {took:.2f} s with shutdown_timeout=1"
    assert "message(s) were not delivered before exit" in result.stderr


@pytest.mark.parametrize("kind", ["directory", "garbage file", "unwritable directory"])
def test_a_spool_path_that_cannot_be_used_sends_directly_and_names_it(
    collector, closing, write_key, tmp_path, caplog, kind
):
    # Regression: it raised from the constructor without naming spool_path, so dictConfig
    # failed the whole logging setup.
    import logging
    import os

    if kind == "directory":
        path = tmp_path
    elif kind == "garbage file":
        path = tmp_path / "spool.db"
        path.write_bytes(b"this is not an SQLite database" * 100)
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        path = locked / "spool.db"
    with caplog.at_level(logging.WARNING, "htevents_logging"):
        client = closing(
            HtEvents(write_key, host=collector.url, spool_path=str(path), flush_interval=0.05)
        )
    client.track(user_id="u", event="sent directly")
    assert_flushed(client)
    assert len(collector.events) == 1
    [warning] = [r for r in caplog.records if "cannot use spool_path" in r.getMessage()]
    assert str(path) in warning.getMessage()


class Endless(Mapping):  # type: ignore[type-arg]
    """A mapping whose iteration never ends (a lazy view over a stream, say)."""

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        return 1

    def __iter__(self):  # type: ignore[no-untyped-def]
        return itertools.count()

    def __len__(self) -> int:
        return 1


def finishes(call, timeout: float = 10.0) -> list:  # type: ignore[no-untyped-def,type-arg]
    """Run ``call`` on a thread; what it raised (or ``[None]``), once it finished in time."""
    outcome: list = []  # type: ignore[type-arg]

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "it never finished: the mapping was read without end"
    return outcome


def test_a_mapping_without_end_is_cut_off_and_rejected(collector, make_client, caplog):
    # Regression: a nested mapping whose iteration never ends grew the process to its memory
    # cap, and nothing else was delivered meanwhile.
    import logging

    client = make_client()
    [error] = finishes(lambda: client.track(user_id="u", event="x", properties=Endless()))
    assert isinstance(error, MessageTooLargeError)
    [error] = finishes(lambda: client.track(user_id="u", event="x", properties={"n": Endless()}))
    assert isinstance(error, MessageTooLargeError)

    handler = HtEventsHandler(client=client)
    logger = logging.getLogger("hostile.endless")
    logger.addHandler(handler)
    try:
        assert finishes(lambda: logger.warning("x", extra={"htevent": Endless()})) == [None]
        nested = {"userId": "u", "properties": {"deep": Endless()}}
        assert finishes(lambda: logger.warning("x", extra={"htevent": nested})) == [None]
        logger.warning("fine", extra={"htevent": {"userId": "u"}})
        assert_flushed(client)
    finally:
        logger.removeHandler(handler)
    assert [event["event"] for event in collector.events] == ["fine"]
    assert client.stats()["rejected_by_reason"] == {"oversize": 4}

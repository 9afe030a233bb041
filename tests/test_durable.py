"""The spool (``spool_path``): events survive an outage, a restart and ``kill -9``.

Every batch is stored in an SQLite file before it is sent and deleted once delivered; a send
that fails for a reason that may pass keeps it there for the next try or the next process.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from helpers import Outcomes, assert_flushed, wait_until
from outages import Outage, outages

from htevents_logging import HtEvents
from htevents_logging._transport.spool import Spool, destination_of
from htevents_logging.collector import Reply


def spool_rows(path) -> int:
    with Spool(path) as spool:
        return spool.count()


@pytest.fixture
def outage() -> Iterator[Outage]:
    """A server down until ``outage.end(write_key)`` brings it back at the same URL."""
    with outages(1) as [down]:
        yield down


def python(code: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_an_outage_keeps_events_in_the_spool_until_the_server_is_back(
    collector, tmp_path, write_key
):
    outcomes = Outcomes()
    client = HtEvents(
        write_key,
        host=collector.url,
        spool_path=str(tmp_path / "events.db"),
        max_retries=0,
        flush_interval=60,
    )
    try:
        collector.script(*[Reply(503)] * 3)
        for i in range(10):
            client.track(user_id="u", event=f"e{i}", callback=outcomes)
        assert client.flush(5) is False  # not delivered: kept
        assert client.stats()["failed"] == 0 and outcomes.results == []
        assert spool_rows(tmp_path / "events.db") == 10
        collector.script()  # (the scripted 503s are used up by the retries below)
        assert wait_until(lambda: client.flush(5), timeout=10)
        assert sorted(e["event"] for e in collector.events) == sorted(f"e{i}" for i in range(10))
        assert outcomes.errors == [None] * 10  # each callback once, on delivery
        assert spool_rows(tmp_path / "events.db") == 0
    finally:
        client.close(2)


def test_a_refused_batch_is_deleted_and_reported_not_kept(collector, tmp_path, write_key):
    outcomes = Outcomes()
    client = HtEvents(write_key, host=collector.url, spool_path=str(tmp_path / "s.db"))
    try:
        collector.script(Reply(400))
        client.track(user_id="u", event="refused", callback=outcomes)
        assert_flushed(client, 5)
        assert outcomes.errors[0].reason == "http_4xx"
        assert spool_rows(tmp_path / "s.db") == 0
    finally:
        client.close(2)


def test_events_kept_at_exit_are_sent_first_by_the_next_process(tmp_path, outage, write_key):
    # The next process uses the same key and URL: kept rows are that destination's only.
    spool = str(tmp_path / "events.db")
    first = python(
        f"""
        from htevents_logging import HtEvents
        h = HtEvents({write_key!r}, host={outage.url!r}, spool_path={spool!r},
                     max_retries=0, shutdown_timeout=1)
        for i in range(20):
            h.track(user_id="u", event=f"before restart {{i}}")
        """
    )
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 0, stderr
    assert "20 message(s) are kept in the spool" in stderr
    collector = outage.end(write_key)
    second = python(
        f"""
        from htevents_logging import HtEvents
        h = HtEvents({write_key!r}, host={collector.url!r}, spool_path={spool!r})
        h.track(user_id="u", event="after restart")
        """
    )
    _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr
    assert collector.wait_for_events(21, 10)
    events = [e["event"] for e in collector.events]
    assert events[-1] == "after restart"
    assert sorted(events[:20]) == sorted(f"before restart {i}" for i in range(20))


def test_every_event_enqueued_before_flush_returned_survives_kill_9(tmp_path, outage, write_key):
    spool = str(tmp_path / "events.db")
    victim = python(
        f"""
        import time
        from htevents_logging import HtEvents
        h = HtEvents({write_key!r}, host={outage.url!r}, spool_path={spool!r}, max_retries=0)
        for i in range(50):
            h.track(user_id="u", event=f"e{{i}}")
        print("flushed", h.flush(5), flush=True)
        time.sleep(60)  # waits to be killed
        """
    )
    assert victim.stdout is not None
    assert victim.stdout.readline().strip() == "flushed False"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    collector = outage.end(write_key)
    client = HtEvents(write_key, host=collector.url, spool_path=spool)
    try:
        assert collector.wait_for_events(50, 10)
        assert sorted(e["event"] for e in collector.events) == sorted(f"e{i}" for i in range(50))
    finally:
        client.close(2)


def test_processes_sharing_one_spool_send_each_event_once(collector, tmp_path, write_key):
    spool = str(tmp_path / "shared.db")
    workers = [
        python(
            f"""
            from htevents_logging import HtEvents
            h = HtEvents({write_key!r}, host={collector.url!r}, spool_path={spool!r},
                         flush_interval=0.01)
            for i in range(60):
                h.track(user_id="w{n}", event=f"w{n}-{{i}}")
            """
        )
        for n in range(3)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
    assert collector.wait_for_events(180, 10)
    counts = collections.Counter(e["messageId"] for e in collector.events)
    assert len(counts) == 180 and max(counts.values()) == 1
    assert spool_rows(spool) == 0


def test_the_spool_is_bounded_and_drops_the_oldest_counted(tmp_path, down_url, write_key):
    client = HtEvents(
        write_key,
        host=down_url,
        spool_path=str(tmp_path / "small.db"),
        spool_max_bytes=20_000,
        max_retries=0,
        flush_interval=60,
        max_events_in_batch=10,
    )
    outcomes = Outcomes()
    try:
        for i in range(200):
            client.track(
                user_id="u", event=f"e{i}", properties={"pad": "x" * 200}, callback=outcomes
            )
        client.flush(5)
        dropped = client.stats()["dropped_by_reason"].get("spool_full", 0)
        assert dropped > 0
        with Spool(tmp_path / "small.db") as spool:
            assert spool.size_bytes() <= 20_000 + 10 * 500
            assert spool.count() + dropped == 200
        # Regression: evicted messages were counted but never reported to their callbacks, and
        # the transport held on to them for the whole outage.
        assert len(outcomes.errors) == dropped
        assert all(error.reason == "spool_full" for error in outcomes.errors)
        told, unsettled = client._transport._exporter._awaiting.unsettled()
        assert len(told) == unsettled == 200 - dropped
        # Each call counted once: an evicted message leaves the enqueued count as it is dropped.
        assert client.stats()["enqueued"] + client.stats()["dropped"] == 200
    finally:
        client.close(1)


def test_a_spool_that_cannot_be_reopened_sends_directly_and_loses_nothing(
    collector, tmp_path, write_key
):
    # Regression: reopening the spool (as after every fork) can fail with an OSError (out of
    # file descriptors, the directory gone), which escaped the transport and lost the batch.
    folder = tmp_path / "spool"
    client = HtEvents(
        write_key, host=collector.url, spool_path=str(folder / "s.db"), flush_interval=0.05
    )
    try:
        client.track(user_id="u", event="before")
        assert_flushed(client, 5)
        spool = client._transport._spool
        spool._before_fork()  # what a fork does: the connection is closed, reopened on next use
        spool._after_fork_in_parent()
        folder.rename(tmp_path / "moved")
        folder.write_text("a file where the spool's folder was")  # os.makedirs now fails
        outcomes = Outcomes()
        client.track(user_id="u", event="after", callback=outcomes)
        client.flush(5)
        assert outcomes.wait(1) and outcomes.errors == [None]
        assert [e["event"] for e in collector.events] == ["before", "after"]
    finally:
        client.close(1)


def test_a_bug_in_the_spooled_path_fails_the_batch_instead_of_losing_it(
    collector, tmp_path, monkeypatch, write_key
):
    client = HtEvents(
        write_key, host=collector.url, spool_path=str(tmp_path / "s.db"), flush_interval=0.05
    )
    try:
        outcomes = Outcomes()

        def broken_keep(batch):
            raise RuntimeError("a bug in the spooled path")

        monkeypatch.setattr(client._transport._exporter, "_keep", broken_keep)
        client.track(user_id="u", event="x", callback=outcomes)
        client.flush(5)
        assert outcomes.wait(1)
        [error] = outcomes.errors
        assert error.reason == "internal_error"
        assert client.stats()["failed_by_reason"] == {"internal_error": 1}
    finally:
        monkeypatch.undo()
        client.close(1)


def test_close_says_false_while_the_spool_still_keeps_messages(collector, tmp_path, write_key):
    collector.script(*[Reply(503)] * 20)
    client = HtEvents(
        write_key,
        host=collector.url,
        spool_path=str(tmp_path / "s.db"),
        flush_interval=0.05,
        max_retries=0,
    )
    client.track(user_id="u", event="x")
    assert client.flush(2) is False  # kept, not settled
    assert client.close(2) is False  # the same at close
    assert spool_rows(tmp_path / "s.db") == 1


def test_renewing_a_transport_after_fork_does_no_spool_io(tmp_path, monkeypatch, write_key):
    # Regression: the child's transport looked into the spool inside the fork hook; a spool
    # locked by another process then held the fork for 5 s and left the transport half made.
    client = HtEvents(write_key, host="http://127.0.0.1:9", spool_path=str(tmp_path / "s.db"))
    try:
        transport = client._transport

        def no_io(*args, **kwargs):
            raise AssertionError("spool I/O in the fork hook")

        for name in ("count", "claim", "append", "_connection"):
            monkeypatch.setattr(transport._spool, name, no_io)
        transport.reset_after_fork()
    finally:
        monkeypatch.undo()
        client.close(0.5)


def test_a_spool_lease_outlasts_the_longest_send_retry_after_included(tmp_path, write_key):
    client = HtEvents(
        write_key,
        host="http://127.0.0.1:9",
        spool_path=str(tmp_path / "s.db"),
        max_retries=3,
        http_request_timeout=10,
        retry_after_max=60,
    )
    try:
        # 4 requests of 10 s and 3 waits of up to 60 s (a server's Retry-After): 220 s.
        assert client._transport._spool._lease_seconds >= 220
    finally:
        client.close(0.5)


def test_a_client_sends_and_waits_for_only_its_own_destinations_rows(
    collector, tmp_path, write_key
):
    path = str(tmp_path / "s.db")
    client = HtEvents(write_key, host=collector.url, spool_path=path, flush_interval=0.05)
    try:
        spool = client._transport._spool
        assert spool.destination == destination_of(write_key, f"{collector.url}/v1/batch")
        with Spool(
            path, destination=destination_of(write_key, "http://127.0.0.1:1/v1/batch")
        ) as other:
            other.append([b'{"event":"for another host"}'])
        client.track(user_id="u", event="ours")
        assert_flushed(client, 5)  # the other destination's row is not waited for
        assert [e["event"] for e in collector.events] == ["ours"]
        assert spool_rows(path) == 1  # still there, for a client of that host
    finally:
        assert client.close(2) is True


def test_the_write_key_is_never_written_to_the_spool_file(tmp_path, down_url):
    key = "sk-spooled-but-never-stored-42"
    path = str(tmp_path / "s.db")
    client = HtEvents(key, host=down_url, spool_path=path, max_retries=0, flush_interval=60)
    try:
        for i in range(20):
            client.track(user_id="u", event=f"e{i}")
        assert client.flush(5) is False  # kept
        assert os.path.getsize(path + "-wal") > 0  # the rows are in the WAL, not yet in the file
        for name in (path, path + "-wal"):
            with open(name, "rb") as file:
                assert key.encode() not in file.read()
    finally:
        client.close(1)
    with open(path, "rb") as file:  # and once checkpointed into the file at close
        raw = file.read()
    assert b'"e19"' in raw and key.encode() not in raw

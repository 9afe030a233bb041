"""The spool recovers from a crash at once and keeps destinations apart (issue 9).

End to end, with real processes: a process killed in the middle of a send leaves a leased batch
that the next process sends at once (not when the lease runs out, 60 s or more later); and
clients with different write keys, or different hosts, sharing one spool file each send only
the events they logged, with their own key, to their own host.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import pytest
from outages import outages

from htevents_logging import HtEvents
from htevents_logging._transport.spool import Spool
from htevents_logging.collector import Collector, Hang

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a dead owner is told from /proc (Linux)"
)


def python(code: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter, with pipes for its output."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored(path: str) -> int:
    """Rows in the spool file, whatever their destination."""
    with Spool(path) as spool:
        return spool.count()


def test_a_batch_held_by_a_killed_process_is_sent_by_the_next_one_at_once(
    collector, tmp_path, write_key
):
    path = str(tmp_path / "events.db")
    collector.script(Hang(30))  # the batch is claimed, then its request never gets an answer
    victim = python(
        f"""
        import time
        from htevents_logging import HtEvents
        h = HtEvents({write_key!r}, host={collector.url!r}, spool_path={path!r},
                     max_events_in_batch=10, flush_interval=60)
        for i in range(10):  # one full batch, cut at once
            h.track(user_id="u", event=f"held {{i}}")
        time.sleep(60)  # waits to be killed
        """
    )
    try:
        assert collector.wait_for_requests(1, 10)
        assert stored(path) == 10  # stored, claimed, and on the wire
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=10)

    # Regression: the batch stayed leased to the dead process for the whole lease (60 s at
    # least); the next process sent it only then.
    started = time.monotonic()
    client = HtEvents(write_key, host=collector.url, spool_path=path, flush_interval=0.2)
    try:
        assert collector.wait_for_events(10, 2.0), collector.requests
        took = time.monotonic() - started
        assert sorted(e["event"] for e in collector.events) == sorted(
            f"held {i}" for i in range(10)
        )
        assert took < 2.0
        assert client.flush(5) is True
        assert stored(path) == 0
    finally:
        client.close(2)


@dataclass(frozen=True)
class Logger:
    """One client of a shared spool: its write key, which server it sends to, and the name
    its events carry."""

    key: str
    server: int
    name: str

    def run(self, path: str, url: str, events: int) -> subprocess.CompletedProcess[str]:
        """Run a process of this client against ``url``: it logs ``events`` events (maybe
        none), flushes, prints what ``flush`` said, and exits."""
        process = python(
            f"""
            from htevents_logging import HtEvents
            h = HtEvents({self.key!r}, host={url!r}, spool_path={path!r},
                         max_retries=0, shutdown_timeout=1, flush_interval=0.05)
            for i in range({events}):
                h.track(user_id="u", event=f"{self.name} {{i}}")
            print("flushed", h.flush(10), flush=True)
            """
        )
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        return subprocess.CompletedProcess(process.args, 0, stdout, stderr)


def authorization(key: str) -> str:
    """The Authorization header a client with ``key`` sends."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode("ascii")


def received(collector: Collector) -> list[tuple[str, list[str]]]:
    """Each accepted request's write key (checked to be the same in the Authorization header
    and the body) and the names of its events."""
    requests = []
    for request in collector.requests:
        if request.error is not None:
            continue
        key = request.json["writeKey"]
        assert request.header("Authorization") == authorization(key)
        requests.append((key, [e["event"] for e in request.json["batch"]]))
    return requests


@pytest.mark.parametrize(
    "loggers",
    [
        pytest.param(
            [Logger("key-one-000001", 0, "one"), Logger("key-two-000002", 0, "two")],
            id="two-keys-one-host",
        ),
        pytest.param(
            [Logger("same-key-00001", 0, "one"), Logger("same-key-00001", 1, "two")],
            id="one-key-two-hosts",
        ),
    ],
)
def test_clients_sharing_a_spool_each_send_only_their_own_events_with_their_own_key(
    tmp_path, loggers
):
    path = str(tmp_path / "shared.db")
    servers = 1 + max(logger.server for logger in loggers)
    with outages(servers) as down:
        # The outage: each client keeps its 10 events at exit, and says so for its own only.
        for logger in loggers:
            done = logger.run(path, down[logger.server].url, 10)
            assert done.stdout == "flushed False\n"
            assert "10 message(s) are kept in the spool" in done.stderr
        assert stored(path) == 20

        # The servers come back (one collector per host, requiring that host's key if one).
        collectors = []
        for server, outage in enumerate(down):
            keys = {logger.key for logger in loggers if logger.server == server}
            collectors.append(outage.end(keys.pop() if len(keys) == 1 else None))

        # Each client, restarted, sends what it kept (and only that) and is done.
        left = 20
        for logger in loggers:
            done = logger.run(path, collectors[logger.server].url, 0)
            assert done.stdout == "flushed True\n", done.stderr
            left -= 10
            assert stored(path) == left  # the other client's events are still kept

        for server, collector in enumerate(collectors):
            mine = [logger for logger in loggers if logger.server == server]
            got = received(collector)
            for logger in mine:
                sent = [names for key, names in got if key == logger.key]
                assert sorted(n for names in sent for n in names) == sorted(
                    f"{logger.name} {i}" for i in range(10)
                ), f"server {server}: {[(logger.name, names) for _, names in got]}"
            assert len(collector.events) == 10 * len(mine)

"""The spool: a durable SQLite FIFO that survives outages, kill -9 and restarts; processes share it.

Lease timing is tested with an injected clock wherever possible; the few real-time waits use a
deadline loop. Crashes are real: subprocesses are killed with SIGKILL, and forks are real forks.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import damage_spool, holding_the_write_lock, wait_until

from htevents_logging._transport import spool as spool_module
from htevents_logging._transport.spool import (
    Spool,
    SpoolBusy,
    SpooledMessage,
    SpoolUnavailable,
    Trouble,
    trouble_of,
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="judging a lease's owner dead reads /proc"
)

EVERYTHING = (10**6, 10**9)  # claim(max_count, max_bytes) limits that never bind


class FakeClock:
    """A wall clock that moves only when told to (leases compare absolute wall-clock times)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(n: int, size: int = 0) -> bytes:
    """A compact-JSON message that says which one it is, padded to ``size`` bytes if given."""
    head = b'{"n":%d,"pad":"' % n
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def numbers(messages: list[SpooledMessage]) -> list[int]:
    """Which events these are, in order."""
    return [json.loads(m.data)["n"] for m in messages]


def integrity(path: str) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


# Subprocesses load spool.py by itself: it needs only the standard library, and skipping the
# package's imports (requests, ...) starts each one in ~50 ms instead of ~400 ms.
LOAD_SPOOL = f"""
import importlib.util, sys
_spec = importlib.util.spec_from_file_location("spool", {spool_module.__file__!r})
_module = sys.modules["spool"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
Spool = _module.Spool
"""


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter that has ``Spool``, with pipes to talk to it."""
    return subprocess.Popen(
        [sys.executable, "-c", LOAD_SPOOL + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "spool" / "events.sqlite")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(path: str, clock: FakeClock):
    with Spool(path, lease_seconds=60, clock=clock) as opened:
        yield opened


# -- the round trip ----------------------------------------------------------------------------


def test_messages_come_back_oldest_first_with_their_exact_bytes_and_go_on_delete(spool):
    items = [event(1), '{"name":"Zoë 🎉"}'.encode(), event(3)]
    appended = spool.append(items)
    assert appended.evicted == []
    assert (spool.count(), spool.size_bytes()) == (3, sum(map(len, items)))

    batch = spool.claim(*EVERYTHING)

    assert [m.data for m in batch] == items
    assert [m.row_id for m in batch] == sorted(m.row_id for m in batch)
    assert spool.count() == 3  # claimed rows stay until delivered
    spool.delete([m.row_id for m in batch])
    assert (spool.count(), spool.size_bytes()) == (0, 0)
    assert spool.claim(*EVERYTHING) == []


def test_the_file_is_created_with_its_directory_in_wal_mode_and_private(path):
    with Spool(path) as opened:
        assert opened.path == path
        assert os.stat(path).st_mode & 0o777 == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_written_by_a_newer_layout_is_refused(path):
    Spool(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(sqlite3.DatabaseError, match="schema 99"):
        Spool(path)


# -- claims and leases -------------------------------------------------------------------------


def test_a_claimed_row_is_not_claimed_again_by_anyone_until_released(spool, path, clock):
    spool.append([event(n) for n in range(6)])
    other = Spool(path, clock=clock)  # another process, as far as leases go

    first = spool.claim(3, 10**6)
    assert numbers(first) == [0, 1, 2]
    assert numbers(other.claim(*EVERYTHING)) == [3, 4, 5]
    assert spool.claim(*EVERYTHING) == []

    spool.release([m.row_id for m in first])

    assert numbers(other.claim(*EVERYTHING)) == [0, 1, 2]
    other.close()


def test_released_rows_go_out_again_before_newer_ones(spool):
    spool.append([event(n) for n in range(6)])
    failed = spool.claim(2, 10**6)
    spool.claim(2, 10**6)

    spool.release([m.row_id for m in failed])

    assert numbers(spool.claim(*EVERYTHING)) == [0, 1, 4, 5]


def test_claim_stops_at_max_count(spool):
    spool.append([event(n) for n in range(10)])

    assert numbers(spool.claim(4, 10**6)) == [0, 1, 2, 3]
    assert numbers(spool.claim(0, 10**6)) == []


def test_claim_keeps_the_request_body_under_max_bytes(spool):
    # Each row costs its size plus a comma; the envelope costs 100 bytes unless told otherwise.
    spool.append([b"x" * 100] * 6)  # 3 rows: 3 * (100 + 1) + 100 = 403 bytes

    assert len(spool.claim(10, max_bytes=404)) == 3  # 403 < 404
    assert len(spool.claim(10, max_bytes=403)) == 2  # 403 is not under 403
    assert len(spool.claim(10, max_bytes=403)) == 1  # the last one


def test_claim_counts_the_exact_envelope_when_given(spool):
    spool.append([b"x" * 100] * 5)

    assert len(spool.claim(10, max_bytes=403, envelope_bytes=100)) == 2  # 302 + 100 = 402
    assert len(spool.claim(10, max_bytes=403, envelope_bytes=0)) == 3  # 303 < 403


def test_a_row_bigger_than_max_bytes_is_still_claimed_alone(spool):
    spool.append([b"x" * 1000, b"y"])

    assert [m.data for m in spool.claim(10, max_bytes=50)] == [b"x" * 1000]
    assert [m.data for m in spool.claim(10, max_bytes=50)] == [b"y"]


def test_an_expired_lease_can_be_claimed_by_anyone(spool, path, clock):
    spool.append([event(0)])
    other = Spool(path, clock=clock)
    claimed = spool.claim(*EVERYTHING)

    clock.advance(59.9)
    assert other.claim(*EVERYTHING) == []
    clock.advance(0.1)
    assert other.claim(*EVERYTHING) == claimed
    other.close()


def test_renew_extends_only_this_owners_lease(spool, path, clock):
    spool.append([event(0), event(1)])
    other = Spool(path, clock=clock)
    mine = spool.claim(1, 10**6)
    theirs = other.claim(1, 10**6)

    clock.advance(50)
    spool.renew([m.row_id for m in mine + theirs])  # theirs is not ours to renew
    clock.advance(20)  # 70 s after the claims, 20 s after the renewal

    third = Spool(path, clock=clock)
    assert numbers(third.claim(*EVERYTHING)) == [1]  # only the lease we did not renew expired
    other.close()
    third.close()


def test_release_touches_only_this_owners_leases_but_delete_removes_rows_whoever_holds_them(
    spool, path, clock
):
    spool.append([event(0), event(1)])
    other = Spool(path, clock=clock)
    ids = [m.row_id for m in spool.claim(*EVERYTHING)]

    other.release(ids)
    assert other.claim(*EVERYTHING) == []  # still leased to `spool`

    other.delete(ids[:1])  # e.g. it sent them after our lease had expired: delivered is delivered
    assert spool.count() == 1
    spool.delete(ids)  # our late delete of a row already gone is harmless
    assert spool.count() == 0
    other.close()


def test_a_lease_expires_in_real_time(path):
    holder = Spool(path, lease_seconds=0.3)
    taker = Spool(path)
    holder.append([event(0)])
    started = time.time()
    claimed = holder.claim(*EVERYTHING)

    assert taker.claim(*EVERYTHING) == []
    taken: list[SpooledMessage] = []

    def take() -> bool:
        taken.extend(taker.claim(*EVERYTHING))
        return bool(taken)

    assert wait_until(take, timeout=5)
    assert taken == claimed
    assert time.time() - started >= 0.3
    holder.close()
    taker.close()


# -- the size bound ----------------------------------------------------------------------------


def test_appending_past_max_bytes_evicts_the_oldest_rows_and_says_which(path):
    # The transport reports them as dropped because the spool was full, to their callbacks too.
    with Spool(path, max_bytes=1000) as bounded:
        first = bounded.append([b"%04d" % n + b"x" * 96 for n in range(10)])  # exactly 1000
        assert first.evicted == [] and list(first.stored) == list(range(1, 11))

        then = bounded.append([b"%04d" % n + b"x" * 96 for n in (10, 11, 12)])
        assert then.evicted == [1, 2, 3] and list(then.stored) == [11, 12, 13]

        kept = bounded.claim(*EVERYTHING)
        assert [m.data[:4] for m in kept] == [b"%04d" % n for n in range(3, 13)]
        assert bounded.size_bytes() == 1000


def test_rows_under_a_live_lease_are_never_evicted(path, clock):
    with Spool(path, max_bytes=500, clock=clock) as bounded:
        bounded.append([event(n, size=100) for n in range(5)])  # 100 bytes each
        in_flight = bounded.claim(2, 10**6)

        assert len(bounded.append([event(n, size=100) for n in (5, 6)]).evicted) == 2

        bounded.release([m.row_id for m in in_flight])
        assert numbers(bounded.claim(*EVERYTHING)) == [0, 1, 4, 5, 6]


def test_when_every_row_is_leased_new_rows_are_kept_anyway_and_nothing_is_counted(path, clock):
    with Spool(path, max_bytes=200, clock=clock) as bounded:
        bounded.append([event(0, size=100), event(1, size=100)])
        bounded.claim(*EVERYTHING)

        assert bounded.append([event(2, size=100)]).evicted == []

        assert (bounded.count(), bounded.size_bytes()) == (3, 300)  # over the bound, best effort


def test_rows_whose_lease_expired_can_be_evicted(path, clock):
    with Spool(path, max_bytes=200, lease_seconds=10, clock=clock) as bounded:
        bounded.append([event(0, size=100), event(1, size=100)])
        bounded.claim(1, 10**6)
        clock.advance(11)  # the claimer is presumed dead

        assert len(bounded.append([event(2, size=100)]).evicted) == 1

        assert numbers(bounded.claim(*EVERYTHING)) == [1, 2]


# -- destinations ------------------------------------------------------------------------------

A = spool_module.destination_of("key-a", "http://127.0.0.1:1/v1/batch")
B = spool_module.destination_of("key-b", "http://127.0.0.1:1/v1/batch")

# What a file of layout 1 (before destinations) was made of.
LAYOUT_1 = (
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        size INTEGER NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        data BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE totals (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )
    """,
    "INSERT INTO totals (singleton, rows, bytes) VALUES (0, 0, 0)",
    """
    CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE singleton = 0;
    END
    """,
    """
    CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE singleton = 0;
    END
    """,
    "PRAGMA user_version = 1",
)


def test_a_destination_is_a_digest_of_the_key_and_the_url():
    url = "http://127.0.0.1:1/v1/batch"
    digest = spool_module.destination_of("key-a", url)
    assert digest == A and len(digest) == 32 and int(digest, 16) >= 0
    assert "key-a" not in digest
    others = {
        spool_module.destination_of("key-b", url),
        spool_module.destination_of("key-a", "http://127.0.0.1:2/v1/batch"),
        spool_module.destination_of("key-a", "http://127.0.0.1:1/v2/batch"),
        spool_module.destination_of(None, url),
    }
    assert len(others) == 4 and digest not in others


def test_two_destinations_in_one_file_never_see_each_others_rows(path, clock):
    with Spool(path, clock=clock, destination=A) as a, Spool(path, clock=clock, destination=B) as b:
        a.append([event(n) for n in range(3)])
        b.append([event(n, size=50) for n in range(10, 12)])
        a.append([event(3)])

        assert (a.count(), b.count()) == (4, 2)
        assert b.size_bytes() == 100
        assert numbers(b.peek(*EVERYTHING)) == [10, 11]
        assert numbers(a.claim(*EVERYTHING)) == [0, 1, 2, 3]
        assert numbers(b.claim(*EVERYTHING)) == [10, 11]
        assert a.claim(*EVERYTHING) == [] and b.peek(*EVERYTHING) == []
        with Spool(path, clock=clock) as unbound:  # not bound to one: sees the whole file
            assert (unbound.count(), unbound.size_bytes()) == (6, a.size_bytes() + 100)


def test_eviction_removes_only_this_destinations_oldest_rows_and_the_bound_is_per_file(path):
    with (
        Spool(path, max_bytes=500, destination=A) as a,
        Spool(path, max_bytes=500, destination=B) as b,
    ):
        a.append([event(n, size=100) for n in range(3)])
        b.append([event(n, size=100) for n in (10, 11)])  # 500: full

        appended = b.append([event(12, size=100)])
        assert len(appended.evicted) == 1
        assert numbers(b.claim(*EVERYTHING)) == [11, 12]  # its own oldest went
        assert numbers(a.claim(*EVERYTHING)) == [0, 1, 2]  # the other's were left alone


def test_a_layout_1_file_is_migrated_when_opened_and_its_rows_are_anyones(path, clock):
    os.makedirs(os.path.dirname(path))
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in LAYOUT_1:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO messages (size, data) VALUES (?, ?)",
            [(len(event(n)), event(n)) for n in range(4)],
        )
    conn.close()

    with Spool(path, clock=clock, destination=A) as a, Spool(path, clock=clock, destination=B) as b:
        assert (a.count(), b.count()) == (4, 4)  # legacy rows are counted by everyone
        b.append([event(10)])
        assert (a.count(), b.count()) == (4, 5)
        assert numbers(a.claim(2, 10**6)) == [0, 1]
        assert numbers(b.claim(*EVERYTHING)) == [2, 3, 10]
        assert a.claim(*EVERYTHING) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(messages)")]
        assert "destination" in columns
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(messages)")}
        assert {"messages_destination", "messages_leased"} <= indexes
    conn.close()
    assert integrity(path) == "ok"


def test_the_write_key_is_never_written_to_the_file(tmp_path):
    key = "sk-never-in-the-file-0123456789"
    path = str(tmp_path / "events.db")
    destination = spool_module.destination_of(key, "http://127.0.0.1:1/v1/batch")
    spool = Spool(path, destination=destination)  # kept open: the WAL is not checkpointed away
    spool.append([event(n) for n in range(50)])
    spool.release([m.row_id for m in spool.claim(10, 10**6)])
    files = [path, path + "-wal"]
    assert os.path.getsize(path + "-wal") > 0
    for name in files:
        with open(name, "rb") as file:
            raw = file.read()
        assert destination.encode() in raw or name == path  # the rows are in the WAL now
        assert key.encode() not in raw and key.encode("utf-16-le") not in raw
    spool.close()
    with open(path, "rb") as file:  # and after the checkpoint at close
        raw = file.read()
    assert destination.encode() in raw and key.encode() not in raw


# -- durability --------------------------------------------------------------------------------


def test_rows_survive_closing_and_reopening_the_file_like_a_restart(path):
    first_run = Spool(path)
    first_run.append([event(n) for n in range(3)])
    first_run.claim(1, 10**6)  # claimed but never delivered: a lease that dies with the process
    first_run.close()

    with Spool(path, clock=lambda: time.time() + 61) as next_run:
        assert next_run.count() == 3
        assert numbers(next_run.claim(*EVERYTHING)) == [0, 1, 2]


@posix_only
def test_every_row_committed_before_a_kill_9_survives_it(path):
    writer = python(
        """
        import sys
        spool = Spool(sys.argv[1])
        for n in range(200):
            spool.append([b'{"n":%d}' % n])
        print("appended", flush=True)
        n = 200
        while True:  # still writing when the kill comes
            spool.append([b'{"n":%d}' % n])
            n += 1
        """,
        path,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "appended\n", writer.communicate()[1]

    os.kill(writer.pid, signal.SIGKILL)
    writer.communicate(timeout=10)
    assert writer.returncode == -signal.SIGKILL

    with Spool(path) as after:
        survived = numbers(after.claim(*EVERYTHING))
    assert survived[:200] == list(range(200))
    assert survived == list(range(len(survived)))  # a prefix: nothing lost in between
    assert integrity(path) == "ok"


def claiming_process(path: str, count: int) -> tuple[subprocess.Popen[str], list[int]]:
    """A real process that claims ``count`` rows of the spool at ``path`` (with a 30 s lease),
    says which, and then waits on its stdin (alive) until told to end."""
    holder = python(
        """
        import sys
        spool = Spool(sys.argv[1], lease_seconds=30)
        print(" ".join(str(m.row_id) for m in spool.claim(int(sys.argv[2]), 10**6)), flush=True)
        sys.stdin.readline()
        """,
        path,
        str(count),
    )
    assert holder.stdout is not None
    held = [int(i) for i in holder.stdout.readline().split()]
    assert len(held) == count, holder.communicate()[1]
    return holder, held


def a_dead_pid() -> int:
    """The pid of a process that has exited and been reaped (free, unless reused since)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(10)
    return ended.pid


@linux_only
def test_a_killed_processes_lease_is_taken_over_at_once(path):
    with Spool(path) as parent:
        parent.append([event(n) for n in range(5)])
    holder, held = claiming_process(path, 3)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=10)  # reaped: no such pid any more

    # Regression: its rows waited for the lease to run out (here 30 s, in a client at least 60).
    clock = FakeClock(time.time())  # never advanced
    with Spool(path, clock=clock) as survivor:
        claimed = survivor.claim(*EVERYTHING)
    assert [m.row_id for m in claimed[:3]] == held
    assert numbers(claimed) == [0, 1, 2, 3, 4]


@linux_only
def test_a_live_processes_lease_is_respected_and_taken_over_once_it_has_exited(path):
    with Spool(path) as parent:
        parent.append([event(n) for n in range(5)])
    holder, held = claiming_process(path, 3)
    try:
        with Spool(path) as other:
            assert numbers(other.claim(*EVERYTHING)) == [3, 4]  # not the live one's
            assert other.claim(*EVERYTHING) == []
    finally:
        holder.communicate("\n", timeout=10)  # it ends without releasing its lease
    assert holder.returncode == 0

    with Spool(path) as after:
        assert [m.row_id for m in after.claim(*EVERYTHING)] == held


@linux_only
def test_a_lease_whose_pid_now_belongs_to_another_process_is_taken_over_at_once(path, clock):
    # The pid is alive (it is ours), but its start time is not the one the owner recorded.
    here = spool_module._this_process_identity()
    assert here is not None
    holder = Spool(path, clock=clock)
    holder._owner = f"{here.pid}-{here.started + 1}-{here.namespace}-0badf00d"
    holder.append([event(0), event(1)])
    claimed = holder.claim(1, 10**6)

    with Spool(path, clock=clock) as other:
        assert other.claim(*EVERYTHING) == [*claimed, SpooledMessage(2, event(1))]
    holder.close()


@linux_only
def test_leases_of_owners_that_cannot_be_judged_run_out_as_before(path, clock):
    # Old owner ids name no start time, and a pid of another host or container means nothing
    # here: both are left to expire, however dead the pid looks from this process.
    dead = a_dead_pid()
    here = spool_module._this_process_identity()
    assert here is not None
    unjudged = [f"{dead}-0badf00d", f"{dead}-{here.started}-{'0' * 16}-0badf00d"]
    with Spool(path, clock=clock) as spool:
        spool.append([event(n) for n in range(len(unjudged))])
        for owner in unjudged:
            spool._owner = owner
            assert len(spool.claim(1, 10**6)) == 1
    with Spool(path, clock=clock) as other:
        assert other.claim(*EVERYTHING) == []
        clock.advance(60)
        assert numbers(other.claim(*EVERYTHING)) == [0, 1]


@linux_only
def test_each_owner_of_a_live_lease_is_judged_once_per_claim_and_never_this_one(
    path, clock, monkeypatch
):
    here = spool_module._this_process_identity()
    assert here is not None
    dead_owner = f"{a_dead_pid()}-{here.started}-{here.namespace}-0badf00d"
    with Spool(path, clock=clock) as spool:
        spool.append([event(n) for n in range(10)])
        mine = spool.owner
        spool.claim(2, 10**6)  # two rows of our own
        spool._owner = dead_owner
        spool.claim(4, 10**6)  # and four of one dead owner
        spool._owner = mine
        judged: list[str] = []
        judge = spool_module._owner_is_dead

        def counting(owner, identity):
            judged.append(owner)
            return judge(owner, identity)

        monkeypatch.setattr(spool_module, "_owner_is_dead", counting)

        assert numbers(spool.claim(*EVERYTHING)) == [2, 3, 4, 5, 6, 7, 8, 9]
        assert judged == [dead_owner]


@linux_only
def test_peek_reads_the_rows_of_a_dead_owner_without_writing(path, clock):
    here = spool_module._this_process_identity()
    assert here is not None
    with Spool(path, clock=clock) as spool:
        spool.append([event(0), event(1)])
        spool._owner = f"{a_dead_pid()}-{here.started}-{here.namespace}-0badf00d"
        spool.claim(1, 10**6)
    with Spool(path, clock=clock) as other:
        assert numbers(other.peek(*EVERYTHING)) == [0, 1]
    with sqlite3.connect(path) as conn:  # the dead owner's lease is still recorded
        assert conn.execute("SELECT count(*) FROM messages WHERE lease_until > 0").fetchone() == (
            1,
        )


@linux_only
def test_this_process_is_identified_by_pid_start_time_and_namespace():
    here = spool_module._this_process_identity()
    assert here is not None
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    assert (here.pid, here.started) == (os.getpid(), int(fields[19]))  # field 22
    assert len(here.namespace) == 16 and int(here.namespace, 16) >= 0
    owner = spool_module._owner_id(here)
    assert owner.startswith(f"{os.getpid()}-{here.started}-{here.namespace}-")
    assert spool_module._parse_owner(owner) == here
    assert spool_module._owner_id(None).startswith(f"{os.getpid()}-")
    assert spool_module._parse_owner(spool_module._owner_id(None)) is None


@linux_only
def test_an_owner_is_judged_dead_only_when_it_provably_is():
    here = spool_module._this_process_identity()
    assert here is not None
    me, ns, dead = here.pid, here.namespace, a_dead_pid()
    is_dead = spool_module._owner_is_dead
    assert not is_dead(f"{me}-{here.started}-{ns}-0badf00d", here)  # alive: this process
    assert is_dead(f"{me}-{here.started + 1}-{ns}-0badf00d", here)  # pid reused
    assert is_dead(f"{dead}-{here.started}-{ns}-0badf00d", here)  # no such process
    assert not is_dead(f"{dead}-{here.started}-{'f' * 16}-0badf00d", here)  # another namespace
    assert not is_dead(f"{dead}-0badf00d", here)  # the old form
    assert not is_dead(f"{dead}-{here.started}-{ns}-0badf00d", None)  # we cannot judge
    for garbage in ("", "0-1-" + ns + "-0badf00d", f"-1-1-{ns}-0badf00d", f"{dead}-x-{ns}-1"):
        assert not is_dead(garbage, here)


@linux_only
def test_a_zombie_is_dead(path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for, yet
    here = spool_module._this_process_identity()
    assert here is not None

    def exited() -> bool:
        status = spool_module._process_status(zombie.pid)
        return status is not None and status[0] == "Z"

    assert wait_until(exited, timeout=10)
    status = spool_module._process_status(zombie.pid)
    assert status is not None
    assert spool_module._owner_is_dead(f"{zombie.pid}-{status[1]}-{here.namespace}-0badf00d", here)
    zombie.wait(10)


@posix_only
def test_four_processes_sharing_a_spool_claim_every_row_exactly_once(path, tmp_path):
    with Spool(path) as parent:
        parent.append([event(n) for n in range(2000)])
    worker = """
        import sys, time
        spool = Spool(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        with open(sys.argv[2], "w") as out:
            while True:
                batch = spool.claim(50, 500_000)
                if not batch:
                    break
                out.writelines(f"{m.row_id} {m.data.decode()}\\n" for m in batch)
                out.flush()
                time.sleep(0.02)  # the HTTP request, during which the others claim
                spool.delete([m.row_id for m in batch])
        """
    outputs = [tmp_path / f"worker{i}.txt" for i in range(4)]
    workers = [python(worker, path, str(output)) for output in outputs]
    for w in workers:
        assert w.stdout is not None
        assert w.stdout.readline() == "ready\n", w.communicate()[1]
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in workers:
        _, errors = w.communicate(timeout=60)
        assert w.returncode == 0, errors

    claimed = [output.read_text().splitlines() for output in outputs]
    assert sum(1 for lines in claimed if lines) >= 2, "the workers did not run concurrently"
    lines = [line for worker_lines in claimed for line in worker_lines]
    row_ids = collections.Counter(line.split(" ", 1)[0] for line in lines)
    payloads = collections.Counter(line.split(" ", 1)[1].encode() for line in lines)
    assert len(lines) == 2000
    assert set(row_ids.values()) == {1}  # no row claimed twice
    assert payloads == collections.Counter(event(n) for n in range(2000))
    with Spool(path) as after:
        assert after.count() == 0
    assert integrity(path) == "ok"


# -- fork, threads, close ----------------------------------------------------------------------


def fork_and_run(child, while_child_runs=None) -> int:
    """Run ``child()`` in a forked child, and ``while_child_runs()`` (if given) in the parent
    meanwhile; return the child's exit code (0 when it returned normally)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    if while_child_runs is not None:
        while_child_runs()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status


@posix_only
def test_a_forked_child_writes_through_a_connection_of_its_own(path):
    spool = Spool(path)
    spool.append([b"parent before fork"])
    parent_owner = spool.owner

    def child() -> None:
        spool.reopen_after_fork()
        assert spool.owner != parent_owner
        assert spool.owner.startswith(f"{os.getpid()}-")
        spool.append([b"child"])

    assert fork_and_run(child) == 0

    spool.append([b"parent after fork"])
    assert [m.data for m in spool.claim(*EVERYTHING)] == [
        b"parent before fork",
        b"child",
        b"parent after fork",
    ]
    assert spool.owner == parent_owner
    spool.close()


@posix_only
def test_a_forked_child_keeps_its_writes_when_the_parent_closes_first(path):
    # The failure this guards against: a child that inherits the parent's open connection shares
    # SQLite's in-process lock bookkeeping, holds no real lock, and loses its commits when the
    # parent's close deletes the WAL under it. The spool closes its connection around fork().
    spool = Spool(path)
    spool.append([b"parent"])
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def child() -> None:
        spool.reopen_after_fork()
        spool.append([b"child, before the parent closes"])
        os.write(from_child_w, b"1")
        assert os.read(to_child_r, 1) == b"1"
        spool.append([b"child, after the parent closed"])

    def parent() -> None:
        assert os.read(from_child_r, 1) == b"1"
        spool.close()
        os.write(to_child_w, b"1")

    assert fork_and_run(child, parent) == 0
    for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
        os.close(fd)

    with Spool(path) as after:
        assert [m.data for m in after.claim(*EVERYTHING)] == [
            b"parent",
            b"child, before the parent closes",
            b"child, after the parent closed",
        ]
    assert integrity(path) == "ok"


@posix_only
def test_a_child_forked_while_another_thread_holds_the_spool_does_not_use_it_and_fork_is_quick(
    path,
):
    # The child inherits SQLite's in-process lock bookkeeping of a connection in use, so no
    # connection it opens to that file is safe: it refuses the path (its transport then sends
    # directly). Regression: os.fork() waited up to 6 s for the other thread.
    spool = Spool(path)
    spool.append([b"parent"])

    def child() -> None:
        spool.reopen_after_fork()
        for use in (lambda: spool.append([b"child"]), lambda: Spool(path)):
            with pytest.raises(SpoolUnavailable, match="forked"):
                use()

    with spool._lock:  # as if the transport thread were mid-transaction
        started = time.monotonic()
        code = fork_and_run(child)
        took = time.monotonic() - started
    assert code == 0
    assert took < 2.0  # the hook waits 0.25 s, then lets the fork go on

    assert [m.data for m in spool.claim(*EVERYTHING)] == [b"parent"]
    spool.close()


def test_threads_can_share_one_spool(spool):
    def write(thread: int) -> None:
        for n in range(100):
            spool.append([b"%d-%d" % (thread, n)])

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    data = [m.data for m in spool.claim(*EVERYTHING)]
    assert len(data) == 400
    for t in range(4):  # each thread's rows in the order it wrote them
        assert [d for d in data if d.startswith(b"%d-" % t)] == [
            b"%d-%d" % (t, n) for n in range(100)
        ]


def test_close_is_idempotent_and_a_closed_spool_refuses_work(path):
    spool = Spool(path)
    spool.close()
    spool.close()

    assert spool.closed
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        spool.append([b"late"])
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        spool.claim(1, 1000)


# -- deadlines against another process, and damage ---------------------------------------------


@pytest.fixture
def held_by_another_process(path):
    """Another process holding the spool's write lock until the test ends."""
    Spool(path).close()
    with holding_the_write_lock(path):
        yield


def test_opening_a_spool_another_process_is_writing_to_does_not_wait(path, held_by_another_process):
    # Regression: the constructor blocked 5 s and then raised "database is locked".
    started = time.monotonic()
    spool = Spool(path)
    assert time.monotonic() - started < 1.0
    assert spool.count(timeout=0.1) == 0  # reading takes no lock in WAL mode
    spool.close()


@pytest.mark.parametrize("operation", ["append", "claim", "delete"])
def test_a_write_waits_for_another_process_no_longer_than_its_timeout(
    path, held_by_another_process, operation
):
    spool = Spool(path)
    calls = {
        "append": lambda: spool.append([b"x"], timeout=0.2),
        "claim": lambda: spool.claim(*EVERYTHING, timeout=0.2),
        "delete": lambda: spool.delete([1], timeout=0.2),
    }
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError) as raised:
        calls[operation]()
    assert 0.15 < time.monotonic() - started < 1.5
    assert trouble_of(raised.value) is Trouble.BUSY
    spool.close()


def test_a_call_waits_for_another_thread_no_longer_than_its_timeout_and_close_never_blocks(path):
    spool = Spool(path)
    with spool._lock:  # another thread mid-transaction
        started = time.monotonic()
        with pytest.raises(SpoolBusy):
            spool.append([b"x"], timeout=0.1)
        spool.close(timeout=0.1)  # returns; the holder closes the connection when done
        assert time.monotonic() - started < 1.0
    assert spool.closed
    assert spool._conn is not None  # the lock was held: it is closed on the way out ...
    with pytest.raises(sqlite3.ProgrammingError):
        spool.append([b"late"])
    assert spool._conn is None  # ... of the next holder


def test_a_damaged_file_is_told_apart_moved_aside_and_replaced_by_a_fresh_one(path):
    with Spool(path) as spool:
        spool.append([event(n) * 10 for n in range(300)])
    damage_spool(path)

    spool = Spool(path)
    with pytest.raises(sqlite3.DatabaseError) as raised:
        while spool.claim(*EVERYTHING):
            pass
    assert trouble_of(raised.value) is Trouble.DAMAGED

    moved = spool.quarantine()
    assert moved is not None and moved.startswith(path + ".damaged-")
    assert os.path.exists(moved)
    spool.append([b"after"])  # a fresh, empty file at the same path
    assert [m.data for m in spool.claim(*EVERYTHING)] == [b"after"]
    assert spool.quarantine() is not None  # (a second damage would go aside too)
    spool.close()


def test_quarantine_moves_only_the_file_this_spool_opened(path):
    first, second = Spool(path), Spool(path)
    moved = first.quarantine()
    assert moved is not None
    first.append([b"fresh"])  # creates the new file
    assert second.quarantine() is None  # its file was moved already: the new one stays
    assert os.path.exists(path)
    second.close()
    first.close()


def test_peek_reads_the_next_batch_without_leasing_it(spool):
    spool.append([b"a", b"b", b"c"])
    peeked = spool.peek(2, 10_000)
    assert [m.data for m in peeked] == [b"a", b"b"]
    assert [m.data for m in spool.peek(2, 10_000, after=peeked[-1].row_id)] == [b"c"]
    assert [m.data for m in spool.claim(*EVERYTHING)] == [b"a", b"b", b"c"]  # nothing leased
    assert spool.peek(*EVERYTHING) == []  # leased rows are not peeked


@pytest.mark.parametrize(
    "error, trouble",
    [
        (sqlite3.OperationalError("database is locked"), Trouble.BUSY),
        (SpoolBusy("in use"), Trouble.BUSY),
        (sqlite3.OperationalError("database or disk is full"), Trouble.FULL),
        (sqlite3.OperationalError("disk I/O error"), Trouble.FULL),
        (sqlite3.DatabaseError("database disk image is malformed"), Trouble.DAMAGED),
        (sqlite3.DatabaseError("file is not a database"), Trouble.DAMAGED),
        (SpoolUnavailable("cannot open"), Trouble.UNUSABLE),
        (sqlite3.ProgrammingError("closed"), Trouble.UNUSABLE),
        (sqlite3.OperationalError("attempt to write a readonly database"), Trouble.UNUSABLE),
    ],
)
def test_every_failure_is_sorted_into_what_to_do_about_it(error, trouble):
    assert trouble_of(error) is trouble


def test_a_path_that_cannot_be_a_spool_is_refused_at_once_as_unusable(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    for unusable in (tmp_path, garbage):
        with pytest.raises(SpoolUnavailable, match=str(unusable)):
            Spool(unusable)

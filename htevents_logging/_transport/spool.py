"""A durable SQLite buffer ("spool") between the in-memory queue and the HTTP sender.

Why it exists: the in-memory queue dies with the process and is bounded, so a long server outage
or a deploy (the process is stopped, maybe with ``kill -9``) would lose events. With a spool the
transport thread appends encoded messages to a file, claims a batch, sends it, and only then
deletes it; a retryable failure releases the claim instead. The next process that opens the same
path finds what was left and sends it first, because claims always take the oldest rows.

The life of a row::

    append() --> unleased --claim()--> leased to one owner --delete()--> gone (delivered)
                    ^                      |
                    +--- release() --------+  (retryable failure)
                    +--- lease expires ----+  (the owner hung, or died unseen: anyone may claim it)
                    +--- owner is dead ----+  (seen at the next claim: taken over at once)

Several processes (pre-fork servers, ``multiprocessing`` workers) may share one file: every
write is one ``BEGIN IMMEDIATE`` transaction, so SQLite serialises them across processes, and a
claim marks its rows with a lease (owner id, wall-clock expiry) inside the same transaction that
selected them, so two claimers never get the same unexpired row.

A lease need not run out when its owner is known to be dead. The owner id names the process
(pid, its start time, and the host and pid namespace it runs in, see :func:`_owner_id`), so a
claim first ends the live leases of owners on this host and namespace that are provably gone:
no such pid, a zombie, or the pid now belongs to a process started at another time (reused).
An owner in another container or on another host sharing the file, or whose id has the old
``"<pid>-<8 hex>"`` form, is never judged: its leases run out as before.

Each row belongs to one destination, a digest of the write key and endpoint URL
(:func:`destination_of`; the key itself is never stored), and a :class:`Spool` opened for one
destination appends, claims, counts and evicts only that destination's rows, so clients with
different keys or hosts can share a file without sending each other's events. Rows written
before destinations existed (layout 1) have the destination ``''`` and are anyone's.

Delivery is at least once, never exactly once: a process killed after the server accepted a batch
but before ``delete()`` committed leaves the rows behind, and whoever claims them after the lease
expires sends them again. So does a sender whose lease expired during a long retry (call
:meth:`Spool.renew` to prevent that).

Only the standard library is used. Every failure of a spool is a :class:`sqlite3.Error`, so the
transport can catch that one type, and :func:`trouble_of` sorts it into a :class:`Trouble`,
which says what the transport does about it: wait and try later (``BUSY``), send without
claiming (``FULL``), move the file aside and start a fresh one (``DAMAGED``), or send directly
for good (``UNUSABLE``). Every method takes a ``timeout``: no call waits longer for another
thread or process, whatever SQLite does.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Optional

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "DEFAULT_ENVELOPE_BYTES",
    "SCHEMA_VERSION",
    "Appended",
    "Spool",
    "SpoolBusy",
    "SpoolUnavailable",
    "SpooledMessage",
    "Trouble",
    "destination_of",
    "hold_for_fork",
    "release_after_fork",
    "reopen_after_fork",
    "trouble_of",
]

#: Stored in ``PRAGMA user_version``; a file written by a newer, unknown layout is refused, and
#: one written by layout 1 (no destinations) is brought up to date when opened.
SCHEMA_VERSION = 2

#: What :meth:`Spool.claim` reserves for ``{"batch":[...],"sentAt":"...","writeKey":"..."}``
#: unless the caller passes the exact figure.
DEFAULT_ENVELOPE_BYTES = 100

#: How long a call waits, unless given a ``timeout``, for another connection (thread or process)
#: to finish its transaction before it fails with :class:`SpoolBusy` or SQLite's ``database is
#: locked``.
BUSY_TIMEOUT_SECONDS = 5.0

#: How long the constructor waits to open a file that another process is creating; past it the
#: file is opened on first use instead.
OPEN_TIMEOUT_SECONDS = 0.5

# Small columns first and the blob last: SQLite reads a record's columns in order, so ``size``
# and the lease columns can be read without walking the overflow pages of a 32 KB ``data``.
# AUTOINCREMENT keeps row ids from ever being reused: delete() removes rows by id whatever their
# lease, so a late delete() from a process whose lease expired must not hit a newer row that got
# a recycled id (plain INTEGER PRIMARY KEY reuses the highest id once that row is deleted).
# (A file migrated from layout 1 has ``destination`` after ``data``: it is read from its index.)
_NEW_FILE = (
    """
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        size INTEGER NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        destination TEXT NOT NULL DEFAULT '',
        data BLOB NOT NULL
    )
    """,
    # Row count and byte total of the whole file, kept by triggers, so append() can check the
    # bound without scanning a spool that has grown large during an outage. Triggers run
    # inside the writing transaction, so the totals are right for every process.
    """
    CREATE TABLE IF NOT EXISTS totals (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )
    """,
    "INSERT OR IGNORE INTO totals (singleton, rows, bytes) VALUES (0, 0, 0)",
)

# Layout 1 had no destinations: its rows get ``''``, which every destination may claim.
_FROM_LAYOUT_1 = ("ALTER TABLE messages ADD COLUMN destination TEXT NOT NULL DEFAULT ''",)

# What layout 2 adds, to a new file and to a migrated one alike.
_LAYOUT_2 = (
    # The same per destination, so count() answers for one client without a scan.
    """
    CREATE TABLE IF NOT EXISTS tallies (
        destination TEXT PRIMARY KEY,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )
    """,
    # One destination's rows in id order: claims and evictions read them oldest first.
    "CREATE INDEX IF NOT EXISTS messages_destination ON messages (destination, id)",
    # Only the rows under a lease (a few batches): who holds live leases, found without a scan.
    """
    CREATE INDEX IF NOT EXISTS messages_leased ON messages (lease_until, lease_owner)
    WHERE lease_until > 0
    """,
    "DROP TRIGGER IF EXISTS messages_count_insert",
    "DROP TRIGGER IF EXISTS messages_count_delete",
    """
    CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE singleton = 0;
        INSERT OR IGNORE INTO tallies (destination, rows, bytes) VALUES (NEW.destination, 0, 0);
        UPDATE tallies SET rows = rows + 1, bytes = bytes + NEW.size
            WHERE destination = NEW.destination;
    END
    """,
    """
    CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE singleton = 0;
        UPDATE tallies SET rows = rows - 1, bytes = bytes - OLD.size
            WHERE destination = OLD.destination;
    END
    """,
)

# A layout-1 file's rows, all of destination ``''``, counted once when it is migrated.
_TALLY_LAYOUT_1 = (
    "INSERT OR REPLACE INTO tallies (destination, rows, bytes)"
    " SELECT '', count(*), coalesce(sum(size), 0) FROM messages"
)

# An owner id that can be judged (see _owner_id): pid, start time, namespace digest, 8 hex.
_JUDGED_OWNER = re.compile(r"([1-9][0-9]{0,8})-([0-9]{1,20})-([0-9a-f]{16})-[0-9a-f]{8}")

#: How long the before-fork hook waits for a transaction in another thread to finish. A fork
#: must not hang on SQLite: past it, the child does not use the spool (see reopen_after_fork).
_FORK_LOCK_TIMEOUT = 0.25

# Paths whose connection a forked child inherited open: not safe to open again in this process.
_TAINTED: set[str] = set()

# Connections a forked child inherited open (see Spool.reopen_after_fork). Kept referenced so
# that Python never finalises them: finalising calls sqlite3_close(), which SQLite's documentation
# forbids in a child for a connection opened in the parent (it may delete the WAL under it).
_ABANDONED: list[sqlite3.Connection] = []

# Every open Spool of this process, for the fork hooks at the bottom of this module.
_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


class SpoolBusy(sqlite3.OperationalError):
    """Another thread or process held the spool for longer than the call's ``timeout``."""


class SpoolUnavailable(sqlite3.OperationalError):
    """The spool cannot be used by this process at all: the file cannot be opened (a
    directory, not an SQLite file, a newer layout, no permission), or this child was forked
    while the connection was in use, so opening the file again here is not safe."""


class Trouble(enum.Enum):
    """What a spool failure means to the transport; see :func:`trouble_of`."""

    #: Held by another thread or process past the deadline: send directly, drain later.
    BUSY = "busy"
    #: No room to write (disk full, file size limit): send kept rows without claiming them.
    FULL = "full"
    #: The file is corrupt: move it aside, report what it held, and start a fresh one.
    DAMAGED = "damaged"
    #: It cannot be used at all: send directly from now on.
    UNUSABLE = "unusable"


def trouble_of(error: sqlite3.Error) -> Trouble:
    """Sort a spool failure (see :class:`Trouble`)."""
    if isinstance(error, (SpoolUnavailable, sqlite3.ProgrammingError)):
        return Trouble.UNUSABLE
    text = str(error).lower()
    if isinstance(error, sqlite3.OperationalError):
        if "full" in text or "i/o error" in text:
            return Trouble.FULL
        if "readonly" in text or "unable to open" in text:
            return Trouble.UNUSABLE
        return Trouble.BUSY  # locked, busy, and whatever else may pass
    if "malformed" in text or "not a database" in text:
        return Trouble.DAMAGED
    return Trouble.BUSY


@dataclass(frozen=True)
class Appended:
    """What :meth:`Spool.append` did: the new rows' ids (in the order of the items), the ids of
    the older rows it evicted to stay within ``max_bytes``, and (when asked for) their bytes."""

    stored: Sequence[int]
    evicted: Sequence[int]
    evicted_data: Sequence[bytes] = ()


@dataclass(frozen=True)
class SpooledMessage:
    """One claimed message: its row id (for delete/release/renew) and its encoded bytes."""

    row_id: int
    data: bytes


class Spool:
    """A durable, multi-process FIFO of encoded messages in one SQLite file.

    Durability: the file uses WAL with ``synchronous=NORMAL``. A transaction is durable against a
    crash of the process (an exception, ``os._exit``, ``kill -9``, the OOM killer) as soon as the
    method that ran it returns, because the commit has been written to the WAL file and the
    operating system keeps it even if the process dies. NORMAL does not ``fsync`` on every
    commit, only at checkpoints, so a power loss or kernel crash may lose the last transactions
    (never corrupt the file). That is the usual trade for a buffer of analytics events: FULL
    would cost an fsync per append.

    Size: ``max_bytes`` bounds the sum of the stored messages' sizes, not the file: SQLite pages,
    the WAL and free pages come on top, and the file does not shrink when rows are deleted
    (freed pages are reused).

    Threads: one connection per ``Spool``, guarded by a lock, so the transport thread and a
    ``close()`` or ``flush()`` from another thread can share the object. Every method waits at
    most its ``timeout`` (default ``BUSY_TIMEOUT_SECONDS``) for another thread or process, then
    raises :class:`SpoolBusy` or SQLite's ``database is locked``.

    Files: ``path`` is made absolute (so a reopen after ``chdir`` finds the same file); missing
    parent directories are created; a new file is created with mode 0600 (SQLite gives its
    ``-wal`` and ``-shm`` files the same mode), because events can carry personal data. All
    processes sharing a spool must therefore run as the same user.

    Destinations: ``destination`` (see :func:`destination_of`) is whose rows this object sees.
    It appends rows of that destination, and claims, peeks, counts and evicts only rows of that
    destination and the legacy rows of destination ``''``. The default, ``''``, is not bound
    to a destination: it sees every row of the file (for tools and tests), and its rows are
    anyone's. ``max_bytes`` still bounds the whole file (see :meth:`append`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        destination: str = "",
    ) -> None:
        """Open (or create) the spool at ``path``.

        Raises :class:`SpoolUnavailable` when the file cannot be a spool (a directory, not an
        SQLite file, a newer layout, no permission). Opening an existing spool takes no lock,
        so another process writing to it does not delay the constructor; creating a new one
        waits at most ``OPEN_TIMEOUT_SECONDS`` for another process creating it too, and then
        leaves the opening to the first use.

        ``lease_seconds`` is how long a claim is exclusive: after that, another claimer may take
        the rows, assuming their owner died. It must exceed the longest send, or the sender must
        :meth:`renew`. ``clock`` is the wall clock (``time.time``), shared by all processes on
        the host, because leases are compared across processes; tests inject a fake one.
        ``destination`` is whose rows this object sees (see the class).
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes!r}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        if not isinstance(destination, str):
            raise TypeError(f"destination must be a str, not {type(destination).__name__}")
        self._path = os.path.abspath(os.fspath(path))
        self._max_bytes = max_bytes
        self._lease_seconds = float(lease_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._destination = destination
        # The destinations whose rows this object acts on; None: every row (not bound).
        self._scope: Optional[tuple[str, ...]] = (destination, "") if destination else None
        self._identity = _this_process_identity()
        self._owner = _owner_id(self._identity)
        self._pid = os.getpid()
        self._closed = False
        self._close_when_free = False  # close() came while another thread held the lock
        self._held_for_fork = False
        # None while closed, and between a fork and the next use (opened again lazily).
        self._conn: Optional[sqlite3.Connection] = None
        self._file: Optional[tuple[int, int]] = None  # (st_dev, st_ino) of the open file
        with self._held(None):
            try:
                self._connection(OPEN_TIMEOUT_SECONDS)
            except SpoolBusy:
                pass  # another process is creating it: opened on first use
        _LIVE.add(self)

    @property
    def path(self) -> str:
        """The absolute path of the SQLite file."""
        return self._path

    @property
    def owner(self) -> str:
        """This object's lease owner id, new after a fork: ``"<pid>-<start time>-<namespace
        digest>-<8 hex>"``, or ``"<pid>-<8 hex>"`` where this process cannot be identified
        (not Linux), whose leases are then never judged dead (see :func:`_owner_id`)."""
        return self._owner

    @property
    def destination(self) -> str:
        """Whose rows this object sees (see :func:`destination_of`); ``''``: every row."""
        return self._destination

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def append(
        self,
        items: Sequence[bytes],
        *,
        timeout: Optional[float] = None,
        evicted_data: bool = False,
    ) -> Appended:
        """Store ``items`` (in order, after everything already stored) in one transaction.

        Returns the new rows' ids, and the rows evicted to keep the stored bytes of the whole
        file within ``max_bytes``: this destination's (and legacy) oldest stored rows that
        nobody holds a live lease on (unleased, or leased and expired), since during an outage
        the newest events are the ones worth keeping. Rows under a live lease are being sent
        right now and are never evicted, rows of other destinations are never evicted (they are
        not this client's to report), and the new rows are always stored, so the bound is best
        effort: the file can exceed it by the leased rows, the other destinations' rows, and
        this call's items, until the next append evicts again. The transport reports the
        evicted rows as dropped (``spool_full``), with their bytes when ``evicted_data`` asks
        for them (someone is to be told what they were).
        """
        if not items:
            return Appended((), ())
        rows = [(len(item), self._destination, item) for item in items]
        with self._write(timeout) as conn:
            (stored,) = conn.execute("SELECT bytes FROM totals WHERE singleton = 0").fetchone()
            excess = int(stored) + sum(size for size, _, _ in rows) - self._max_bytes
            evicted: list[SpooledMessage] = []
            if excess > 0:
                evicted = self._evict(conn, excess, self._clock(), evicted_data)
            conn.executemany(
                "INSERT INTO messages (size, destination, data) VALUES (?, ?, ?)", rows
            )
            # Under the write lock each new row got the next id: they are the last ones.
            (last,) = conn.execute("SELECT max(id) FROM messages").fetchone()
        return Appended(
            range(int(last) - len(rows) + 1, int(last) + 1),
            [row.row_id for row in evicted],
            [row.data for row in evicted] if evicted_data else (),
        )

    def claim(
        self,
        max_count: int,
        max_bytes: int,
        *,
        envelope_bytes: int = DEFAULT_ENVELOPE_BYTES,
        timeout: Optional[float] = None,
    ) -> list[SpooledMessage]:
        """Lease the next batch to this owner and return it, oldest first.

        Takes this destination's (and legacy) oldest rows (by row id, so released and expired
        rows go out again before newer ones) that have no live lease, up to ``max_count`` rows
        and while ``sum(len(data)) + len(rows) + envelope_bytes < max_bytes``: the request body
        of ``{"batch":[...],...}`` with one comma per message (one more than needed) stays
        under the server's limit. The first row is taken even if it alone exceeds
        ``max_bytes``, so a spool never gets stuck behind one row. Leases last
        ``lease_seconds`` from now. Returns an empty list when nothing is available.

        First, the live leases of owners known to be dead (see :func:`_owner_is_dead`) are
        ended, whatever their destination, so what a killed process held goes out now rather
        than when its lease runs out. Judging, selecting and leasing happen in one
        ``BEGIN IMMEDIATE`` transaction, which holds the database's write lock from the start,
        so no other process can claim the same rows.
        """
        if max_count <= 0:
            return []
        with self._write(timeout) as conn:
            now = self._clock()
            conn.executemany(
                "UPDATE messages SET lease_until = 0, lease_owner = NULL"
                " WHERE lease_until > 0 AND lease_owner = ?",
                [(owner,) for owner in self._dead_owners(conn, now)],
            )
            with closing(_claimable(conn, self._scope, now, 0)) as candidates:
                chosen = _choose(candidates, max_count, max_bytes, envelope_bytes)
            rows = _read(conn, chosen)
            until = now + self._lease_seconds
            conn.executemany(
                "UPDATE messages SET lease_owner = ?, lease_until = ? WHERE id = ?",
                [(self._owner, until, row_id) for row_id in chosen],
            )
        return rows

    def peek(
        self,
        max_count: int,
        max_bytes: int,
        *,
        after: int = 0,
        envelope_bytes: int = DEFAULT_ENVELOPE_BYTES,
        timeout: Optional[float] = None,
    ) -> list[SpooledMessage]:
        """The batch :meth:`claim` would take among the rows after id ``after``, read without
        leasing it: nothing is written.

        For a spool that cannot be written (the disk is full): its rows can still be sent,
        and deleted once there is room again. Without a lease another process may send the
        same rows too: delivery stays at least once. Rows leased by an owner known to be dead
        count as unleased here (their leases cannot be ended without a write).
        """
        if max_count <= 0:
            return []
        with self._locked(timeout) as conn:
            now = self._clock()
            dead = self._dead_owners(conn, now)
            with closing(_claimable(conn, self._scope, now, after, dead)) as candidates:
                chosen = _choose(candidates, max_count, max_bytes, envelope_bytes)
            return _read(conn, chosen)

    def delete(self, row_ids: Sequence[int], *, timeout: Optional[float] = None) -> None:
        """Remove rows that were delivered (or failed for good), whoever holds them now.

        Deliberately not limited to this owner's leases: if our lease expired during a slow
        send and another process re-claimed the rows, the server has them anyway, so removing
        them saves a duplicate rather than losing an event (the other sender's later delete is
        a no-op). Ids are never reused, so a late delete cannot hit a newer row.
        """
        if not row_ids:
            return
        with self._write(timeout) as conn:
            conn.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in row_ids])

    def release(self, row_ids: Sequence[int], *, timeout: Optional[float] = None) -> None:
        """End this owner's lease on ``row_ids`` after a retryable failure.

        The rows become claimable at once, by this process or any other, and being the oldest
        they go first. Rows this owner no longer holds (expired and re-claimed by another) are
        left alone: that claim is someone else's to end.
        """
        if not row_ids:
            return
        with self._write(timeout) as conn:
            conn.executemany(
                "UPDATE messages SET lease_owner = NULL, lease_until = 0"
                " WHERE id = ? AND lease_owner = ?",
                [(i, self._owner) for i in row_ids],
            )

    def renew(self, row_ids: Sequence[int], *, timeout: Optional[float] = None) -> None:
        """Extend this owner's lease on ``row_ids`` to ``lease_seconds`` from now.

        For a sender that keeps retrying longer than a lease: renewing before each attempt
        stops other processes from taking the batch and sending duplicates. Only rows still
        leased by this owner are renewed (an expired lease not yet re-claimed by anyone counts
        as still ours).
        """
        if not row_ids:
            return
        with self._write(timeout) as conn:
            until = self._clock() + self._lease_seconds
            conn.executemany(
                "UPDATE messages SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                [(until, i, self._owner) for i in row_ids],
            )

    def count(self, *, timeout: Optional[float] = None) -> int:
        """Rows stored for this destination and legacy rows (every row when not bound to a
        destination), leased or not, by every process sharing the file: what is still kept
        for a client. Read from tallies the triggers keep, never by a scan."""
        return self._total("rows", timeout)

    def size_bytes(self, *, timeout: Optional[float] = None) -> int:
        """Sum of the sizes of the messages :meth:`count` counts, leased or not (when not bound
        to a destination: of the whole file, what ``max_bytes`` bounds)."""
        return self._total("bytes", timeout)

    def quarantine(self, *, timeout: Optional[float] = None) -> Optional[str]:
        """Move a damaged file aside and start afresh; return where it went.

        The file (and its WAL) is renamed to ``<path>.damaged-<Unix time>-<6 hex>``, kept for
        a person to recover (``sqlite3 <file> .recover``), and the next call creates a new,
        empty spool at ``path``. Returns ``None`` when another process sharing the file has moved it
        already (only the file this object opened is ever moved).
        """
        with self._held(timeout):
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            opened, self._file = self._file, None
            try:
                if opened is None or _identity(self._path) != opened:
                    return None
                moved = f"{self._path}.damaged-{int(time.time())}-{uuid.uuid4().hex[:6]}"
                os.replace(self._path, moved)
                if os.path.exists(self._path + "-wal"):
                    os.replace(self._path + "-wal", moved + "-wal")
                if os.path.exists(self._path + "-shm"):
                    os.remove(self._path + "-shm")
            except OSError as error:
                raise SpoolUnavailable(f"cannot move {self._path!r} aside: {error}") from error
            return moved

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Close the connection. Idempotent; later calls other than ``close`` raise
        ``sqlite3.ProgrammingError``. Rows stay in the file for the next ``Spool`` on the path;
        rows still leased by this owner become claimable when their lease expires.

        When another thread is mid-transaction past ``timeout``, it returns at once and that
        thread closes the connection as soon as its transaction ends.
        """
        self._closed = True
        _LIVE.discard(self)
        try:
            with self._held(timeout):
                self._close_connection()
        except SpoolBusy:
            self._close_when_free = True

    def reopen_after_fork(self) -> None:
        """Make this spool usable in a forked child; a no-op in the process that opened it.

        SQLite connections must not cross ``fork()`` (https://www.sqlite.org/howtocorrupt.html,
        section 2.7). The fork hooks (:func:`hold_for_fork`, :func:`reopen_after_fork`)
        therefore close every spool's connection just before a fork and let it reopen lazily
        on next use, in the parent and in the child, so the child gets a connection of its own
        and calling this is not needed (it is harmless: it does nothing the second time).

        If the connection could not be closed before the fork (another thread held it for
        longer than ``_FORK_LOCK_TIMEOUT``), the child inherited SQLite's in-process lock
        bookkeeping of that file, and no connection it opens to it is safe: this spool (and
        any other on the same path) then raises :class:`SpoolUnavailable` in the child, whose
        transport sends directly. The inherited connection is neither used nor closed
        (closing may checkpoint and delete the WAL under the parent); it is kept referenced
        forever (a small one-time leak). The lock is replaced, since a thread of the parent
        may have held it at the fork. A new owner id keeps the parent's leases the parent's
        (and names the child, so that its leases end at once if it dies).
        """
        if self._pid == os.getpid():
            return
        inherited, self._conn = self._conn, None
        if inherited is not None:
            _ABANDONED.append(inherited)
            _TAINTED.add(self._path)
        self._lock = threading.Lock()
        self._held_for_fork = False
        self._close_when_free = False
        self._identity = _this_process_identity()
        self._owner = _owner_id(self._identity)
        self._pid = os.getpid()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"owner={self._owner}"
        return f"<Spool {self._path!r} {state}>"

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _held(self, timeout: Optional[float]) -> Iterator[None]:
        """Hold this object's lock, waiting at most ``timeout`` for another thread; on the way
        out, close the connection if :meth:`close` came meanwhile."""
        if not self._lock.acquire(timeout=_wait(timeout)):
            raise SpoolBusy(f"the spool at {self._path!r} is in use by another thread")
        try:
            yield
        finally:
            if self._close_when_free:
                self._close_connection()
            self._lock.release()

    @contextmanager
    def _locked(self, timeout: Optional[float]) -> Iterator[sqlite3.Connection]:
        """Hold the lock and the connection, with SQLite's busy timeout set to what is left
        of ``timeout``, so a wait for another process ends by the same deadline."""
        deadline = time.monotonic() + _wait(timeout)
        with self._held(timeout):
            conn = self._connection(max(0.0, deadline - time.monotonic()))
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            conn.execute(f"PRAGMA busy_timeout = {left_ms}")
            yield conn

    @contextmanager
    def _write(self, timeout: Optional[float]) -> Iterator[sqlite3.Connection]:
        """One write transaction: commit if the block finishes, roll back if it raises.

        ``BEGIN IMMEDIATE`` takes the write lock up front (waiting up to the time left), so a
        read-then-write transaction can never fail half-way on a lock upgrade, and no other
        process can act on what this one has just read.
        """
        with self._locked(timeout) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")  # a failed COMMIT (disk full) is rolled back too
            except BaseException:
                _rollback(conn)
                raise

    def _connection(self, timeout: float) -> sqlite3.Connection:
        """The open connection, opened (again) if needed: on first use after a fork, or
        after :meth:`quarantine`. Call with the lock."""
        if self._closed:
            raise sqlite3.ProgrammingError(f"the spool at {self._path!r} is closed")
        if self._pid != os.getpid():  # forked, and the fork hooks did not run: not ours to use
            raise sqlite3.ProgrammingError("call reopen_after_fork() in a forked child first")
        if self._conn is None:
            if self._path in _TAINTED:
                raise SpoolUnavailable(
                    f"the spool at {self._path!r} was in use by another thread when this "
                    "process was forked; it is not safe to open it again in this process"
                )
            try:
                self._conn = _connect(self._path, timeout)
            except sqlite3.OperationalError as error:
                if trouble_of(error) is Trouble.BUSY:
                    raise SpoolBusy(f"the spool at {self._path!r} is being created") from error
                raise SpoolUnavailable(
                    f"cannot open the spool at {self._path!r}: {error}"
                ) from error
            except (sqlite3.Error, OSError) as error:
                raise SpoolUnavailable(
                    f"cannot open the spool at {self._path!r}: {error}"
                ) from error
            self._file = _identity(self._path)
        return self._conn

    def _close_connection(self) -> None:
        """Close the connection (with the lock held)."""
        self._close_when_free = False
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _before_fork(self) -> None:
        """Hold the lock across the fork and close the connection, so that none crosses it.

        Why close rather than just not use it in the child: SQLite's unix layer keeps per-file
        lock bookkeeping in process memory. A child that inherits it while the parent's
        connection is open believes it already holds the shared lock on the database file and
        never takes it; the parent (or anyone) can then checkpoint and delete the WAL while the
        child still writes to it, and the child's later commits are silently lost. Closing
        first frees that bookkeeping, so both processes start afresh.
        """
        if not self._lock.acquire(timeout=_FORK_LOCK_TIMEOUT):
            return  # the child will not use this file (see reopen_after_fork)
        self._held_for_fork = True
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                _ABANDONED.append(conn)

    def _after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._lock.release()

    def _total(self, column: str, timeout: Optional[float]) -> int:
        """``rows`` or ``bytes``: of the whole file when not bound to a destination, else of
        this destination's and the legacy rows."""
        with self._locked(timeout) as conn:
            if self._scope is None:
                row = conn.execute(f"SELECT {column} FROM totals WHERE singleton = 0").fetchone()
            else:
                marks = ", ".join("?" * len(self._scope))
                row = conn.execute(
                    f"SELECT coalesce(sum({column}), 0) FROM tallies"
                    f" WHERE destination IN ({marks})",
                    self._scope,
                ).fetchone()
        return int(row[0])

    def _dead_owners(self, conn: sqlite3.Connection, now: float) -> list[str]:
        """The owners, other than this one, of live leases who are known to be dead: each
        distinct owner judged once, from the few leased rows (a partial index holds them)."""
        if self._identity is None:
            return []  # this process cannot judge anyone (see _owner_is_dead)
        owners = conn.execute(
            "SELECT DISTINCT lease_owner FROM messages"
            " WHERE lease_until > 0 AND lease_until > ? AND lease_owner IS NOT NULL",
            (now,),
        ).fetchall()
        return [
            str(owner)
            for (owner,) in owners
            if owner != self._owner and _owner_is_dead(str(owner), self._identity)
        ]

    def _evict(
        self, conn: sqlite3.Connection, excess: int, now: float, with_data: bool
    ) -> list[SpooledMessage]:
        """Delete this destination's (and legacy) oldest rows without a live lease until
        ``excess`` bytes are freed (or no such row is left); return them (their bytes only
        ``with_data``)."""
        freed = 0
        chosen: list[int] = []
        with closing(_claimable(conn, self._scope, now, 0)) as candidates:
            for row_id, size in candidates:
                chosen.append(row_id)
                freed += size
                if freed >= excess:
                    break
        if with_data:
            evicted = _read(conn, chosen)
        else:
            evicted = [SpooledMessage(row_id, b"") for row_id in chosen]
        # Exactly the rows read above: the write lock is held since they were read.
        conn.executemany("DELETE FROM messages WHERE id = ?", [(row_id,) for row_id in chosen])
        return evicted


def _claimable(
    conn: sqlite3.Connection,
    scope: Optional[tuple[str, ...]],
    now: float,
    after: int,
    dead: Sequence[str] = (),
) -> Generator[tuple[int, int], None, None]:
    """``(id, size)`` of the rows after id ``after`` without a live lease (or leased by one of
    the ``dead`` owners), oldest first, of the destinations in ``scope`` (None: every row).

    Read lazily, so a caller that stops early reads no further. One ordered index scan per
    destination, merged here: SQLite would sort the rows of ``destination IN (...)`` by id
    before returning the first one. Close it (``contextlib.closing``) before writing.
    """
    lease = "lease_until <= ?"
    if dead:
        lease = f"(lease_until <= ? OR lease_owner IN ({', '.join('?' * len(dead))}))"
    if scope is None:
        cursors = [
            conn.execute(
                f"SELECT id, size FROM messages WHERE id > ? AND {lease} ORDER BY id",
                (after, now, *dead),
            )
        ]
    else:
        cursors = [
            conn.execute(
                "SELECT id, size FROM messages INDEXED BY messages_destination"
                f" WHERE destination = ? AND id > ? AND {lease} ORDER BY id",
                (destination, after, now, *dead),
            )
            for destination in scope
        ]
    try:
        for row_id, size in heapq.merge(*cursors):
            yield int(row_id), int(size)
    finally:
        for cursor in cursors:
            cursor.close()


def _choose(
    candidates: Iterable[tuple[int, int]], max_count: int, max_bytes: int, envelope_bytes: int
) -> list[int]:
    """The ids of the next batch among ``candidates`` (oldest first); see :meth:`Spool.claim`
    for the bounds. Stops reading as soon as the batch is full."""
    chosen: list[int] = []
    body = envelope_bytes
    for row_id, size in candidates:
        body += size + 1
        if chosen and body >= max_bytes:
            break
        chosen.append(row_id)
        if len(chosen) >= max_count:
            break
    return chosen


def _read(conn: sqlite3.Connection, row_ids: Sequence[int]) -> list[SpooledMessage]:
    """The rows ``row_ids`` with their bytes, in that order; a row deleted meanwhile (only
    possible outside a write transaction, as in :meth:`Spool.peek`) is left out. One lookup
    by id per row: the rows of other destinations between them are never read."""
    rows: list[SpooledMessage] = []
    for row_id in row_ids:
        found = conn.execute("SELECT data FROM messages WHERE id = ?", (row_id,)).fetchone()
        if found is not None:
            rows.append(SpooledMessage(row_id, bytes(found[0])))
    return rows


def _wait(timeout: Optional[float]) -> float:
    """A lock wait in seconds: the default when ``None``, and never negative (a negative
    ``Lock.acquire`` timeout would wait forever)."""
    return BUSY_TIMEOUT_SECONDS if timeout is None else max(0.0, timeout)


def _identity(path: str) -> Optional[tuple[int, int]]:
    """Which file ``path`` names now (device and inode), or ``None`` when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back whatever is open, without hiding the error that got us here."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def destination_of(write_key: Optional[str], url: str) -> str:
    """The destination of a client that sends with ``write_key`` to ``url`` (the full endpoint,
    host and path): 32 hex digits of a SHA-256 of both.

    Why a digest: a spool row must say where it goes, so that a client never sends another
    key's or another host's events, but the file must not hold the key (it is a credential,
    and the file outlives the process, gets copied, and is quarantined for people to read).
    128 bits tell destinations apart; the key cannot be read back from them.
    """
    return hashlib.sha256(f"{write_key or ''}\0{url}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Identity:
    """Who a process is, for judging whether it is alive: its pid, its start time (clock ticks
    after boot: a reused pid has another), and a digest of the host's boot and its pid and time
    namespaces (pids and start times are comparable only within the same ones)."""

    pid: int
    started: int
    namespace: str


def _process_status(pid: int) -> Optional[tuple[str, int]]:
    """The state letter and start time (field 3 and field 22 of ``/proc/<pid>/stat``) of
    process ``pid``, or ``None`` when there is no such process. Linux only.

    The command name (field 2) may hold spaces and parentheses, so the fields are counted from
    the last ``)``. Raises ``OSError`` or ``ValueError`` when it cannot be read or parsed.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 1 :].split()  # fields[0] is field 3
    return fields[0].decode("ascii"), int(fields[19])


def _this_process_identity() -> Optional[_Identity]:
    """This process's :class:`_Identity`, or ``None`` where it cannot be told for sure: not
    Linux, no ``/proc``, or a ``/proc`` of another pid namespace than ours (then the pids we
    would look up there are not the ones we compare).

    The boot id (``/proc/sys/kernel/random/boot_id``, the host's, also inside a container)
    and the inode of ``/proc/self/ns/pid`` (and of ``ns/time``, which shifts start times)
    make sure that a process in another container or on another host sharing the file is
    never judged by pids that are not ours: their namespace digest differs.
    """
    if not sys.platform.startswith("linux"):
        return None
    pid = os.getpid()
    try:
        if os.readlink("/proc/self") != str(pid):
            return None
        status = _process_status(pid)
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot = file.read().strip()
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
        try:
            time_namespace = os.stat("/proc/self/ns/time").st_ino
        except FileNotFoundError:
            time_namespace = 0  # a kernel without time namespaces
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if status is None or not boot:
        return None
    digest = hashlib.sha256(f"{boot}/{pid_namespace}/{time_namespace}".encode()).hexdigest()
    return _Identity(pid, status[1], digest[:16])


def _owner_id(identity: Optional[_Identity]) -> str:
    """A new lease owner id for this process (one per :class:`Spool` object and fork).

    ``"<pid>-<start time>-<namespace digest>-<8 hex>"`` when the process is identified, so
    that another process can tell it is dead (:func:`_owner_is_dead`); otherwise the old
    ``"<pid>-<8 hex>"``, which is never judged. Always starts with ``"<pid>-"``.
    """
    tag = uuid.uuid4().hex[:8]
    if identity is None:
        return f"{os.getpid()}-{tag}"
    return f"{identity.pid}-{identity.started}-{identity.namespace}-{tag}"


def _parse_owner(owner: str) -> Optional[_Identity]:
    """The identity an owner id records, or ``None`` for an id that cannot be judged (the old
    form, or anything else: ids are read from a shared file and checked strictly)."""
    match = _JUDGED_OWNER.fullmatch(owner)
    if match is None:
        return None
    return _Identity(int(match[1]), int(match[2]), match[3])


def _owner_is_dead(owner: str, here: Optional[_Identity]) -> bool:
    """True only when ``owner`` is provably dead, as seen by the process ``here``.

    Provably: the owner runs on this host in this process's namespaces (else its pid means
    nothing here), and either no process has its pid, or that process is a zombie (it will
    never send or renew), or it started at another time (the pid was reused). Whenever that
    cannot be told (another namespace, an old-form id, an unreadable ``/proc``), the answer
    is False and the lease runs out as it always did.
    """
    theirs = _parse_owner(owner)
    if here is None or theirs is None or theirs.namespace != here.namespace:
        return False
    try:
        os.kill(theirs.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, and belongs to another user
    except OSError:
        return False
    try:
        status = _process_status(theirs.pid)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if status is None:
        return True  # it exited since
    state, started = status
    return state in ("Z", "X") or started != theirs.started


def _connect(path: str, timeout: float) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and create the schema if it is missing.

    An existing spool is only read here (its journal mode and layout version), which takes no
    lock, so another process in the middle of a write does not hold this up; only creating
    the schema (or migrating a layout-1 file) waits for the write lock, at most ``timeout``.
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # Create the file ourselves, private to the user; an existing file keeps its mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path,
        timeout=timeout,  # sets SQLite's busy_timeout; each call sets its own afterwards
        isolation_level=None,  # autocommit: transactions are begun explicitly
        check_same_thread=False,  # guarded by Spool._lock instead
    )
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL for {path!r} (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        if _version(conn, path) < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = _version(conn, path)
                if version < SCHEMA_VERSION:  # nobody created or migrated it meanwhile
                    _lay_out(conn, version)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
    except BaseException:
        conn.close()
        raise
    return conn


def _lay_out(conn: sqlite3.Connection, version: int) -> None:
    """Bring a file of layout ``version`` (0: a new, empty file) to ``SCHEMA_VERSION``, inside
    the caller's transaction.

    Layout 1 is migrated in place: its rows get the destination ``''`` (anyone's, since which
    key and host they were meant for was not recorded), are counted as such, and are indexed.
    That reads the whole file once. Layout-1 code refuses the migrated file when it opens it
    (a newer layout), but a process that had it open already keeps working on it (its rows
    get ``''`` too) and claims every destination's rows: upgrade the processes sharing a file
    together.
    """
    for statement in _NEW_FILE if version == 0 else _FROM_LAYOUT_1:
        conn.execute(statement)
    for statement in _LAYOUT_2:
        conn.execute(statement)
    if version == 1:
        conn.execute(_TALLY_LAYOUT_1)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _version(conn: sqlite3.Connection, path: str) -> int:
    """The file's layout version; a newer one than this code reads is refused."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"{path!r} has spool schema {version}; this version reads {SCHEMA_VERSION}"
        )
    return int(version)


def hold_for_fork() -> None:
    """Before a fork: close every spool's connection, holding its lock (see
    :meth:`Spool._before_fork`)."""
    for spool in list(_LIVE):
        spool._before_fork()


def release_after_fork() -> None:
    """After a fork, in the parent: let go of what :func:`hold_for_fork` held."""
    for spool in list(_LIVE):
        spool._after_fork_in_parent()


def reopen_after_fork() -> None:
    """After a fork, in the child: every spool gets a connection and an owner of its own."""
    for spool in list(_LIVE):
        spool.reopen_after_fork()

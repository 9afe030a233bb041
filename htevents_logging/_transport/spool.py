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
                    +--- lease expires ----+  (the owner died or hung: anyone may claim it)

Several processes (pre-fork servers, ``multiprocessing`` workers) may share one file: every
write is one ``BEGIN IMMEDIATE`` transaction, so SQLite serialises them across processes, and a
claim marks its rows with a lease (owner id, wall-clock expiry) inside the same transaction that
selected them, so two claimers never get the same unexpired row.

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
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    "hold_for_fork",
    "release_after_fork",
    "reopen_after_fork",
    "trouble_of",
]

#: Stored in ``PRAGMA user_version``; a file written by a newer, unknown layout is refused.
SCHEMA_VERSION = 1

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
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        size INTEGER NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        data BLOB NOT NULL
    )
    """,
    # Row count and byte total kept by triggers, so append() can check the bound and count() /
    # size_bytes() can answer without scanning a spool that has grown large during an outage.
    # Triggers run inside the writing transaction, so the totals are right for every process.
    """
    CREATE TABLE IF NOT EXISTS totals (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )
    """,
    "INSERT OR IGNORE INTO totals (singleton, rows, bytes) VALUES (0, 0, 0)",
    """
    CREATE TRIGGER IF NOT EXISTS messages_count_insert AFTER INSERT ON messages BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE singleton = 0;
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS messages_count_delete AFTER DELETE ON messages BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE singleton = 0;
    END
    """,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

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
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
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
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes!r}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self._path = os.path.abspath(os.fspath(path))
        self._max_bytes = max_bytes
        self._lease_seconds = float(lease_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._owner = _new_owner()
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
        """This object's lease owner id, ``"<pid>-<8 hex>"``, new after a fork."""
        return self._owner

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

        Returns the new rows' ids, and the rows evicted to keep the stored bytes within
        ``max_bytes``: the
        oldest stored rows that nobody holds a live lease on (unleased, or leased and expired),
        since during an outage the newest events are the ones worth keeping. Rows under a live
        lease are being sent right now and are never evicted, and the new rows are always
        stored, so the bound is best effort: the spool can exceed it by the leased rows plus
        this call's items, until the next append evicts again. The transport reports the
        evicted rows as dropped (``spool_full``), with their bytes when ``evicted_data`` asks
        for them (someone is to be told what they were).
        """
        if not items:
            return Appended((), ())
        rows = [(len(item), item) for item in items]
        with self._write(timeout) as conn:
            (stored,) = conn.execute("SELECT bytes FROM totals WHERE singleton = 0").fetchone()
            excess = int(stored) + sum(size for size, _ in rows) - self._max_bytes
            evicted: list[SpooledMessage] = []
            if excess > 0:
                evicted = self._evict(conn, excess, self._clock(), evicted_data)
            conn.executemany("INSERT INTO messages (size, data) VALUES (?, ?)", rows)
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

        Takes the oldest rows (by row id, so released and expired rows go out again before
        newer ones) that have no live lease, up to ``max_count`` rows and while
        ``sum(len(data)) + len(rows) + envelope_bytes < max_bytes``: the request body of
        ``{"batch":[...],...}`` with one comma per message (one more than needed) stays under
        the server's limit. The first row is taken even if it alone exceeds ``max_bytes``, so a
        spool never gets stuck behind one row. Leases last ``lease_seconds`` from now. Returns
        an empty list when nothing is available.

        Selecting and leasing happen in one ``BEGIN IMMEDIATE`` transaction, which holds the
        database's write lock from the start, so no other process can claim the same rows.
        """
        if max_count <= 0:
            return []
        with self._write(timeout) as conn:
            now = self._clock()
            bounds = _next_batch(conn, now, 0, max_count, max_bytes, envelope_bytes)
            if bounds is None:
                return []
            rows = _rows_between(conn, *bounds, now)
            conn.execute(
                "UPDATE messages SET lease_owner = ?, lease_until = ?"
                " WHERE id BETWEEN ? AND ? AND lease_until <= ?",
                (self._owner, now + self._lease_seconds, *bounds, now),
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
        same rows too: delivery stays at least once.
        """
        if max_count <= 0:
            return []
        with self._locked(timeout) as conn:
            now = self._clock()
            bounds = _next_batch(conn, now, after, max_count, max_bytes, envelope_bytes)
            return [] if bounds is None else _rows_between(conn, *bounds, now)

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
        """Rows stored, leased or not (by every process sharing the file)."""
        return self._total("rows", timeout)

    def size_bytes(self, *, timeout: Optional[float] = None) -> int:
        """Sum of the stored messages' sizes (what ``max_bytes`` bounds), leased or not."""
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
        may have held it at the fork. A new owner id keeps the parent's leases the parent's.
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
        self._owner = _new_owner()
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
        with self._locked(timeout) as conn:
            row = conn.execute(f"SELECT {column} FROM totals WHERE singleton = 0").fetchone()
        return int(row[0])

    def _evict(
        self, conn: sqlite3.Connection, excess: int, now: float, with_data: bool
    ) -> list[SpooledMessage]:
        """Delete the oldest rows without a live lease until ``excess`` bytes are freed (or no
        such row is left); return them (their bytes only ``with_data``)."""
        freed = 0
        evicted: list[SpooledMessage] = []
        columns = "id, size, data" if with_data else "id, size, NULL"
        cursor = conn.execute(
            f"SELECT {columns} FROM messages WHERE lease_until <= ? ORDER BY id", (now,)
        )
        try:
            for row_id, size, data in cursor:
                freed += int(size)
                evicted.append(SpooledMessage(int(row_id), bytes(data or b"")))
                if freed >= excess:
                    break
        finally:
            cursor.close()
        if evicted:
            # Exactly the rows read above: the write lock is held since they were read.
            conn.execute(
                "DELETE FROM messages WHERE id <= ? AND lease_until <= ?",
                (evicted[-1].row_id, now),
            )
        return evicted


def _next_batch(
    conn: sqlite3.Connection,
    now: float,
    after: int,
    max_count: int,
    max_bytes: int,
    envelope_bytes: int,
) -> Optional[tuple[int, int]]:
    """The first and last ids of the next batch among the unleased rows after ``after`` (see
    :meth:`Spool.claim` for the bounds), or ``None`` when there is none."""
    candidates = conn.execute(
        "SELECT id, size FROM messages WHERE id > ? AND lease_until <= ? ORDER BY id LIMIT ?",
        (after, now, max_count),
    ).fetchall()
    if not candidates:
        return None
    first = last = int(candidates[0][0])
    body = envelope_bytes + int(candidates[0][1]) + 1
    for row_id, size in candidates[1:]:
        body += int(size) + 1
        if body >= max_bytes:
            break
        last = int(row_id)
    return first, last


def _rows_between(
    conn: sqlite3.Connection, first: int, last: int, now: float
) -> list[SpooledMessage]:
    """The unleased rows with ids in ``[first, last]``: exactly the batch :func:`_next_batch`
    chose, when read in the same transaction."""
    rows = conn.execute(
        "SELECT id, data FROM messages WHERE id BETWEEN ? AND ? AND lease_until <= ? ORDER BY id",
        (first, last, now),
    ).fetchall()
    return [SpooledMessage(int(row_id), bytes(data)) for row_id, data in rows]


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


def _new_owner() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _connect(path: str, timeout: float) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and create the schema if it is missing.

    An existing spool is only read here (its journal mode and layout version), which takes no
    lock, so another process in the middle of a write does not hold this up; only creating
    the schema waits for the write lock, at most ``timeout``.
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
                if _version(conn, path) < SCHEMA_VERSION:  # nobody created it meanwhile
                    for statement in _SCHEMA:
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
    except BaseException:
        conn.close()
        raise
    return conn


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

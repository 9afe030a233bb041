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

Only the standard library is used. Every failure of an open spool is a :class:`sqlite3.Error`
(``OperationalError`` when the file stays locked beyond the busy timeout, the disk is full, or
reopening it after a fork fails, ``ProgrammingError`` after :meth:`Spool.close`), so the
transport can catch that one type. Opening
may also raise ``sqlite3.DatabaseError`` (not a spool file, or a newer layout) or ``OSError`` (the
path or its directory cannot be created).
"""

from __future__ import annotations

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
    "DEFAULT_ENVELOPE_BYTES",
    "SCHEMA_VERSION",
    "Appended",
    "Spool",
    "SpooledMessage",
    "hold_for_fork",
    "release_after_fork",
    "reopen_after_fork",
]

#: Stored in ``PRAGMA user_version``; a file written by a newer, unknown layout is refused.
SCHEMA_VERSION = 1

#: What :meth:`Spool.claim` reserves for ``{"batch":[...],"sentAt":"...","writeKey":"..."}``
#: unless the caller passes the exact figure.
DEFAULT_ENVELOPE_BYTES = 100

#: How long a write waits for another connection (thread or process) to finish its transaction
#: before it fails with ``sqlite3.OperationalError: database is locked``.
BUSY_TIMEOUT_SECONDS = 5.0

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

#: How long the before-fork hook waits for a transaction in another thread to finish.
_FORK_LOCK_TIMEOUT = BUSY_TIMEOUT_SECONDS + 1.0

# Connections a forked child inherited open (see Spool.reopen_after_fork). Kept referenced so
# that Python never finalises them: finalising calls sqlite3_close(), which SQLite's documentation
# forbids in a child for a connection opened in the parent (it may delete the WAL under it).
_ABANDONED: list[sqlite3.Connection] = []

# Every open Spool of this process, for the fork hooks at the bottom of this module.
_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


@dataclass(frozen=True)
class Appended:
    """What :meth:`Spool.append` did: the new rows' ids (in the order of the items) and the
    ids of the older rows it evicted to stay within ``max_bytes``."""

    stored: Sequence[int]
    evicted: Sequence[int]


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
    ``close()`` or ``flush()`` from another thread can share the object. A method waiting for
    another *process* holding the write lock waits up to ``BUSY_TIMEOUT_SECONDS``, then raises
    ``sqlite3.OperationalError``.

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
        self._held_for_fork = False
        # None while closed, and between a fork and the next use (opened again lazily).
        self._conn: Optional[sqlite3.Connection] = _connect(self._path)
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

    def append(self, items: Sequence[bytes]) -> Appended:
        """Store ``items`` (in order, after everything already stored) in one transaction.

        Returns the new rows' ids, and the rows evicted to keep the stored bytes within
        ``max_bytes``: the
        oldest stored rows that nobody holds a live lease on (unleased, or leased and expired),
        since during an outage the newest events are the ones worth keeping. Rows under a live
        lease are being sent right now and are never evicted, and the new rows are always
        stored, so the bound is best effort: the spool can exceed it by the leased rows plus
        this call's items, until the next append evicts again. The transport reports the
        evicted rows as dropped (``spool_full``).
        """
        if not items:
            return Appended((), ())
        rows = [(len(item), item) for item in items]
        with self._write() as conn:
            (stored,) = conn.execute("SELECT bytes FROM totals WHERE singleton = 0").fetchone()
            excess = int(stored) + sum(size for size, _ in rows) - self._max_bytes
            evicted = self._evict(conn, excess, self._clock()) if excess > 0 else []
            conn.executemany("INSERT INTO messages (size, data) VALUES (?, ?)", rows)
            # Under the write lock each new row got the next id: they are the last ones.
            (last,) = conn.execute("SELECT max(id) FROM messages").fetchone()
        return Appended(range(int(last) - len(rows) + 1, int(last) + 1), evicted)

    def claim(
        self, max_count: int, max_bytes: int, *, envelope_bytes: int = DEFAULT_ENVELOPE_BYTES
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
        with self._write() as conn:
            now = self._clock()
            candidates = conn.execute(
                "SELECT id, size FROM messages WHERE lease_until <= ? ORDER BY id LIMIT ?",
                (now, max_count),
            ).fetchall()
            if not candidates:
                return []
            first = last = int(candidates[0][0])
            body = envelope_bytes + int(candidates[0][1]) + 1
            for row_id, size in candidates[1:]:
                body += int(size) + 1
                if body >= max_bytes:
                    break
                last = int(row_id)
            # The candidates are exactly the unleased rows with ids in [first, last]: the
            # transaction holds the write lock, so nothing changed in between.
            bounds = (first, last, now)
            rows = conn.execute(
                "SELECT id, data FROM messages"
                " WHERE id BETWEEN ? AND ? AND lease_until <= ? ORDER BY id",
                bounds,
            ).fetchall()
            conn.execute(
                "UPDATE messages SET lease_owner = ?, lease_until = ?"
                " WHERE id BETWEEN ? AND ? AND lease_until <= ?",
                (self._owner, now + self._lease_seconds, *bounds),
            )
        return [SpooledMessage(int(row_id), bytes(data)) for row_id, data in rows]

    def delete(self, row_ids: Sequence[int]) -> None:
        """Remove rows that were delivered (or failed for good), whoever holds them now.

        Deliberately not limited to this owner's leases: if our lease expired during a slow
        send and another process re-claimed the rows, the server has them anyway, so removing
        them saves a duplicate rather than losing an event (the other sender's later delete is
        a no-op). Ids are never reused, so a late delete cannot hit a newer row.
        """
        if not row_ids:
            return
        with self._write() as conn:
            conn.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in row_ids])

    def release(self, row_ids: Sequence[int]) -> None:
        """End this owner's lease on ``row_ids`` after a retryable failure.

        The rows become claimable at once, by this process or any other, and being the oldest
        they go first. Rows this owner no longer holds (expired and re-claimed by another) are
        left alone: that claim is someone else's to end.
        """
        if not row_ids:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE messages SET lease_owner = NULL, lease_until = 0"
                " WHERE id = ? AND lease_owner = ?",
                [(i, self._owner) for i in row_ids],
            )

    def renew(self, row_ids: Sequence[int]) -> None:
        """Extend this owner's lease on ``row_ids`` to ``lease_seconds`` from now.

        For a sender that keeps retrying longer than a lease: renewing before each attempt
        stops other processes from taking the batch and sending duplicates. Only rows still
        leased by this owner are renewed (an expired lease not yet re-claimed by anyone counts
        as still ours).
        """
        if not row_ids:
            return
        with self._write() as conn:
            until = self._clock() + self._lease_seconds
            conn.executemany(
                "UPDATE messages SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                [(until, i, self._owner) for i in row_ids],
            )

    def count(self) -> int:
        """Rows stored, leased or not (by every process sharing the file)."""
        return self._total("rows")

    def size_bytes(self) -> int:
        """Sum of the stored messages' sizes (what ``max_bytes`` bounds), leased or not."""
        return self._total("bytes")

    def close(self) -> None:
        """Close the connection. Idempotent; later calls other than ``close`` raise
        ``sqlite3.ProgrammingError``. Rows stay in the file for the next ``Spool`` on the path;
        rows still leased by this owner become claimable when their lease expires."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._closed = True
        _LIVE.discard(self)
        if conn is not None:
            conn.close()

    def reopen_after_fork(self) -> None:
        """Make this spool usable in a forked child; a no-op in the process that opened it.

        SQLite connections must not cross ``fork()`` (https://www.sqlite.org/howtocorrupt.html,
        section 2.7). The fork hooks (:func:`hold_for_fork`, :func:`reopen_after_fork`)
        therefore close every spool's connection just before a fork and let it reopen lazily
        on next use, in the parent and
        in the child, so the child normally gets a connection of its own and calling this is
        not needed (it is harmless: it does nothing the second time).

        If the connection could not be closed before the fork (another thread held it longer
        than the busy timeout), the child must neither use the inherited connection nor close
        it (closing may checkpoint and delete the WAL under the parent): it is dropped without
        closing and kept referenced forever (a small one-time leak), and a new one is opened on
        next use. The lock is replaced, since a thread of the parent may have held it at the
        fork and does not exist in the child. A new owner id keeps the parent's leases the
        parent's: rows it had claimed are not the child's to release or renew.
        """
        if self._pid == os.getpid():
            return
        inherited, self._conn = self._conn, None
        if inherited is not None:
            _ABANDONED.append(inherited)
        self._lock = threading.Lock()
        self._held_for_fork = False
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: commit if the block finishes, roll back if it raises.

        ``BEGIN IMMEDIATE`` takes the write lock up front (waiting up to the busy timeout), so
        a read-then-write transaction can never fail half-way on a lock upgrade, and no other
        process can act on what this one has just read.
        """
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")  # a failed COMMIT (disk full) is rolled back too
            except BaseException:
                _rollback(conn)
                raise

    def _connection(self) -> sqlite3.Connection:
        """The open connection; opened again on first use after a fork. Call with the lock."""
        if self._closed:
            raise sqlite3.ProgrammingError(f"the spool at {self._path!r} is closed")
        if self._pid != os.getpid():  # forked, and the fork hooks did not run: not ours to use
            raise sqlite3.ProgrammingError("call reopen_after_fork() in a forked child first")
        if self._conn is None:
            try:
                self._conn = _connect(self._path)
            except OSError as error:  # the path, or a file descriptor: one error type to catch
                raise sqlite3.OperationalError(
                    f"cannot open the spool at {self._path!r}: {error}"
                ) from error
        return self._conn

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
            return  # the child falls back to abandoning the inherited connection
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

    def _total(self, column: str) -> int:
        with self._lock:
            row = (
                self._connection()
                .execute(f"SELECT {column} FROM totals WHERE singleton = 0")
                .fetchone()
            )
        return int(row[0])

    def _evict(self, conn: sqlite3.Connection, excess: int, now: float) -> list[int]:
        """Delete the oldest rows without a live lease until ``excess`` bytes are freed (or no
        such row is left); return their ids."""
        freed = 0
        evicted: list[int] = []
        cursor = conn.execute(
            "SELECT id, size FROM messages WHERE lease_until <= ? ORDER BY id", (now,)
        )
        try:
            for row_id, size in cursor:
                freed += int(size)
                evicted.append(int(row_id))
                if freed >= excess:
                    break
        finally:
            cursor.close()
        if evicted:
            # Exactly the rows read above: the write lock is held since they were read.
            conn.execute(
                "DELETE FROM messages WHERE id <= ? AND lease_until <= ?", (evicted[-1], now)
            )
        return evicted


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back whatever is open, without hiding the error that got us here."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _new_owner() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _connect(path: str) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and create the schema if it is missing."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # Create the file ourselves, private to the user; an existing file keeps its mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_SECONDS,  # sets SQLite's busy_timeout
        isolation_level=None,  # autocommit: transactions are begun explicitly
        check_same_thread=False,  # guarded by Spool._lock instead
    )
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL for {path!r} (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{path!r} has spool schema {version}; this version reads {SCHEMA_VERSION}"
                )
            if version < SCHEMA_VERSION:
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

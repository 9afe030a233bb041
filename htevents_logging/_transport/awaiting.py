"""Who is to be told about the messages this process keeps in the spool.

The spool stores only a message's bytes: a callback or an ``on_error`` cannot be written to a
file. :class:`Awaiting` keeps them in memory, and compactly, because an outage can leave
hundreds of thousands of rows in the spool:

- ``on_error`` handlers, and which rows are this process's at all, as *runs* of consecutive row
  ids. A client appends its batches one after the other, so 150,000 spooled rows cost a few
  runs, not 150,000 entries (an in-memory envelope per row cost 257 MB);
- a message with a callback of its own is kept whole until its outcome, since the callback is
  owed the message. That is the caller's choice, and costs what the caller asked for.

The messages themselves are read back from the spool when they are sent.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Optional

from ..typing import ErrorHandler
from .envelope import Envelope
from .spool import SpooledMessage

__all__ = ["Awaiting"]


class _Run:
    """Rows ``first`` to ``last`` (consecutive ids), all stored with one ``on_error``."""

    __slots__ = ("first", "last", "on_error")

    def __init__(self, first: int, on_error: Optional[ErrorHandler]) -> None:
        self.first = first
        self.last = first
        self.on_error = on_error


class Awaiting:
    """The rows this process stored and has not seen settled, and who to tell about them.

    Rows settle oldest first (claims take the oldest rows), so everything up to the newest
    settled row is forgotten: a row below it that is still in the spool was claimed by another
    process sharing the file, and its outcome is that process's to report.
    """

    def __init__(self) -> None:
        self._runs: list[_Run] = []  # oldest first
        self._firsts: list[int] = []  # the runs' first ids, for bisect
        self._callbacks: dict[int, Envelope] = {}
        self._settled_through = 0

    def remember(self, row_ids: Sequence[int], batch: Sequence[Envelope]) -> None:
        """``batch`` was stored as rows ``row_ids`` (ascending)."""
        runs = self._runs
        for row_id, envelope in zip(row_ids, batch):
            if envelope.callback is not None:
                self._callbacks[row_id] = envelope
            last = runs[-1] if runs else None
            if last is not None and last.last + 1 == row_id and last.on_error is envelope.on_error:
                last.last = row_id
            else:
                runs.append(_Run(row_id, envelope.on_error))
                self._firsts.append(row_id)

    def envelopes(self, rows: Sequence[SpooledMessage]) -> list[Envelope]:
        """The claimed ``rows`` as envelopes, each with whoever is to be told about it."""
        return [self._callbacks.get(row.row_id) or self._envelope(row) for row in rows]

    def _envelope(self, row: SpooledMessage) -> Envelope:
        run = self._run_of(row.row_id)
        if run is not None:
            return Envelope(row.data, on_error=run.on_error)
        return Envelope(row.data)  # another process's row, or one we forgot

    def ours(self, row_ids: Sequence[int]) -> int:
        """How many of ``row_ids`` this process stored and has not seen settled."""
        return sum(1 for row_id in row_ids if self._run_of(row_id) is not None)

    def _run_of(self, row_id: int) -> Optional[_Run]:
        index = bisect.bisect_right(self._firsts, row_id) - 1
        if index >= 0 and self._runs[index].last >= row_id > self._settled_through:
            return self._runs[index]
        return None

    def settled(self, row_ids: Sequence[int]) -> None:
        """The rows were delivered, failed or evicted: forget them, and every older run."""
        if not row_ids:
            return
        for row_id in row_ids:
            self._callbacks.pop(row_id, None)
        self._settled_through = max(self._settled_through, max(row_ids))
        gone = bisect.bisect_left([run.last for run in self._runs], self._settled_through + 1)
        if gone:
            del self._runs[:gone]
            del self._firsts[:gone]

    def unsettled(self) -> tuple[list[Envelope], int]:
        """What this process stored and has not seen settled: the messages with a callback,
        and how many rows in all (for a spool that was lost)."""
        count = 0
        for run in self._runs:
            count += run.last - max(run.first, self._settled_through + 1) + 1
        told = [env for row_id, env in self._callbacks.items() if row_id > self._settled_through]
        return told, max(count, len(told))

    def clear(self) -> None:
        """Forget everything (the spool is empty, or was lost and reported)."""
        self._runs.clear()
        self._firsts.clear()
        self._callbacks.clear()

    def __len__(self) -> int:
        """Entries held: runs plus messages with a callback (what memory grows with)."""
        return len(self._runs) + len(self._callbacks)

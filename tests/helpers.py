"""Small helpers the tests share: waiting on a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Optional

#: The repository's root: where a fresh interpreter finds the package and its examples.
REPO = Path(__file__).resolve().parent.parent

#: The settings the CLI and the examples read from the environment.
SETTINGS_ENV = (
    "HT_WRITE_KEY",
    "HT_HOST",
    "HT_PATH",
    "HT_DISABLE",
    "HT_GZIP",
    "HT_DEBUG",
    "HT_TIMEOUT",
)


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last truth."""
    deadline = time.monotonic() + timeout
    wake = threading.Event()
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        wake.wait(0.005)


def assert_flushed(client: Any, timeout: float = 5.0) -> None:
    """Assert that ``client.flush(timeout)`` settled everything queued; when it did not, the
    failure shows ``client.stats()``, which says where the messages are (queued, failed, ...)."""
    flushed = client.flush(timeout)
    assert flushed, f"flush({timeout}) returned {flushed!r}; stats: {client.stats()}"


class Outcomes:
    """A ``callback(error, message)`` that records every outcome, for asserting on them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: list[tuple[Optional[BaseException], dict[str, Any]]] = []

    def __call__(self, error: Optional[BaseException], message: dict[str, Any]) -> None:
        with self.lock:
            self.results.append((error, message))

    def wait(self, n: int, timeout: float = 5.0) -> bool:
        return wait_until(lambda: len(self.results) >= n, timeout)

    @property
    def errors(self) -> list[Optional[BaseException]]:
        return [error for error, _ in self.results]


def transport_threads() -> set[threading.Thread]:
    """The transport threads alive now (compare sets: a count is fooled by one that ends)."""
    return {t for t in threading.enumerate() if t.name == "htevents-transport"}


def run_python(
    *args: str,
    env: Optional[Mapping[str, str]] = None,
    cwd: Path = REPO,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (``"-c", code`` for a snippet) in a fresh interpreter and wait.

    The HT_* settings of this environment are cleared, so a test sets exactly what it means;
    ``env`` is added on top.
    """
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=environ,
        check=False,
    )


@contextlib.contextmanager
def configured_by_dictconfig(logger_name: str, **handler: Any) -> Iterator[logging.Logger]:
    """Configure ``logger_name`` through ``logging.config.dictConfig`` with one
    ``HtEventsHandler`` taking ``handler`` as its dict (as a user's LOGGING would), and close
    that handler afterwards."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"htevents": {"class": "htevents_logging.HtEventsHandler", **handler}},
            "loggers": {logger_name: {"handlers": ["htevents"], "level": "INFO"}},
        }
    )
    logger = logging.getLogger(logger_name)
    try:
        yield logger
    finally:
        for added in list(logger.handlers):
            logger.removeHandler(added)
            added.close()


@contextlib.contextmanager
def holding_the_write_lock(path: str) -> Iterator[None]:
    """Another process holds the SQLite write lock of ``path`` (``BEGIN IMMEDIATE``), as a
    process stuck mid-transaction would, until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
            path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.communicate("", timeout=10)


def damage_spool(path: str) -> None:
    """Overwrite 4 KB in the middle of a spool file with garbage, after moving everything from
    its WAL into it (as a bad disk sector or a stray write would)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.seek(size // 2)
        file.write(b"\xa5" * 4096)

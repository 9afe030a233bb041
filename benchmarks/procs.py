"""Child processes of the benchmark: collectors it starts and stops, and JSON-printing workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Optional

__all__ = ["BENCH_DIR", "ServerProcess", "WorkerError", "benchmark_collector", "run_worker"]

BENCH_DIR = Path(__file__).resolve().parent
_BANNER = re.compile(r"collecting on (http://127\.0\.0\.1:\d+)")


class WorkerError(RuntimeError):
    """A benchmark child process failed or printed no JSON."""


class ServerProcess:
    """A collector in its own process, found by its ``collecting on http://...`` banner.

    Its output goes to a temporary file (a collector that prints a line per event must never
    block on a full pipe). Used as a context manager, it is always stopped, by its own pid.
    """

    def __init__(self, argv: list[str], name: str) -> None:
        self.argv = argv
        self.name = name
        self.url = ""
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._output: Optional[IO[bytes]] = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self, timeout: float = 15.0) -> ServerProcess:
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._output.seek(0)
            match = _BANNER.search(self._output.read(4096).decode("utf-8", "replace"))
            if match:
                self.url = match.group(1)
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise WorkerError(f"{self.name} did not print its 'collecting on' banner")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def benchmark_collector() -> ServerProcess:
    """The benchmark collector (``fast_collector.py``) as a process of its own, on a free
    loopback port; start it with ``with``."""
    return ServerProcess(
        [sys.executable, str(BENCH_DIR / "fast_collector.py"), "--port", "0"],
        "benchmark collector",
    )


def run_worker(script: str, args: list[str], timeout: float) -> Any:
    """Run ``benchmarks/SCRIPT args`` with this interpreter; return the JSON it printed last."""
    argv = [sys.executable, str(BENCH_DIR / script), *args]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkerError(f"{script} {' '.join(args)} took more than {timeout:.0f}s") from exc
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise WorkerError(
            f"{script} {' '.join(args)} exited {done.returncode}: " + " | ".join(tail)
        )
    return json.loads(lines[-1])

"""Real servers, stopped the way production stops them: nothing logged is lost.

Each test starts a real server (gunicorn, uWSGI, uvicorn) serving a real app (the Django
project and the FastAPI app in ``examples/``) against a local collector, sends it real HTTP
requests, stops it with the signal production uses, waits for it to exit, and counts what
arrived: N of N. Batches wait up to ``flush_interval`` (10 s) before they go, so the last
partial batch is still queued when the signal comes.

Run with ``tox -e deploy`` (or ``pytest -m deploy tests/deploy``). A server that is not
installed is skipped with the reason, except those named in ``HTEVENTS_REQUIRE_SERVERS``
(tox's deploy environment requires gunicorn and uvicorn), which then fail.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Optional

import pytest
from helpers import REPO, SETTINGS_ENV, wait_until

from htevents_logging.collector import Collector

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers and signals"),
]

DJANGO = REPO / "examples" / "django_project"
REQUIRED = set(filter(None, os.environ.get("HTEVENTS_REQUIRE_SERVERS", "").split(",")))


def server_command(name: str) -> str:
    """The server's executable, next to this Python's (a venv's bin/), or on PATH; a server
    that is not installed is skipped, unless this run requires it."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if name in REQUIRED:
            pytest.fail(f"{name} is required here (HTEVENTS_REQUIRE_SERVERS) but not installed")
        pytest.skip(f"{name} is not installed (pip install {name})")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A server process on a loopback port, and how to talk to it and stop it."""

    def __init__(
        self, argv: Sequence[str], cwd: Path, collector: Collector, write_key: str, port: int
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
        env.update(
            HT_WRITE_KEY=write_key,
            HT_HOST=collector.url,
            PYTHONPATH=str(cwd),
            PYTHONUNBUFFERED="1",
        )
        self.port = port
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the cleanup reaches the workers
        )
        self.output = ""

    def wait_until_serving(self, path: str) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, self.finish()
            try:
                with urllib.request.urlopen(self.url(path), timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        assert wait_until(answers, 30), f"not serving after 30 s:\n{self.finish()}"

    def wait_for_workers(self, n: int) -> None:
        """Wait until the master has forked ``n`` workers (a signal during the boot is another
        test: gunicorn then may leave a worker behind)."""

        def workers() -> int:
            count = 0
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                count += fields[1] == str(self.process.pid)
            return count

        assert wait_until(lambda: workers() >= n, 30), f"{workers()} workers:\n{self.finish()}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, data: Optional[bytes] = None) -> None:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        call = urllib.request.Request(self.url(path), data=data, headers=headers)
        with urllib.request.urlopen(call, timeout=10) as answer:
            assert answer.status in (200, 201), answer.status

    def stop(self, signum: int) -> int:
        """Send ``signum`` and wait (at most 30 s) for the process to exit; its status."""
        self.process.send_signal(signum)
        return self.finish_status()

    def stop_through_fifo(self, fifo: Path, command: bytes) -> int:
        """Write ``command`` to uWSGI's master FIFO and wait for the process to exit."""
        with open(fifo, "wb") as control:
            control.write(command)
        return self.finish_status()

    def finish_status(self) -> int:
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out = self.finish()
            pytest.fail(f"still running 30 s after the signal:\n{out}")
        self.output = out
        return int(self.process.returncode)

    def finish(self) -> str:
        """Kill the server and every worker it left (its process group); what it printed."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = self.process.communicate(timeout=30)
        return out


@pytest.fixture
def served(collector: Collector, write_key: str) -> Iterator[Callable[..., Served]]:
    """Start servers (``served(argv, cwd, port)``); any still running is killed after."""
    started: list[Served] = []

    def serve(argv: Sequence[str], cwd: Path, port: int) -> Served:
        server = Served(argv, cwd, collector, write_key, port)
        started.append(server)
        return server

    yield serve
    for server in started:
        server.finish()


def arrived(collector: Collector, event: str) -> collections.Counter[str]:
    """The ``n`` property of each arrived event named ``event``, counted (duplicates show)."""
    return collections.Counter(
        str(e.get("properties", {}).get("n")) for e in collector.events if e.get("event") == event
    )


def send_orders(server: Served, n: int) -> None:
    for i in range(n):
        server.request(f"/order?user=u{i % 7}&n={i}")


def assert_all_arrived(collector: Collector, n: int, server: Served, warmup: int = 0) -> None:
    assert collector.wait_for_events(n + warmup, 15), server.output
    counts = arrived(collector, "Order completed")
    assert counts == collections.Counter([*map(str, range(n)), *["None"] * warmup]), (
        f"{sum(counts.values())} of {n + warmup} arrived\n{server.output}"
    )


# -- gunicorn ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 20, 200])
def test_gunicorn_preload_2_workers_then_sigterm(served, collector, n):
    port = free_port()
    server = served(
        [
            server_command("gunicorn"),
            "--preload",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "shop.wsgi:application",
        ],
        DJANGO,
        port,
    )
    server.wait_until_serving("/order")  # one warm-up event
    server.wait_for_workers(2)
    send_orders(server, n)
    assert server.stop(signal.SIGTERM) == 0
    assert_all_arrived(collector, n, server, warmup=1)


# -- uvicorn -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 20, 200])
def test_uvicorn_django_asgi_then_sigterm(served, collector, n):
    # Regression: 195 of 200 arrived, 3 runs out of 3, and nothing was printed: uvicorn raises
    # SIGTERM again after its graceful shutdown, and atexit never runs.
    port = free_port()
    server = served(
        [server_command("uvicorn"), "--port", str(port), "shop.asgi:application"],
        DJANGO,
        port,
    )
    server.wait_until_serving("/order")
    send_orders(server, n)
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM  # it still dies by SIGTERM
    assert_all_arrived(collector, n, server, warmup=1)


@pytest.mark.parametrize("n", [1, 20, 200])
def test_uvicorn_fastapi_then_sigterm(served, collector, n):
    pytest.importorskip("fastapi")
    port = free_port()
    server = served(
        [server_command("uvicorn"), "--port", str(port), "examples.fastapi_structlog:app"],
        REPO,
        port,
    )

    def order(i: int) -> None:
        server.request("/orders", data=f'{{"orderId": "o-{i}", "total": {i}}}'.encode())

    server.wait_until_serving("/docs")
    for i in range(n):
        order(i)
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert collector.wait_for_events(n, 15), server.output
    ids = collections.Counter(e["properties"]["orderId"] for e in collector.events)
    assert ids == collections.Counter(f"o-{i}" for i in range(n)), server.output


# -- uWSGI -------------------------------------------------------------------------------------

UWSGI_APP = """
import logging, os
from htevents_logging import HtEventsHandler

logger = logging.getLogger("app")
logger.setLevel(logging.INFO)
logger.propagate = False
# HT_WRITE_KEY from the environment. uWSGI's master runs no Python at exit (no atexit): what
# it logs itself is sent by its own thread, within flush_interval, or not at all.
logger.addHandler(HtEventsHandler(host=os.environ["HT_HOST"], flush_interval=2))
logger.info("Order completed", extra={"htevent": {"userId": "at import"}})  # in the master

def application(environ, start_response):
    n = environ.get("QUERY_STRING", "").partition("n=")[2] or None
    logger.info("Order completed", extra={"htevent": {"userId": "u", "properties": {"n": n}}})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@pytest.mark.parametrize(
    "flags",
    [[], ["--enable-threads"], ["--py-call-uwsgi-fork-hooks"]],
    ids=["plain", "enable-threads", "fork-hooks"],
)
def test_uwsgi_app_loaded_before_the_fork_then_graceful_shutdown(
    served, collector, tmp_path, flags
):
    # Regression: uWSGI forks its workers from C (app loaded in the master, no --lazy-apps),
    # so no at-fork hook ran: 0 of 10 worker events arrived. And a thread running in the
    # master at the fork hung the workers on their first request, in most runs.
    # Stopped with uWSGI 2.0's graceful shutdown, the master FIFO's "q": its SIGTERM (with
    # --die-on-term), SIGINT and SIGQUIT kill the workers brutally, and in about 1 run of 5 a
    # worker died without running Python's atexit (see the README's Deployments).
    (tmp_path / "uwsgi_app.py").write_text(UWSGI_APP)
    port = free_port()
    fifo = tmp_path / "master.fifo"
    argv = [
        server_command("uwsgi"),
        "--http-socket",
        f"127.0.0.1:{port}",
        "--master",
        "--processes",
        "2",
        "--module",
        "uwsgi_app:application",
        "--master-fifo",
        str(fifo),
        *flags,
    ]
    server = served(argv, tmp_path, port)
    fork_hooks = "--py-call-uwsgi-fork-hooks" in flags
    if fork_hooks:  # the master's own event, sent by its thread (it runs no Python at exit)
        assert collector.wait_for_events(1, 15), server.finish()
    server.wait_until_serving("/order?n=warm-up")
    server.wait_for_workers(2)
    send_orders(server, 20)  # their batches wait up to 2 s: the shutdown comes first
    assert server.stop_through_fifo(fifo, b"q") == 0
    expected = [*map(str, range(20)), "warm-up", *(["None"] if fork_hooks else [])]
    assert collector.wait_for_events(len(expected), 15), server.output
    counts = arrived(collector, "Order completed")
    assert counts == collections.Counter(expected), (
        f"{sum(counts.values())} of {len(expected)} arrived\n{server.output}"
    )
    if not fork_hooks:  # the master's own event: no thread may run there; said so, not lost
        assert "--py-call-uwsgi-fork-hooks" in server.output


# -- Django's manage.py, without a key ---------------------------------------------------------


def test_django_manage_py_starts_without_a_write_key():
    # Regression: a missing key stopped every manage.py command ("Unable to configure
    # handler 'htevents'").
    pytest.importorskip("django")
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=DJANGO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout

"""Real servers, stopped the way production stops them: nothing logged is lost.

Each test starts a real server (gunicorn, uWSGI, uvicorn) serving a real app (the Django
project and the FastAPI app in ``examples/``) against a local collector, sends it real HTTP
requests, stops it with the signal production uses, waits for it to exit, and counts what
arrived: N of N. Batches wait up to ``flush_interval`` (10 s) before they go, so the last
partial batch is still queued when the signal comes.

The Django project's views under ``account/`` and ``api/`` name no user: its users sign in
(a session, or a Django REST framework token checked inside the view), and every event must
arrive carrying the right one. An ASGI app serves 200 concurrent requests of 200 users.

Run with ``tox -e deploy`` (or ``pytest -m deploy tests/deploy``). A server that is not
installed is skipped with the reason, except those named in ``HTEVENTS_REQUIRE_SERVERS``
(tox's deploy environment requires gunicorn and uvicorn), which then fail.
"""

from __future__ import annotations

import collections
import concurrent.futures
import http.cookies
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

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
        self,
        argv: Sequence[str],
        cwd: Path,
        collector: Collector,
        write_key: str,
        port: int,
        extra_env: Optional[Mapping[str, str]] = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
        env.update(
            HT_WRITE_KEY=write_key,
            HT_HOST=collector.url,
            PYTHONPATH=str(cwd),
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
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
    """Start servers (``served(argv, cwd, port, env=None)``); any still running is killed
    after."""
    started: list[Served] = []

    def serve(
        argv: Sequence[str], cwd: Path, port: int, env: Optional[Mapping[str, str]] = None
    ) -> Served:
        server = Served(argv, cwd, collector, write_key, port, env)
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


# -- Django: events carry the signed-in user, with no bind() in the views ----------------------

MAKE_USERS = """
import json
from django.conf import settings
from django.contrib.auth.models import User

made = {}
for name in ("alice", "bob", "carol"):
    made[name] = {"pk": User.objects.create_user(name, password="pw-" + name).pk}
if settings.HAS_DRF:
    from rest_framework.authtoken.models import Token

    made["carol"]["token"] = Token.objects.create(user=User.objects.get(username="carol")).key
print(json.dumps(made))
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example project's database (migrated, in a temporary directory) with three users;
    ``{"env": ..., "users": {name: {"pk": ..., "token": ...}}}``."""
    pytest.importorskip("django")
    database = tmp_path_factory.mktemp("shop") / "db.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env["SHOP_DATABASE"] = str(database)

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=DJANGO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"manage.py {args[0]}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    manage("migrate", "--noinput")
    users = json.loads(manage("shell", "-c", MAKE_USERS).strip().splitlines()[-1])
    return {"env": {"SHOP_DATABASE": str(database)}, "users": users}


class Browser:
    """One person's HTTP client: it keeps the cookies the server sets, and sends its own."""

    def __init__(self, server: Served, **cookies: str) -> None:
        self.server = server
        self.cookies = dict(cookies)

    def open(
        self,
        path: str,
        form: Optional[dict[str, str]] = None,
        headers: Optional[dict[str, str]] = None,
    ) -> int:
        """GET ``path`` (POST ``form``); the status."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        call = urllib.request.Request(self.server.url(path), data=data, headers=headers or {})
        if self.cookies:
            call.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        with urllib.request.urlopen(call, timeout=10) as answer:
            for header in answer.headers.get_all("Set-Cookie") or []:
                jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie(header)
                self.cookies.update({name: morsel.value for name, morsel in jar.items()})
            return int(answer.status)

    def sign_in(self, username: str) -> None:
        """Django's session login, CSRF token included."""
        assert self.open("/login") == 200  # the CSRF cookie
        form = {"username": username, "password": f"pw-{username}"}
        assert self.open("/login", form, {"X-CSRFToken": self.cookies["csrftoken"]}) == 200
        assert "sessionid" in self.cookies


def django_server(served: Callable[..., Served], kind: str, env: Mapping[str, str]) -> Served:
    """The example project under gunicorn (WSGI, 2 workers) or uvicorn (ASGI, ``shop.asgi``,
    wrapped in ``contrib.asgi.HtEventsMiddleware``)."""
    port = free_port()
    if kind == "gunicorn":
        argv = [server_command("gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{port}"]
        argv.append("shop.wsgi:application")
    else:
        argv = [server_command("uvicorn"), "--port", str(port), "shop.asgi:application"]
    return served(argv, DJANGO, port, env)


@pytest.mark.parametrize("auth", ["session", "drf-token"])
@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_django_events_carry_the_signed_in_user_then_sigterm(served, collector, shop, kind, auth):
    # Expected (userId, anonymousId) of each event, by its "n" property.
    expected: dict[str, tuple[Optional[str], Optional[str]]] = {}
    users = shop["users"]
    server = django_server(served, kind, shop["env"])
    server.wait_until_serving("/order")  # one warm-up event, which names its own user
    if kind == "gunicorn":
        server.wait_for_workers(2)
    if auth == "session":
        alice = Browser(server, ajs_anonymous_id="%22anon-alice%22")  # as analytics.js sets it
        alice.sign_in("alice")
        bob = Browser(server)
        bob.sign_in("bob")
        visitor = Browser(server, ajs_anonymous_id="anon-visitor")  # signed out
        alice_id, bob_id = str(users["alice"]["pk"]), str(users["bob"]["pk"])
        for i in range(10):
            for who, path, ids in (
                (alice, "/account/order", (alice_id, "anon-alice")),
                (alice, "/account/async-order", (alice_id, "anon-alice")),
                (bob, "/account/order", (bob_id, None)),
                (visitor, "/account/async-order", (None, "anon-visitor")),
            ):
                n = f"{path}-{ids[0] or ids[1]}-{i}"
                assert who.open(f"{path}?n={urllib.parse.quote(n)}") == 200
                expected[n] = ids
    else:
        pytest.importorskip("rest_framework", reason="Django REST framework is not installed")
        carol = Browser(server, ajs_anonymous_id="anon-carol")
        token = f"Token {users['carol']['token']}"
        for i in range(25):
            assert carol.open(f"/api/order?n=api-{i}", headers={"Authorization": token}) == 200
            expected[f"api-{i}"] = (str(users["carol"]["pk"]), "anon-carol")
    status = server.stop(signal.SIGTERM)
    assert status == (0 if kind == "gunicorn" else -signal.SIGTERM), server.output
    assert collector.wait_for_events(len(expected) + 1, 15), server.output
    got = {
        str(e["properties"].get("n")): (e.get("userId"), e.get("anonymousId"))
        for e in collector.events
        if e.get("properties", {}).get("via")
    }
    assert got == expected, f"{len(got)} of {len(expected)}\n{server.output}"
    assert len(collector.events) == len(expected) + 1, "an event arrived twice"


# -- ASGI: 200 concurrent requests, 200 users ----------------------------------------------

CONCURRENT_APP = """
import asyncio, logging, os
from fastapi import FastAPI
from htevents_logging import HtEventsHandler
from htevents_logging.contrib.asgi import HtEventsMiddleware

logger = logging.getLogger("app")
logger.setLevel(logging.INFO)
logger.propagate = False
# Nothing goes before the shutdown: a batch waits 10 minutes and has room for every event.
logger.addHandler(
    HtEventsHandler(host=os.environ["HT_HOST"], flush_interval=600, max_events_in_batch=1000)
)

app = FastAPI()
in_flight = most = 0


def user_of(scope):
    user = dict(scope["headers"]).get(b"x-user")
    return {"user_id": user.decode()} if user else None


app.add_middleware(HtEventsMiddleware, identify=user_of)


@app.get("/ready")
async def ready():
    return {}


@app.get("/order")
async def order(n: int):
    global in_flight, most
    in_flight += 1
    most = max(most, in_flight)
    await asyncio.sleep(0.05)  # the other requests run meanwhile, each in its own binding
    logger.info("Order completed", extra={"htevent": {"properties": {"n": n}}})
    in_flight -= 1
    return {"most_in_flight": most}


@app.get("/sync-order")
def sync_order(n: int):  # runs in the thread pool
    logger.info("Order completed", extra={"htevent": {"properties": {"n": n}}})
    return {"most_in_flight": 0}
"""


def test_uvicorn_asgi_middleware_200_concurrent_users_then_sigterm(served, collector, tmp_path):
    pytest.importorskip("fastapi")
    (tmp_path / "concurrent_app.py").write_text(CONCURRENT_APP)
    port = free_port()
    server = served(
        [server_command("uvicorn"), "--port", str(port), "concurrent_app:app"], tmp_path, port
    )
    server.wait_until_serving("/ready")

    def order(n: int) -> int:
        path = f"/order?n={n}" if n % 2 else f"/sync-order?n={n}"
        call = urllib.request.Request(server.url(path), headers={"X-User": f"user-{n}"})
        with urllib.request.urlopen(call, timeout=30) as answer:
            assert answer.status == 200
            return int(json.load(answer)["most_in_flight"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        most_in_flight = max(pool.map(order, range(200)))
    assert most_in_flight > 1, "the requests did not overlap"
    assert collector.events == []  # all still queued: only the shutdown can deliver them
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM, server.output
    assert collector.wait_for_events(200, 15), server.output
    got = collections.Counter((e["properties"]["n"], e.get("userId")) for e in collector.events)
    assert got == collections.Counter((n, f"user-{n}") for n in range(200)), (
        f"{len(collector.events)} of 200\n{server.output}"
    )


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

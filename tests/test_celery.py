"""Celery: a real prefork worker delivers every event of its tasks, each with the identity bound
where the task was sent.

The worker is ``celery worker --pool=prefork`` in a subprocess, on kombu's filesystem broker
(no broker server), with a minute's ``flush_interval``: what arrives before the interval can
only have been delivered by the worker's shutdown (or, with ``flush_after_task``, by the end of
each task). It is stopped as production stops it: SIGTERM to the main process (warm shutdown).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from helpers import REPO, SETTINGS_ENV, run_python, wait_until

from htevents_logging.collector import Collector

celery = pytest.importorskip("celery")

N = 40  # tasks, each sent under its own bind(user_id=...)

#: The app module, imported by the producer (a subprocess of the test) and by the worker. Each
#: task logs one event through HtEventsHandler and one through an HtEvents client.
APP = """
import logging, os
from celery import Celery
from htevents_logging import HtEvents, HtEventsHandler
from htevents_logging.contrib.celery import instrument

folder = os.environ["BROKER_FOLDER"]
app = Celery("shop", broker="filesystem://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": folder, "data_folder_out": folder, "control_folder": folder
    },
    worker_hijack_root_logger=False,
    task_ignore_result=True,
)
if os.environ.get("INSTRUMENT") == "1":
    instrument(app, flush_after_task=os.environ.get("FLUSH_AFTER_TASK") == "1", flush_timeout=5)

# A minute's interval and room for every event in one batch: neither the timer nor a full
# batch sends anything while the test runs.
settings = {"flush_interval": 60, "max_events_in_batch": 500}
logger = logging.getLogger("shop.tasks")
logger.setLevel(logging.INFO)
logger.propagate = False
logger.addHandler(HtEventsHandler(**settings))  # HT_WRITE_KEY / HT_HOST from the env
htevents = HtEvents(**settings)

@app.task
def checkout(order, user=None, fail=False):
    payload = {"properties": {"order": order}}
    if user is not None:
        payload["userId"] = user  # an explicit id wins over the bound one
    logger.info("Order completed", extra={"htevent": payload})
    htevents.track(event="Receipt sent", user_id=user, properties={"order": order})
    open(os.path.join(os.environ["DONE_FOLDER"], str(order)), "w").close()  # for the test
    if fail:
        raise RuntimeError("the task failed after logging")
"""

PRODUCE = """
import sys
sys.path.insert(0, sys.argv[1])
from shop_app import checkout
from htevents_logging import bind
for n in range(int(sys.argv[2])):
    with bind(user_id=f"user-{n}"):
        checkout.delay(n)
checkout.delay(-1)  # sent outside any bind()
with bind(user_id="producer"):
    checkout.delay(-2, user="explicit")  # the payload names its user
with bind(user_id="user-failing"):
    checkout.delay(-3, fail=True)  # raises once it has logged
print("sent")
"""

#: What each task's events must carry as userId (both the handler's and the client's).
EXTRA = {-1: None, -2: "explicit", -3: "user-failing"}


def expected(n: int) -> dict[int, Optional[str]]:
    return {**{k: f"user-{k}" for k in range(n)}, **EXTRA}


@pytest.fixture
def project(tmp_path: Path, collector: Collector, write_key: str) -> Iterator[dict[str, str]]:
    """The app module in a folder, and the environment both sides run with."""
    (tmp_path / "broker").mkdir()
    (tmp_path / "done").mkdir()
    (tmp_path / "shop_app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env.update(
        BROKER_FOLDER=str(tmp_path / "broker"),
        DONE_FOLDER=str(tmp_path / "done"),
        HT_WRITE_KEY=write_key,
        HT_HOST=collector.url,
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
        INSTRUMENT="1",
    )
    yield env


def _produce(env: dict[str, str], folder: str, n: int) -> None:
    result = run_python("-c", PRODUCE, folder, str(n), env=env, timeout=30)
    assert result.stdout.strip() == "sent", result.stderr


def _worker(env: dict[str, str], cwd: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "shop_app",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(worker: subprocess.Popen[str]) -> str:
    """SIGTERM (a warm shutdown), then wait for the worker to end; its output. Killed if it
    does not end in time."""
    try:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        return output
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=10)


def _run_tasks(
    project: dict[str, str], tmp_path: Path, n: int
) -> tuple[subprocess.Popen[str], bool]:
    """Send n + 3 tasks, start a worker, and wait until each task has run (each marks a file
    once it has logged its events)."""
    _produce(project, str(tmp_path), n)
    worker = _worker(project, str(tmp_path))
    try:
        ran = wait_until(lambda: len(list((tmp_path / "done").iterdir())) == n + 3, timeout=30)
    except BaseException:
        _stop(worker)
        raise
    return worker, ran


def _users(collector: Collector, event: str) -> dict[int, Any]:
    """order -> userId of the ``event`` events the collector received."""
    return {
        e["properties"]["order"]: e.get("userId") for e in collector.events if e["event"] == event
    }


def test_a_prefork_worker_delivers_every_event_at_shutdown_with_the_producers_identity(
    project: dict[str, str], tmp_path: Path, collector: Collector
) -> None:
    worker, ran = _run_tasks(project, tmp_path, N)
    try:
        assert ran, "the worker did not run every task"
        # The tasks ran (they log at once), but with a minute's interval nothing was sent.
        assert collector.events == []
    finally:
        output = _stop(worker)
    assert worker.returncode == 0, output
    assert len(collector.events) == 2 * (N + 3), output
    assert _users(collector, "Order completed") == expected(N)  # through HtEventsHandler
    assert _users(collector, "Receipt sent") == expected(N)  # through an HtEvents client
    assert not (REPO / "control").exists()  # kombu's control folder stays in the broker's


def test_without_instrument_the_prefork_children_lose_what_they_queued(
    project: dict[str, str], tmp_path: Path, collector: Collector
) -> None:
    # The control: billiard's children end with os._exit, and nothing else delivers.
    project["INSTRUMENT"] = "0"
    worker, ran = _run_tasks(project, tmp_path, N)
    try:
        assert ran
    finally:
        output = _stop(worker)
    assert worker.returncode == 0, output
    # Every event is lost: if some arrive, prefork children no longer need instrument().
    assert collector.events == [], "nothing lost: this test no longer shows the need"


def test_flush_after_task_delivers_while_the_worker_runs(
    project: dict[str, str], tmp_path: Path, collector: Collector
) -> None:
    project["FLUSH_AFTER_TASK"] = "1"
    worker, ran = _run_tasks(project, tmp_path, 6)
    try:
        assert ran
        assert collector.wait_for_events(2 * (6 + 3), timeout=20)  # before any shutdown
        assert worker.poll() is None
    finally:
        _stop(worker)
    assert _users(collector, "Order completed") == expected(6)
    assert _users(collector, "Receipt sent") == expected(6)


# In-process checks: no worker, Celery's in-memory broker and eager calls.

UID = "htevents_logging.contrib.celery"


def _ours(signal: Any, suffix: str = "") -> int:
    """How many receivers of ``signal`` this integration connected (ending with ``suffix``)."""
    return sum(
        1
        for key, _ in signal.receivers
        if isinstance(key[0], str) and key[0].startswith(UID) and key[0].endswith(suffix)
    )


def test_instrument_twice_connects_once_and_a_publish_outside_bind_adds_no_header() -> None:
    from celery import Celery, signals

    from htevents_logging import bind
    from htevents_logging.contrib.celery import IDENTITY_HEADER, instrument

    app = Celery("twice", broker="memory://")
    instrument(app)
    instrument(app)
    instrument(Celery("another", broker="memory://"))
    for process_wide in ("before_task_publish", "worker_process_shutdown", "worker_shutdown"):
        assert _ours(getattr(signals, process_wide)) == 1, process_wide
    assert _ours(signals.task_prerun, f".{id(app)}") == 1
    assert _ours(signals.task_postrun, f".{id(app)}") == 1

    @app.task(name="twice.checkout")
    def checkout(order: int) -> None:
        """Never run here: only published."""

    queue = f"htevents-test-{id(app)}"
    with bind(user_id=7, context={"ip": "203.0.113.5"}):
        checkout.apply_async((1,), queue=queue)
    checkout.apply_async((2,), queue=queue)
    with app.connection_for_read() as connection:
        published = connection.SimpleQueue(queue)
        try:
            headers = [published.get(timeout=5).headers for _ in range(2)]
        finally:
            published.close()
    assert [h["argsrepr"] for h in headers] == ["(1,)", "(2,)"]
    assert headers[0][IDENTITY_HEADER] == {"user_id": "7", "context": {"ip": "203.0.113.5"}}
    assert IDENTITY_HEADER not in headers[1]


def test_the_header_is_bound_around_the_task_and_unbound_after_it_even_when_it_fails() -> None:
    from celery import Celery

    from htevents_logging import HtEvents
    from htevents_logging._identity import current_identity
    from htevents_logging.contrib.celery import IDENTITY_HEADER, instrument
    from htevents_logging.testing import capture_events

    app = Celery("eager", broker="memory://")
    instrument(app)
    htevents = HtEvents(disable=True)

    @app.task(name="eager.checkout")
    def checkout(order: int, user: Optional[str] = None, fail: bool = False) -> None:
        htevents.track(event="Order completed", user_id=user, properties={"order": order})
        if fail:
            raise RuntimeError("the task failed after logging")

    header = {IDENTITY_HEADER: {"user_id": "u-1", "context": {"locale": "fr-FR"}}}
    with capture_events() as events:
        assert checkout.apply((1,), {"fail": True}, headers=header).failed()
        assert current_identity() is None  # reset although the task raised
        checkout.apply((2,))  # no header: nobody bound
        checkout.apply((3,), {"user": "explicit"}, headers=header)
        assert current_identity() is None
    assert [(e["properties"]["order"], e.get("userId")) for e in events] == [
        (1, "u-1"),
        (2, None),
        (3, "explicit"),
    ]
    assert events[0]["context"]["locale"] == "fr-FR"
    assert "locale" not in events[1].get("context", {})
    assert events[1]["anonymousId"]  # the usual fallback for a message with no id


def test_a_failing_hook_never_fails_the_publish_and_is_reported_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery import Celery, signals

    import htevents_logging.contrib.celery as integration
    from htevents_logging._diagnostics import reset_warning_limits

    integration.instrument(Celery("failing", broker="memory://"))

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(integration, "_identity_header", broken)
    reset_warning_limits()
    headers: dict[str, object] = {}
    with caplog.at_level("WARNING", "htevents_logging"):
        for _ in range(3):
            signals.before_task_publish.send(sender="t", headers=headers)  # does not raise
    reset_warning_limits()
    assert headers == {}
    failure = "the Celery before_task_publish hook failed (RuntimeError: boom)"
    assert caplog.text.count(failure) == 1


def test_importing_the_package_and_the_integration_does_not_import_celery() -> None:
    result = run_python(
        "-c",
        textwrap.dedent(
            """
            import sys
            import htevents_logging, htevents_logging.contrib.celery
            print(sorted(m for m in sys.modules if m == "celery" or m.startswith("celery.")))
            """
        ),
        timeout=30,
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_a_task_sent_from_inside_a_task_carries_the_identity_on() -> None:
    from celery import Celery

    from htevents_logging.contrib.celery import IDENTITY_HEADER, instrument

    app = Celery("onward", broker="memory://")
    instrument(app)
    queue = f"htevents-test-{id(app)}"

    @app.task(name="onward.follow_up")
    def follow_up() -> None:
        """Never run here: only published."""

    @app.task(name="onward.checkout")
    def checkout() -> None:
        follow_up.apply_async(queue=queue)  # a retry, a callback or a chain step does the same

    checkout.apply(headers={IDENTITY_HEADER: {"user_id": "u-9"}})
    with app.connection_for_read() as connection:
        published = connection.SimpleQueue(queue)
        try:
            headers = published.get(timeout=5).headers
        finally:
            published.close()
    assert headers[IDENTITY_HEADER] == {"user_id": "u-9"}

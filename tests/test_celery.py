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

import pytest
from helpers import REPO, SETTINGS_ENV, run_python, wait_until

from htevents_logging.collector import Collector

celery = pytest.importorskip("celery")

N = 24

#: The app module, imported by the producer (this test, in a subprocess) and by the worker.
APP = """
import logging, os
from celery import Celery
from htevents_logging import HtEventsHandler
from htevents_logging.contrib.celery import instrument

folder = os.environ["BROKER_FOLDER"]
app = Celery("shop", broker="filesystem://")
app.conf.update(
    broker_transport_options={{
        "data_folder_in": folder, "data_folder_out": folder, "control_folder": folder
    }},
    worker_hijack_root_logger=False,
    task_ignore_result=True,
)
if os.environ.get("INSTRUMENT") == "1":
    instrument(app, flush_after_task=os.environ.get("FLUSH_AFTER_TASK") == "1")

logger = logging.getLogger("shop.tasks")
logger.setLevel(logging.INFO)
logger.propagate = False
logger.addHandler(HtEventsHandler(host=os.environ["HT_HOST"], flush_interval=60))

@app.task
def checkout(order):
    logger.info("Order completed", extra={{"htevent": {{"properties": {{"order": order}}}}}})
    open(os.path.join(os.environ["DONE_FOLDER"], str(order)), "w").close()  # for the test
"""

PRODUCE = """
import sys
sys.path.insert(0, sys.argv[1])
from shop_app import checkout
from htevents_logging import bind
for n in range(int(sys.argv[2])):
    with bind(user_id=f"user-{{n}}"):
        checkout.delay(n)
checkout.delay(-1)  # sent outside any bind()
print("sent")
"""


@pytest.fixture
def project(tmp_path: Path, collector: Collector, write_key: str) -> Iterator[dict[str, str]]:
    """The app module in a folder, and the environment both sides run with."""
    (tmp_path / "broker").mkdir()
    (tmp_path / "done").mkdir()
    (tmp_path / "shop_app.py").write_text(textwrap.dedent(APP.format()))
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
    result = run_python("-c", textwrap.dedent(PRODUCE.format()), folder, str(n), env=env)
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
    """SIGTERM (a warm shutdown), then wait for the worker to end; its output."""
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
    """Send n + 1 tasks, start a worker, and wait until each task has run (each marks a file
    once it has logged its event)."""
    _produce(project, str(tmp_path), n)
    worker = _worker(project, str(tmp_path))
    ran = wait_until(lambda: len(list((tmp_path / "done").iterdir())) == n + 1, timeout=30)
    return worker, ran


def _identities(collector: Collector) -> dict[int, object]:
    return {e["properties"]["order"]: e.get("userId") for e in collector.events}


def test_a_prefork_worker_delivers_every_event_at_shutdown_with_the_producers_identity(
    project, tmp_path, collector
):
    worker, taken = _run_tasks(project, tmp_path, N)
    try:
        assert taken, "the worker did not run every task"
        # The tasks ran (they log at once), but with a minute's interval nothing was sent.
        assert collector.events == []
    finally:
        output = _stop(worker)
    assert worker.returncode == 0, output
    assert len(collector.events) == N + 1, output
    identities = _identities(collector)
    assert {n: identities[n] for n in range(N)} == {n: f"user-{n}" for n in range(N)}
    assert identities[-1] is None  # sent outside any bind(): no identity travelled
    assert not (REPO / "control").exists()  # kombu's control folder stays in the broker's


def test_without_instrument_the_prefork_children_lose_what_they_queued(
    project, tmp_path, collector
):
    # The control: billiard's children end with os._exit, and nothing else delivers.
    project["INSTRUMENT"] = "0"
    worker, taken = _run_tasks(project, tmp_path, N)
    try:
        assert taken
    finally:
        output = _stop(worker)
    assert worker.returncode == 0, output
    assert len(collector.events) < N + 1, "nothing lost: this test no longer shows the need"
    assert all(e.get("userId") is None for e in collector.events)  # and no identity


def test_flush_after_task_delivers_while_the_worker_runs(project, tmp_path, collector):
    project["FLUSH_AFTER_TASK"] = "1"
    worker, taken = _run_tasks(project, tmp_path, 6)
    try:
        assert taken
        assert collector.wait_for_events(7, timeout=20)  # before any shutdown
    finally:
        _stop(worker)
    assert _identities(collector)[5] == "user-5"


def test_instrument_twice_connects_once_and_a_publish_outside_bind_adds_no_header():
    from celery import Celery, signals

    from htevents_logging import bind
    from htevents_logging.contrib.celery import IDENTITY_HEADER, instrument

    app = Celery("twice", broker="memory://")
    before = len(signals.before_task_publish.receivers)
    instrument(app)
    instrument(app)
    assert len(signals.before_task_publish.receivers) == before + 1
    outside: dict[str, object] = {}
    signals.before_task_publish.send(sender="t", headers=outside)
    assert outside == {}
    inside: dict[str, object] = {}
    with bind(user_id=7, context={"ip": "203.0.113.5"}):
        signals.before_task_publish.send(sender="t", headers=inside)
    assert inside == {IDENTITY_HEADER: {"user_id": "7", "context": {"ip": "203.0.113.5"}}}


def test_a_failing_hook_never_fails_the_publish(caplog, monkeypatch):
    from celery import Celery, signals

    import htevents_logging.contrib.celery as integration

    integration.instrument(Celery("failing", broker="memory://"))

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(integration, "_identity_header", broken)
    headers: dict[str, object] = {}
    with caplog.at_level("WARNING", "htevents_logging"):
        signals.before_task_publish.send(sender="t", headers=headers)  # does not raise
    assert headers == {}
    assert "the Celery before_task_publish hook failed (RuntimeError: boom)" in caplog.text

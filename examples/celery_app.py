"""Hightouch Events from Celery tasks: every event delivered, each with the user who caused it.

``instrument(app)`` does two things: what a worker process queued is delivered when it shuts
down (Celery's prefork children end with ``os._exit``, so ``atexit`` never runs there), and the
identity bound where a task is sent (``htevents_logging.bind``, a middleware's) travels with the
task, so the events its worker logs carry it.

Try it without a write key, a broker server or network (the broker is a folder):

    htevents-logging collect --port 8787                                   # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/celery_app.py

It sends three tasks as three users, starts ``celery worker --pool=prefork``, waits until the
tasks ran, and stops the worker with SIGTERM, as a deployment does (about ten seconds, most of
them Celery's own shutdown). Requires ``pip install celery``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from celery import Celery

from htevents_logging import HtEventsHandler, bind
from htevents_logging.contrib.celery import instrument

# The broker's folder: made by __main__ (removed at its end), inherited by the worker it starts.
MADE_HERE = "CELERY_EXAMPLE_FOLDER" not in os.environ
if MADE_HERE:
    os.environ["CELERY_EXAMPLE_FOLDER"] = tempfile.mkdtemp(prefix="celery-")
FOLDER = os.environ["CELERY_EXAMPLE_FOLDER"]

app = Celery("shop", broker="filesystem://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": FOLDER,
        "data_folder_out": FOLDER,
        "control_folder": FOLDER,  # (kombu makes ./control otherwise)
    },
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
instrument(app)  # delivery at worker shutdown, and the producer's bind() in each task
# Workers that may be killed without a shutdown (spot instances) can also
# deliver at the end of each task: instrument(app, flush_after_task=True, flush_timeout=2).

logger = logging.getLogger("shop.tasks")
logger.setLevel(logging.INFO)
logger.addHandler(HtEventsHandler())  # write key and host from HT_WRITE_KEY / HT_HOST


@app.task(name="shop.send_receipt")  # the same name when run as __main__
def send_receipt(order_id: str) -> None:
    """A task: no user is passed, the event still carries the one who ordered."""
    logger.info("Receipt sent", extra={"htevent": {"properties": {"orderId": order_id}}})
    open(os.path.join(FOLDER, f"done-{order_id}"), "w").close()  # for __main__ below


if __name__ == "__main__":
    for user, order in [("123", "o-1"), ("456", "o-2"), ("789", "o-3")]:
        with bind(user_id=user):  # in a web app, the middleware binds this
            send_receipt.delay(order)
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=here,
    )
    try:
        deadline = time.monotonic() + 60
        while len([f for f in os.listdir(FOLDER) if f.startswith("done-")]) < 3:
            if time.monotonic() > deadline or worker.poll() is not None:
                sys.exit("the worker did not run the tasks")
            time.sleep(0.1)  # polling a folder the worker writes: a bounded wait
        worker.send_signal(signal.SIGTERM)  # warm shutdown: instrument() delivers the events
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:  # never leave a worker behind
            worker.kill()
            worker.wait()
        if MADE_HERE:
            shutil.rmtree(FOLDER, ignore_errors=True)
    sys.exit(code)

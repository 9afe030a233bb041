"""``htevents-logging demo``: every front-end, one of each message, no account and no network.

:func:`run_demo` starts a local :class:`~htevents_logging.collector.Collector` on a free
loopback port with a made-up write key, configures stdlib logging through
``logging.config.dictConfig`` with an :class:`~htevents_logging.HtEventsHandler`,
configures structlog with an :class:`~htevents_logging.HtEventsProcessor` (when
structlog is installed), and sends one ``identify``, ``track``, ``page``, ``screen``, ``group``
and ``alias`` spread across the handler, the processor and an
:class:`~htevents_logging.HtEvents` client. All three are built with the same settings, so they
share one transport. It then waits until the collector has every event, prints them, and puts
back the logging and structlog configuration it changed.

It is meant to run as its own process (the command). ``dictConfig`` closes the handlers that
existed before it ran, as it always does; the demo restores the root logger and its own logger,
but cannot reopen those.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import logging.config
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional, TextIO

from .._client import HtEvents
from .._frontends.processor import HtEventsProcessor
from .._identity import bind
from .._message import MESSAGE_TYPES
from .._redact import redact_write_key
from ..collector import Collector, format_event

__all__ = ["DEMO_WRITE_KEY", "add_parser", "run", "run_demo"]

#: The made-up key the demo's collector requires and its front-ends send.
DEMO_WRITE_KEY = "demo-write-key"

#: The stdlib logger the demo configures (and restores afterwards).
DEMO_LOGGER = "htevents_demo.shop"

#: How long the demo waits for every event to reach the collector.
DEADLINE = 10.0

# The order the events are sent in (one of each type); the collector receives them in this
# order too, because the three front-ends share one transport (one queue).
_TYPES = MESSAGE_TYPES


def _structlog() -> Optional[ModuleType]:
    try:
        return importlib.import_module("structlog")
    except ImportError:
        return None


@contextmanager
def _stdlib_logging(settings: dict[str, Any]) -> Iterator[logging.Logger]:
    """Configure the demo logger through dictConfig; put back what was there afterwards."""
    root = logging.getLogger()
    demo = logging.getLogger(DEMO_LOGGER)
    saved_root = (root.level, list(root.handlers))
    saved_demo = (demo.level, list(demo.handlers), demo.propagate, demo.disabled)
    logging.config.dictConfig(
        {
            "version": 1,
            # Keep every logger that exists working (the package's own warnings included).
            "disable_existing_loggers": False,
            "handlers": {
                "htevents": {
                    "class": "htevents_logging.HtEventsHandler",
                    **settings,
                },
            },
            "loggers": {
                DEMO_LOGGER: {"handlers": ["htevents"], "level": "INFO", "propagate": False},
            },
        }
    )
    try:
        yield demo
    finally:
        for handler in list(demo.handlers):
            demo.removeHandler(handler)
            if handler not in saved_demo[1]:
                handler.close()  # the HtEventsHandler: closes the client it made
        demo.level, demo.propagate, demo.disabled = saved_demo[0], saved_demo[2], saved_demo[3]
        for handler in saved_demo[1]:
            demo.addHandler(handler)
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]


@contextmanager
def _structlog_config(structlog: ModuleType, processor: HtEventsProcessor) -> Iterator[None]:
    """Configure structlog with ``processor``; put back the previous configuration afterwards."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            processor,
            structlog.processors.KeyValueRenderer(),
        ],
        # Render to a string and print nothing: the collector's output is the point here.
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


def _send_all(
    out: TextIO,
    logger: logging.Logger,
    client: HtEvents,
    structlog: Optional[ModuleType],
) -> None:
    """Send one message of each type, saying which front-end sends which."""

    def say(kind: str, how: str) -> None:
        print(f"  {kind:<8}  {how}", file=out)

    print(
        "\nstdlib logging (dictConfig + HtEventsHandler), inside bind(user_id='user-123'):",
        file=out,
    )
    with bind(user_id="user-123"):
        logger.info("Signed in", extra={"htevent": {"type": "identify", "traits": {"plan": "pro"}}})
        say("identify", 'logger.info("Signed in", extra={"htevent": {"type": "identify", ...}})')
        logger.info("Order completed", extra={"htevent": {"properties": {"total": 29.99}}})
        say("track", 'logger.info("Order completed", extra={"htevent": {"properties": ...}})')

    if structlog is not None:
        print(
            "structlog (HtEventsProcessor), inside bound_contextvars(user_id='user-123'):",
            file=out,
        )
        log = structlog.get_logger("htevents_demo")
        with structlog.contextvars.bound_contextvars(user_id="user-123"):
            log.info("Viewed pricing", htevent={"type": "page", "name": "Pricing"})
            say("page", 'log.info("Viewed pricing", htevent={"type": "page", "name": "Pricing"})')
            log.info("Opened app", htevent={"type": "screen", "name": "Home"})
            say("screen", 'log.info("Opened app", htevent={"type": "screen", "name": "Home"})')
    else:
        print(
            "structlog is not installed (pip install 'htevents-logging[structlog]'): page and"
            " screen go through the stdlib handler instead:",
            file=out,
        )
        with bind(user_id="user-123"):
            logger.info("Viewed pricing", extra={"htevent": {"type": "page", "name": "Pricing"}})
            say("page", 'logger.info("Viewed pricing", extra={"htevent": {"type": "page", ...}})')
            logger.info("Opened app", extra={"htevent": {"type": "screen", "name": "Home"}})
            say("screen", 'logger.info("Opened app", extra={"htevent": {"type": "screen", ...}})')

    print("the HtEvents client, directly:", file=out)
    client.group(user_id="user-123", group_id="acme", traits={"name": "Acme Inc."})
    say("group", 'htevents.group(user_id="user-123", group_id="acme", traits={...})')
    client.alias(user_id="user-123", previous_id="anon-42")
    say("alias", 'htevents.alias(user_id="user-123", previous_id="anon-42")')


def run_demo(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the demo, printing to ``out``; return 0 when every event arrived, else 1."""
    structlog = _structlog()
    with Collector(write_key=DEMO_WRITE_KEY) as collector:
        endpoint = f"{collector.url}{collector.path}"
        # Equal settings, so the handler, the processor and the client share one transport.
        settings: dict[str, Any] = {
            "write_key": DEMO_WRITE_KEY,
            "host": collector.url,
            "flush_interval": 0.2,
            "shutdown_timeout": DEADLINE,
        }
        print(
            "htevents-logging demo: no account and no network; a local collector stands in for"
            " Hightouch Events",
            file=out,
        )
        print(f"collector: {endpoint} (write key {redact_write_key(DEMO_WRITE_KEY)!r})", file=out)

        client = HtEvents(**settings)
        processor = HtEventsProcessor(**settings) if structlog is not None else None
        try:
            with _stdlib_logging(settings) as logger:
                started = time.monotonic()
                if structlog is not None and processor is not None:
                    with _structlog_config(structlog, processor):
                        _send_all(out, logger, client, structlog)
                else:
                    _send_all(out, logger, client, None)
                deadline = started + DEADLINE
                # One transport for all three front-ends: this flush covers every event. When it
                # returns True each one was delivered or refused for good, and the collector
                # records a request before answering it: nothing more is coming.
                settled = client.flush(timeout=DEADLINE)
                collector.wait_for_events(
                    len(_TYPES), timeout=0.0 if settled else max(0.0, deadline - time.monotonic())
                )
                elapsed = time.monotonic() - started
        finally:
            if processor is not None:
                processor.close(timeout=1.0)
            client.close(timeout=1.0)

        events = collector.events
        print("\nthe collector received:", file=out)
        for event in events:
            print(f"  {format_event(event)}", file=out)
        if not events:
            print("  (nothing)", file=out)

    arrived = {event.get("type") for event in events}
    missing = [kind for kind in _TYPES if kind not in arrived]
    summary = f"{len(events)} of {len(_TYPES)} events arrived at {endpoint} in {elapsed:.2f} s"
    if missing or len(events) != len(_TYPES):
        print(f"\n{summary}", file=out)
        rejected = sorted({r.error for r in collector.requests if r.error is not None})
        if rejected:
            why = f"the collector refused them: {'; '.join(rejected)}"
        elif settled:
            why = "they were never sent (see the warnings above)"
        else:
            why = f"they did not arrive within {DEADLINE:g} s"
        print(
            f"htevents-logging demo: missing {', '.join(missing) or 'none'}: {why}",
            file=err,
        )
        return 1
    print(f"\n{summary}", file=out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="send one of each message through every front-end to a local collector",
        description=(
            "See the whole package work with no write key and no network: start a collector on"
            " a free loopback port, configure stdlib logging (dictConfig + HtEventsHandler) and"
            " structlog (HtEventsProcessor), send one identify, track, page, screen, group and"
            " alias through them and the HtEvents client, wait until all of them arrive, and"
            " print what the collector received. Exits 1 if something did not arrive."
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; the exit status."""
    return run_demo()

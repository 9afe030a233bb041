"""The ``htevents-logging`` command (also ``python -m htevents_logging``).

One function per subcommand: ``_add_<name>(subparsers)`` declares its arguments and
``_cmd_<name>(args) -> int`` runs it and returns the exit status. :func:`main` only parses and
dispatches, so adding a subcommand is adding those two functions and one line in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, Callable, Optional

from ._client import HtEvents
from ._diagnostics import logger as package_logger
from ._message import MESSAGE_TYPES
from ._redact import redact_write_key
from ._settings import DEFAULT_HOST, DEFAULT_PATH
from ._version import __version__
from .collector import Collector

__all__ = ["DEFAULT_COLLECT_PORT", "build_parser", "main"]

#: ``collect`` listens here unless told otherwise: fixed, so a client's ``host`` setting can
#: stay the same from one run to the next.
DEFAULT_COLLECT_PORT = 8787

_Handler = Callable[[argparse.Namespace], int]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


# --------------------------------------------------------------------------------------------
# collect


def _add_collect(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="run a local /v1/batch endpoint that prints the events it receives",
        description=(
            "Run a local stand-in for Hightouch's /v1/batch endpoint, for development: it checks"
            " requests like the real one (write key, gzip, size limits, message types), prints"
            " one line per accepted event and one per rejected request, and can append events"
            " to a JSON Lines file. Point a client at it with host='http://127.0.0.1:PORT'."
            " Stop it with Ctrl-C (or SIGTERM)."
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_COLLECT_PORT,
        help="port to listen on (default: %(default)s; 0 picks a free port and prints it)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE.jsonl",
        help="also append every accepted event to this file, one JSON object per line",
    )
    parser.add_argument(
        "--write-key",
        metavar="KEY",
        help=(
            "require this write key (HTTP Basic auth or a writeKey body field) and answer 401"
            " otherwise (default: accept any key)"
        ),
    )
    parser.set_defaults(handler=_cmd_collect)


class _Stop(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler, to leave the idle wait."""


def _raise_stop(signum: int, frame: Optional[FrameType]) -> None:
    raise _Stop


def _cmd_collect(args: argparse.Namespace) -> int:
    collector = Collector(
        host=args.host,
        port=args.port,
        write_key=args.write_key,
        out=args.out,
        echo=sys.stdout,
    )
    # Both signals are handled explicitly (a shell starts background jobs with SIGINT ignored,
    # and `kill -INT` must still stop the collector cleanly there), and before start() so no
    # signal can slip in between starting and waiting.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            previous[stop_signal] = signal.signal(stop_signal, _raise_stop)
    try:
        try:
            collector.start()
        except OSError as exc:
            print(f"htevents-logging collect: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"collecting on {collector.url}{collector.path} (Ctrl-C to stop)", flush=True)
        if args.write_key is not None:
            print(f"requiring write key {redact_write_key(args.write_key)}", flush=True)
        if args.out is not None:
            print(f"appending events to {args.out}", flush=True)
        while True:  # idle until a signal handler raises _Stop
            time.sleep(3600)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        for signum in previous:  # a second Ctrl-C must not cut stop() short
            signal.signal(signum, signal.SIG_IGN)
        collector.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    requests = collector.requests
    rejected = sum(1 for request in requests if request.error is not None)
    print(
        f"stopped: {len(collector.events)} events accepted from {len(requests)} requests"
        f" ({rejected} rejected)",
        flush=True,
    )
    return 0


# --------------------------------------------------------------------------------------------
# demo


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imports the logging front-ends only when they are wanted

    return run_demo()


# --------------------------------------------------------------------------------------------
# send

#: ``send`` falls back on these environment variables for the flags it was not given.
ENV_WRITE_KEY = "HT_WRITE_KEY"
ENV_HOST = "HT_HOST"
ENV_PATH = "HT_PATH"
ENV_GZIP = "HT_GZIP"
ENV_TIMEOUT = "HT_TIMEOUT"

#: ``send --timeout`` default: the bound on the whole send, retries included.
DEFAULT_SEND_TIMEOUT = 10.0

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class _UsageError(Exception):
    """A bad flag, environment variable or message: reported in one line, exit status 2."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    return value


def _add_send(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "send",
        help="send one message and report whether it was delivered",
        description=(
            "Send one message to Hightouch Events (or a local collector) and report the"
            " outcome: 'delivered TYPE MESSAGE_ID' and exit 0, or 'failed: REASON' and exit 1."
            " A usage error (bad JSON, an invalid message, a missing write key) exits 2."
            " Each flag falls back on an HT_* environment variable."
        ),
        epilog=(
            "example: htevents-logging send track --json"
            """ '{"userId": "123", "event": "Order completed", "properties": {"total": 9}}'"""
            " --host http://127.0.0.1:8787"
        ),
    )
    parser.add_argument(
        "type",
        metavar="TYPE",
        choices=MESSAGE_TYPES,
        help=f"the message type: {', '.join(MESSAGE_TYPES)}",
    )
    parser.add_argument(
        "--json",
        required=True,
        metavar="JSON",
        help=(
            "the message as a JSON object, keys in camelCase or snake_case as for"
            " HtEvents.track(...) (userId, event, properties, traits, name, groupId, ...)"
        ),
    )
    parser.add_argument(
        "--write-key",
        metavar="KEY",
        help=f"the source's write key (default: ${ENV_WRITE_KEY})",
    )
    parser.add_argument(
        "--host",
        metavar="URL",
        help=f"the API host (default: ${ENV_HOST}, else {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--path",
        help=f"the batch endpoint's path (default: ${ENV_PATH}, else {DEFAULT_PATH})",
    )
    parser.add_argument(
        "--gzip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"gzip the request body (default: ${ENV_GZIP} as 1/0, else off)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=(
            "give up after this long, retries included; also the timeout of each HTTP request"
            f" (default: ${ENV_TIMEOUT}, else {DEFAULT_SEND_TIMEOUT:g})"
        ),
    )
    parser.set_defaults(handler=_cmd_send)


def _send_client(args: argparse.Namespace, environ: Mapping[str, str]) -> HtEvents:
    """A client with the settings from the flags, else the environment, else the defaults.

    Raises :class:`_UsageError` for a missing write key or a bad environment variable, and
    ``TypeError``/``ValueError`` (naming the setting) for a bad value.
    """
    write_key = args.write_key or environ.get(ENV_WRITE_KEY) or None
    if write_key is None:
        raise _UsageError(f"no write key: pass --write-key KEY or set {ENV_WRITE_KEY}")

    gzip = args.gzip
    if gzip is None:
        text = environ.get(ENV_GZIP, "").strip().lower()
        if text not in _TRUE + _FALSE:
            raise _UsageError(f"{ENV_GZIP}={text!r} is not one of 1/0, true/false, yes/no, on/off")
        gzip = text in _TRUE

    timeout = args.timeout
    if timeout is None:
        text = environ.get(ENV_TIMEOUT, "").strip()
        try:
            timeout = _seconds(text) if text else DEFAULT_SEND_TIMEOUT
        except argparse.ArgumentTypeError as exc:
            raise _UsageError(f"{ENV_TIMEOUT}: {exc}") from None

    return HtEvents(
        write_key,
        host=args.host or environ.get(ENV_HOST) or DEFAULT_HOST,
        path=args.path or environ.get(ENV_PATH) or DEFAULT_PATH,
        gzip=gzip,
        http_request_timeout=timeout,
        shutdown_timeout=timeout,
    )


def _parse_message(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _UsageError(f"--json is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        kind = "a list" if isinstance(document, list) else json.dumps(document)
        raise _UsageError(
            f"""--json must be a JSON object such as '{{"userId": "123"}}', got {kind}"""
        )
    return document


def _cmd_send(args: argparse.Namespace) -> int:
    def usage_error(problem: object) -> int:
        print(f"htevents-logging send: {problem}", file=sys.stderr)
        return 2

    try:
        document = _parse_message(args.json)
        client = _send_client(args, os.environ)
    except (_UsageError, TypeError, ValueError) as exc:
        return usage_error(exc)

    outcome: list[Optional[BaseException]] = []
    settled = threading.Event()

    def callback(error: Optional[BaseException], message: dict[str, Any]) -> None:
        outcome.append(error)
        settled.set()

    timeout = client.settings.shutdown_timeout
    try:
        message = client.emit(args.type, document, callback=callback)
    except (TypeError, ValueError) as exc:
        client.close(timeout=0.0)
        return usage_error(f"invalid message: {exc}")
    # The outcome is printed below: keep the package's own failure WARNING (which would reach
    # stderr through logging.lastResort) from saying it a second time.
    quiet = logging.NullHandler()
    package_logger.addHandler(quiet)
    try:
        client.close(timeout=timeout)  # sends it now and waits for the answer, within timeout
        # close() has settled the message unless it ran out of time; the callback then follows.
        settled.wait(1.0)
    finally:
        package_logger.removeHandler(quiet)

    error = outcome[0] if outcome else None
    if outcome and error is None:
        print(f"delivered {message['type']} {message['messageId']}", flush=True)
        return 0
    if not outcome or getattr(error, "reason", None) == "shutdown_timeout":
        # The transport's own text advises raising shutdown_timeout: here that is --timeout.
        status = getattr(error, "status", None)
        attempts = getattr(error, "attempts", 0)
        last = (
            f"the last answer was HTTP {status}, after {attempts} attempt(s)"
            if status is not None
            else "no answer from the server"
        )
        problem = (
            f"not delivered to {client.settings.url} within {timeout:g} s ({last});"
            f" wait longer with --timeout SECONDS (or ${ENV_TIMEOUT})"
        )
    else:
        problem = str(error)
    print(f"failed: {problem}", file=sys.stderr, flush=True)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``htevents-logging``, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="htevents-logging",
        description="Tools for htevents-logging, the logging-native client for Hightouch Events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_collect(subparsers)
    _add_demo(subparsers)
    _add_send(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``htevents-logging`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Usage errors exit with status 2 through argparse, as for any argparse program.
    """
    args = build_parser().parse_args(argv)
    handler: _Handler = args.handler
    return handler(args)

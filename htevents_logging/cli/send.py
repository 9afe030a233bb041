"""``htevents-logging send``: send one message and report whether it was delivered."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, Optional

from .._client import HtEvents
from .._diagnostics import logger as package_logger
from .._message import MESSAGE_TYPES
from .._settings import DEFAULT_HOST, DEFAULT_PATH, ENVIRONMENT, env_flag
from ..errors import Reason

__all__ = ["add_parser", "run"]

#: ``send`` falls back on these environment variables for the flags it was not given.
ENV_WRITE_KEY = ENVIRONMENT["write_key"]
ENV_HOST = ENVIRONMENT["host"]
ENV_PATH = ENVIRONMENT["path"]
ENV_GZIP = ENVIRONMENT["gzip"]
ENV_TIMEOUT = "HT_TIMEOUT"  # send's own: the bound on the whole send

#: ``send --timeout`` default: the bound on the whole send, retries included.
DEFAULT_SEND_TIMEOUT = 10.0


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


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``send`` and its arguments."""
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
    parser.set_defaults(handler=run)


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
        try:
            gzip = env_flag(ENV_GZIP, environ.get(ENV_GZIP, ""))
        except ValueError as exc:
            raise _UsageError(str(exc)) from None

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


def run(args: argparse.Namespace) -> int:
    """Send the message, wait for its outcome, print it; the exit status (0, 1 or 2)."""

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
    if not outcome or getattr(error, "reason", None) == Reason.SHUTDOWN_TIMEOUT:
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

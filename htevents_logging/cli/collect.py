"""``htevents-logging collect``: a local ``/v1/batch`` endpoint that prints what it receives."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Optional

from .._redact import redact_write_key
from ..collector import Collector

__all__ = ["DEFAULT_COLLECT_PORT", "add_parser", "run"]

#: ``collect`` listens here unless told otherwise: fixed, so a client's ``host`` setting can
#: stay the same from one run to the next.
DEFAULT_COLLECT_PORT = 8787


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``collect`` and its arguments."""
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
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with this certificate (PEM; with its key unless --tls-key is given)",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.set_defaults(handler=run)


class _Stop(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler, to leave the idle wait."""


def _raise_stop(signum: int, frame: Optional[FrameType]) -> None:
    raise _Stop


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then print a summary; the exit status."""
    try:
        collector = Collector(
            host=args.host,
            port=args.port,
            write_key=args.write_key,
            out=args.out,
            echo=sys.stdout,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except (OSError, ValueError) as exc:  # a missing or bad certificate, a key with no cert
        print(f"htevents-logging collect: TLS: {exc}", file=sys.stderr)
        return 1
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

"""The ``htevents-logging`` command (also ``python -m htevents_logging``).

One module per subcommand (``collect``, ``demo``, ``send``), each with ``add_parser(subparsers)``
declaring its arguments and ``run(args) -> int`` running it. :func:`main` only parses and
dispatches, so adding a subcommand is adding a module and one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Callable, Optional

from .._version import __version__
from . import collect, demo, send
from .collect import DEFAULT_COLLECT_PORT

__all__ = ["COMMANDS", "DEFAULT_COLLECT_PORT", "build_parser", "main"]

#: The subcommands, in the order ``--help`` lists them.
COMMANDS = (collect, demo, send)

_Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``htevents-logging``, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="htevents-logging",
        description="Tools for htevents-logging, the logging-native client for Hightouch Events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``htevents-logging`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Usage errors exit with status 2 through argparse, as for any argparse program.
    """
    args = build_parser().parse_args(argv)
    handler: _Handler = args.handler
    return handler(args)

"""Showing a write key without leaking it.

A write key lets anyone send events into your workspace, and logs, tracebacks and reprs end up
in places (CI output, bug reports, log aggregators) that are far less private than a secret
store. Everything in this package that needs to mention a key goes through
:func:`redact_write_key`, so the rule "at most the first 4 characters" lives in one place.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["redact_write_key"]

#: The most characters of a key ever shown.
_SHOWN = 4


def redact_write_key(key: Optional[str]) -> str:
    """Return a form of ``key`` that is safe to print: its first characters, then ``…``.

    Enough to tell two keys apart in a log line ("is this the staging key?"), never enough to use.
    At most 4 characters are kept, and never more than half of the key, so a short key is not
    printed in full either. ``None`` and ``""`` give ``"<unset>"`` and ``"<empty>"``, so a
    message can always say *which* of the two was the problem.
    """
    if key is None:
        return "<unset>"
    if not isinstance(key, str):  # defensive: callers sometimes hold bytes or a number
        key = str(key)
    if key == "":
        return "<empty>"
    return key[: min(_SHOWN, len(key) // 2)] + "…"

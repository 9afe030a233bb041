"""Redaction: a ready ``before_send`` that masks (or removes) named keys at any depth.

Analytics events tend to collect personal data by accident: an ``email`` in traits, an ``ip``
in context. :func:`redact` makes a ``before_send`` hook that scrubs named keys wherever they
appear in ``properties``, ``traits`` and ``context``, so the rule lives in one place instead of
every call site.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional

from .typing import BeforeSend, Message

__all__ = ["redact"]

#: The parts of a message that carry user data.
_SCRUBBED = ("properties", "traits", "context")


def _scrub(value: Any, keys: frozenset[str], mask: Optional[str]) -> Any:
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, inner in value.items():
            if isinstance(key, str) and key.lower() in keys:
                if mask is not None:
                    out[key] = mask
            else:
                out[key] = _scrub(inner, keys, mask)
        return out
    if isinstance(value, (list, tuple)):
        return [_scrub(inner, keys, mask) for inner in value]
    return value


def redact(keys: Iterable[str], *, mask: Optional[str] = "[redacted]") -> BeforeSend:
    """A ``before_send`` that replaces the value of every key named in ``keys`` (matched
    case-insensitively, at any depth of ``properties``, ``traits`` and ``context``) with
    ``mask``, or removes the key when ``mask`` is ``None``.

    It never changes the message it is given (it returns a new one), so it is safe whatever
    else holds on to the message.

    >>> mask_emails = redact(["email"])
    >>> drop_ips = redact(["ip"], mask=None)
    >>> HtEvents(..., before_send=lambda message: drop_ips(mask_emails(message)))
    """
    if isinstance(keys, str):
        raise TypeError("redact(keys=...) takes a list of key names, not one string")
    names = frozenset(key.lower() for key in keys)

    def before_send(message: Message) -> Message:
        out = dict(message)
        for part in _SCRUBBED:
            if part in out:
                out[part] = _scrub(out[part], names, mask)
        return out

    before_send.__qualname__ = f"redact({sorted(names)!r})"
    return before_send

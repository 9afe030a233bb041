"""Event lines for humans: what ``htevents-logging collect`` prints per event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["format_event"]


def _plain(value: Any) -> str:
    """An id as is when it prints cleanly on one line, else JSON-quoted."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if text and text.isprintable() and " " not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _compact(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_event(message: Mapping[str, Any]) -> str:
    """One readable line for a message, as ``htevents-logging collect`` prints it.

    For example ``track     user-1  "Order completed"  {"total": 29.99}  (messageId 1234abcd…)``:
    the type, who (``userId``, else ``anon:<anonymousId>``), what (track ``event``, page/screen
    ``name``, group ``groupId``, alias ``previousId``), then the properties or traits as compact
    JSON, then the start of the ``messageId``. Handy to print what a :class:`Collector` received.
    """
    kind = message.get("type")
    kind_text = kind if isinstance(kind, str) else repr(kind)
    parts = [f"{kind_text:<8}"]

    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    if user_id not in (None, ""):
        parts.append(_plain(user_id))
    elif anonymous_id not in (None, ""):
        parts.append("anon:" + _plain(anonymous_id))
    else:
        parts.append("-")

    payload: Any = None
    if kind == "track":
        parts.append(json.dumps(message.get("event"), ensure_ascii=False))
        payload = message.get("properties")
    elif kind in ("page", "screen"):
        if message.get("name") is not None:
            parts.append(json.dumps(message.get("name"), ensure_ascii=False))
        payload = message.get("properties")
    elif kind == "identify":
        payload = message.get("traits")
    elif kind == "group":
        parts.append("group " + _plain(message.get("groupId")))
        payload = message.get("traits")
    elif kind == "alias":
        parts.append("previousId " + _plain(message.get("previousId")))
    if payload:
        parts.append(_compact(payload))

    message_id = str(message.get("messageId"))
    shown_id = message_id if len(message_id) <= 9 else message_id[:8] + "…"
    parts.append(f"(messageId {shown_id})")
    return "  ".join(parts)

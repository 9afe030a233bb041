"""The message model: both spellings of every field, validation, defaults, and the wire form.

Everything that decides what a message looks like on the wire lives here, so the client, the
logging handler and the structlog processor build byte-for-byte the same messages.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Literal, Optional, get_args

from typing_extensions import TypedDict

from ._encoding import bounded_dict, dumps
from ._identity import Id, Identity, current_identity, id_text
from ._time import Timestamp, format_timestamp
from ._version import __version__

__all__ = [
    "CURRENT_IDENTITY",
    "MESSAGE_TYPES",
    "Message",
    "MessageFields",
    "MessageType",
    "build_message",
    "encode_message",
    "new_message_id",
]

#: The six kinds of message, the one list of them (the CLI and the collector read it too).
MessageType = Literal["identify", "track", "page", "screen", "group", "alias"]
MESSAGE_TYPES: tuple[str, ...] = get_args(MessageType)

LIBRARY = {"name": "htevents-logging", "version": __version__}

#: A normalized message as returned by every call, in the wire's camelCase.
Message = dict[str, Any]


class MessageFields(TypedDict, total=False):
    """The keyword form of a message (snake_case); each key has a camelCase twin in mappings."""

    user_id: Id
    anonymous_id: Id
    traits: Mapping[str, Any]
    event: str
    properties: Mapping[str, Any]
    category: str
    name: str
    group_id: Id
    previous_id: Id
    context: Mapping[str, Any]
    timestamp: Timestamp
    integrations: Mapping[str, Any]
    message_id: str


# snake_case and camelCase spellings -> the wire's camelCase name.
_CANONICAL: dict[str, str] = {}
for _snake, _camel in {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "traits": "traits",
    "event": "event",
    "properties": "properties",
    "category": "category",
    "name": "name",
    "group_id": "groupId",
    "previous_id": "previousId",
    "context": "context",
    "timestamp": "timestamp",
    "integrations": "integrations",
    "message_id": "messageId",
}.items():
    _CANONICAL[_snake] = _camel
    _CANONICAL[_camel] = _camel

_COMMON = frozenset({"userId", "anonymousId", "context", "timestamp", "integrations", "messageId"})
# The fields each type takes besides the common ones.
_TYPE_FIELDS: dict[str, frozenset[str]] = {
    "identify": frozenset({"traits"}),
    "track": frozenset({"event", "properties"}),
    "page": frozenset({"name", "category", "properties"}),
    "screen": frozenset({"name", "category", "properties"}),
    "group": frozenset({"groupId", "traits"}),
    "alias": frozenset({"previousId"}),
}


# Ids made ahead from one read of the OS's random source, handed out one by one.
_id_pool: list[str] = []
_IDS_PER_READ = 256
# Where the 32 hex digits of 16 random bytes go among a UUID's 36 characters.
_DIGIT_AT = [i for i in range(36) if i not in (8, 13, 18, 23)]
# The RFC 4122 variant digit (10xx) for each random hex digit: 8, 9, a or b.
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def _refill_ids() -> list[str]:
    """256 version-4 UUID strings from one read, laid out column by column: each slice
    assignment places one character of every id at once, so the work per id is done in C
    (about 0.25 µs an id, against 0.9 µs formatting each with an f-string)."""
    n = _IDS_PER_READ
    digits = os.urandom(16 * n).hex().encode("ascii")
    text = bytearray(36 * n)
    for digit, at in enumerate(_DIGIT_AT):
        text[at::36] = digits[digit::32]
    for at in (8, 13, 18, 23):
        text[at::36] = b"-" * n
    text[14::36] = b"4" * n  # the version
    text[19::36] = text[19::36].translate(_VARIANT)
    ids = text.decode("ascii")
    return [ids[i : i + 36] for i in range(0, 36 * n, 36)]


def new_message_id() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` makes, about 3x faster.

    ``uuid4()`` reads the OS's random source once per id and builds a ``UUID``; this reads it
    once per 256 ids (the same source, so the ids are as unpredictable) and formats them
    together, with ``bytes.hex`` doing the digits.
    """
    try:
        return _id_pool.pop()  # atomic: no two threads get the same id
    except IndexError:
        fresh = _refill_ids()
        made = fresh.pop()
        _id_pool.extend(fresh)
        return made


def forget_random_pool() -> None:
    """In a forked child: never hand out the ids the parent still holds."""
    _id_pool.clear()


#: ``build_message``'s default ``identity``: the one bound where it is called.
CURRENT_IDENTITY: Any = object()


# The fields each type takes, the common ones included.
_ALLOWED: dict[str, frozenset[str]] = {t: _COMMON | f for t, f in _TYPE_FIELDS.items()}
# How an error names a field of a type ("track: userId"), made once rather than per message.
_LABELS: dict[tuple[str, str], str] = {
    (t, name): f"{t}: {name}" for t in _TYPE_FIELDS for name in set(_CANONICAL.values())
}
# For each type, every spelling it accepts -> the wire's name: one lookup per given key.
_ACCEPTS: dict[str, dict[str, str]] = {
    t: {key: name for key, name in _CANONICAL.items() if name in allowed}
    for t, allowed in _ALLOWED.items()
}


def _mapping(type_: str, field: str, value: Any) -> dict[str, Any]:
    if type(value) is dict:
        return value.copy()
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{type_}: {field} must be a mapping, not {type(value).__name__}")
    return bounded_dict(value)


def _optional_str(type_: str, field: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{type_}: {field} must be a str, not {type(value).__name__}")
    return value


def _gather(
    type_: str, message: Optional[Mapping[str, Any]], fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge the mapping form and the keyword form into camelCase, refusing contradictions."""
    if message is not None and not isinstance(message, Mapping):
        raise TypeError(f"{type_}: the message must be a mapping, not {type(message).__name__}")
    accepts = _ACCEPTS[type_]
    out: dict[str, Any] = {}
    sources = (message, fields) if message and fields else (message or fields,)
    for source in sources:
        for key, value in source.items():
            canonical = accepts.get(key)
            if canonical is None:
                if key == "type":
                    if value != type_:
                        raise ValueError(f"type {value!r} given to {type_}()")
                    continue
                expected = ", ".join(sorted(_ALLOWED[type_]))
                raise ValueError(f"{type_}: unknown field {key!r}; {type_} takes {expected}")
            if canonical in out and out[canonical] != value:
                first = next(
                    (
                        k
                        for src in (message or {}, fields)
                        for k in src
                        if _CANONICAL.get(k) == canonical
                    ),
                    canonical,
                )
                raise ValueError(
                    f"{type_}: {canonical} given twice with different values "
                    f"({first}={out[canonical]!r} and {key}={value!r})"
                )
            out[canonical] = value
    return out


def build_message(
    type_: str,
    message: Optional[Mapping[str, Any]] = None,
    fields: Optional[Mapping[str, Any]] = None,
    *,
    event_default: Optional[str] = None,
    timestamp_default: Optional[Timestamp] = None,
    identity: Optional[Identity] = CURRENT_IDENTITY,
    context_defaults: Optional[Mapping[str, Any]] = None,
    properties_defaults: Optional[Mapping[str, Any]] = None,
) -> Message:
    """Validate a message in either spelling and return its wire form (a new dict).

    ``event_default`` and ``timestamp_default`` are what a logging front-end supplies from its
    record (the log message, the record's time). The bound identity (:func:`bind`) fills
    missing ids: the one bound where this is called, or ``identity``, a snapshot taken on the
    thread that logged. A message with neither id gets a new UUID4 ``anonymousId``. The
    caller's mappings are copied, never changed. ``context_defaults`` and
    ``properties_defaults`` (the client's ``context`` and ``properties`` settings) are merged
    under the message's own, key by key, below the bound context: the message wins.

    Raises ``ValueError`` or ``TypeError`` naming the field that is wrong.
    """
    if type_ not in _TYPE_FIELDS:
        raise ValueError(
            f"unknown message type {type_!r}; the types are {', '.join(MESSAGE_TYPES)}"
        )
    given = _gather(type_, message, fields or {})

    out: Message = {"type": type_}
    message_id = given.get("messageId")
    if message_id is None:
        out["messageId"] = new_message_id()
    elif isinstance(message_id, str) and message_id:
        out["messageId"] = message_id
    else:
        raise TypeError(f"{type_}: messageId must be a non-empty str")
    stamp = given.get("timestamp")
    if stamp is None:
        stamp = timestamp_default if timestamp_default is not None else time.time()
    out["timestamp"] = format_timestamp(stamp)

    # (A non-empty str, the usual id, needs no converting: no call for it.)
    user_id = given.get("userId")
    if user_id is not None and (type(user_id) is not str or not user_id):
        user_id = id_text(user_id, _LABELS[type_, "userId"])
    anonymous_id = given.get("anonymousId")
    if anonymous_id is not None and (type(anonymous_id) is not str or not anonymous_id):
        anonymous_id = id_text(anonymous_id, _LABELS[type_, "anonymousId"])
    bound = current_identity() if identity is CURRENT_IDENTITY else identity
    if bound is not None and user_id is None and anonymous_id is None:
        user_id, anonymous_id = bound.user_id, bound.anonymous_id
    if user_id is None and anonymous_id is None and type_ != "alias":
        anonymous_id = new_message_id()
    if user_id is not None:
        out["userId"] = user_id
    if anonymous_id is not None:
        out["anonymousId"] = anonymous_id

    if type_ == "track":
        event = given.get("event")
        if type(event) is not str:
            event = _optional_str(type_, "event", event)
        event = event or event_default
        if not event:
            raise ValueError(
                "track: event is required (the name of the action, e.g. 'Order completed')"
            )
        out["event"] = event
        out["properties"] = _mapping(type_, "properties", given.get("properties"))
        if properties_defaults:
            out["properties"] = {**properties_defaults, **out["properties"]}
    elif type_ in ("identify", "group"):
        if type_ == "group":
            group_id = id_text(given.get("groupId"), _LABELS[type_, "groupId"])
            if group_id is None:
                raise ValueError("group: groupId is required")
            out["groupId"] = group_id
        out["traits"] = _mapping(type_, "traits", given.get("traits"))
    elif type_ in ("page", "screen"):
        properties = _mapping(type_, "properties", given.get("properties"))
        if properties_defaults:
            properties = {**properties_defaults, **properties}
        name = _optional_str(type_, "name", given.get("name"))
        category = _optional_str(type_, "category", given.get("category"))
        if name is not None:
            out["name"] = name
        if category is not None:
            out["category"] = category
            if type_ == "page":
                properties["category"] = category
        out["properties"] = properties
    else:  # alias
        previous_id = id_text(given.get("previousId"), _LABELS[type_, "previousId"])
        if previous_id is None:
            raise ValueError("alias: previousId is required (the id the user had before)")
        if user_id is None:
            raise ValueError("alias: userId is required (the id the user has now)")
        out["previousId"] = previous_id

    context = given.get("context")
    context = {} if context is None else _mapping(type_, "context", context)
    if bound is not None and bound.context:
        context = {**bound.context, **context}
    if context_defaults:
        context = {**context_defaults, **context}
    library = context.get("library")
    if library is not None and isinstance(library, Mapping):
        context["library"] = {**library, **LIBRARY}
    else:
        context["library"] = dict(LIBRARY)
    out["context"] = context
    integrations = given.get("integrations")
    out["integrations"] = (
        {} if integrations is None else _mapping(type_, "integrations", integrations)
    )
    return out


# The wire form of what ends most messages: no context but the library, no integrations.
_PLAIN_CONTEXT = {"library": LIBRARY}
# That ending as JSON, after the message's other fields: ``,"context":{...},"integrations":{}}``.
_PLAIN_TAIL = b"," + dumps({"context": _PLAIN_CONTEXT, "integrations": {}})[1:]


def encode_message(message: Message) -> bytes:
    """A message exactly as :func:`build_message` returned it, as compact UTF-8 JSON: the
    bytes :func:`~htevents_logging._encoding.dumps` makes, sooner.

    Most messages end with a ``context`` that holds only the library and empty
    ``integrations`` (the two fields ``build_message`` puts last): that ending is always the
    same bytes, encoded once here rather than for every message (it is about a third of the
    encoder's time: two nested dicts and an empty one). Any other message is encoded whole.
    A message changed since (by ``before_send``) must go to ``dumps``: its fields may be in
    another order.
    """
    if message.get("integrations") or message.get("context") != _PLAIN_CONTEXT:
        return dumps(message)
    context, integrations = message.pop("context"), message.pop("integrations")
    try:
        head = dumps(message)
    finally:
        message["context"], message["integrations"] = context, integrations
    return head[:-1] + _PLAIN_TAIL

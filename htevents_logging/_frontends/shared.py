"""What the logging front-ends share: their client, and handing a logged payload over.

A log call sits on the request path, so the calling thread does only what must happen there:
it copies the payload (so the caller may reuse its dicts), notes the time, the log message and
the bound identity, and queues a :class:`LogDraft`. Building, checking and encoding the message
happen on the transport thread, when the draft is prepared; an invalid payload is then counted
as ``rejected`` and reported by one rate-limited WARNING naming where it was logged and the
field that is wrong. Under ``capture_events()`` and for a disabled client the same draft is
built at once, on the calling thread, so tests see messages (and rejections) at once.
"""

from __future__ import annotations

import marshal
import re
import time
from collections.abc import Mapping
from typing import Any, Optional, Union

from .._client import ClientSettings, HtEvents, keyless_client
from .._diagnostics import warn_limited
from .._encoding import bounded_dict
from .._identity import Identity
from .._settings import MissingWriteKey
from .._time import Timestamp
from .._tracing import trace_context
from .._transport import Envelope, is_transport_thread
from ..errors import MessageTooLargeError, Reason
from ..typing import Callback, ErrorHandler
from .snapshot import NUMPY, UNMARSHALLABLE, copied, frozen, loaded_modules

__all__ = [
    "DEFAULT_PAYLOAD_KEY",
    "LogDraft",
    "LoggerOrigins",
    "Origin",
    "ids_beside",
    "make_client",
    "reject",
    "send_payload",
]

#: The record attribute (stdlib) or event-dict key (structlog) that carries an event.
DEFAULT_PAYLOAD_KEY = "htevent"

#: Where a payload was logged: ("logger", name, "") for the handler, ("structlog", logger
#: name, event) for the processor. Formatted only when a warning is due.
Origin = tuple[str, str, str]


#: The package's own logger: it and its children never make events (no feedback loop).
OWN_LOGGER = "htevents_logging"
_OWN_LENGTH = len(OWN_LOGGER)


def is_own_logger(name: str) -> bool:
    """Whether ``name`` is the package's logger or one of its children."""
    return name.startswith(OWN_LOGGER) and (len(name) == _OWN_LENGTH or name[_OWN_LENGTH] == ".")


#: Loggers whose origin is kept by :class:`LoggerOrigins` (past it, one is made per record).
MAX_LOGGER_ORIGINS = 10_000


class LoggerOrigins(dict[str, Optional[Origin]]):
    """The origin of each logger a front-end has seen, ``("logger", name, "")``, made once;
    ``None`` for the package's own loggers, whose records are never events.

    A queued event holds its origin until it is built (for the warning, should it be invalid):
    one tuple per logger instead of one per record keeps a full queue about 64 bytes per event
    smaller, and spares the calling thread an allocation and the own-logger test."""

    def __missing__(self, name: str) -> Optional[Origin]:
        origin = None if is_own_logger(name) else ("logger", name, "")
        if len(self) < MAX_LOGGER_ORIGINS:
            self[name] = origin
        return origin


# A payload that names one of these keeps its own ids; otherwise the ids logged beside it are used.
_ID_KEYS = ("userId", "user_id", "anonymousId", "anonymous_id")


def ids_beside(payload: Any, values: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The ``user_id`` / ``anonymous_id`` logged beside a payload (structlog's event dict,
    loguru's ``extra``), as message fields; ``None`` when the payload names an id of its own
    or there is none. They come over ``bind()``'s, as the log line shows them."""
    user_id, anonymous_id = values.get("user_id"), values.get("anonymous_id")
    if user_id is None and anonymous_id is None:
        return None  # the common case, decided in two lookups
    if not isinstance(payload, Mapping) or any(key in payload for key in _ID_KEYS):
        return None
    fields = {}
    if user_id is not None:
        fields["user_id"] = user_id
    if anonymous_id is not None:
        fields["anonymous_id"] = anonymous_id
    return fields


def _where(origin: Origin) -> str:
    kind, name, event = origin
    if kind == "logger":
        return f"on logger {name!r}"
    on_logger = f"logger {name!r}, " if name else ""
    return f"with structlog ({on_logger}event {event!r})"


def make_client(
    front_end: str,
    client: Optional[HtEvents],
    write_key: Optional[str],
    settings: ClientSettings,
    payload_key: str,
) -> tuple[HtEvents, bool]:
    """The client a front-end sends through, and whether the front-end owns (closes) it.

    Also checks the front-end's ``payload_key``, so both front-ends refuse the same mistakes
    with the same words.
    """
    if not isinstance(payload_key, str) or not payload_key:
        raise TypeError(f"{front_end}: payload_key must be a non-empty str, got {payload_key!r}")
    if client is None:
        try:
            return HtEvents(write_key, **settings), True
        except MissingWriteKey:
            return keyless_client(front_end, settings), True
    if write_key is not None or settings:
        given = sorted([*settings, *(["write_key"] if write_key is not None else [])])
        raise TypeError(
            f"{front_end}: pass either client=... or client settings, not both "
            f"(got client and {', '.join(given)}); the settings of a client you pass are the "
            "ones it was created with"
        )
    if not isinstance(client, HtEvents):
        raise TypeError(
            f"{front_end}: client must be an htevents_logging.HtEvents, "
            f'not {type(client).__name__} (in dictConfig: "client": "ext://module.attribute")'
        )
    return client, False


def _error_kind(error: BaseException) -> str:
    """The kind of mistake and what it names: the error message up to its first quoted word
    (a field's name, say), with that word. Warnings are rate-limited per kind, so a ``userID``
    typo is reported even just after a ``propertys`` typo on the same logger."""
    text = str(error)
    match = re.search(r"'([^']{0,40})'", text)
    kind = re.split(r"['\"(\d]", text, maxsplit=1)[0][:80]
    return kind if match is None else f"{kind}{match.group(1)}"


def _payload_type(payload: Mapping[Any, Any]) -> Any:
    """The payload's ``type`` (default ``"track"``), in a form ``emit`` reports clearly."""
    type_ = payload.get("type", "track")
    if isinstance(type_, str):
        return type_
    try:
        hash(type_)
    except TypeError:
        return repr(type_)  # unhashable: let emit say "unknown message type '[...]'"
    return type_


def _report(error: BaseException, payload_key: str, origin: Origin) -> None:
    """One rate-limited WARNING for a payload that could not be sent."""
    limit_key = f"{origin[0]}:{origin[1]}"
    if isinstance(error, (TypeError, ValueError)):
        warn_limited(
            f"invalid-payload:{limit_key}:{_error_kind(error)}",
            "htevents-logging: dropped an invalid %r payload logged %s: %s",
            payload_key,
            _where(origin),
            error,
        )
    else:
        warn_limited(
            f"emit-error:{limit_key}",
            "htevents-logging: could not send the %r payload logged %s: %s: %s",
            payload_key,
            _where(origin),
            type(error).__name__,
            error,
        )


class LogDraft:
    """A logged event as captured on the calling thread, built on the transport thread: its
    payload taken as it is at the call (see ``snapshot``), with the log message, time and
    identity beside it.

    One small object per queued event, with ``__slots__`` (about 100 bytes, and about 210 with
    its frozen payload and time, against about 460 for a dict copy): a backlog of queued events
    is what a burst or an outage costs in memory, and every object in it is traversed by the
    garbage collections the application's threads run while the transport catches up.

    It is made only by :func:`send_payload`, which fills it in place: a Python ``__init__``
    would cost the calling thread about 0.1 µs per event in argument handling alone.
    """

    #: A logged event has no callback (its ``on_error`` is the client's).
    callback: Optional[Callback] = None
    payload: Union[bytes, dict[Any, Any]]
    client: HtEvents
    fields: Optional[dict[str, Any]]
    event_default: Optional[str]
    timestamp: Timestamp
    identity: Optional[Identity]
    payload_key: str
    origin: Origin
    trace: Optional[dict[str, str]]

    __slots__ = (
        "client",
        "event_default",
        "fields",
        "identity",
        "origin",
        "payload",
        "payload_key",
        "timestamp",
        "trace",
    )

    @property
    def on_error(self) -> Optional[ErrorHandler]:
        """The client's ``on_error`` (read when needed: one slot less per queued event)."""
        return self.client.settings.on_error

    def prepare(self) -> Optional[Envelope]:
        """Build and encode the message; on failure warn, count, and return ``None``."""
        try:
            held = self.payload
            payload = marshal.loads(held) if isinstance(held, bytes) else held
            _, envelope = self.client.prepare(
                _payload_type(payload),
                payload,
                self.fields or {},
                event_default=self.event_default,
                timestamp_default=self.timestamp,
                identity=self.identity,
                trace=self.trace,
            )
        except Exception as error:
            _report(error, self.payload_key, self.origin)
            return None
        return envelope


def send_payload(
    client: HtEvents,
    payload: Any,
    payload_key: str,
    origin: Origin,
    event_default: Optional[str],
    timestamp_default: Optional[Timestamp],
    fields: Optional[dict[str, Any]],
    identity: Optional[Identity],
    /,
) -> None:
    """Hand one logged payload to ``client``; never raises, never waits on the network.

    ``event_default`` is the name a ``track`` that names no ``event`` takes (the log message),
    ``timestamp_default`` the time a message names none (``None``: now), ``fields`` the ids
    logged beside the payload; ``identity`` is the identity the message takes, read on the
    calling thread by the front-end (:func:`~htevents_logging._identity.current_identity`, or
    the one a ``CaptureIdentity`` filter kept on a record). The arguments are positional: each
    front-end calls it once per logged event, and keywords cost the calling thread about
    0.07 µs more.

    On the transport thread (a callback or ``on_error`` that logs) nothing is sent: the
    payload is counted as dropped, so a failure cannot feed itself."""
    if is_transport_thread():
        client.count_dropped(Reason.TRANSPORT_THREAD, ON_TRANSPORT_THREAD)
        return
    if type(payload) is not dict and not isinstance(payload, Mapping):
        try:
            client.emit("track", payload)  # not a mapping: refused with a TypeError, counted
        except Exception as error:
            _report(error, payload_key, origin)
        return
    draft = LogDraft()
    try:
        # The payload as it is now: the caller may change it after the call (a mapping of
        # another type is read first, at most so many entries: see ``bounded_dict``).
        if type(payload) is dict and NUMPY not in loaded_modules:
            try:  # ``frozen``, written out: this saves every logged event a call
                draft.payload = marshal.dumps(payload)
            except UNMARSHALLABLE:
                draft.payload = copied(payload)
        else:
            draft.payload = frozen(payload if type(payload) is dict else bounded_dict(payload))
    except Exception as error:  # a payload that cannot even be read
        reject(client, error, payload_key, origin)
        return
    draft.client = client
    draft.fields = fields
    draft.event_default = event_default
    draft.timestamp = time.time() if timestamp_default is None else timestamp_default
    draft.identity = identity
    draft.payload_key = payload_key
    draft.origin = origin
    draft.trace = trace_context() if client.settings.capture_trace_context else None
    try:
        client.enqueue(draft)
    except Exception as error:  # refused by the client, which counted it
        _report(error, payload_key, origin)


#: Why an event logged on the transport thread is not sent (see ``Reason.TRANSPORT_THREAD``).
ON_TRANSPORT_THREAD = (
    "an event was logged on the transport thread (in a callback or on_error): it stays a log "
    "line, so a failure cannot feed itself; call the client directly, or log from your own "
    "thread"
)


def reject(client: HtEvents, error: BaseException, payload_key: str, origin: Origin) -> None:
    """Count a logged payload as rejected and warn about it (rate-limited)."""
    too_large = isinstance(error, MessageTooLargeError)
    client.count_rejected(Reason.OVERSIZE if too_large else Reason.INVALID)
    _report(error, payload_key, origin)

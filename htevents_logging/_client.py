"""``HtEvents``: the Python port of Hightouch's Node.js SDK client.

It validates a message on the calling thread (so programming errors raise where they are made),
encodes it once, and hands it to the shared transport; it never waits on the network.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

from typing_extensions import TypedDict, Unpack

from ._diagnostics import enable_debug_output, log, warn_limited
from ._encoding import MAX_MESSAGE_BYTES, dumps
from ._flushing import off_the_loop
from ._identity import Identity
from ._lifecycle import notice_fork, unforked, watch_sigterm
from ._message import CURRENT_IDENTITY, MessageFields, build_message, encode_message
from ._redact import redact_write_key
from ._settings import WRITE_KEY_ENV, Settings
from ._time import Timestamp
from ._tracing import trace_context
from ._transport import Envelope, Outlet, Queueable, acquire, release
from ._transport.ledger import Ledger
from .errors import MessageTooLargeError, Reason
from .typing import BeforeSend, Callback, ErrorHandler, Message

if TYPE_CHECKING:  # requests is imported only where it is used (see _transport/channel.py)
    import requests

__all__ = ["ClientSettings", "HtEvents"]


class ClientSettings(TypedDict, total=False):
    """The keyword settings of :class:`HtEvents` (defaults in the README's settings table),
    and the seed's camelCase aliases (times in milliseconds there)."""

    host: str
    path: str
    max_retries: int
    max_events_in_batch: int
    flush_interval: float
    http_request_timeout: float
    disable: bool
    max_queue_size: int
    gzip: bool
    on_error: Optional[ErrorHandler]
    shutdown_timeout: float
    spool_path: Optional[str]
    spool_max_bytes: int
    debug: bool
    retry_backoff: float
    retry_backoff_max: float
    retry_after_max: float
    block_on_full: float
    before_send: Optional[BeforeSend]
    context: Optional[Mapping[str, Any]]
    properties: Optional[Mapping[str, Any]]
    trust_env: bool
    proxies: Optional[Mapping[str, str]]
    verify: Union[bool, str]
    cert: Optional[Union[str, tuple[str, str]]]
    session: Optional[requests.Session]
    sync_mode: bool
    capture_trace_context: bool
    # The Node SDK's names (see _settings.SEED_NAMES): a configuration ports as a copy.
    writeKey: str
    maxRetries: int
    maxEventsInBatch: int
    flushInterval: float
    httpRequestTimeout: float


class HtEvents:
    """Send Hightouch Events: ``identify``, ``track``, ``page``, ``screen``, ``group``, ``alias``.

    Each call checks the message, returns it normalized (with its ``messageId``), and queues it
    for the background thread, which batches and sends it. Clients built with the same
    transport settings share one queue, one thread and one connection pool; ``stats()`` counts
    for that shared transport. Queued messages are delivered at interpreter exit, within
    ``shutdown_timeout``.

    >>> htevents = HtEvents(write_key="...")
    >>> htevents.track(user_id="123", event="Order completed", properties={"total": 29.99})
    """

    def __init__(self, write_key: Optional[str] = None, **settings: Unpack[ClientSettings]):
        self._start(Settings.create(write_key=write_key, **settings))

    def _start(self, settings: Settings) -> None:
        self.settings = settings
        if not settings.disable:
            watch_sigterm()
        if self.settings.debug:
            enable_debug_output()
        self._closed = False
        self._closed_cleanly = True  # what close() returned, for a second call
        self._close_lock = threading.RLock()
        self._on_error = self.settings.on_error
        self._transport: Outlet = acquire(self.settings)

    @property
    def _ledger(self) -> Ledger:
        # Looked up each time: a forked child's transport starts a new ledger.
        return self._transport.ledger

    def count_dropped(self, reason: Reason, why: str) -> None:
        """Count a message a front-end did not hand over, with a rate-limited warning: what
        it does with an event logged on the transport thread."""
        self._ledger.drop([], reason, why)

    def count_rejected(self, reason: Reason = Reason.INVALID) -> None:
        """Count a message as rejected: what a front-end does with a logged payload it could
        not even read."""
        self._ledger.reject(reason)

    def __repr__(self) -> str:
        state = " disabled" if self.settings.disable else (" closed" if self._closed else "")
        key = redact_write_key(self.settings.write_key)
        return f"<HtEvents write_key={key!r} url={self.settings.url!r}{state}>"

    # -- the messages -------------------------------------------------------------------------

    def emit(
        self,
        type: str,
        message: Optional[Mapping[str, Any]] = None,
        /,
        *,
        callback: Optional[Callback] = None,
        event_default: Optional[str] = None,
        timestamp_default: Optional[Timestamp] = None,
        **fields: Any,
    ) -> Message:
        """Build, check and queue a message of any ``type``: what the six calls do.

        Raises ``ValueError``/``TypeError`` naming the bad field; the message is then counted
        as ``rejected`` and not queued.
        """
        return self._submit(type, message, fields, callback, event_default, timestamp_default)

    def _submit(
        self,
        type: str,
        message: Optional[Mapping[str, Any]],
        fields: Mapping[str, Any],
        callback: Optional[Callback],
        event_default: Optional[str] = None,
        timestamp_default: Optional[Timestamp] = None,
    ) -> Message:
        built, envelope = self.prepare(
            type,
            message,
            fields,
            callback=callback,
            event_default=event_default,
            timestamp_default=timestamp_default,
            trace=trace_context() if self.settings.capture_trace_context else None,
        )
        if envelope is not None:
            self.enqueue(envelope)
        return built

    def prepare(
        self,
        type: str,
        message: Optional[Mapping[str, Any]],
        fields: Mapping[str, Any],
        *,
        callback: Optional[Callback] = None,
        event_default: Optional[str] = None,
        timestamp_default: Optional[Timestamp] = None,
        identity: Optional[Identity] = CURRENT_IDENTITY,
        trace: Optional[Mapping[str, str]] = None,
    ) -> tuple[Message, Optional[Envelope]]:
        """Build, check and encode a message; count it as ``rejected`` when that fails.

        This is the work the calling thread does for a direct call, and the transport thread
        does for a logged event (see :mod:`htevents_logging._frontends.shared`). The client's
        ``context`` and ``properties`` are merged in, then ``before_send`` runs; the envelope is
        ``None`` when the hook dropped the message (counted and reported here). ``trace`` is the
        OpenTelemetry span the message was made in (``capture_trace_context``), read where
        the call was made: it goes under everything the caller set in ``context``.
        """
        settings = self.settings
        try:
            if callback is not None and not callable(callback):
                raise TypeError("callback must be callable as callback(error, message)")
            built = build_message(
                type,
                message,
                fields,
                event_default=event_default,
                timestamp_default=timestamp_default,
                identity=identity,
                context_defaults=settings.context
                if trace is None
                else {**trace, **(settings.context or {})},
                properties_defaults=settings.properties,
            )
            if settings.before_send is None:
                data = encode_message(built)
            else:
                changed = self._before_send(built, callback)
                if changed is None:
                    return built, None
                built = changed
                data = dumps(built)
            if len(data) > MAX_MESSAGE_BYTES:
                raise MessageTooLargeError(
                    f"{type}: the message is {len(data):,} bytes as JSON; the limit is "
                    f"{MAX_MESSAGE_BYTES:,} bytes: send less in properties or traits"
                )
        except MessageTooLargeError:
            self.count_rejected(Reason.OVERSIZE)
            raise
        except Exception:  # a ValueError or TypeError naming the field, or a payload's own bug
            self.count_rejected()
            raise
        keep = callback is not None or self._on_error is not None
        return built, Envelope(data, built if keep else None, callback, self._on_error)

    def _before_send(self, built: Message, callback: Optional[Callback]) -> Optional[Message]:
        """Run ``before_send``: the message to send, or ``None`` when it dropped the message
        (reason ``before_send``) or raised (reason ``before_send_error``, with a rate-limited
        WARNING carrying the traceback). A hook that fails sends nothing: it may have been
        there to redact."""
        hook = self.settings.before_send
        assert hook is not None
        try:
            result = hook(built)
            if result is not None and not isinstance(result, Mapping):
                raise TypeError(
                    f"before_send must return the message or None, not {type(result).__name__}"
                )
        except Exception as error:
            warn_limited(
                "before_send_error",
                "htevents-logging: before_send raised %s: %s; the message was not sent",
                type(error).__name__,
                error,
                exc_info=True,
            )
            why = f"before_send raised {type(error).__name__}"
            told = Envelope(b"", built, callback, self._on_error)
            self._ledger.drop([told], Reason.BEFORE_SEND_ERROR, why, warn=False)
            return None
        if result is None:
            # A filter, on purpose: no warning, and no on_error (it is not a failure).
            told = Envelope(b"", built, callback, None)
            self._ledger.drop([told], Reason.BEFORE_SEND, "before_send returned None", warn=False)
            return None
        return result if type(result) is dict else dict(result)

    def enqueue(self, item: Queueable) -> None:
        """Hand an encoded message, or a logged event still to be built, to the transport.

        Never waits: a full queue or a closed client drops the item, counts and reports it.
        A disabled client builds it (so mistakes are reported) and sends nothing.
        """
        if not unforked[0]:  # (notice_fork's own first test, without the call)
            notice_fork()
        if self._closed:
            self._transport.drop(item, Reason.AFTER_CLOSE, "this client was closed")
        else:
            self._transport.submit(item)

    def identify(
        self,
        message: Optional[Mapping[str, Any]] = None,
        /,
        callback: Optional[Callback] = None,
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Say who a user is and what they are like (``traits``)."""
        return self._submit("identify", message, fields, callback)

    def track(
        self,
        message: Optional[Mapping[str, Any]] = None,
        /,
        callback: Optional[Callback] = None,
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Record an action a user took (``event``, required) and its ``properties``."""
        return self._submit("track", message, fields, callback)

    def page(
        self,
        message: Optional[Mapping[str, Any]] = None,
        /,
        callback: Optional[Callback] = None,
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Record a web page view (``name``, ``category``, ``properties``)."""
        return self._submit("page", message, fields, callback)

    def screen(
        self,
        message: Optional[Mapping[str, Any]] = None,
        /,
        callback: Optional[Callback] = None,
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Record a mobile screen view (``name``, ``category``, ``properties``)."""
        return self._submit("screen", message, fields, callback)

    def group(
        self,
        message: Optional[Mapping[str, Any]] = None,
        /,
        callback: Optional[Callback] = None,
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Tie a user to a group or account (``group_id``, required) with its ``traits``."""
        return self._submit("group", message, fields, callback)

    def alias(
        self,
        message: Optional[Mapping[str, Any]] = None,
        /,
        callback: Optional[Callback] = None,
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Merge two identities: ``previous_id`` becomes ``user_id`` (both required)."""
        return self._submit("alias", message, fields, callback)

    # -- lifecycle ----------------------------------------------------------------------------

    def _timeout(self, timeout: Optional[float]) -> float:
        return self.settings.shutdown_timeout if timeout is None else timeout

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send what is queued now; True when all of it was delivered or failed for good.

        Returns by ``timeout`` seconds (default: ``shutdown_timeout``) even when the server
        hangs; the messages not settled by then stay queued and go on being sent.
        """
        notice_fork()
        return self._transport.flush(self._timeout(timeout))

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout`` (default: ``shutdown_timeout``) and let go of the transport.

        Later calls still validate and return their message, but nothing is sent: they count
        as ``dropped`` (reason ``after_close``). The shared thread stops when its last user
        closes. Returns True when everything was delivered or failed for good in time, False
        when the deadline cut any message off (it failed with reason ``shutdown_timeout``) or
        the spool still keeps some. Idempotent: a second call returns what the first did.
        """
        notice_fork()
        with self._close_lock:
            if self._closed:
                return self._closed_cleanly
            self._closed = True
            self._closed_cleanly = release(self._transport, self._timeout(timeout))
            return self._closed_cleanly

    async def aflush(self, timeout: Optional[float] = None) -> bool:
        """:meth:`flush` for asyncio code: ``await client.aflush()`` waits in a worker thread,
        so the event loop goes on serving requests meanwhile (``flush`` would block it)."""
        return await off_the_loop(self.flush, timeout)

    async def aclose(self, timeout: Optional[float] = None) -> bool:
        """:meth:`close` for asyncio code (a FastAPI lifespan, an ``async with``): waits in a
        worker thread, without blocking the event loop."""
        return await off_the_loop(self.close, timeout)

    def stats(self) -> dict[str, Any]:
        """Counts since start, for this client's (shared) transport.

        ``enqueued``, ``sent``, ``failed``, ``dropped`` (queue full, after close), ``rejected``
        (invalid or oversize), ``retries``, ``batches``, ``queue_depth``, the splits
        ``failed_by_reason``, ``dropped_by_reason`` and ``rejected_by_reason``, and the health
        figures ``last_success_at`` and ``last_failure_at`` (wall-clock seconds, or ``None``)
        and ``consecutive_failures`` (failed requests since the last delivery).
        """
        notice_fork()
        return self._transport.snapshot()

    def healthy(self, max_age: Optional[float] = None) -> bool:
        """Whether delivery works, for a health check or an alert.

        False when the last request to the server failed (``stats()["consecutive_failures"]``
        is above 0: the server is down, refuses the key, or times out), until a request
        succeeds again. With ``max_age`` (seconds), also False when messages are waiting and
        nothing was delivered for longer than that. A client that has nothing to send is
        healthy.
        """
        notice_fork()
        transport = self._transport
        return transport.ledger.healthy(transport.pending() > 0, max_age)

    def __enter__(self) -> HtEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> HtEvents:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def keyless_client(front_end: str, settings: ClientSettings) -> HtEvents:
    """A client for a front-end configured without a write key: it sends nothing, counts each
    event as dropped (``no_write_key``), and the first one made says so in one ERROR.

    ``HtEvents()`` without a key raises, since there the missing key is a programming error;
    a handler in a ``LOGGING`` dict is configured by every ``manage.py`` command and every
    test run, where a missing key must not stop the application from starting.
    """
    client = HtEvents.__new__(HtEvents)
    client._start(Settings.create(write_key=None, require_key=False, **settings))
    global _told_no_key
    if not _told_no_key:
        _told_no_key = True
        log(
            logging.ERROR,
            "htevents-logging: %s has no write key (pass write_key=..., or set the %s "
            "environment variable): it sends nothing, and counts each event as dropped "
            "(reason no_write_key). Where nothing is to be sent (tests, CI), say so with "
            'disable=True, e.g. "disable": not os.environ.get("%s")',
            front_end,
            WRITE_KEY_ENV,
            WRITE_KEY_ENV,
        )
    return client


_told_no_key = False

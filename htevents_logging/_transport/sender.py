"""The HTTP request, the retry policy and its backoff: one batch in, one outcome out."""

from __future__ import annotations

import base64
import email.utils
import gzip
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Optional
from urllib.parse import urljoin, urlsplit

from .._diagnostics import log
from .._redact import redact_write_key
from .._settings import Settings
from .._time import wire_now
from .._version import __version__
from ..errors import DeliveryError, Reason
from .channel import Answer, Request, open_channel
from .clock import MONOTONIC, Clock, Closing
from .envelope import Envelope
from .ledger import Ledger

__all__ = ["Sender", "Started", "is_retryable_status", "parse_retry_after"]

USER_AGENT = f"htevents-logging/{__version__}"


#: The reason of a refusal, by the class of its status (a final 1xx is refused like a 4xx).
_REFUSED = {3: Reason.HTTP_3XX, 4: Reason.HTTP_4XX, 5: Reason.HTTP_5XX}


#: Redirects followed in one attempt (a 307 or 308 to the same scheme, host and port only).
MAX_HOPS = 3


def _same_origin(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    return (a.scheme.lower(), a.hostname, a.port or _DEFAULT_PORTS.get(a.scheme.lower())) == (
        b.scheme.lower(),
        b.hostname,
        b.port or _DEFAULT_PORTS.get(b.scheme.lower()),
    )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx (except 501 Not Implemented and 505 HTTP Version) may succeed later."""
    return status in (408, 429) or (500 <= status < 600 and status not in (501, 505))


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or ``None``.

    A value that cannot be read (garbage, a date far out of range, NaN) counts as absent: the
    backoff applies, and the batch is never failed over a header.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if seconds == seconds else None


#: At most this much of an answer's body is read: the status decides the outcome, and the
#: body is only quoted in errors. A server that answers without end cannot grow the process.
MAX_ANSWER_BYTES = 8192


def _finish(response: Answer) -> str:
    """Read an answer (at most ``MAX_ANSWER_BYTES`` of it) and close it; return the start of
    its body, for errors.

    Reading a (short) answer to its end is what puts the connection back in the pool for the
    next batch: closing an answer that was not read closes its connection, and every batch
    would then pay for a new one (and a TLS handshake). A longer answer is cut off, and its
    connection closed. Reading can fail (the connection cut mid-body): the status alone
    decides, and the body is left out.
    """
    try:
        raw = response.raw
        try:
            data = raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
        except TypeError:  # a raw stream of another kind (a custom adapter's)
            data = raw.read(MAX_ANSWER_BYTES + 1)
        text = bytes(data[:MAX_ANSWER_BYTES]).decode(response.encoding or "utf-8", "replace")
        return text[:200].strip()
    except Exception:
        return "(the body was cut off)"
    finally:
        response.close()


class Started:
    """A batch's first attempt as :meth:`Sender.start` left it: its request sent (or failed
    to be, or not begun because the close deadline had passed), its answer not yet read."""

    __slots__ = ("batch", "body", "failed", "request", "timeout")

    def __init__(
        self,
        batch: Sequence[Envelope],
        body: bytes = b"",
        timeout: float = 0.0,
        request: Optional[Request] = None,
        failed: Optional[Exception] = None,
    ) -> None:
        self.batch = batch
        self.body = body
        self.timeout = timeout
        self.request = request
        self.failed = failed

    @property
    def begun(self) -> bool:
        """Whether the first attempt was made (sent, or failed to be)."""
        return self.request is not None or self.failed is not None

    def answer(self) -> Answer:
        """The answer to the request (raises what sending it raised)."""
        if self.failed is not None:
            raise self.failed
        assert self.request is not None
        return self.request.answer()


class Sender:
    """Sends batches over one pooled ``requests.Session``, one at a time, retrying as
    ``docs/wire.md`` says.

    ``closing`` is the transport's close signal: its deadline (a ``clock`` time) bounds every
    attempt and every wait once it is set. Each retry is counted in ``ledger``. ``clock`` and
    ``rng`` (the backoff's jitter) are there for tests.
    """

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        closing: Closing,
        clock: Clock = MONOTONIC,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._closing = closing
        self._clock = clock
        self._rng = rng or random.Random()
        self._url = settings.url
        key = settings.write_key or ""
        self._key = key
        self._tail = b'","writeKey":' + json.dumps(key).encode() + b"}"
        # The key as the Authorization header carries it: what an echoing server may show.
        self._credentials = base64.b64encode(f"{key}:".encode()).decode("ascii")
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": "Basic " + self._credentials,
            "User-Agent": USER_AGENT,
        }
        if settings.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._channel = open_channel(self._url, self._headers, settings)
        if settings.verify is False:
            log(
                logging.WARNING,
                "htevents-logging: verify=False: TLS certificates are NOT verified for %s; "
                "anyone on the network path can read the write key and the events",
                self._url,
            )

    def envelope_bytes(self) -> int:
        """Bytes a request body spends besides its messages and their commas."""
        return len(self.body([]))

    def body(self, batch: Sequence[Envelope]) -> bytes:
        """The request body, with a fresh ``sentAt``."""
        return b"".join(
            (
                b'{"batch":[',
                b",".join([envelope.data for envelope in batch]),
                b'],"sentAt":"',
                wire_now().encode(),
                self._tail,
            )
        )

    def close(self) -> None:
        """Close the connection pool (a ``session`` of the user's is left open)."""
        self._channel.close()

    def _backoff(self, attempt: int) -> float:
        settings = self._settings
        ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2.0 ** (attempt - 1))
        jitter: float = self._rng.uniform(0.5, 1.0)
        return ceiling * jitter

    def _clean(self, text: str) -> str:
        """``text`` from the server or the network, with the write key taken out, raw or as
        the base64 credentials of the Authorization header (a server may echo either back). A
        key too short to replace safely takes the whole text with it."""
        key = self._key
        if not key:
            return text
        token = self._credentials
        if token in text:
            text = text.replace(token, "<credentials>")
        if key not in text:
            return text
        if len(key) >= 6:
            return text.replace(key, redact_write_key(key))
        return "(left out: it contains the write key)"

    def send(self, batch: Sequence[Envelope]) -> Optional[DeliveryError]:
        """Deliver one batch; return ``None`` on success, or the error that ended it.

        Once ``close()`` has set a deadline, no attempt starts past it and no backoff wait
        ends past it: what cannot be delivered by then fails at once with reason
        ``shutdown_timeout``. Until then ``Retry-After`` and the backoff are honoured, even while
        closing. Never raises: a bug of ours fails the batch with reason ``internal_error``
        (logged with its traceback), so that it is still counted and reported rather than lost.
        """
        return self.finish(self.start(batch))

    def start(self, batch: Sequence[Envelope]) -> Started:
        """Send ``batch``'s first request now and return without reading its answer:
        :meth:`finish` reads it (and retries as :meth:`send` does). In between, the thread
        can build the next batch while the server reads this one. Never raises (what went
        wrong is raised again by :meth:`finish`, as its first attempt's failure)."""
        try:
            attempt = self._next_attempt(batch)
            if attempt is None:
                return Started(batch)  # past the close deadline: finish() says so
            body, timeout = attempt
            try:
                request = self._channel.begin(body, timeout)
            except Exception as exc:  # the request could not be sent: a failed first attempt
                return Started(batch, body, timeout, failed=exc)
            return Started(batch, body, timeout, request)
        except Exception:  # a bug of ours: finish() meets it again and reports it
            return Started(batch)

    def finish(self, started: Started) -> Optional[DeliveryError]:
        """Read the answer to :meth:`start`'s request and see the batch through, as
        :meth:`send` does; return ``None`` on success, or the error that ended it."""
        try:
            return self._deliver(started.batch, started)
        except Exception as exc:
            log(logging.ERROR, "htevents-logging: internal error sending a batch", exc_info=True)
            return DeliveryError.internal(len(started.batch), exc)

    def _next_attempt(self, batch: Sequence[Envelope]) -> Optional[tuple[bytes, float]]:
        """The body and timeout of the next attempt, or ``None`` past the close deadline."""
        now = self._clock.now()
        deadline = self._closing.deadline
        if deadline is not None and now >= deadline:
            return None
        timeout = self._settings.http_request_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        body = self.body(batch)
        if self._settings.gzip:
            body = gzip.compress(body, compresslevel=6)
        return body, timeout

    def _deliver(self, batch: Sequence[Envelope], started: Started) -> Optional[DeliveryError]:
        settings = self._settings
        count = len(batch)
        attempts = 0
        status: Optional[int] = None
        detail = ""
        rushed = False  # whether close() already cut a backoff of this batch short

        def too_late() -> DeliveryError:
            return DeliveryError(
                f"{count} message(s) not delivered before the shutdown deadline after "
                f"{attempts} attempt(s){': ' + detail if detail else ''}; raise "
                "shutdown_timeout or configure spool_path to keep them",
                reason=Reason.SHUTDOWN_TIMEOUT,
                status=status,
                attempts=attempts,
            )

        begun: Optional[Started] = started if started.begun else None
        while True:
            if begun is not None:  # the first attempt, sent by start()
                body, timeout = begun.body, begun.timeout
            else:
                attempt = self._next_attempt(batch)
                if attempt is None:
                    return too_late()
                body, timeout = attempt
            first, begun = begun, None
            attempts += 1
            retry_after: Optional[float] = None
            location: Optional[str] = None
            try:
                response, location = self._exchange(body, timeout, first)
                status = response.status_code
                text = _finish(response)
            except Exception as exc:  # a network error (or anything else): one failed attempt
                status = None
                detail = self._clean(f"{type(exc).__name__}: {exc}")
                retryable = True
            else:
                if 200 <= status < 300:
                    log(logging.DEBUG, "delivered %d message(s) (HTTP %d)", count, status)
                    return None
                detail = f"HTTP {status}" + (f" {self._clean(text)!r}" if text else "")
                retryable = is_retryable_status(status)
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if not retryable:
                assert status is not None
                if location is not None:
                    detail += (
                        f"; redirected to {self._clean(location)!r}, which is not followed: only "
                        f"a 307 or 308 to the same scheme, host and port is, {MAX_HOPS} times at "
                        "most, so the key never goes to another host"
                    )
                return DeliveryError(
                    f"{count} message(s) refused by {self._url}: {detail}; a "
                    f"{status // 100}xx answer means the request itself is wrong (check the "
                    "write key, host and path), so it is not retried",
                    reason=_REFUSED.get(status // 100, Reason.HTTP_4XX),
                    status=status,
                    attempts=attempts,
                )
            if attempts > settings.max_retries:
                return DeliveryError(
                    f"{count} message(s) not delivered to {self._url} after {attempts} "
                    f"attempt(s); last: {detail}",
                    reason=Reason.RETRIES_EXHAUSTED,
                    status=status,
                    attempts=attempts,
                )
            if retry_after is not None:
                delay = min(retry_after, settings.retry_after_max)
            else:
                delay = self._backoff(attempts)
            log(logging.DEBUG, "attempt %d failed (%s); retrying in %.2fs", attempts, detail, delay)
            self._ledger.retried()
            cut_short = self._wait(delay, rush=retry_after is None and not rushed)
            if cut_short is None:
                return too_late()
            rushed = rushed or cut_short

    def _exchange(
        self, body: bytes, timeout: float, started: Optional[Started] = None
    ) -> tuple[Answer, Optional[str]]:
        """One attempt: POST ``body`` (or read the answer to ``started``'s request), following
        a 307 or 308 to the same scheme, host and port (``MAX_HOPS`` at most, same body and
        auth). Returns the final answer, and the ``Location`` of a redirect that was not
        followed (None when there was none)."""
        url: Optional[str] = None
        for hop in range(MAX_HOPS + 1):
            if hop == 0 and started is not None:
                response = started.answer()
            else:
                response = self._channel.send(body, timeout, url)
            if not 300 <= response.status_code < 400:
                return response, None
            location = response.headers.get("Location") or ""
            target = urljoin(url or self._url, location)
            if (
                response.status_code not in (307, 308)
                or not _same_origin(target, self._url)
                or hop == MAX_HOPS
            ):
                return response, location
            _finish(response)
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, delay: float, rush: bool) -> Optional[bool]:
        """Wait ``delay`` seconds before the next attempt, or less once ``close()`` is called.

        Returns ``None`` when that attempt would start past the close deadline (then there is
        no point waiting at all), else whether the wait was cut short. With ``rush`` (a backoff
        of our own, the first one while closing) there is no wait once closing: one more
        attempt now beats failing the batch unseen. After it, and for a server's
        ``Retry-After``, waits are kept, as long as they end before the deadline: a server in
        trouble is not hammered, even at exit. ``close()`` sets its deadline, then
        ``closing``, which wakes a wait already under way to look at it.
        """
        until = self._clock.now() + delay
        while True:
            deadline = self._closing.deadline
            if deadline is not None:
                if rush:
                    return True
                if until >= deadline:
                    return None
            left = until - self._clock.now()
            if left <= 0:
                return False
            if deadline is None:
                self._closing.wait(left)
            else:
                self._clock.sleep(left)  # ends before the deadline (checked above)

"""Time on the wire: ISO-8601 parsing, and the one timestamp format (``timestamp``, ``sentAt``).

Hightouch takes UTC times with milliseconds and a ``Z``. Every time the package sends, a
message's ``timestamp`` and a batch's ``sentAt`` alike, is formatted here, so the two can never
drift apart.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Optional, Union

__all__ = ["Timestamp", "format_timestamp", "wire_now"]

#: A time as a caller may give it: a ``datetime`` or ``date``, an ISO-8601 string, or seconds
#: since the epoch (as in ``LogRecord.created``).
Timestamp = Union[_dt.datetime, str, float, int]

# Epoch seconds the wire can carry: years 1 to 9999.
_EPOCH_RANGE = (-62_135_596_800, 253_402_300_800)
# The formatted second of the last epoch timestamp: log records come many per second.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")
# The same for the last millisecond: (milliseconds since the epoch, the whole text).
_last_milli: tuple[int, str] = (0, "1970-01-01T00:00:00.000Z")


def _out_of_range(value: object) -> ValueError:
    return ValueError(f"timestamp {value!r} is out of range (years 1 to 9999, UTC)")


# What ``datetime.fromisoformat`` takes only from Python 3.11: a fraction of any length or after
# a comma, offsets without a colon or minutes, and the basic format without separators.
_ISO_8601 = re.compile(
    r"(\d{4})-?(\d{2})-?(\d{2})"
    r"(?:[T ](\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?",
    re.IGNORECASE,
)


def _parse_iso_8601(text: str) -> _dt.datetime:
    """Parse an ISO-8601 time the same way on every supported Python."""
    if text.endswith(("Z", "z")):
        try:
            return _dt.datetime.fromisoformat(text[:-1] + "+00:00")
        except ValueError:
            pass
    else:
        try:
            return _dt.datetime.fromisoformat(text)
        except ValueError:
            pass
    match = _ISO_8601.fullmatch(text)
    if match is None:
        raise ValueError(text)
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz: Optional[_dt.tzinfo] = None
    if zone and zone in "Zz":
        tz = _dt.timezone.utc
    elif zone:
        digits = zone[1:].replace(":", "")
        offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        tz = _dt.timezone(-offset if zone[0] == "-" else offset)
    return _dt.datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        int((fraction or "0")[:6].ljust(6, "0")),
        tzinfo=tz,
    )


# Below this many seconds from the epoch, a float of seconds converts to whole microseconds
# exactly (the relative error of two roundings, times 2e15 µs, stays under half a µs).
_EXACT_SECONDS = 2e9


def _format_epoch(value: float) -> str:
    """Seconds since the epoch in the wire format (the last millisecond's text is kept: log
    records come many per millisecond in a burst, and formatting one costs about 0.5 µs)."""
    global _last_second, _last_milli
    if not _EPOCH_RANGE[0] <= value < _EPOCH_RANGE[1]:  # also False for NaN
        raise _out_of_range(value)
    # Whole microseconds first: 1704164645.678 is 1704164645.67799997... as a float, and
    # its millisecond is 678, as the Node SDK (which takes milliseconds) would send.
    millis = round(value * 1_000_000) // 1000
    cached_milli, formatted = _last_milli
    if cached_milli == millis:
        return formatted
    seconds, milli = divmod(millis, 1000)
    cached_second, text = _last_second
    if cached_second != seconds:
        t = time.gmtime(seconds)
        text = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _last_second = (seconds, text)
    formatted = f"{text}.{milli:03d}Z"
    _last_milli = (millis, formatted)
    return formatted


def format_timestamp(value: Timestamp) -> str:
    """Format a time as the wire wants it: UTC, milliseconds, ``Z``.

    Accepts an aware ``datetime`` (its instant is kept), a naive one (local time, as everywhere
    in Python: ``datetime.now()`` is the current instant), an ISO-8601 string (without an
    offset it is UTC, as the API reads it), a ``date`` (midnight UTC), or seconds since the
    epoch (as in ``LogRecord.created``). Raises ``ValueError`` for a time out of range and
    ``TypeError`` for anything else.
    """
    if type(value) is float or type(value) is int:  # LogRecord.created, time.time()
        return _format_epoch(value)
    if isinstance(value, bool):
        raise TypeError("timestamp must be a datetime, an ISO-8601 string or epoch seconds")
    if isinstance(value, _dt.datetime) and value.tzinfo is not None:
        # An aware datetime (a loguru record's time, say) by way of its epoch seconds: about
        # twice as fast as converting it to UTC (more for a subclass, whose astimezone builds
        # an instance of the subclass). Only where a float keeps every microsecond through the
        # arithmetic below (to 2033); the datetime path is exact for the rest.
        try:
            seconds = value.timestamp()
        except (OverflowError, ValueError, OSError):
            raise _out_of_range(value) from None
        if -_EXACT_SECONDS < seconds < _EXACT_SECONDS:
            value = seconds
    if isinstance(value, (int, float)):
        return _format_epoch(value)
    if isinstance(value, str):
        try:
            value = _parse_iso_8601(value.strip())
        except ValueError:
            raise ValueError(
                f"timestamp {value!r} is not an ISO-8601 time such as '2026-11-29T15:00:06.100Z'"
            ) from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)  # text without an offset is UTC
    if isinstance(value, _dt.datetime):
        try:
            value = value.astimezone(_dt.timezone.utc)  # a naive one is local time
        except (OverflowError, ValueError, OSError):
            raise _out_of_range(value) from None
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
        )
    if isinstance(value, _dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T00:00:00.000Z"
    raise TypeError(
        "timestamp must be a datetime, an ISO-8601 string or epoch seconds, "
        f"not {type(value).__name__}"
    )


def wire_now() -> str:
    """The current time in the wire format (a batch's ``sentAt``)."""
    return format_timestamp(time.time())

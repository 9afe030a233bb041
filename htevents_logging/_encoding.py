"""One JSON encoder for everything the package sends, and the size limits it checks.

Users put arbitrary Python values into ``properties`` and ``traits``. Analytics SDKs commonly
turn what they cannot encode into ``null`` or drop it; here every value is encoded, by the most
faithful JSON form there is, and only as a last resort by its ``repr``:

===================  ===============================================
value                JSON
===================  ===============================================
datetime             UTC, milliseconds, ``Z``, as ``timestamp`` (naive: local time)
date, time           ISO-8601 string (``isoformat()``)
Decimal              number when finite, else its string (``"NaN"``)
float NaN/Infinity   string (``"NaN"``, ``"Infinity"``): JSON has no such numbers
UUID                 string
Enum                 its ``value``, encoded in turn
set, frozenset       array (sorted when the items allow it)
tuple, list          array
bytes, bytearray     UTF-8 text when valid, else base64 text
NumPy number, array  its ``tolist()``, encoded in turn: a number, a bool, nested arrays
                     (masked entries: ``null``, as they have no value)
NumPy datetime64     UTC, milliseconds, ``Z`` (``NaT``: ``"NaT"``)
other buffer         its bytes, as ``bytes`` (``memoryview``, ``array.array``, ``mmap``)
dataclass instance   object of its fields
other Mapping        object
anything else        its ``repr()``
===================  ===============================================

Non-string keys become strings, and reference cycles become the string ``"<cycle>"``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import itertools
import json
import math
import sys
import uuid
from collections.abc import Mapping
from typing import Any

from ._time import format_timestamp
from .errors import MessageTooLargeError

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "bounded_dict",
    "buffer_bytes",
    "dumps",
    "is_numpy_value",
    "to_jsonable",
]

#: The largest message the API accepts, as compact UTF-8 JSON.
MAX_MESSAGE_BYTES = 32_768
#: A request body must stay under this many bytes, the envelope included.
MAX_BATCH_BYTES = 500_000


def bounded_dict(value: Mapping[Any, Any]) -> dict[Any, Any]:
    """``dict(value)``, reading at most ``MAX_MESSAGE_BYTES`` entries: a mapping with more
    cannot fit in a message anyway, and one whose iteration never ends would otherwise grow
    the process until it runs out of memory. Raises ``MessageTooLargeError`` for it."""
    out = dict(itertools.islice(value.items(), MAX_MESSAGE_BYTES + 1))
    if len(out) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"a {type(value).__name__} with more than {MAX_MESSAGE_BYTES:,} entries cannot fit "
            f"in a message of at most {MAX_MESSAGE_BYTES:,} bytes"
        )
    return out


def _bytes_to_str(value: bytes | bytearray) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def _default(value: Any) -> Any:
    """Map a value ``json`` does not know to one it does (the fast path's fallback)."""
    if isinstance(value, _dt.datetime):
        try:
            return format_timestamp(value)  # UTC, milliseconds, "Z": as the timestamp is
        except ValueError:
            return value.isoformat()  # out of range in UTC (year 1 or 9999): as it is
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            pass
        return items
    if isinstance(value, (bytes, bytearray)):
        return _bytes_to_str(value)
    if is_numpy_value(value):
        if value.dtype.kind == "M":  # datetime64: UTC (as NumPy reads it), milliseconds, "Z"
            numpy = sys.modules["numpy"]
            return numpy.datetime_as_string(value, unit="ms", timezone="UTC").tolist()
        return value.tolist()  # np.int64(3) -> 3, an array -> nested lists
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return bounded_dict(value)
    exported = buffer_bytes(value)
    if exported is not None:
        return _bytes_to_str(exported)
    return repr(value)


def is_numpy_value(value: Any) -> bool:
    """Whether ``value`` is a NumPy number or array, of a subclass too (a masked array, a
    record array); False at once where NumPy was never imported (this never imports it).

    Why it matters beyond encoding: NumPy's values export the buffer protocol, so ``marshal``
    writes them as their raw bytes (``np.float64(29.99)`` as 8 bytes), which is why a logged
    payload is checked for them before it is frozen (see ``_frontends/snapshot.py``)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic))


def buffer_bytes(value: Any) -> bytes | None:
    """The bytes of an object that exports the buffer protocol (as they are now), else
    ``None``. It is sent as ``bytes`` are: ``marshal`` (which freezes a logged payload) writes
    such an object as its bytes, so every way in sends it alike."""
    try:
        with memoryview(value) as view:
            return view.tobytes()
    except (TypeError, ValueError):  # no buffer, or a released one (a closed mmap)
        return None


_fallback = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
)
# The C encoder behind json.dumps, made once: JSONEncoder.encode builds a new one per call.
# No cycle check (markers=None): a cycle ends in RecursionError, and the slow path takes over.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode: Any = (
    _c_make_encoder(
        None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if _c_make_encoder is not None
    else None
)


def _encode_fast(value: Any) -> str:
    if _c_encode is not None and isinstance(value, dict):
        return "".join(_c_encode(value, 0))
    return _fallback.encode(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return str(key)
    converted = _default(key)
    if converted is None or isinstance(converted, (str, bool, int, float)):
        return _key(converted)  # a UUID's string, a NumPy number's or an Enum's value
    return repr(key)


def to_jsonable(value: Any, _active: frozenset[int] = frozenset()) -> Any:
    """Return a copy of ``value`` made only of JSON types, following the table above.

    This is the slow, thorough path: it is used only when the fast encoder fails on a value
    (a cycle, a non-string key, NaN), so common payloads never pay for it.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if id(value) in _active:
        return "<cycle>"
    active = _active | {id(value)}
    if isinstance(value, Mapping):
        return {_key(k): to_jsonable(v, active) for k, v in bounded_dict(value).items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, active) for v in value]
    return to_jsonable(_default(value), active)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON bytes, never raising for any payload value but
    one that cannot fit in a message (``MessageTooLargeError``, see :func:`bounded_dict`).

    The fast path is the C encoder; anything it refuses goes through :func:`to_jsonable`.
    A lone surrogate (which UTF-8 cannot carry, and which the endpoint refuses, failing the
    whole batch) becomes U+FFFD, the replacement character: one bad character never poisons
    the batch-mates of its message.
    """
    try:
        text = _encode_fast(value)
    except (TypeError, ValueError, RecursionError):
        text = _fallback.encode(to_jsonable(value))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")

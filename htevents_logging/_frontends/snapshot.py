"""A logged payload taken as it is at the call, all the way down.

The logging front-ends build a message on the transport thread, later; the caller may change
its dicts and lists as soon as the logging call returns (a request handler reuses them, a loop
appends to them). So the calling thread takes the payload as it is now, in one of two forms:

* **frozen** by ``marshal`` into one bytes object, when it is made of builtin values only
  (str, numbers, None, bools, bytes, dicts, lists, tuples, sets): about 80 bytes for a small
  payload against about 370 for copies of its dicts, and one object for the garbage collector;
* **copied** otherwise (a ``datetime``, an ``Enum``, a NumPy number... in it): every dict,
  list, tuple and set in it, all the way down, and the mutable buffers (``bytearray``,
  ``memoryview``, ``array.array``, NumPy arrays) as their contents are now. Other objects are
  kept and read when the message is built: the immutable ones (dates and times, ``Decimal``,
  ``UUID``, ``Enum``, NumPy numbers) read the same then, and an object of your own that is
  changed after the call is sent as it is then.

``marshal`` writes any object that exports the buffer protocol as its bytes: NumPy's
``float64(29.99)`` would come back as 8 bytes. So once NumPy is imported, a payload is frozen
only when every key and value in it is of a type marshal writes back as it is.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import marshal
import sys
import uuid
from collections.abc import Mapping
from typing import Any, Union

from .._encoding import MAX_MESSAGE_BYTES, bounded_dict, buffer_bytes, is_numpy_value

__all__ = ["NUMPY", "UNMARSHALLABLE", "copied", "frozen", "loaded_modules"]

#: What ``marshal.dumps`` raises for a payload it cannot write ("unmarshallable object", a dict
#: subclass among them) or one nested too deep (and what a check of one that deep raises).
UNMARSHALLABLE = (ValueError, TypeError, RecursionError)

#: The module whose values marshal misreads, looked up in :data:`loaded_modules`.
NUMPY = "numpy"
loaded_modules = sys.modules

#: The types ``marshal`` writes back exactly as they are (a subclass of one is refused, or
#: written as bytes when it exports the buffer protocol, as NumPy's ``float64`` does).
_FAITHFUL_LEAVES: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes, complex})
_FAITHFUL_COLLECTIONS = frozenset({list, tuple, set, frozenset})

#: Values a copy keeps as they are: they cannot change after the call. (The usual ones by
#: their exact type first, in one set lookup.)
_KEPT_EXACTLY: frozenset[type] = _FAITHFUL_LEAVES | {
    datetime.datetime,
    datetime.date,
    datetime.time,
    decimal.Decimal,
    uuid.UUID,
}
_IMMUTABLE: tuple[type, ...] = tuple(_KEPT_EXACTLY | {datetime.timedelta, enum.Enum, range})


def frozen(payload: dict[Any, Any]) -> Union[bytes, dict[Any, Any]]:
    """The payload as it is now, whatever the caller changes later, in the least memory:
    ``marshal`` bytes when they read back as the payload, else a copy (see the module)."""
    try:
        if NUMPY not in loaded_modules or _marshals_faithfully(payload):
            return marshal.dumps(payload)
    except UNMARSHALLABLE:
        pass
    return copied(payload)


def _marshals_faithfully(value: Any) -> bool:
    """Whether ``marshal`` writes ``value`` back as it is: builtin types only, exactly, all
    the way down, keys included (a NumPy ``str_`` key would come back as bytes)."""
    kind = type(value)
    if kind in _FAITHFUL_LEAVES:
        return True
    if kind is dict:
        return all(map(_marshals_faithfully, value)) and all(
            map(_marshals_faithfully, value.values())
        )
    return kind in _FAITHFUL_COLLECTIONS and all(map(_marshals_faithfully, value))


def copied(payload: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of a payload that ``marshal`` cannot write, all the way down (see the module).

    A payload with more values than a message has bytes (which cannot fit in one, unless a
    ``before_send`` hook takes some out), one that holds itself, and one nested deeper than the
    interpreter can follow, are copied two levels down instead, after at most that many values:
    the rest is read when the message is built, where the cycle is marked ``"<cycle>"`` and the
    size is checked, as for ``track()``."""
    try:
        copy: dict[Any, Any] = _copy(payload, [MAX_MESSAGE_BYTES])
        return copy
    except (_TooMany, RecursionError):
        copy = dict(payload)
        for key, value in copy.items():  # (changing values, not keys, while iterating is safe)
            if type(value) is dict:
                copy[key] = value.copy()
        return copy


class _TooMany(Exception):
    """More values than a message has bytes (or a cycle, which counts its values again)."""


def _copy(value: Any, left: list[int]) -> Any:
    """``value`` as it is now; ``left[0]`` counts down the values the copy may still hold.
    (Plain dicts, lists and the usual values take the short way, with no call of their own:
    this runs on the calling thread.)"""
    kind = type(value)
    if kind is dict:
        left[0] -= len(value)
        if left[0] < 0:
            raise _TooMany
        return {
            key: item if type(item) in _KEPT_EXACTLY else _copy(item, left)
            for key, item in value.items()
        }
    if kind is list:
        left[0] -= len(value)
        if left[0] < 0:
            raise _TooMany
        return [item if type(item) in _KEPT_EXACTLY else _copy(item, left) for item in value]
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, Mapping):  # read through its items(), as the encoder reads it
        return _copy(bounded_dict(value), left)
    if isinstance(value, (list, tuple, set, frozenset)):
        listed = _copy(list(value), left)
        if isinstance(value, list):
            return listed
        return tuple(listed) if isinstance(value, tuple) else frozenset(listed)
    if is_numpy_value(value):
        if value.dtype.kind == "O":  # an array of Python objects: theirs, copied in turn
            return _copy(value.tolist(), left)
        return value.copy()  # the contents now, of its dtype (a NumPy number is itself)
    exported = buffer_bytes(value)  # bytearray, memoryview, array.array, mmap...: the bytes now
    return value if exported is None else exported  # another object: read when it is built

"""The endpoint's rules: what the real ``/v1/batch`` would answer to a request.

A pure function of the request (:func:`judge`), with no sockets, so the rules can be tested,
read and changed in one place. They are the ones ``docs/wire.md`` describes: the path and the
method, the write key (HTTP Basic auth or a ``writeKey`` body field), gzip, the request and
per-message size limits, and each message's ``type`` and ``messageId``.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

from .._encoding import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from .._message import MESSAGE_TYPES
from .._redact import redact_write_key

__all__ = ["Request", "Rules", "Verdict", "error_body", "find_header", "judge"]


def find_header(headers: Sequence[tuple[str, str]], name: str) -> Optional[str]:
    """The value of header ``name`` in ``headers``, matched case-insensitively, or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True)
class Request:
    """A request as read off the wire (the body still gzipped if it was sent so)."""

    method: str
    #: The request target as sent, query string included.
    target: str
    #: Headers in the order received, names as the client spelled them.
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The value of header ``name``, matched case-insensitively, or None."""
        return find_header(self.headers, name)


@dataclass(frozen=True)
class Rules:
    """What a collector enforces: its path, its write key (None: any), and the size limits (a
    body must be under ``max_body_bytes``, as sent and again gunzipped; each message at most
    ``max_message_bytes`` as compact UTF-8 JSON)."""

    path: str = "/v1/batch"
    write_key: Optional[str] = None
    max_body_bytes: int = MAX_BATCH_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass
class Verdict:
    """What the endpoint answers: a status, and either the accepted events or an error that
    says what was wrong (and the decoded document, when it could be decoded)."""

    status: int
    error: Optional[str] = None
    document: Optional[Any] = None
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def error_body(error: str) -> bytes:
    """The JSON body of an error answer: ``{"error": "..."}``."""
    return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")


class _TooLarge(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one or more gzip members, refusing to produce more than ``limit`` bytes."""
    out = bytearray()
    rest = data
    while True:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += decompressor.decompress(rest, limit + 1 - len(out))
        if len(out) > limit:
            raise _TooLarge
        if not decompressor.eof:
            raise ValueError("the gzip stream is truncated")
        rest = decompressor.unused_data
        if not rest:
            return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (encode non-finite numbers as null or a string)")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _basic_auth_user(header: str) -> tuple[Optional[str], Optional[str]]:
    """The user name in an ``Authorization: Basic`` header, or None and why not."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        # Never echo the scheme: a client that sends the bare key would have it printed.
        return None, "the Authorization header is not HTTP Basic auth"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, "the Authorization header's Basic credentials are not valid base64 UTF-8"
    return decoded.partition(":")[0], None


def _check_write_key(rules: Rules, request: Request, document: dict[str, Any]) -> Optional[str]:
    expected = rules.write_key
    if expected is None:
        return None
    problems: list[str] = []
    header = request.header("Authorization")
    if header is not None:
        user, problem = _basic_auth_user(header)
        if user == expected:
            return None
        problems.append(
            problem or f"the Authorization header carries write key {redact_write_key(user)!r}"
        )
    if "writeKey" in document:
        body_key = document["writeKey"]
        if body_key == expected:
            return None
        shown = redact_write_key(body_key if isinstance(body_key, str) else str(body_key))
        problems.append(f'the body\'s "writeKey" is {shown!r}')
    wanted = f"this collector expects write key {redact_write_key(expected)!r}"
    if not problems:
        return (
            "no write key: send Authorization: Basic base64(<write key> + ':') or a"
            f' "writeKey" body field ({wanted})'
        )
    return f"wrong write key: {'; '.join(problems)}, but {wanted}"


def _check_message(rules: Rules, message: Any) -> Optional[str]:
    if not isinstance(message, dict):
        return f"a message must be a JSON object, got a {_json_type(message)}"
    try:
        size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        return "the message contains an unpaired UTF-16 surrogate, which is not valid UTF-8"
    if size > rules.max_message_bytes:
        return (
            f"message is {size:,} bytes as compact UTF-8 JSON, over the "
            f"{rules.max_message_bytes:,}-byte limit per message: trim its properties, traits"
            " or context"
        )
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        return f"type {kind!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
    message_id = message.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return (
            f"{kind} message has no messageId: every message needs a unique string messageId,"
            " the same on every retry"
        )
    return None


def judge(request: Request, rules: Rules = Rules()) -> Verdict:
    """Decide what the real endpoint would answer to ``request``, and which events it accepts.

    >>> judge(Request("GET", "/v1/batch", (), b"")).status
    405
    """
    path = urlsplit(request.target).path
    if path != rules.path:
        return Verdict(404, f"no endpoint at {path!r}: send batches to POST {rules.path}")
    if request.method != "POST":
        return Verdict(
            405,
            f"{request.method} is not allowed on {rules.path}: send batches with POST",
            headers={"Allow": "POST"},
        )

    limit = rules.max_body_bytes
    too_large = (
        "request body is {size} bytes; it must be under the {limit:,}-byte limit per"
        " request: send fewer events per batch"
    )
    body = request.body
    if len(body) >= limit:
        return Verdict(413, too_large.format(size=f"{len(body):,}", limit=limit))

    encoding = (request.header("Content-Encoding") or "").strip().lower()
    if encoding == "gzip":
        try:
            data = _gunzip(body, limit - 1)
        except _TooLarge:
            size = f"over {limit:,} (gunzipped)"
            return Verdict(413, too_large.format(size=size, limit=limit))
        except (zlib.error, ValueError) as exc:
            return Verdict(400, f"body is not valid gzip despite Content-Encoding: gzip ({exc})")
    elif encoding in ("", "identity"):
        data = body
    else:
        return Verdict(415, f"Content-Encoding {encoding!r} is not supported: send gzip or none")

    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        return Verdict(400, f"body is not UTF-8 text: {exc}")
    except ValueError as exc:
        return Verdict(400, f"body is not valid JSON: {exc}")
    if not isinstance(document, dict):
        return Verdict(
            400,
            f'body must be a JSON object like {{"batch": [...]}}, got a {_json_type(document)}',
            document=document,
        )

    auth_error = _check_write_key(rules, request, document)
    if auth_error is not None:
        return Verdict(401, auth_error, document=document)

    if "batch" not in document:
        return Verdict(
            400, 'the body has no "batch": send {"batch": [message, ...]}', document=document
        )
    batch = document["batch"]
    if not isinstance(batch, list):
        return Verdict(
            400, f'"batch" must be a list of messages, got a {_json_type(batch)}', document=document
        )
    for index, message in enumerate(batch):
        problem = _check_message(rules, message)
        if problem is not None:
            return Verdict(400, f"batch[{index}]: {problem}", document=document)
    return Verdict(200, document=document, events=list(batch))

"""Every setting of the client, its default, and the checks made at construction.

Checking here, once, means a typo in a dictConfig dict fails at startup with a message naming
the setting, instead of surfacing later on a background thread.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from ._redact import redact_write_key

if TYPE_CHECKING:  # requests is imported only where it is used (see _transport/channel.py)
    import requests
from .typing import BeforeSend, ErrorHandler

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PATH",
    "ENVIRONMENT",
    "SEED_NAMES",
    "WRITE_KEY_ENV",
    "MissingWriteKey",
    "Settings",
    "env_flag",
]

DEFAULT_HOST = "https://us-east-1.hightouch-events.com"
DEFAULT_PATH = "/v1/batch"
#: The environment variable the write key is read from when none is given.
WRITE_KEY_ENV = "HT_WRITE_KEY"

#: The environment variables a setting falls back on when it is not given (12-factor: the
#: same code, configured per deployment). One table for every front-end and the command line.
ENVIRONMENT: dict[str, str] = {
    "write_key": WRITE_KEY_ENV,
    "host": "HT_HOST",
    "path": "HT_PATH",
    "disable": "HT_DISABLE",
    "gzip": "HT_GZIP",
    "debug": "HT_DEBUG",
}
_FLAGS = frozenset({"disable", "gzip", "debug"})

#: The Node SDK's camelCase setting names, accepted as aliases so that a configuration ports as
#: a copy: each maps to its Python name, and to the factor its value is multiplied by (the
#: seed counts time in milliseconds; Python, and this package, in seconds).
SEED_NAMES: dict[str, tuple[str, Optional[float]]] = {
    "writeKey": ("write_key", None),
    "host": ("host", None),
    "path": ("path", None),
    "maxRetries": ("max_retries", None),
    "maxEventsInBatch": ("max_events_in_batch", None),
    "flushInterval": ("flush_interval", 0.001),
    "httpRequestTimeout": ("http_request_timeout", 0.001),
    "disable": ("disable", None),
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class MissingWriteKey(ValueError):
    """No write key was given nor found in ``HT_WRITE_KEY``, and sending is not disabled."""


def env_flag(variable: str, text: str) -> bool:
    """An on/off environment variable's value; ``ValueError`` naming it for anything else."""
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{variable}={text!r} is not one of 1/0, true/false, yes/no, on/off")
    return value in _TRUE


def _without_password(url: str) -> str:
    """A proxy URL with its password (``http://user:secret@host``) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def _positive_number(
    name: str, value: Any, *, allow_zero: bool = False, unit: str = "seconds"
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of {unit}, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of {unit} {bound}, got {value!r}")
    return float(value)


def _snake(name: str) -> str:
    """``maxQueueSize`` -> ``max_queue_size``: for the hint on an unknown camelCase setting."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _from_seed_names(kwargs: dict[str, Any]) -> None:
    """Rename the seed's camelCase settings in ``kwargs`` (see :data:`SEED_NAMES`), turning
    milliseconds into seconds; ``TypeError`` when a setting is given under both names."""
    for seed, (name, factor) in SEED_NAMES.items():
        if seed == name or seed not in kwargs:
            continue
        value = kwargs.pop(seed)
        if kwargs.get(name) is not None:
            raise TypeError(f"{seed} and {name} are the same setting: give one of them")
        if factor is not None:
            value = _positive_number(seed, value, unit="milliseconds") * factor
        kwargs[name] = value


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _is_requests_session(value: object) -> bool:
    import requests  # only for a session given: it is requests' already

    return isinstance(value, requests.Session)


@dataclass(frozen=True)
class Settings:
    """The validated settings of one :class:`~htevents_logging.HtEvents` client.

    Build it with :meth:`Settings.create`, which applies defaults and checks every value.

    It is also the sharing key: front-ends whose settings are equal share one transport (one
    queue, one thread, one connection pool). Equality and the hash take every field except
    the few marked per-client (``disable``, ``on_error``, ``debug``, ``before_send``,
    ``context``, ``properties``, ``capture_trace_context``: the client applies them itself),
    so a new setting is part of the key unless it says otherwise, and cannot be left out of
    it by mistake.
    """

    write_key: Optional[str]
    host: str = DEFAULT_HOST
    path: str = DEFAULT_PATH
    max_retries: int = 3
    max_events_in_batch: int = 15
    flush_interval: float = 10.0
    http_request_timeout: float = 10.0
    disable: bool = field(default=False, compare=False)  # per client
    max_queue_size: int = 100_000
    gzip: bool = False
    on_error: Optional[ErrorHandler] = field(default=None, compare=False)  # per client
    shutdown_timeout: float = 5.0
    spool_path: Optional[str] = None
    spool_max_bytes: int = 64 * 1024 * 1024
    debug: bool = field(default=False, compare=False)  # per client
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    retry_after_max: float = 60.0
    block_on_full: float = 0.0
    trust_env: bool = True
    # Normalized at creation to sorted (scheme, url) pairs: hashable, so part of the key.
    proxies: Optional[tuple[tuple[str, str], ...]] = None
    verify: Union[bool, str] = True
    cert: Optional[Union[str, tuple[str, str]]] = None
    session: Optional[requests.Session] = None
    sync_mode: bool = False
    capture_trace_context: bool = field(default=False, compare=False)  # per client
    before_send: Optional[BeforeSend] = field(default=None, compare=False)  # per client
    context: Optional[Mapping[str, Any]] = field(default=None, compare=False)  # per client
    properties: Optional[Mapping[str, Any]] = field(default=None, compare=False)  # per client

    @classmethod
    def create(cls, *, require_key: bool = True, **kwargs: Any) -> Settings:
        """Apply defaults, read the environment (``ENVIRONMENT``) for what is not given, and
        validate.

        Raises ``TypeError`` for an unknown setting or a value of the wrong type, and
        ``ValueError`` for a value out of range; the message names the setting.
        The seed's camelCase names (``writeKey``, ``flushInterval`` in milliseconds...: see
        :data:`SEED_NAMES`) are accepted too. ``require_key=False`` accepts settings without a
        key (a front-end configured without one, which then sends nothing: see
        :func:`~.keyless.keyless_client`).
        """
        _from_seed_names(kwargs)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            hints = [
                f" ({name}: did you mean {_snake(name)}?)"
                for name in unknown
                if _snake(name) in known
            ]
            raise TypeError(
                f"unknown setting(s) {', '.join(unknown)}{''.join(hints)}; "
                f"the settings are {', '.join(sorted(known))}"
            )
        for name, variable in ENVIRONMENT.items():
            text = os.environ.get(variable)
            if kwargs.get(name) is None and text:
                kwargs[name] = env_flag(variable, text) if name in _FLAGS else text
        spool_path = kwargs.get("spool_path")
        if spool_path is not None:
            if not isinstance(spool_path, (str, os.PathLike)):
                raise TypeError("spool_path must be a path")
            kwargs["spool_path"] = os.path.abspath(spool_path)  # one file, however spelled
        proxies = kwargs.get("proxies")
        if proxies is not None:
            if not isinstance(proxies, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in proxies.items()
            ):
                raise TypeError(
                    "proxies must be a mapping of scheme to proxy URL, as in requests, e.g. "
                    "{'https': 'http://proxy.internal:3128'}"
                )
            kwargs["proxies"] = tuple(sorted(proxies.items()))
        cert = kwargs.get("cert")
        if isinstance(cert, list):
            kwargs["cert"] = tuple(cert)
        settings = cls(**kwargs)
        settings._validate(require_key)
        return settings

    def _validate(self, require_key: bool) -> None:
        key = self.write_key
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise ValueError("write_key must be a non-empty string")
        if key is None and not self.disable and require_key:
            raise MissingWriteKey(
                "write_key is required: pass HtEvents(write_key=...) or set the "
                f"{WRITE_KEY_ENV} environment variable (or pass disable=True to send nothing)"
            )
        if not isinstance(self.host, str) or not self.host.startswith(("http://", "https://")):
            raise ValueError(
                f"host must start with http:// or https://, got {self.host!r} "
                f"(for example {DEFAULT_HOST!r})"
            )
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")
        _int_at_least("max_retries", self.max_retries, 0)
        _int_at_least("max_events_in_batch", self.max_events_in_batch, 1)
        _int_at_least("max_queue_size", self.max_queue_size, 1)
        _int_at_least("spool_max_bytes", self.spool_max_bytes, 1)
        _positive_number("flush_interval", self.flush_interval)
        _positive_number("http_request_timeout", self.http_request_timeout)
        _positive_number("shutdown_timeout", self.shutdown_timeout, allow_zero=True)
        _positive_number("retry_backoff", self.retry_backoff, allow_zero=True)
        _positive_number("retry_backoff_max", self.retry_backoff_max, allow_zero=True)
        _positive_number("retry_after_max", self.retry_after_max, allow_zero=True)
        if not isinstance(self.verify, (bool, str)):
            raise TypeError(f"verify must be True, False or a CA bundle path, not {self.verify!r}")
        cert = self.cert
        if cert is not None and not (
            isinstance(cert, str)
            or (
                isinstance(cert, tuple) and len(cert) == 2 and all(isinstance(c, str) for c in cert)
            )
        ):
            raise TypeError(
                "cert must be a client certificate path, or a (cert, key) pair of paths"
            )
        if self.session is not None and not _is_requests_session(self.session):
            raise TypeError(
                f"session must be a requests.Session, not {type(self.session).__name__}"
            )
        for flag in ("disable", "gzip", "debug", "trust_env", "sync_mode", "capture_trace_context"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, not {getattr(self, flag)!r}")
        _positive_number("block_on_full", self.block_on_full, allow_zero=True)
        if self.before_send is not None and not callable(self.before_send):
            raise TypeError(
                "before_send must be a callable before_send(message) -> message or None"
            )
        for name in ("context", "properties"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a mapping, not {type(value).__name__}")
        if self.on_error is not None and not callable(self.on_error):
            raise TypeError("on_error must be a callable on_error(error, messages)")
        if self.spool_path is not None and not isinstance(self.spool_path, (str, os.PathLike)):
            raise TypeError("spool_path must be a path")
        if self.sync_mode and self.spool_path is not None:
            raise ValueError(
                "sync_mode and spool_path cannot be combined: with sync_mode each call is sent "
                "before it returns, and a failure is told to its callback and on_error at once, "
                "so there is nothing to keep; choose one"
            )

    @property
    def url(self) -> str:
        """The full endpoint, ``host`` (a trailing ``/`` tolerated) plus ``path``."""
        return self.host.rstrip("/") + self.path

    def __repr__(self) -> str:
        shown: list[str] = []
        for f in dataclasses.fields(self):
            value: Any = getattr(self, f.name)
            if f.name == "write_key":
                text = repr(redact_write_key(value))
            elif f.name == "proxies" and self.proxies is not None:
                text = repr(tuple((scheme, _without_password(url)) for scheme, url in self.proxies))
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"Settings({', '.join(shown)})"

"""Refuse every non-loopback connection in a benchmark process.

The benchmarks only ever talk to a collector on 127.0.0.1. A peer SDK with an unexpected
default (a feature-flag poller, remote config, a telemetry ping) must fail loudly here rather
than reach the internet, so every benchmark process calls :func:`install` first.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

__all__ = ["NetworkGuardError", "install"]

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NetworkGuardError(OSError):
    """A benchmark process tried to reach an address that is not on this machine."""


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard, used to bind
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%", 1)[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse(host: Any) -> NetworkGuardError:
    return NetworkGuardError(f"benchmark network guard: refusing to reach {host!r} (not loopback)")


def install() -> None:
    """Make ``getaddrinfo`` and ``socket.connect`` refuse anything but loopback. Idempotent."""
    if getattr(socket, "_bench_guarded", False):
        return
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            raise _refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def _check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise _refuse(address[0])

    def connect(self: socket.socket, address: Any) -> None:
        _check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket._bench_guarded = True  # type: ignore[attr-defined]

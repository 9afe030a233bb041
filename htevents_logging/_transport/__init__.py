"""The transport: a bounded queue, one worker thread, batching, and the exporters.

The client uses only :func:`acquire` and :func:`release`, and the :class:`Outlet` they hand
out (``submit``, ``drop``, ``flush``, ``close``, ``snapshot``).
"""

from .envelope import Envelope, Queueable
from .pipeline import InlineTransport, Outlet, Transport, install, uninstall
from .registry import acquire, close_all, release
from .worker import is_transport_thread

__all__ = [
    "Envelope",
    "InlineTransport",
    "Outlet",
    "Queueable",
    "Transport",
    "acquire",
    "close_all",
    "install",
    "is_transport_thread",
    "release",
    "uninstall",
]

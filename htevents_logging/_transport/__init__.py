"""The transport: a bounded queue, one listener thread, batching, and the HTTP sender.

Front-ends use only :func:`acquire_transport`, :func:`release_transport` and
:meth:`Transport.enqueue`.
"""

from .envelope import Callback, Draft, Envelope, Queueable
from .listener import is_transport_thread
from .registry import acquire_transport, close_all, release_transport
from .transport import Transport

__all__ = [
    "Callback",
    "Draft",
    "Envelope",
    "Queueable",
    "Transport",
    "acquire_transport",
    "close_all",
    "is_transport_thread",
    "release_transport",
]

"""Send Hightouch Events through the logging you already have.

``HtEvents`` is the client; ``HtEventsHandler`` (stdlib ``logging``) and ``HtEventsProcessor``
(structlog) are the logging front-ends; ``bind`` sets the identity of a request, and
``redact`` makes a ready ``before_send``. The public modules besides this one are ``errors``,
``typing``, ``testing``, ``metrics``, ``collector`` and ``cli``; every module whose name starts
with ``_`` is private and may change.
"""

from . import _lifecycle  # noqa: F401 (installs the fork and exit hooks, once)
from ._client import HtEvents
from ._flushing import flush_after, flush_all
from ._frontends.handler import CaptureIdentity, HtEventsHandler
from ._frontends.processor import HtEventsProcessor
from ._identity import bind
from ._privacy import redact
from ._version import __version__
from .errors import DeliveryError, HtEventsError, MessageTooLargeError, Reason

__all__ = [
    "CaptureIdentity",
    "DeliveryError",
    "HtEvents",
    "HtEventsError",
    "HtEventsHandler",
    "HtEventsProcessor",
    "MessageTooLargeError",
    "Reason",
    "__version__",
    "bind",
    "flush_after",
    "flush_all",
    "redact",
]

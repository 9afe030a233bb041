"""Send Hightouch Events through the logging you already have.

``HtEvents`` is the client; ``HtEventsHandler`` (stdlib ``logging``) and ``HtEventsProcessor``
(structlog) are the logging front-ends; ``bind`` sets the identity of a request.
"""

from ._version import __version__
from .client import HtEvents
from .errors import DeliveryError, HtEventsError, MessageTooLargeError
from .handler import HtEventsHandler
from .identity import bind
from .processor import HtEventsProcessor

__all__ = [
    "DeliveryError",
    "HtEvents",
    "HtEventsError",
    "HtEventsHandler",
    "HtEventsProcessor",
    "MessageTooLargeError",
    "__version__",
    "bind",
]

"""Send Hightouch Events through the logging you already have.

``HtEvents`` is the client; ``HtEventsHandler`` (stdlib ``logging``) and ``HtEventsProcessor``
(structlog) are the logging front-ends; ``bind`` sets the identity of a request.
"""

from ._client import HtEvents
from ._frontends.handler import HtEventsHandler
from ._frontends.processor import HtEventsProcessor
from ._identity import bind
from ._version import __version__
from .errors import DeliveryError, HtEventsError, MessageTooLargeError

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

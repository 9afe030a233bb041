"""Check the events your code sends, in its own tests, with no network and no write key.

:func:`capture_events` collects every message that any front-end in the process (an
:class:`~htevents_logging.HtEvents` client, :class:`~htevents_logging.HtEventsHandler`,
:class:`~htevents_logging.HtEventsProcessor`) would send, in the form it would be sent,
instead of queueing it::

    from htevents_logging.testing import capture_events

    def test_checkout_sends_order_completed():
        with capture_events() as events:
            checkout(cart)
        assert [e["event"] for e in events if e["type"] == "track"] == ["Order completed"]
        assert events[0]["properties"]["total"] == 29.99

The same as a pytest fixture, ``htevents_events``, registered by the package's pytest plugin
(installed with the package: nothing to import)::

    # test_checkout.py
    def test_checkout_sends_order_completed(htevents_events):
        checkout(cart)
        assert htevents_events[0]["event"] == "Order completed"

Messages are captured on the thread that logs them, as soon as the call returns, so there is
nothing to wait for. Invalid payloads are not captured (they are rejected, as they would be).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._transport import install, uninstall
from ._transport.exporters import CapturingExporter
from .typing import Message

__all__ = ["capture_events"]


@contextlib.contextmanager
def capture_events() -> Iterator[list[Message]]:
    """Collect every message built inside the block into the yielded list, and send none.

    It installs a capturing exporter: while any ``capture_events`` block is active, every
    transport in the process (clients that are not disabled included) builds each message on
    the calling thread, through the same code as in production, and hands it to the capture
    lists instead of its queue, so nothing reaches the network. Each message is captured as it
    would be sent (its JSON form). Blocks nest: each active block gets every message. The list
    stays readable after the block.

    >>> with capture_events() as events:
    ...     HtEvents(disable=True).track(user_id="1", event="Signed up")
    >>> events[0]["event"]
    'Signed up'
    """
    sink: list[Message] = []
    exporter = CapturingExporter(sink)
    install(exporter)
    try:
        yield sink
    finally:
        uninstall(exporter)


def __getattr__(name: str) -> object:
    """``from htevents_logging.testing import htevents_events``, as a ``conftest.py`` written
    before the plugin did, still works: it is the plugin's fixture (pytest sees one fixture,
    not two)."""
    if name == "htevents_events":
        try:
            from .pytest_plugin import htevents_events
        except ImportError:  # no pytest: no fixture
            pass
        else:
            return htevents_events
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
